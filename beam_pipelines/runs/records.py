"""Shaping a run's record from what its steps reported: plain data, no Beam, no I/O.

One org's :class:`StepEvent` list, plus what the commit did, becomes the run update, its step log
rows, its data-quality rows and the summary a notification shows. The run is FAILED if any step
reported an error (the first error is recorded) or if its commit did not replace every staged
table; ``rows_written`` counts rows of tables really committed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal

from beam_pipelines.transforms.elements import StepEvent

STEP_ORDER = {"extract": 0, "transform": 1, "load": 2, "notify": 3}


@dataclass
class CommitReport:
    """What the commit stage did for one run."""

    committed: dict[str, list[date]] = field(default_factory=dict)  # table → days replaced
    not_committed: list[str] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)  # populated days an empty answer did not wipe
    error: str | None = None


def step_log_row(event: StepEvent) -> dict:
    duration = None
    if event.started_at and event.ended_at:
        duration = int((event.ended_at - event.started_at).total_seconds() * 1000)
    return {
        "step_log_id": f"{event.run_id}:{event.step_id}",
        "pipeline_logging_id": event.run_id,
        "org_slug": event.org_slug,
        "step_id": event.step_id,
        "ps_type": event.ps_type,
        "status": "FAILED" if event.failed else "COMPLETED",
        "rows_processed": event.rows,
        "error_message": event.error,
        "started_at": event.started_at,
        "ended_at": event.ended_at,
        "duration_ms": duration,
    }


def merge_step(run_id: str, org_slug: str, group: list[StepEvent]) -> StepEvent:
    errors = [e.error for e in group if e.failed]
    starts = [e.started_at for e in group if e.started_at]
    ends = [e.ended_at for e in group if e.ended_at]
    detail: dict = {}
    for event in group:
        for key, value in event.detail.items():
            if isinstance(value, list):
                detail.setdefault(key, []).extend(value)
            elif isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) and key in detail:
                detail[key] += value
            else:
                detail.setdefault(key, value)
    return StepEvent(run_id=run_id, org_slug=org_slug, step_id=group[0].step_id, ps_type=group[0].ps_type,
                     kind=group[0].kind, rows=sum(e.rows for e in group), error=errors[0] if errors else None,
                     started_at=min(starts) if starts else None, ended_at=max(ends) if ends else None, detail=detail)


def merged_steps(run_id: str, org_slug: str, events: list[StepEvent]) -> list[StepEvent]:
    by_step: dict[str, list[StepEvent]] = {}
    for event in events:
        by_step.setdefault(event.step_id, []).append(event)
    steps = [merge_step(run_id, org_slug, group) for group in by_step.values()]
    earliest = datetime.min.replace(tzinfo=timezone.utc)
    steps.sort(key=lambda e: (STEP_ORDER.get(e.kind, 9), e.started_at or earliest))
    return steps


def kept_warning(kept: dict) -> str:
    cost = f", ${Decimal(str(kept['cost_usd'])):,.2f}" if kept.get("cost_usd") is not None else ""
    return (f"{kept['table']} {kept['day']}: the provider answered no usage; kept the {kept['rows']} row(s){cost}"
            " already there")


def dq_rows(run_id: str, org_slug: str, steps: list[StepEvent], report: CommitReport, now: datetime) -> list[dict]:
    rows = []
    for step in steps:
        for index, result in enumerate(step.detail.get("dq_results", [])):
            rows.append({"dq_result_id": f"{run_id}:{step.step_id}:{index:03d}", "pipeline_logging_id": run_id,
                         "org_slug": org_slug, "step_id": step.step_id, "created_at": now, **result})
    for kept in report.kept:
        rows.append({"dq_result_id": f"{run_id}:{kept['table']}:kept:{kept['day']}", "pipeline_logging_id": run_id,
                     "org_slug": org_slug, "step_id": kept["step_id"], "table_name": kept["table"],
                     "suite_name": "convergence_builtin", "expectation_type": "expect_populated_day_not_emptied",
                     "kwargs": {"day": str(kept["day"])}, "success": False,
                     "observed_value": {"rows_kept": kept["rows"], "cost_usd_kept":
                                        None if kept.get("cost_usd") is None else str(kept["cost_usd"])},
                     "severity": "warning", "created_at": now})
    return rows


def fold_run(run_id: str, org_slug: str, events: list[StepEvent], report: CommitReport,
             now: datetime | None = None) -> tuple[dict, list[dict], list[dict], dict]:
    """(run update fields, step log rows, data-quality rows, summary extras) for one org's run."""
    now = now or datetime.now(timezone.utc)
    steps = merged_steps(run_id, org_slug, events)
    failed = [s for s in steps if s.failed]
    if report.error and not failed:
        error = f"commit: {report.error}"
    elif failed:
        error = f"{failed[0].step_id}: {failed[0].error}"
    else:
        error = None if steps else "no step reported for this org"
    if error and report.committed:
        error += " (replaced anyway: " + ", ".join(sorted(report.committed)) + ")"
    committed_rows = sum(rows for s in steps for table, rows in s.detail.get("staged", {}).items()
                         if table in report.committed)
    costs = [Decimal(str(s.detail["cost_usd"])) for s in steps if s.detail.get("cost_usd") is not None]
    warnings = [w for s in steps for w in s.detail.get("dq_warnings", [])] + [kept_warning(k) for k in report.kept]
    outcome = {
        "replaced": {table: [d.isoformat() for d in days] for table, days in sorted(report.committed.items())},
        "not_replaced": sorted(report.not_committed),
        "kept": [{**k, "day": str(k["day"]), "cost_usd": None if k.get("cost_usd") is None else str(k["cost_usd"])}
                 for k in report.kept],
        "cost_total_usd": str(sum(costs)) if costs else None,
        "unpriced_models": sorted({m for s in steps for m in s.detail.get("unpriced_models", [])}),
    }
    update = {"status": "FAILED" if error else "COMPLETED", "rows_written": committed_rows, "error_message": error,
              "ended_at": now, "outcome": outcome}
    summary = {"cost_total_usd": sum(costs) if costs else None, "unpriced_models": outcome["unpriced_models"],
               "dq_warnings": warnings}
    return update, [step_log_row(s) for s in steps], dq_rows(run_id, org_slug, steps, report, now), summary
