"""Runtime settings, read from environment variables.

There is deliberately no settings file: the same variables configure the CLI, the launcher and
the Dataflow workers (which receive the non-secret ones as pipeline options). With nothing set,
everything runs on the embedded default under ``$CONVERGENCE_HOME``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from beam_pipelines.errors import ConfigError

ENVIRONMENTS = {"development": "dev", "staging": "stage", "production": "prod"}
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    home: Path = field(default_factory=lambda: Path(".convergence"))
    configs_dir: Path = REPO_CONFIGS
    openai_base_url: str = OPENAI_DEFAULT_BASE_URL
    anthropic_base_url: str = ANTHROPIC_DEFAULT_BASE_URL
    cipher: str = "local"  # local | kms
    kms_key_name: str = ""
    gcp_project: str = ""
    bigquery_api_endpoint: str = ""  # override for private endpoints (and tests)
    sink: str = "local"  # local (Parquet warehouse) | bigquery
    metastore: str = "sqlite"  # sqlite | bigquery
    bigquery_temp_location: str = ""  # gs:// folder for FILE_LOADS temp files

    @property
    def env_suffix(self) -> str:
        return ENVIRONMENTS[self.environment]

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def org_dataset(self, org_slug: str) -> str:
        """The org's own dataset: ``{org_slug}_{env}`` (DESIGN.md, Tables)."""
        return f"{org_slug}_{self.env_suffix}"

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


def load_settings(configs_dir: str | os.PathLike | None = None) -> Settings:
    """Build settings from the environment; ``configs_dir`` (``--configs``) wins over the env."""
    environment = _env("ENVIRONMENT", "development").lower()
    if environment not in ENVIRONMENTS:
        raise ConfigError(
            f"ENVIRONMENT: must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}"
        )
    configs = Path(configs_dir or _env("CONVERGENCE_CONFIGS") or REPO_CONFIGS)
    if not configs.is_dir():
        raise ConfigError(f"{configs}: configs folder does not exist")
    sink = _env("CONVERGENCE_SINK", "local").lower()
    if sink not in ("local", "bigquery"):
        raise ConfigError(f"CONVERGENCE_SINK: must be 'local' or 'bigquery', got {sink!r}")
    metastore = _env("CONVERGENCE_METASTORE", "sqlite").lower()
    if metastore not in ("sqlite", "bigquery"):
        raise ConfigError(f"CONVERGENCE_METASTORE: must be 'sqlite' or 'bigquery', got {metastore!r}")
    cipher = _env("CONVERGENCE_CIPHER", "local").lower()
    if cipher not in ("local", "kms"):
        raise ConfigError(f"CONVERGENCE_CIPHER: must be 'local' or 'kms', got {cipher!r}")
    return Settings(
        environment=environment,
        home=Path(_env("CONVERGENCE_HOME") or ".convergence").resolve(),
        configs_dir=configs.resolve(),
        openai_base_url=_env("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL,
        anthropic_base_url=_env("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT_BASE_URL,
        cipher=cipher,
        kms_key_name=_env("KMS_KEY_NAME"),
        gcp_project=_env("GCP_PROJECT_ID"),
        bigquery_api_endpoint=_env("GCP_BIGQUERY_API_ENDPOINT"),
        sink=sink,
        metastore=metastore,
        bigquery_temp_location=_env("BIGQUERY_TEMP_LOCATION"),
    )
