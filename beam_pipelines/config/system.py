"""The system configs under ``configs/system/``: metadata tables, providers, dataset kinds.

Parsed once per configs folder into typed objects (strict: unknown keys are errors naming the file
and the field), so the metastore, the warehouse, ``convergence provision`` and ``validate`` all read
the same definitions.
"""
from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from beam_pipelines.config.schema import TableSchema, load_schema
from beam_pipelines.config.step_options import TABLE_NAME, StrictModel
from beam_pipelines.errors import ConfigError

SYSTEM = "system"


class MetadataTable(StrictModel):
    schema_file: str = Field(alias="schema")
    primary_key: tuple[str, ...] = Field(min_length=1)
    unique: tuple[tuple[str, ...], ...] = ()
    index: tuple[tuple[str, ...], ...] = ()
    partition: str | None = None
    cluster: tuple[str, ...] = Field(default=(), max_length=4)


class TablesFile(StrictModel):
    dataset: str = Field(pattern=TABLE_NAME)
    tables: dict[str, MetadataTable] = Field(min_length=1)


class Provider(StrictModel):
    integration: str = Field(min_length=1, description="org_integration_credentials.provider as onboarding stores it")
    credential_types: tuple[str, ...] = Field(min_length=1)
    base_url_setting: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    default_base_url: str = Field(pattern=r"^https?://")
    auth_header: str
    ps_types: tuple[str, ...] = ()


class ProvidersFile(StrictModel):
    providers: dict[str, Provider] = Field(min_length=1)


class DatasetType(StrictModel):
    name: str
    description: str = ""


class DatasetTypesFile(StrictModel):
    environments: dict[str, str] = Field(min_length=1)
    dataset_types: dict[str, DatasetType]

    @field_validator("dataset_types")
    @classmethod
    def _org_kinds(cls, value: dict[str, DatasetType]) -> dict[str, DatasetType]:
        for kind in ("organizations", "org"):
            if kind not in value:
                raise ValueError(f"missing dataset type {kind!r}")
        if "{org_slug}" not in value["org"].name or "{env}" not in value["org"].name:
            raise ValueError("org.name must contain {org_slug} and {env}")
        return value


class SystemConfig:
    """Everything under configs/system, validated, with each metadata table's schema loaded."""

    def __init__(self, configs_dir: Path, tables: TablesFile, providers: ProvidersFile, datasets: DatasetTypesFile):
        self.configs_dir = configs_dir
        self.dataset = tables.dataset
        self.tables = tables.tables
        self.providers = providers.providers
        self.environments = datasets.environments
        self.org_dataset_pattern = datasets.dataset_types["org"].name
        self.schemas: dict[str, TableSchema] = {}
        for name, entry in self.tables.items():
            source = f"{SYSTEM}/{entry.schema_file}"
            schema = load_schema(configs_dir / SYSTEM / entry.schema_file, source)
            for group in (entry.primary_key, *entry.unique, *entry.index, entry.cluster,
                          (entry.partition,) if entry.partition else ()):
                missing = [c for c in group if c not in schema.names]
                if missing:
                    raise ConfigError(f"{SYSTEM}/tables.yml: tables.{name}: column(s) {missing} not in {source}")
            self.schemas[name] = schema

    def integration(self, provider: str) -> str:
        """The onboarding service's name for a provider's integration (``GCP_SA`` for gcp)."""
        try:
            return self.providers[provider].integration
        except KeyError:
            raise ConfigError(f"{SYSTEM}/providers.yml: no provider {provider!r}") from None

    def org_dataset(self, org_slug: str, environment: str) -> str:
        return self.org_dataset_pattern.format(org_slug=org_slug, env=self.environments[environment])


def _read(path: Path, model, display: str):
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{display}: not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{display}: {f'line {mark.line + 1}: ' if mark else ''}invalid YAML") from None
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        from beam_pipelines.config.loader import format_validation_error

        raise ConfigError(format_validation_error(display, exc)) from None


@functools.lru_cache(maxsize=16)
def load_system(configs_dir: Path) -> SystemConfig:
    folder = Path(configs_dir) / SYSTEM
    return SystemConfig(Path(configs_dir),
                        _read(folder / "tables.yml", TablesFile, f"{SYSTEM}/tables.yml"),
                        _read(folder / "providers.yml", ProvidersFile, f"{SYSTEM}/providers.yml"),
                        _read(folder / "dataset_types.yml", DatasetTypesFile, f"{SYSTEM}/dataset_types.yml"))
