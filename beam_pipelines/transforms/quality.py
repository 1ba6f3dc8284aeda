"""``data_quality.validate``: check each org's rows against a suite before any load writes them.

Rows are grouped per run (one org), the suite is evaluated, and every result travels in the step's
event to the run log, which writes them to ``org_meta_dq_results`` with the run. A failed
*critical* expectation becomes the org's failure event, so the load steps (gated on failed runs)
write nothing for it. Warnings are recorded and reported.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.quality.arrow import evaluate_table
from beam_pipelines.quality.suite import Result, Suite, columns_used, evaluate, evaluate_runs, load_suite
from beam_pipelines.transforms.background import mapped
from beam_pipelines.transforms.elements import OrgBatch, RunsBatch, StagedRows, StepEvent
from beam_pipelines.transforms.runs import run_counts
from beam_pipelines.transforms.step import StepTransform

PARTS = "parts"


PART_THREADS = 2  # staged parts checked at once: Arrow's reader and kernels release the GIL


def _checked(suite: Suite, rows: list, columns: set[str], pool: ThreadPoolExecutor) -> Iterator[tuple[list[Result], int]]:
    """Each frame's results and row count: the in-memory batches as one frame; staged (larger-than-memory)
    batches one part at a time (a few on the pool at once), each read only when its turn comes and only
    the ``columns`` the suite reads, and checked in Arrow (:mod:`beam_pipelines.quality.arrow`): a
    billing day is never held whole, nor made of Python objects."""
    in_memory = [r.to_pandas() if isinstance(r, pa.Table) else r for r in rows if not isinstance(r, StagedRows)]
    if in_memory:
        frame = pd.concat(in_memory, ignore_index=True)
        yield _evaluate(suite, frame), len(frame)

    def check(part: StagedRows) -> tuple[list[Result], int]:
        table = _read_columns(part, columns)
        return _evaluate(suite, table), table.num_rows

    yield from mapped(check, [r for r in rows if isinstance(r, StagedRows)], pool, PART_THREADS)


def _read_columns(part: StagedRows, columns: set[str]) -> pa.Table:
    with FileSystems.open(part.path) as fh:
        parquet = pq.ParquetFile(fh)
        return parquet.read(columns=[c for c in parquet.schema_arrow.names if c in columns])


def _evaluate(suite: Suite, frame: pd.DataFrame | pa.Table) -> list[Result]:
    return evaluate_table(suite, frame) if isinstance(frame, pa.Table) else evaluate(suite, frame)


def combine(per_frame: list[list[Result]]) -> list[Result]:
    combined = []
    for results in zip(*per_frame):
        failed = [r for r in results if not r.success]
        combined.append(Result(results[0].expectation, not failed, (failed or results)[0].observed))
    return combined


def describe(result: Result) -> str:
    kw = result.expectation.kwargs
    target = kw.get("column") or kw.get("column_list") or ""
    return f"{result.expectation.expectation_type}({target}) observed {json.dumps(result.observed, sort_keys=True)}"


def run_event(step: StepTransform, suite: Suite, run_id: str, org_slug: str, results: list[Result], checked: int,
              started: datetime):
    """The step's event for one run: every result (for the run log), failed by a critical one."""
    rows = [{"table_name": step.options.table, "suite_name": suite.name,
             "expectation_type": r.expectation.expectation_type, "kwargs": r.expectation.kwargs,
             "success": r.success, "observed_value": r.observed, "severity": r.expectation.severity}
            for r in results]
    critical = [r for r in results if not r.success and r.expectation.severity == "critical"]
    warnings = [describe(r) for r in results if not r.success and r.expectation.severity == "warning"]
    error = f"data quality: {describe(critical[0])}" if critical else None
    return step.event(run_id, org_slug, rows=checked, error=error, started_at=started, dq_warnings=warnings,
                      dq_results=rows)


class _Validate(beam.DoFn):
    def __init__(self, step: StepTransform, suite: Suite):
        self._step = step
        self._suite = suite
        self._columns = set().union(*(columns_used(e) for e in suite.expectations))

    def setup(self):
        self._pool = ThreadPoolExecutor(PART_THREADS, thread_name_prefix="dq")

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def process(self, keyed):
        (org_slug, run_id), batches = keyed
        started = datetime.now(timezone.utc)
        per_frame, checked = [], 0
        for results, rows in _checked(self._suite, [b.rows for b in batches], self._columns, self._pool):
            per_frame.append(results)
            checked += rows
        results = combine(per_frame or [evaluate(self._suite, pd.DataFrame())])
        yield run_event(self._step, self._suite, run_id, org_slug, results, checked, started)


class _ValidateRuns(_Validate):
    """Every run of a RunsBatch checked in one grouped pass (a run's rows never span two such batches);
    other batches go on (``PARTS``) to be grouped by run."""

    def process(self, batch):
        if not isinstance(batch, RunsBatch):
            yield beam.pvalue.TaggedOutput(PARTS, ((batch.org_slug, batch.run_id), OrgBatch(batch.org_slug, batch.run_id, batch.rows)))
            return
        started = datetime.now(timezone.utc)
        results = evaluate_runs(self._suite, batch.rows)
        counts = run_counts(batch.rows)
        for org_slug, run_id in batch.runs:
            if run_id in results:
                yield run_event(self._step, self._suite, run_id, org_slug, results[run_id], counts[run_id], started)


class ValidateRows(StepTransform):
    kind = "transform"

    def expand(self, batches):
        suite = load_suite(self.ctx.configs_dir / self.options.suite, self.options.suite)
        whole = batches | "CheckRuns" >> beam.ParDo(_ValidateRuns(self, suite)).with_outputs(PARTS, main="events")
        grouped = (
            whole[PARTS]
            | "GroupRun" >> beam.GroupByKey()
            | "Check" >> beam.ParDo(_Validate(self, suite)).with_output_types(StepEvent)
        )
        return {"main": batches, "events": (whole.events, grouped)}

