"""The last stage: commit each org's staged tables, then record its run, from what really happened.

One group per run id (so per org) holds its work item, every step's events and every table its
load steps staged. If any step failed, the staged tables are discarded and nothing of the org is
replaced. Otherwise the days the org's fresh rows cover are committed (all tables at once locally,
one atomic MERGE per table on BigQuery); a day of the range for which the provider answered
nothing keeps the rows it holds, with a data-quality warning. Only then is the run closed, so COMPLETED always means committed.

Metastore writes are batched per bundle (step logs, data-quality rows, then the runs), which keeps
a fleet of a thousand orgs to a handful of statements.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam

from beam_pipelines.errors import one_line_error
from beam_pipelines.runs.records import CommitReport, fold_run
from beam_pipelines.staging import remove_run
from beam_pipelines.warehouse.base import CommitError
from beam_pipelines.warehouse.tables import table_spec

FLUSH_EVERY = 200
ITEM, EVENT, STAGED = "item", "event", "staged"  # what a run's grouped value is


class _RecordRuns(beam.DoFn):
    def __init__(self, ctx, loads: list[tuple[str, object]]):
        self._ctx = ctx
        self._loads = loads  # (step_id, LoadOptions) of every load step

    def setup(self):
        self._metastore = self._ctx.metastore.open()
        self._warehouse = self._ctx.warehouse.open()
        self._specs = {options.table: table_spec(self._ctx.configs_dir, options) for _, options in self._loads}

    def start_bundle(self):
        self._runs, self._steps, self._dq = [], [], []

    def process(self, keyed):
        run_id, tagged = keyed
        items, events, staged = [], [], []
        parts = {ITEM: items, EVENT: events, STAGED: staged}
        for tag, value in tagged:
            parts[tag].append(value)
        org_slug = items[0].org_slug if items else events[0].org_slug
        report = self._commit(items[0] if items else None, org_slug, events, staged)
        remove_run(self._ctx.staging_root, run_id)  # staged billing parts: loaded or abandoned by now
        update, steps, dq, extras = fold_run(run_id, org_slug, events, report)
        update["duration_ms"] = int((update["ended_at"] - self._ctx.loaded_at).total_seconds() * 1000)
        self._runs.append({"pipeline_logging_id": run_id, **update})
        self._steps += steps
        self._dq += dq
        if len(self._runs) >= FLUSH_EVERY:
            self._flush()
        yield {"run_id": run_id, "org_slug": org_slug, "status": update["status"],
               "rows_written": update["rows_written"], "error_message": update["error_message"],
               "start_date": str(items[0].start_date) if items else None,
               "end_date": str(items[0].end_date) if items else None, **extras}

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        self._metastore.upsert_step_logs(self._steps)
        self._metastore.upsert_dq_results(self._dq)
        self._metastore.close_runs(self._runs)
        self._runs, self._steps, self._dq = [], [], []

    def _commit(self, item, org_slug: str, events, staged) -> CommitReport:
        dataset = self._ctx.org_dataset(org_slug)
        report = CommitReport()
        if any(e.failed for e in events) or item is None:
            report.not_committed = sorted(self._warehouse.discard(dataset, item.run_id if item else events[0].run_id))
            return report
        try:
            report.kept = self._kept_days(dataset, item, staged)
            staged = self._follow_days(dataset, item, staged)
            committed = self._warehouse.commit(staged)
            report.committed = {s.table: list(s.days) for s in staged if s.table in committed}
        except CommitError as exc:
            report.error = str(exc)
            report.committed = {s.table: list(s.days) for s in staged if s.table in exc.committed}
            report.not_committed = [s.table for s in staged if s.table not in exc.committed]
            self._warehouse.discard(dataset, item.run_id)
        except Exception as exc:  # reading today's days failed: nothing was replaced
            report.error = one_line_error(exc)
            report.not_committed = [s.table for s in staged]
            self._warehouse.discard(dataset, item.run_id)
        return report

    def _follow_days(self, dataset: str, item, staged: list) -> list:
        """A load with ``days_like`` replaces the days another table of the run replaces, even where it
        staged no rows (FOCUS rows of a day whose usage was all unpriced): derived tables never keep a
        day their source restated."""
        by_table = {s.table: s for s in staged}
        out = [s for s in staged]
        for _, options in self._loads:
            source = by_table.get(getattr(options, "days_like", None) or "")
            if source is None:
                continue
            own = by_table.get(options.table)
            if own is None:
                own = self._warehouse.stage_empty(dataset, self._specs[options.table], item.run_id, options.scope_value)
                out.append(own)
            out[out.index(own)] = dataclasses.replace(own, days=tuple(sorted(set(own.days) | set(source.days))))
        return out

    def _kept_days(self, dataset: str, item, staged) -> list[dict]:
        """Days of the range the fresh answer left empty but the table holds: they are kept, and said so."""
        fresh = {s.table: set(s.days) for s in staged}
        kept = []
        for step_id, options in self._loads:
            spec = self._specs[options.table]
            if spec.partition_field is None or spec.scope_field:
                continue
            empty = [d for d in item.days() if d not in fresh.get(options.table, set())]
            if not empty:
                continue
            stats = self._warehouse.day_stats(dataset, spec, empty, options.total_column)
            for day in empty:
                held = stats.get(day)
                if held and held.rows:
                    kept.append({"step_id": step_id, "table": options.table, "day": day, "rows": held.rows,
                                 "cost_usd": held.total})
        return kept


class RecordRunLog(beam.PTransform):
    """Groups each run's work item, every step's events and every staged table by run id, then commits
    and records it. ``events`` and ``staged`` are every step's PCollections: each is keyed and tagged
    where it is made and all are flattened once into the group (a CoGroupByKey of already flattened
    inputs made every event cross two Flattens, each written out and read back by the local runner)."""

    def __init__(self, ctx, loads, work_items, events: list, staged: list):
        super().__init__()
        self._ctx, self._loads = ctx, loads
        self._work_items, self._events, self._staged = work_items, events, staged

    def expand(self, pbegin):
        tagged = [self._work_items | "KeyItems" >> beam.Map(lambda w: (w.run_id, (ITEM, w)))]
        tagged += [events | f"KeyEvents{n}" >> beam.Map(lambda e: (e.run_id, (EVENT, e)))
                   for n, events in enumerate(self._events)]
        tagged += [staged | f"KeyStaged{n}" >> beam.MapTuple(lambda run_id, s: (run_id, (STAGED, s)))
                   for n, staged in enumerate(self._staged)]
        return (
            tuple(tagged)
            | "Tagged" >> beam.Flatten()
            | "ByRun" >> beam.GroupByKey()
            | "CommitAndRecord" >> beam.ParDo(_RecordRuns(self._ctx, self._loads))
        )
