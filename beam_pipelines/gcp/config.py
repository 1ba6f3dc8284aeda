"""``configs/gcp/bq_etl/config.yml``: how a Cloud Billing export is named, re-read and flattened."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from beam_pipelines.config.step_options import StrictModel
from beam_pipelines.errors import ConfigError


class FlattenOptions(StrictModel):
    required_fields: tuple[str, ...] = ("usage_start_time", "cost")
    json_fields: dict[str, str] = Field(default_factory=lambda: {"labels": "labels", "project_labels": "project.labels"})


class BqEtlConfig(StrictModel):
    export_table_pattern: str
    trailing_days: int = Field(ge=1, le=31)
    flatten: FlattenOptions = Field(default_factory=FlattenOptions)

    @field_validator("export_table_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if not {"project", "dataset", "table"} <= set(pattern.groupindex):
            raise ValueError("needs the named groups project, dataset and table")
        return value

    @property
    def export_table(self) -> re.Pattern:
        return re.compile(self.export_table_pattern)


def load_bq_etl_config(path: Path, display: str) -> BqEtlConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{display}: cannot read: {type(exc).__name__}") from None
    try:
        return BqEtlConfig.model_validate(raw or {})
    except ValidationError as exc:
        from beam_pipelines.config.loader import format_validation_error

        raise ConfigError(format_validation_error(display, exc)) from None
