"""The ledger's rules on hand-made rows: statuses, tolerance, and the reasons it can give."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pandas as pd

from beam_pipelines.ledger.reconcile import Tolerance, describe, reconcile

D1, D2 = date(2026, 11, 20), date(2026, 11, 21)
NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)


def computed(*rows):
    return pd.DataFrame([dict(zip(["usage_date", "scope_id", "model", "pricing_status", "total_cost_usd", "price_version"], r))
                         for r in rows])


def billed(*rows):
    return pd.DataFrame([dict(zip(["usage_date", "scope_id", "model", "amount_usd"], r)) for r in rows])


def ledger(c, b, days=(D1,), today=date(2026, 11, 26), restatement=3):
    out = reconcile("openai", "acme", "r1", list(days), c, b, "project", Tolerance(Decimal("0.01"), Decimal(1)), today,
                    restatement, NOW)
    return {(r["usage_date"], r["level"], r["scope_id"]): r for r in out.to_dict("records")}


def test_a_day_within_tolerance_matches_per_org_and_project():
    rows = ledger(computed((D1, "p1", "gpt-5.5", "PRICED", Decimal("100.000000000"), "gpt-5.5:default@2026-04-23"),
                           (D1, "p2", "gpt-5.5", "PRICED", Decimal("50"), "gpt-5.5:default@2026-04-23")),
                  billed((D1, "p1", "gpt-5.5", Decimal("100.40")), (D1, "p2", "gpt-5.5", Decimal("50"))))
    org = rows[D1, "org", None]
    assert (org["computed_cost_usd"], org["billed_cost_usd"], org["variance_usd"]) == (Decimal(150), Decimal("150.40"),
                                                                                        Decimal("0.40"))
    assert org["status"] == "MATCHED" and org["variance_pct"] == Decimal("0.2660")
    assert rows[D1, "project", "p1"]["status"] == "MATCHED" and rows[D1, "project", "p2"]["variance_usd"] == 0


def test_an_unpriced_model_is_the_variance_and_is_named_with_its_billed_amount():
    rows = ledger(computed((D1, "p1", "gpt-5.5", "PRICED", Decimal(100), "gpt-5.5:default@2026-04-23"),
                           (D1, "p1", "gpt-9", "UNPRICED", None, None)),
                  billed((D1, "p1", "gpt-5.5", Decimal(100)), (D1, "p1", "gpt-9", Decimal("37.5"))))
    org = rows[D1, "org", None]
    assert org["status"] == "VARIANCE" and org["variance_usd"] == Decimal("37.5") == org["unpriced_billed_usd"]
    assert json.loads(org["reasons"])[0] == {"kind": "unpriced_model", "model": "gpt-9", "billed_usd": "37.5"}
    assert describe(org["reasons"]) == "unpriced gpt-9 (billed $37.50)"


def test_missing_sides_price_changes_overrides_and_the_restatement_window():
    rows = ledger(computed((D1, "p1", "gpt-5.6-terra", "PRICED", Decimal(10), "gpt-5.6-terra:default@2026-11-20"),
                           (D2, "p1", "gpt-5", "PRICED", Decimal(5), "gpt-5:default@2025-08-07:org=acme")),
                  billed((D2, "p1", "gpt-5", Decimal(5)), (D2, "p9", "gpt-5", Decimal(2))), days=(D1, D2),
                  today=date(2026, 11, 23))
    assert rows[D1, "org", None]["status"] == "MISSING_BILL"
    assert rows[D2, "project", "p9"]["status"] == "MISSING_USAGE"
    assert rows[D2, "org", None]["status"] == "VARIANCE" and rows[D2, "org", None]["variance_usd"] == 2
    assert "price changed that day: gpt-5.6-terra:default" in describe(rows[D1, "org", None]["reasons"])
    assert "org price: gpt-5:default" in describe(rows[D2, "org", None]["reasons"])
    assert rows[D2, "org", None]["in_restatement_window"] and not rows[D1, "org", None]["in_restatement_window"]


def test_a_day_with_nothing_on_either_side_has_no_row():
    assert ledger(computed(), billed()) == {}


def test_partly_unpriced_and_priority_tier_models_are_named_without_claiming_their_bill():
    rows = ledger(computed((D1, "w", "claude-sonnet-4-5", "PRICED", Decimal(10), "claude-sonnet-4-5:standard@2025-09-29"),
                           (D1, "w", "claude-sonnet-4-5", "PRIORITY_TIER", None, None),
                           (D1, "w", "ft:x", "UNPRICED", None, None)),
                  billed((D1, "w", "claude-sonnet-4-5", Decimal(10))))
    org = rows[D1, "org", None]
    assert org["status"] == "MATCHED" and org["unpriced_billed_usd"] == 0
    assert describe(org["reasons"]) == ("unpriced ft:x (not on this bill); claude-sonnet-4-5 Priority Tier usage"
                                        " (billed under its commitment)")
