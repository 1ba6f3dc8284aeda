"""A DoFn base for steps that work from an org's own tables instead of a provider API.

Like every first step it asks again whether the org may run (subscription and credential read
now, not when the job was launched), then reads through the job's warehouse, local or BigQuery.
"""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam

from beam_pipelines.runs.admission import admit
from beam_pipelines.transforms.elements import WorkItem


class OrgTablesDoFn(beam.DoFn):
    """Opens the metastore (admission) and the warehouse (the org's tables) once per worker."""

    def __init__(self, step):
        self._step = step

    def setup(self):
        self._metastore = self._step.ctx.metastore.open()
        self._warehouse = self._step.ctx.warehouse.open()

    def admit(self, item: WorkItem) -> None:
        provider = self._step.ctx.pipeline.config.provider
        admit(self._metastore, item.org_slug, self._step.ctx.integration(provider), datetime.now(timezone.utc).date())
