"""The pipeline config: one YAML file per pipeline, the single source of truth.

Models are strict (unknown keys are errors) and immutable. Cross-field rules that need the
registry or the filesystem (ps_type known, referenced files valid) live in ``loader``.
"""
from __future__ import annotations

import re
from typing import Any

from croniter import croniter
from pydantic import Field, field_validator, model_validator

from beam_pipelines.config.step_options import TABLE_NAME, StrictModel

SEGMENT = re.compile(r"^[a-z0-9_]+$")
SNAKE = TABLE_NAME
DOTTED = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"


class StepConfig(StrictModel):
    step_id: str = Field(pattern=SNAKE)
    ps_type: str = Field(pattern=DOTTED)
    description: str = ""
    input: str | None = Field(None, pattern=SNAKE, description="step_id whose output this reads")
    options: dict[str, Any] = Field(default_factory=dict)


class PipelineConfig(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    provider: str = Field(pattern=SNAKE)
    domain: str = Field(pattern=SNAKE)
    credential_provider: str | None = Field(
        None, pattern=SNAKE, description="whose credential the extract step needs (default: provider)"
    )
    schedule: str | None = Field(None, description="UTC cron expression, e.g. '0 4 * * *'")
    max_range_days: int = Field(92, ge=1, le=3660)
    trailing_days: int = Field(
        1, ge=1, le=31, description="a run for days S..E re-reads S-(trailing_days-1)..E, for late data"
    )
    steps: tuple[StepConfig, ...] = Field(min_length=1)

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value

    @model_validator(mode="after")
    def _steps_form_a_chain(self) -> PipelineConfig:
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            if step.step_id in seen:
                raise ValueError(f"steps[{index}].step_id: duplicate step_id {step.step_id!r}")
            if step.input is not None and step.input not in seen:
                raise ValueError(
                    f"steps[{index}].input: {step.input!r} is not an earlier step_id"
                )
            seen.add(step.step_id)
        return self

    @property
    def credential(self) -> str:
        return self.credential_provider or self.provider


class LoadedPipeline(StrictModel):
    """A validated config plus where it came from, with each step's options parsed once."""

    pipeline_id: str  # provider/domain/pipeline: the config path
    path: str
    config: PipelineConfig
    step_options: dict[str, Any] = Field(default_factory=dict)  # step_id → its options model

    def options(self, step_id: str):
        return self.step_options[step_id]

    @property
    def name(self) -> str:
        return self.pipeline_id.rsplit("/", 1)[-1]

    @property
    def template_name(self) -> str:
        return self.pipeline_id.replace("/", "_")
