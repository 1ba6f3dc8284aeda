"""The last stage: fold every step's events into each org's run record and step logs.

One group per run id (so per org). The org's run is FAILED if any step reported an error (the
first error is recorded), else COMPLETED; ``rows_written`` counts rows loaded by load steps.
Step log ids are ``{run_id}:{step_id}``, so a retried bundle rewrites rather than duplicates.
"""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.transforms.elements import StepEvent
from beam_pipelines.transforms.fetch import step_log_row

STEP_ORDER = {"extract": 0, "transform": 1, "load": 2}


def fold_events(run_id: str, org_slug: str, events: list[StepEvent]) -> tuple[dict, list[dict], dict]:
    """Pure: (run update fields, step log rows, summary extras) for one org's events."""
    by_step: dict[str, list[StepEvent]] = {}
    for event in events:
        by_step.setdefault(event.step_id, []).append(event)
    steps = []
    for step_id, group in by_step.items():
        errors = [e.error for e in group if e.failed]
        starts = [e.started_at for e in group if e.started_at]
        ends = [e.ended_at for e in group if e.ended_at]
        merged = StepEvent(
            run_id=run_id, org_slug=org_slug, step_id=step_id, ps_type=group[0].ps_type,
            kind=group[0].kind, rows=sum(e.rows for e in group), error=errors[0] if errors else None,
            started_at=min(starts) if starts else None, ended_at=max(ends) if ends else None,
        )
        steps.append(merged)
    steps.sort(key=lambda e: (STEP_ORDER.get(e.kind, 9), e.started_at or datetime.min.replace(tzinfo=timezone.utc)))
    failed = [s for s in steps if s.failed]
    costs = [e.detail["cost_usd"] for e in events if e.detail.get("cost_usd") is not None]
    summary = {
        "cost_total_usd": sum(costs) if costs else None,
        "unpriced_models": sorted({m for e in events for m in e.detail.get("unpriced_models", [])}),
        "dq_warnings": [w for e in events for w in e.detail.get("dq_warnings", [])],
    }
    update = {
        "status": "FAILED" if failed or not steps else "COMPLETED",
        "rows_written": sum(s.rows for s in steps if s.kind == "load" and not s.failed),
        "error_message": (f"{failed[0].step_id}: {failed[0].error}" if failed
                          else (None if steps else "no step reported for this org")),
    }
    return update, [step_log_row(s) for s in steps], summary


class _RecordRun(beam.DoFn):
    def __init__(self, metastore_spec, staging_root=None):
        self._spec = metastore_spec
        self._staging_root = staging_root

    def setup(self):
        self._metastore = self._spec.open()

    def process(self, keyed):
        run_id, grouped = keyed
        items, events = list(grouped["items"]), list(grouped["events"])
        org_slug = items[0].org_slug if items else events[0].org_slug
        update, steps, extras = fold_events(run_id, org_slug, events)
        for row in steps:
            self._metastore.upsert_step_log(row)
        run = self._metastore.get_run(run_id) or {}
        ended = datetime.now(timezone.utc)
        started = run.get("started_at")
        if started:
            update["duration_ms"] = int((ended - datetime.fromisoformat(started)).total_seconds() * 1000)
        self._metastore.update_run(run_id, ended_at=ended, **update)
        if self._staging_root is not None:  # staged rows are loaded (or abandoned) by now
            from beam_pipelines.transforms.gcp import remove_staging

            remove_staging(FileSystems.join(str(self._staging_root), run_id))
        yield {"run_id": run_id, "org_slug": org_slug, "status": update["status"],
               "rows_written": update["rows_written"], "error_message": update["error_message"],
               "start_date": str(items[0].start_date) if items else None,
               "end_date": str(items[0].end_date) if items else None, **extras}


class RecordRunLog(beam.PTransform):
    def __init__(self, metastore_spec, work_items, events, staging_root=None):
        super().__init__()
        self._spec = metastore_spec
        self._staging_root = staging_root
        self._work_items = work_items
        self._events = events

    def expand(self, pbegin):
        items = self._work_items | "KeyItems" >> beam.Map(lambda w: (w.run_id, w))
        events = self._events | "KeyEvents" >> beam.Map(lambda e: (e.run_id, e))
        return (
            {"items": items, "events": events}
            | "ByRun" >> beam.CoGroupByKey()
            | "Record" >> beam.ParDo(_RecordRun(self._spec, self._staging_root))
        )
