"""Runtime settings, read once from environment variables where a process starts.

There is deliberately no settings file: the same variables configure the CLI, the launcher and a
Flex Template launch, and a job carries what its workers need (never a secret: Secret Manager
resource names, not values) in its graph or as template parameters, so nothing depends on the
environment of a Dataflow worker. With nothing set, everything runs on the embedded default under
``$CONVERGENCE_HOME``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from beam_pipelines.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"  # configs installed with the wheel

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
KMS_AAD_MODES = ("none", "org_provider")


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def default_configs() -> Path:
    """The checkout's configs/ when run from one, else the copy installed with the package."""
    return REPO_CONFIGS if REPO_CONFIGS.is_dir() else PACKAGED_CONFIGS


@dataclass(frozen=True)
class NotifySettings:
    """Where run notifications go. Secrets travel as Secret Manager resource names only."""

    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password_secret: str = ""  # projects/P/secrets/S[/versions/V]; SMTP_PASSWORD is read locally
    email_from: str = "convergence@localhost"
    email_to: tuple[str, ...] = ()
    smtp_ca_file: str = ""
    slack_webhook_secret: str = ""  # projects/P/secrets/S[/versions/V]; SLACK_WEBHOOK_URL is read locally

    @classmethod
    def from_env(cls) -> NotifySettings:
        try:
            port = int(_env("SMTP_PORT", "587"))
        except ValueError:
            raise ConfigError("SMTP_PORT: not a number") from None
        return cls(smtp_host=_env("SMTP_HOST"), smtp_port=port, smtp_username=_env("SMTP_USERNAME"),
                   smtp_password_secret=_env("SMTP_PASSWORD_SECRET"),
                   email_from=_env("NOTIFY_EMAIL_FROM", "convergence@localhost"),
                   email_to=tuple(r.strip() for r in _env("NOTIFY_EMAIL_TO").split(",") if r.strip()),
                   smtp_ca_file=_env("SMTP_CA_FILE"), slack_webhook_secret=_env("SLACK_WEBHOOK_URL_SECRET"))


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    home: Path = field(default_factory=lambda: Path(".convergence"))
    configs_dir: Path = REPO_CONFIGS
    openai_base_url: str = OPENAI_DEFAULT_BASE_URL
    anthropic_base_url: str = ANTHROPIC_DEFAULT_BASE_URL
    cipher: str = "local"  # local | kms
    kms_key_name: str = ""
    kms_credential_aad: str = "none"  # none (as the onboarding service encrypts) | org_provider
    gcp_project: str = ""
    bigquery_api_endpoint: str = ""  # override for private endpoints of customers' billing exports
    bigquery_location: str = "US"
    sink: str = "local"  # local (Parquet warehouse) | bigquery
    metastore: str = "sqlite"  # sqlite | bigquery
    staging_location: str = ""  # gs:// folder for staged billing parts (default: $CONVERGENCE_HOME/staging)
    local_workers: int = 0  # processes a large local job spreads its orgs over (0: one per core)
    notify: NotifySettings = field(default_factory=NotifySettings)

    @property
    def system(self):
        from beam_pipelines.config.system import load_system

        return load_system(self.configs_dir)

    @property
    def env_suffix(self) -> str:
        return self.system.environments[self.environment]

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def org_dataset(self, org_slug: str) -> str:
        """The org's own dataset, ``{org_slug}_{env}`` (configs/system/dataset_types.yml)."""
        return self.system.org_dataset(org_slug, self.environment)

    @property
    def metastore_path(self) -> Path:
        return self.home / "metastore.sqlite3"

    @property
    def warehouse_dir(self) -> Path:
        return self.home / "warehouse"

    @property
    def local_key_path(self) -> Path:
        return self.home / "keys" / "local-aes-gcm.key"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def staging_root(self) -> str:
        return self.staging_location.rstrip("/") if self.staging_location else str(self.home / "staging")


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _env(name, default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _count(name: str, default: int) -> int:
    value = _env(name, str(default))
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}: must be a whole number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name}: must be 0 or more, got {number}")
    return number


def load_settings(configs_dir: str | os.PathLike | None = None) -> Settings:
    """Build settings from the environment; ``configs_dir`` (``--configs``) wins over the env."""
    from beam_pipelines.config.system import load_system

    configs = Path(configs_dir or _env("CONVERGENCE_CONFIGS") or default_configs())
    if not configs.is_dir():
        raise ConfigError(f"{configs}: configs folder does not exist")
    system = load_system(configs.resolve())
    environment = _choice("ENVIRONMENT", "development", tuple(system.environments))
    return Settings(
        environment=environment,
        home=Path(_env("CONVERGENCE_HOME") or ".convergence").resolve(),
        configs_dir=configs.resolve(),
        openai_base_url=_env("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL,
        anthropic_base_url=_env("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT_BASE_URL,
        cipher=_choice("CONVERGENCE_CIPHER", "local", ("local", "kms")),
        kms_key_name=_env("KMS_KEY_NAME"),
        kms_credential_aad=_choice("KMS_CREDENTIAL_AAD", "none", KMS_AAD_MODES),
        gcp_project=_env("GCP_PROJECT_ID"),
        bigquery_api_endpoint=_env("GCP_BIGQUERY_API_ENDPOINT"),
        bigquery_location=_env("BIGQUERY_LOCATION", "US") or "US",
        sink=_choice("CONVERGENCE_SINK", "local", ("local", "bigquery")),
        metastore=_choice("CONVERGENCE_METASTORE", "sqlite", ("sqlite", "bigquery")),
        staging_location=_env("CONVERGENCE_STAGING_LOCATION") or _env("BIGQUERY_TEMP_LOCATION"),
        local_workers=_count("CONVERGENCE_LOCAL_WORKERS", 0),
        notify=NotifySettings.from_env(),
    )
