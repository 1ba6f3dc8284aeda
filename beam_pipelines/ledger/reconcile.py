"""Reconcile computed cost with billed cost and say why they differ, in exact money.

One row per org × provider × day at ``level="org"``, and one per project (OpenAI) or workspace
(Anthropic) where both sides carry it (``level="project"``/``"workspace"``): computed cost (our
priced usage), billed cost (the provider's cost endpoint), variance = billed − computed, in USD and
as a percentage of the bill, and a status:

- ``MATCHED``: |variance| within the tolerance (the larger of ``tolerance_usd`` and
  ``tolerance_pct`` of the bill): the estimate is the bill, up to what daily usage cannot show
  (long prompts, regional processing; see the README);
- ``VARIANCE``: beyond it;
- ``MISSING_BILL``: usage was priced but the provider billed nothing that day (yet);
- ``MISSING_USAGE``: billed, with no usage we could see.

Reasons are the explanations we can give, each with its amount where it has one: models we could
not price at all that day (their billed amount is exactly what is missing from our side), models
with some rows unpriced, Priority Tier usage (billed under a commitment, not in the cost report), a
price that changed that day, an org's own price override, and a day still inside the provider's
restatement window (bills are restated for a few days; the ledger is rebuilt when the day is re-run).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import pandas as pd

MATCHED, VARIANCE, MISSING_BILL, MISSING_USAGE = "MATCHED", "VARIANCE", "MISSING_BILL", "MISSING_USAGE"
ZERO = Decimal(0)
CENT = Decimal("0.01")
NANO = Decimal("0.000000001")
COLUMNS = ["usage_date", "org_slug", "provider", "level", "scope_id", "computed_cost_usd", "billed_cost_usd",
           "variance_usd", "variance_pct", "status", "reasons", "unpriced_billed_usd", "in_restatement_window",
           "run_id", "loaded_at"]


@dataclass(frozen=True)
class Tolerance:
    usd: Decimal = CENT
    pct: Decimal = Decimal(1)

    def allows(self, variance: Decimal, billed: Decimal) -> bool:
        return abs(variance) <= max(self.usd, abs(billed) * self.pct / 100)


def _money(value) -> Decimal:
    if value is None or (isinstance(value, float) and value != value):
        return ZERO
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _key(value) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _effective_day(price_version: str) -> date | None:
    """``model:tier@2026-07-30[:derived][:org=x]`` → the day that price took effect."""
    try:
        return date.fromisoformat(price_version.split("@", 1)[1][:10])
    except (IndexError, ValueError):
        return None


def reconcile(provider: str, org_slug: str, run_id: str, days: list[date], computed: pd.DataFrame,
              billed: pd.DataFrame, level: str, tolerance: Tolerance, today: date, restatement_days: int,
              loaded_at: datetime) -> pd.DataFrame:
    """``computed``: usage_date, scope_id, model, pricing_status, total_cost_usd, price_version (cost rows).
    ``billed``: usage_date, scope_id, model, amount_usd (bill rows). Both limited to ``days``."""
    computed = computed.assign(_scope=[_key(v) for v in computed["scope_id"]]) if len(computed) else \
        pd.DataFrame(columns=["usage_date", "_scope", "model", "pricing_status", "total_cost_usd", "price_version"])
    billed = billed.assign(_scope=[_key(v) for v in billed["scope_id"]]) if len(billed) else \
        pd.DataFrame(columns=["usage_date", "_scope", "model", "amount_usd"])
    rows = []
    for day in days:
        c_day = computed[computed["usage_date"] == day]
        b_day = billed[billed["usage_date"] == day]
        rows.append(_row(provider, org_slug, run_id, day, "org", None, c_day, b_day, tolerance, today, restatement_days,
                         loaded_at))
        for scope in sorted(set(c_day["_scope"]) | set(b_day["_scope"])):
            c, b = c_day[c_day["_scope"] == scope], b_day[b_day["_scope"] == scope]
            rows.append(_row(provider, org_slug, run_id, day, level, scope or None, c, b, tolerance, today,
                             restatement_days, loaded_at))
    rows = [r for r in rows if r is not None]
    # object columns: pandas would turn a NULL scope into NaN in a string column
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in COLUMNS})


def _row(provider, org_slug, run_id, day, level, scope, c, b, tolerance, today, restatement_days, loaded_at) -> dict | None:
    priced = c[c["pricing_status"] == "PRICED"]
    computed = sum((_money(v) for v in priced["total_cost_usd"]), ZERO)
    billed = sum((_money(v) for v in b["amount_usd"]), ZERO)
    if not len(c) and not len(b):
        return None
    variance = billed - computed
    reasons = []
    flagged = c[c["pricing_status"] != "PRICED"]
    priced_models = {str(m) for m in priced["model"].dropna()}
    unpriced_billed = ZERO
    for model in sorted({str(m) for m in flagged.loc[flagged["pricing_status"] == "UNPRICED", "model"].dropna()}):
        if model in priced_models:  # some of its rows priced: its bill cannot be split by row
            reasons.append({"kind": "unpriced_rows", "model": model})
            continue
        amount = sum((_money(v) for v in b.loc[b["model"] == model, "amount_usd"]), ZERO)
        unpriced_billed += amount
        reasons.append({"kind": "unpriced_model", "model": model, "billed_usd": str(amount)})
    for model in sorted({str(m) for m in flagged.loc[flagged["pricing_status"] == "PRIORITY_TIER", "model"].dropna()}):
        reasons.append({"kind": "priority_tier", "model": model})
    versions = sorted({str(v) for v in priced["price_version"].dropna()})
    changed = sorted({v.split("@", 1)[0] for v in versions if _effective_day(v) == day})
    if changed:
        reasons.append({"kind": "price_changed", "prices": changed})
    overrides = sorted({v.split("@", 1)[0] for v in versions if ":org=" in v})
    if overrides:
        reasons.append({"kind": "org_override", "prices": overrides})
    restating = (today - day).days < restatement_days
    if restating:
        reasons.append({"kind": "restatement_window", "days": restatement_days})
    if not len(b) and computed:
        status = MISSING_BILL
    elif not len(priced) and billed:
        status = MISSING_USAGE
    else:
        status = MATCHED if tolerance.allows(variance, billed) else VARIANCE
    pct = (variance / billed * 100).quantize(Decimal("0.0001")) if billed else None
    return {"usage_date": day, "org_slug": org_slug, "provider": provider, "level": level, "scope_id": scope,
            "computed_cost_usd": computed.quantize(NANO), "billed_cost_usd": billed.quantize(NANO),
            "variance_usd": variance.quantize(NANO), "variance_pct": pct, "status": status,
            "reasons": json.dumps(reasons), "unpriced_billed_usd": unpriced_billed.quantize(NANO),
            "in_restatement_window": restating, "run_id": run_id, "loaded_at": loaded_at}


def describe(reasons: str | list | None) -> str:
    """The reasons as a person reads them (JSON text from DuckDB, or already parsed from BigQuery)."""
    parts = []
    for reason in json.loads(reasons or "[]") if isinstance(reasons, str | type(None)) else reasons:
        kind = reason["kind"]
        if kind == "unpriced_model":
            amount = Decimal(reason["billed_usd"])
            parts.append(f"unpriced {reason['model']} (" + (f"billed ${amount:.2f})" if amount else "not on this bill)"))
        elif kind == "unpriced_rows":
            parts.append(f"some {reason['model']} usage unpriced")
        elif kind == "priority_tier":
            parts.append(f"{reason['model']} Priority Tier usage (billed under its commitment)")
        elif kind == "price_changed":
            parts.append(f"price changed that day: {', '.join(reason['prices'])}")
        elif kind == "org_override":
            parts.append(f"org price: {', '.join(reason['prices'])}")
        elif kind == "restatement_window":
            parts.append(f"within the {reason['days']}-day restatement window")
    return "; ".join(parts)
