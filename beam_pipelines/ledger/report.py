"""The ledger as a person reads it (``convergence reconcile``, the launcher's run detail)."""
from __future__ import annotations

from datetime import date

from beam_pipelines.ledger.reconcile import describe

TABLE = "cost_reconciliation_daily"
COLUMNS = ["usage_date", "provider", "computed_usd", "billed_usd", "variance_usd", "variance_pct", "status", "why"]


def ledger_days(warehouse, dataset: str, start: date, end: date, provider: str | None = None) -> list[dict]:
    """The org-level ledger rows of ``start..end`` (SQL DuckDB and BigQuery share; dates are ``date``s)."""
    if not warehouse.has_table(dataset, TABLE):
        return []
    where = f"level = 'org' AND usage_date BETWEEN DATE '{start.isoformat()}' AND DATE '{end.isoformat()}'"
    if provider is not None:
        if provider not in ("openai", "anthropic"):
            raise ValueError(f"provider {provider!r}: openai or anthropic")
        where += f" AND provider = '{provider}'"
    columns, rows = warehouse.query(
        f"SELECT usage_date, provider, computed_cost_usd, billed_cost_usd, variance_usd, variance_pct, status,"
        f" reasons FROM {dataset}.{TABLE} WHERE {where} ORDER BY usage_date, provider")
    return [dict(zip(columns, row)) for row in rows]


def printable(rows: list[dict]) -> list[tuple]:
    return [(r["usage_date"], r["provider"], f"{r['computed_cost_usd']:.2f}", f"{r['billed_cost_usd']:.2f}",
             f"{r['variance_usd']:+.2f}", "" if r["variance_pct"] is None else f"{r['variance_pct']:+.2f}%", r["status"],
             describe(r["reasons"])) for r in rows]
