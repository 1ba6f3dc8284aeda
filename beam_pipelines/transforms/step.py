"""The base every registered step transform extends, and the shape of its result."""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam

from beam_pipelines.config.models import StepConfig
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import StepEvent


class StepTransform(beam.PTransform):
    """A step of a pipeline config, built by the compiler from its registry entry.

    ``expand`` returns ``{"main": PCollection, "events": PCollection of StepEvent}``; ``main``
    is absent for load steps. ``events`` (and a load's ``staged``) may be a tuple of PCollections
    where a step has several paths: the compiler flattens every step's at once, and the local runner
    writes out and reads back every element crossing a Flatten (a fleet's seven events per org went
    through three of them).
    """

    kind = "transform"

    def __init__(self, step: StepConfig, options, ctx: RunContext, **inputs):
        super().__init__(label=step.step_id)
        self.step = step
        self.options = options
        self.ctx = ctx
        self.inputs = inputs

    def event(self, run_id: str, org_slug: str, rows: int = 0, error: str | None = None,
              started_at: datetime | None = None, **detail) -> StepEvent:
        return StepEvent(
            run_id=run_id, org_slug=org_slug, step_id=self.step.step_id, ps_type=self.step.ps_type,
            kind=self.kind, rows=rows, error=error, started_at=started_at,
            ended_at=datetime.now(timezone.utc), detail=detail,
        )


def pcollections(value) -> tuple:
    """A step's ``events`` or ``staged``: one PCollection or a tuple of them, as a tuple."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
