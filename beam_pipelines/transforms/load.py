"""``warehouse.load``: stage each org's rows for a table, invisible until the run's commit.

Batches are grouped per run (one org), cast to the table's schema (a row that does not fit fails
the org, naming the column), and staged through the warehouse chosen for the job. Many orgs' rows
arriving together (a ``RunsBatch``) hold every row of their runs, so they are staged without the
grouping and without waiting for the failed runs: cast once, each run staged from its slice; the
commit stage discards what a failed org staged. Orgs that failed
in an earlier step are skipped (a side input of failed run ids). Replacing the table's days happens
later, in one commit per org after every step has reported (:mod:`beam_pipelines.transforms.runlog`),
so a table of an org is never replaced while another step of the same org fails.
"""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.errors import WarehouseError, one_line_error
from beam_pipelines.transforms.elements import EVENTS, RunsBatch, StagedRows
from beam_pipelines.transforms.runs import split_runs_as_arrow
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.base import TableSpec
from beam_pipelines.warehouse.tables import table_spec

PARTS = "parts"  # batches of one org's rows, grouped by run before staging


def arrow_parts(batches, spec: TableSpec):
    """Each batch as an Arrow table of the table's schema, one at a time (staged parts stream from disk)."""
    for batch in batches:
        rows = batch.rows
        if isinstance(rows, StagedRows):
            rows = rows.read()
        if isinstance(rows, pd.DataFrame) and rows.empty:
            continue
        yield to_arrow(rows, spec.schema, spec.table)


def scope_of(parts: list[pa.Table], spec: TableSpec, expected: str | None = None) -> str | None:
    """The one scope value every staged row carries (``expected`` when the step states it)."""
    if spec.scope_field is None:
        return None
    values = set()
    for part in parts:
        values.update(pc.unique(part.column(spec.scope_field)).to_pylist())
    if expected is not None and values - {expected}:
        raise WarehouseError(f"{spec.table}: rows carry {spec.scope_field} {sorted(map(str, values - {expected}))},"
                             f" this step writes only {expected!r}")
    if expected is None and (len(values) != 1 or None in values):
        raise WarehouseError(f"{spec.table}: a run's rows must share one {spec.scope_field}, got {sorted(map(str, values))}")
    return expected if expected is not None else values.pop()


def scoped(part: pa.Table, spec: TableSpec, expected: str) -> pa.Table:
    scope_of([part], spec, expected)
    return part


class _Stage(beam.DoFn):
    def __init__(self, step: StepTransform, spec: TableSpec):
        self._step = step
        self._spec = spec

    def setup(self):
        self._warehouse = self._step.ctx.warehouse.open()

    def process(self, keyed, failed_runs):
        run_id, batches = keyed
        if run_id not in set(failed_runs):
            batches = list(batches)
            yield from self._stage_run(run_id, batches[0].org_slug, batches)

    def _stage_run(self, run_id: str, org_slug: str, batches: list, ordered: bool = False):
        started = datetime.now(timezone.utc)
        dataset = self._step.ctx.org_dataset(org_slug)
        try:
            staged = self._adopted(dataset, run_id, batches) or self._rewritten(dataset, run_id, batches, ordered)
        except Exception as exc:
            yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(run_id, org_slug, error=one_line_error(exc),
                                                                    started_at=started, table=self._spec.table))
            return
        if staged is not None:
            yield run_id, staged
        rows = staged.rows if staged else 0
        yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(
            run_id, org_slug, rows=rows, started_at=started, table=self._spec.table, staged={self._spec.table: rows},
            days=[d.isoformat() for d in (staged.days if staged else ())]))


    def _adopted(self, dataset: str, run_id: str, batches: list):
        """A run's day of staged parts (billing) handed to the warehouse as files, if it can take them."""
        parts, scope = [b.rows for b in batches], self._step.options.scope_value
        if not parts or not all(isinstance(p, StagedRows) for p in parts) or len({p.day for p in parts}) != 1:
            return None
        if self._spec.scope_field and scope is None:
            return None
        return self._warehouse.adopt_parts(dataset, self._spec, run_id, [p.path for p in parts], parts[0].day, scope)

    def _rewritten(self, dataset: str, run_id: str, batches: list, ordered: bool = False):
        """The rows cast to the table's schema and written by the warehouse."""
        scope, expected = None, self._step.options.scope_value
        if self._spec.scope_field and expected is not None:  # stated: check each part as it streams by
            scope, parts = expected, (scoped(part, self._spec, expected) for part in arrow_parts(batches, self._spec))
        elif self._spec.scope_field:
            parts = list(arrow_parts(batches, self._spec))
            scope = scope_of(parts, self._spec)
        else:
            parts = arrow_parts(batches, self._spec)
        return self._warehouse.stage(dataset, self._spec, run_id, parts, scope=scope, ordered=ordered)


class _StageRuns(_Stage):
    """Stages every run of a RunsBatch straight from it: a run's rows are never spread over two such
    batches, so they need no grouping (and no pickling per org); the batch is cast once. Other batches
    go on (``PARTS``) to be grouped by run. One ParDo rather than a filter per kind: the runner samples
    the size of every element on every edge by encoding it, and a fleet's batch is large.

    No side input of failed runs here: waiting for it would make the runner hold and encode every
    batch of the fleet until all checks are done. An org that failed upstream is staged all the same
    (invisible) and its staging is discarded by the commit stage, which never commits a failed org.
    """

    def process(self, batch):
        if not isinstance(batch, RunsBatch):
            yield beam.pvalue.TaggedOutput(PARTS, batch)
            return
        for run in split_runs_as_arrow(batch, self._spec):  # Arrow rows come sorted for the table
            yield from self._stage_run(run.run_id, run.org_slug, [run], ordered=isinstance(run.rows, pa.Table))


class StageTable(StepTransform):
    kind = "load"

    def expand(self, batches):
        spec = table_spec(self.ctx.configs_dir, self.options)
        failed = beam.pvalue.AsList(self.inputs["failed_runs"])
        whole = batches | "StageRuns" >> beam.ParDo(_StageRuns(self, spec)).with_outputs(EVENTS, PARTS, main="main")
        grouped = (
            whole[PARTS]
            | "ByRun" >> beam.Map(lambda b: (b.run_id, b))
            | "GroupRun" >> beam.GroupByKey()
            | "Stage" >> beam.ParDo(_Stage(self, spec), failed).with_outputs(EVENTS, main="main")
        )
        return {"events": (whole[EVENTS], grouped[EVENTS]), "staged": (whole.main, grouped.main)}
