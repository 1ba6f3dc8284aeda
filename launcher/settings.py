"""Launcher settings (environment variables) and the production start-up checks.

There is no setting that turns authentication off: API keys are always required on pipeline
routes, and the scheduler route always needs the root key or a verified OIDC token.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from beam_pipelines.errors import ConfigError
from beam_pipelines.secrets.service_secrets import resolve_secret
from beam_pipelines.settings import Settings
from launcher.ratelimits import parse_rates

MIN_ROOT_KEY = 32


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


@dataclass(frozen=True)
class LauncherSettings:
    core: Settings
    root_key: str = ""
    backend: str = "local"  # local | dataflow
    local_max_jobs: int = 2
    cors_origins: tuple[str, ...] = ()
    rate_limit_per_key: str = "60/minute"
    rate_limit_per_ip: str = "120/minute"
    max_body_bytes: int = 16 * 1024
    default_daily_quota: int = 100
    scheduler_service_account: str = ""
    scheduler_audience: str = ""
    gcp_region: str = ""
    templates_path: str = ""  # gs://bucket/templates
    dataflow_service_account: str = ""
    dataflow_temp_location: str = ""
    dataflow_sdk_image: str = ""  # the template image, so workers run the same code as the launcher
    dataflow_max_workers: int = 10
    forwarded_allow_ips: str = ""  # proxies whose X-Forwarded-For uvicorn trusts (none by default)
    forwarded_trusted_hops: int = 0  # proxies appending to X-Forwarded-For on the right (1 on Cloud Run)
    auth_failures_per_ip: str = "20/minute"

    @classmethod
    def from_env(cls, core: Settings) -> LauncherSettings:
        try:
            max_jobs = int(_env("LOCAL_MAX_CONCURRENT_JOBS", "2"))
            max_body = int(_env("MAX_REQUEST_BODY_BYTES", str(16 * 1024)))
            quota = int(_env("DEFAULT_DAILY_QUOTA", "100"))
            max_workers = int(_env("DATAFLOW_MAX_WORKERS", "10"))
            trusted_hops = int(_env("FORWARDED_TRUSTED_HOPS", "0"))
        except ValueError as exc:
            raise ConfigError(f"launcher settings: {exc}") from None
        return cls(
            core=core,
            root_key=resolve_secret("CA_ROOT_API_KEY") or "",
            backend=_env("LAUNCHER_BACKEND", "local").lower(),
            local_max_jobs=max_jobs,
            cors_origins=tuple(o.strip() for o in _env("CORS_ORIGINS").split(",") if o.strip()),
            rate_limit_per_key=_env("RATE_LIMIT_PER_KEY", "60/minute"),
            rate_limit_per_ip=_env("RATE_LIMIT_PER_IP", "120/minute"),
            max_body_bytes=max_body,
            default_daily_quota=quota,
            scheduler_service_account=_env("SCHEDULER_SERVICE_ACCOUNT"),
            scheduler_audience=_env("SCHEDULER_AUDIENCE"),
            gcp_region=_env("GCP_REGION"),
            templates_path=_env("DATAFLOW_TEMPLATES_PATH"),
            dataflow_service_account=_env("DATAFLOW_SERVICE_ACCOUNT"),
            dataflow_temp_location=_env("DATAFLOW_TEMP_LOCATION"),
            dataflow_sdk_image=_env("DATAFLOW_SDK_CONTAINER_IMAGE"),
            dataflow_max_workers=max_workers,
            forwarded_allow_ips=_env("FORWARDED_ALLOW_IPS"),
            forwarded_trusted_hops=trusted_hops,
            auth_failures_per_ip=_env("AUTH_FAILURES_PER_IP", "20/minute"),
        )

    def production_problems(self) -> list[str]:
        """Everything that makes this configuration unfit for ENVIRONMENT=production."""
        if not self.core.is_production:
            return []
        problems = []
        if len(self.root_key) < MIN_ROOT_KEY:
            problems.append(f"CA_ROOT_API_KEY: missing or shorter than {MIN_ROOT_KEY} characters")
        if not self.core.kms_key_name or self.core.cipher != "kms":
            problems.append("KMS_KEY_NAME: required (and CONVERGENCE_CIPHER=kms) in production")
        if not self.cors_origins:
            problems.append("CORS_ORIGINS: empty; list the frontend origins")
        if self.core.metastore != "bigquery":
            problems.append("CONVERGENCE_METASTORE: the embedded SQLite metastore is not allowed in production; use 'bigquery'")
        if self.core.sink != "bigquery":
            problems.append("CONVERGENCE_SINK: the local warehouse is not allowed in production; use 'bigquery'")
        if self.backend == "local":
            problems.append("LAUNCHER_BACKEND: 'local' is not allowed in production; use 'dataflow'")
        for name, value in (("GCP_PROJECT_ID", self.core.gcp_project), ("GCP_REGION", self.gcp_region),
                            ("DATAFLOW_TEMPLATES_PATH", self.templates_path),
                            ("DATAFLOW_SERVICE_ACCOUNT", self.dataflow_service_account),
                            ("DATAFLOW_TEMP_LOCATION", self.dataflow_temp_location),
                            ("DATAFLOW_SDK_CONTAINER_IMAGE", self.dataflow_sdk_image)):
            if not value:
                problems.append(f"{name}: required in production")
        if not (self.scheduler_service_account and self.scheduler_audience):
            problems.append("SCHEDULER_SERVICE_ACCOUNT and SCHEDULER_AUDIENCE: required in production (Cloud Scheduler's OIDC caller)")
        return problems

    def check(self) -> None:
        problems = self.production_problems()
        if self.backend not in ("local", "dataflow"):
            problems.append(f"LAUNCHER_BACKEND: unknown backend {self.backend!r}")
        if self.local_max_jobs < 1:
            problems.append("LOCAL_MAX_CONCURRENT_JOBS: must be at least 1")
        if "*" in self.forwarded_allow_ips:
            problems.append("FORWARDED_ALLOW_IPS: '*' makes uvicorn take the leftmost X-Forwarded-For entry, which any"
                            " client can forge; on Cloud Run set FORWARDED_TRUSTED_HOPS=1 instead")
        if self.forwarded_trusted_hops and self.forwarded_allow_ips:
            problems.append("FORWARDED_TRUSTED_HOPS and FORWARDED_ALLOW_IPS: set one of them, not both")
        if not 0 <= self.forwarded_trusted_hops <= 5:
            problems.append("FORWARDED_TRUSTED_HOPS: must be between 0 and 5")
        for name, value in (("RATE_LIMIT_PER_IP", self.rate_limit_per_ip), ("RATE_LIMIT_PER_KEY", self.rate_limit_per_key),
                            ("AUTH_FAILURES_PER_IP", self.auth_failures_per_ip)):
            try:
                parse_rates(value)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise ConfigError("launcher refuses to start:\n" + "\n".join(f"  - {p}" for p in problems))
