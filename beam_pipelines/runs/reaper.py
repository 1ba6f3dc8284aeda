"""Closing the runs of dead owners, with the truth about what they wrote.

An open run whose lease has passed belongs to a process that died. Whoever looks (the launcher at
start and on each launch, ``convergence run``, ``convergence runs``) closes it as FAILED with the
reason ("owner ... gone since ..."), and, by reading the warehouse rather than trusting anything the
dead process said, which tables it had replaced (rows carrying its run id) and which it had only
staged (those are discarded, so nothing half-written stays behind).
"""
from __future__ import annotations

import logging
from datetime import datetime

from beam_pipelines.config.loader import load_pipeline
from beam_pipelines.errors import ConvergenceError, one_line_error
from beam_pipelines.metastore.base import utcnow
from beam_pipelines.warehouse.tables import table_spec

log = logging.getLogger(__name__)


def _load_specs(settings, config_path: str) -> list:
    try:
        loaded = load_pipeline(settings.configs_dir, config_path)
    except ConvergenceError:
        return []
    return [table_spec(settings.configs_dir, loaded.options(s.step_id)) for s in loaded.config.steps
            if s.ps_type == "warehouse.load"]


def describe_partial_run(run: dict, settings, warehouse) -> tuple[str, dict]:
    """(what to say, outcome) for a run whose owner died; discards what it staged."""
    dataset = settings.org_dataset(run["org_slug"])
    replaced = {}
    for spec in _load_specs(settings, run["config_path"]):
        days = warehouse.days_written_by(dataset, spec, run["pipeline_logging_id"], run["start_date"], run["end_date"])
        if days:
            replaced[spec.table] = [d.isoformat() for d in days]
    staged = sorted(warehouse.discard(dataset, run["pipeline_logging_id"]))
    since = run["lease_expires_at"].isoformat() if run.get("lease_expires_at") else "unknown"
    parts = [f"owner {run.get('owner_id') or 'unknown'} gone since {since}"]
    parts.append("replaced: " + ", ".join(f"{t} ({len(d)} day(s))" for t, d in sorted(replaced.items()))
                 if replaced else "nothing replaced")
    if staged:
        parts.append("staged and not replaced: " + ", ".join(staged))
    return "; ".join(parts), {"replaced": replaced, "not_replaced": staged, "kept": []}


def reap_expired(metastore, warehouse, settings, now: datetime | None = None) -> list[str]:
    """Close every open run whose lease passed before ``now``; returns their ids."""
    now = now or utcnow()
    expired = metastore.expired_runs(now)
    if not expired:
        return []
    updates = []
    for run in expired:
        try:
            message, outcome = describe_partial_run(run, settings, warehouse)
        except Exception as exc:  # the reason still has to be recorded
            message, outcome = f"owner {run.get('owner_id')} gone; partial writes unknown ({one_line_error(exc)})", None
        updates.append({"pipeline_logging_id": run["pipeline_logging_id"], "status": "FAILED",
                        "error_message": message[:1000], "ended_at": now, "outcome": outcome})
    closed = metastore.close_runs(updates, expired_before=now)
    if closed:
        log.warning("closed %d run(s) of dead owners", len(closed))
    return closed
