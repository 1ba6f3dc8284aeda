"""The configs that are not pipelines, checked by ``convergence validate`` like every pipeline:
``configs/system/*`` (metadata tables, providers, dataset kinds), notification channels, price
lists and the billing export's ETL config."""
from __future__ import annotations

from pathlib import Path

import yaml

from beam_pipelines.errors import ConfigError
from beam_pipelines.registry import REGISTRY


def _system(configs_dir: Path) -> str | None:
    from beam_pipelines.config.system import load_system

    load_system.cache_clear()
    system = load_system(configs_dir)
    for name, provider in system.providers.items():
        unknown = [t for t in provider.ps_types if t not in REGISTRY]
        if unknown:
            return f"system/providers.yml: providers.{name}.ps_types: not registered {unknown}"
    return None


def _channels(configs_dir: Path) -> str | None:
    for path in sorted((configs_dir / "notify_systems").glob("*.yml")):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            return f"notify_systems/{path.name}: invalid YAML"
        if raw.get("channel") not in ("email", "slack"):
            return f"notify_systems/{path.name}: channel: must be email or slack"
    return None


def _bq_etl(configs_dir: Path) -> str | None:
    from beam_pipelines.gcp.config import load_bq_etl_config

    path = configs_dir / "gcp" / "bq_etl" / "config.yml"
    if path.exists():
        load_bq_etl_config(path, "gcp/bq_etl/config.yml")
    return None


CHECKS = (("system configs", _system), ("notification channels", _channels), ("gcp/bq_etl/config.yml", _bq_etl))


def validate_other_configs(configs_dir: Path) -> list[tuple[str, str | None]]:
    """(what was checked, its problem or None) for each group of non-pipeline configs."""
    results = []
    for name, check in CHECKS:
        try:
            results.append((name, check(Path(configs_dir))))
        except ConfigError as exc:
            results.append((name, str(exc)))
    return results
