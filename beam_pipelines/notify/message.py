"""The run summary message: per org status, rows, cost, errors and unpriced models. No secrets.

Everything in it comes from run records, whose errors were redacted when recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

TRIGGERS = ("on_failure", "on_success", "on_completion", "always")


@dataclass(frozen=True)
class Message:
    subject: str
    text: str


def should_send(trigger: str, summaries: list[dict]) -> bool:
    statuses = {s["status"] for s in summaries}
    failed = bool(statuses - {"COMPLETED"})
    if trigger == "on_failure":
        return failed
    if trigger == "on_success":
        return not failed
    if trigger == "on_completion":
        return statuses <= {"COMPLETED", "FAILED"}
    return True


def build_message(pipeline_id: str, summaries: list[dict], prefix: str = "[Convergence]") -> Message:
    summaries = sorted(summaries, key=lambda s: s["org_slug"])
    failed = [s for s in summaries if s["status"] != "COMPLETED"]
    days = {(s.get("start_date"), s.get("end_date")) for s in summaries}
    span = " ".join(f"{a}..{b}" for a, b in sorted(days, key=str)) if days else ""
    verdict = f"{len(failed)} of {len(summaries)} org(s) FAILED" if failed else f"{len(summaries)} org(s) COMPLETED"
    lines = [f"{pipeline_id} {span}: {verdict}", ""]
    for s in summaries:
        cost = s.get("cost_total_usd")
        line = (f"- {s['org_slug']}: {s['status']}, rows {s.get('rows_written') or 0}"
                + (f", cost ${cost:,.2f}" if cost is not None else "")
                + f", run {s['run_id']}")
        lines.append(line)
        if s.get("error_message"):
            lines.append(f"    error: {s['error_message']}")
        if s.get("unpriced_models"):
            lines.append(f"    unpriced models: {', '.join(s['unpriced_models'])}")
        for warning in s.get("dq_warnings") or []:
            lines.append(f"    data quality warning: {warning}")
    lines += ["", "Look a run up with: convergence runs show <run> (or GET /api/v1/pipelines/runs/<run>)"]
    return Message(f"{prefix} {pipeline_id}: {verdict}", "\n".join(lines))
