"""``warehouse.read``: an org's stored rows for the run's days, as the first step of a pipeline.

Re-pricing reads the raw usage a fetch stored earlier and hands it to the same cost step, so a
day that came in UNPRICED is priced once the book knows the model, without asking the provider
again (its usage API may no longer serve that day). The rows take the new run's id: the cost rows
they become belong to this run, and the commit replaces the same partitions a fetch would.

An org's rows are emitted only after all of them were read, so a read failing half-way writes
nothing for that org; an org with no stored rows for a day keeps that day as it is.
"""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa

from beam_pipelines.errors import one_line_error
from beam_pipelines.pipeline import progress
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, WorkItem
from beam_pipelines.transforms.org_tables import OrgTablesDoFn
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.warehouse.tables import table_spec


class _ReadOrg(OrgTablesDoFn):
    def setup(self):
        super().setup()
        self._spec = table_spec(self._step.ctx.configs_dir, self._step.options)

    def process(self, item: WorkItem):
        started = datetime.now(timezone.utc)
        batches, error = [], None
        try:
            self.admit(item)
            dataset = self._step.ctx.org_dataset(item.org_slug)
            for part in self._warehouse.read_days(dataset, self._spec, item.start_date, item.end_date):
                batches.append(OrgBatch(item.org_slug, item.run_id, _as_rows(part, item.run_id)))
        except Exception as exc:  # one org's failure must never stop the others
            error, batches = one_line_error(exc), []
        progress.org_done(self._step.step.step_id)
        yield from batches
        yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(
            item.run_id, item.org_slug, rows=sum(len(b.rows) for b in batches), error=error, started_at=started))


def _as_rows(part: pa.Table, run_id: str):
    """Arrow → the DataFrame shape a fetch produces: dates as ``date``, integer NULLs kept NULL."""
    rows = part.to_pandas(integer_object_nulls=True, date_as_object=True)
    rows["run_id"] = run_id
    return rows


class ReadStoredRows(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        outputs = work_items | "ReadStored" >> beam.ParDo(_ReadOrg(self)).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}
