"""Seed tables (customised rows survive) and prorated monthly subscription costs."""
from __future__ import annotations

import csv
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd
import pyarrow as pa
import pytest

from beam_pipelines.config.schema import load_schema
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.seed.merge import merge_seed, monthly_subscription_rows
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.base import TableSpec, WarehouseSpec
from tests.conftest import CONFIGS

NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)


def run(settings, pipeline, start, end, org="acme"):
    result = run_pipeline(settings, RunRequest(pipeline, orgs=[org], start_date=start, end_date=end))
    assert result.runs[0]["status"] == "COMPLETED", result.runs[0]["error_message"]
    return result.runs[0]


def test_prorated_monthly_cost_by_hand():
    subs = pd.DataFrame([
        {"subscription_id": "team", "product": "ChatGPT", "plan_name": "Team", "seats": 10, "unit_price_usd": 30.0,
         "billing_period": "monthly", "start_date": date(2026, 3, 11), "end_date": None},
        {"subscription_id": "ent", "product": "ChatGPT", "plan_name": "Enterprise", "seats": 4, "unit_price_usd": 60.0,
         "billing_period": "annual", "start_date": date(2026, 1, 1), "end_date": date(2026, 4, 15)},
        {"subscription_id": "none", "product": "ChatGPT", "plan_name": "Plus", "seats": 0, "unit_price_usd": 20.0,
         "billing_period": "monthly", "start_date": date(2026, 1, 1), "end_date": None},
    ])
    rows = monthly_subscription_rows(subs, "acme", "r", date(2026, 3, 5), date(2026, 5, 2), NOW)
    got = {(r["month_start"].isoformat(), r["subscription_id"]): (r["active_days"], r["prorated_cost_usd"])
           for r in rows.to_dict("records")}
    assert got == {  # exact: seats x price x active days / days in month, rounded once half-to-even
        ("2026-03-01", "team"): (21, Decimal("203.225806452")),  # 6300 / 31 = 203.2258064516...
        ("2026-03-01", "ent"): (31, Decimal(240)),
        ("2026-04-01", "team"): (30, Decimal(300)),
        ("2026-04-01", "ent"): (15, Decimal(120)),
        ("2026-05-01", "team"): (31, Decimal(300)),
    }
    assert all(isinstance(v, Decimal) for _, v in got.values())


def test_merge_keeps_custom_rows_and_refreshes_defaults():
    defaults = pd.DataFrame({"k": ["a", "b"], "v": [1, 2], "is_custom": [False, False]})
    existing = pd.DataFrame({"k": ["a", "c", "b"], "v": [10, 30, 99], "is_custom": [True, True, False]})
    merged = merge_seed(defaults, existing, ["k"]).sort_values("k").to_dict("records")
    assert merged == [{"k": "a", "v": 10, "is_custom": True}, {"k": "b", "v": 2, "is_custom": False},
                      {"k": "c", "v": 30, "is_custom": True}]


@pytest.fixture(params=["local", "bigquery"])
def twin_settings(request):
    """The embedded default, and the BigQuery twin on the emulator: the same test passes on both."""
    return request.getfixturevalue("settings" if request.param == "local" else "bq_settings")


def test_seeded_org_gets_expected_monthly_totals_and_custom_prices_are_used(twin_settings, past_days):
    settings = twin_settings
    seed_org(settings, "acme")
    run(settings, "openai/seed/seed_csv", date(2026, 3, 1), date(2026, 3, 1))
    warehouse = WarehouseSpec.from_settings(settings).open()
    subs = warehouse.read_table("acme_dev", "openai_subscriptions").to_pandas()
    assert set(subs["subscription_id"]) == {"chatgpt-team", "chatgpt-plus", "chatgpt-enterprise"}

    # the org customises: 12 Team seats, and a negotiated gpt-5 price
    subs.loc[subs["subscription_id"] == "chatgpt-team", ["seats", "is_custom"]] = [12, True]
    schema = load_schema(CONFIGS / "openai/seed/schemas/openai_subscriptions.json")
    warehouse.replace_table("acme_dev", TableSpec("openai_subscriptions", schema, None),
                            to_arrow(subs, schema, "openai_subscriptions"))
    pricing = warehouse.read_table("acme_dev", "openai_model_pricing").to_pandas()
    custom = pricing[(pricing["model"] == "gpt-5") & (pricing["service_tier"] == "default")].copy()
    custom[["input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok", "is_custom"]] = \
        [Decimal(1), Decimal(8), Decimal("0.1"), True]
    pricing = pd.concat([pricing.drop(custom.index), custom], ignore_index=True)
    price_schema = load_schema(CONFIGS / "openai/seed/schemas/openai_model_pricing.json")
    warehouse.replace_table("acme_dev", TableSpec("openai_model_pricing", price_schema, None),
                            to_arrow(pricing, price_schema, "openai_model_pricing"))

    run(settings, "openai/seed/seed_csv", date(2026, 3, 1), date(2026, 3, 1))  # re-seeding keeps both
    reseeded = warehouse.read_table("acme_dev", "openai_subscriptions").to_pandas().set_index("subscription_id")
    assert reseeded.loc["chatgpt-team", "seats"] == 12 and bool(reseeded.loc["chatgpt-team", "is_custom"])

    run(settings, "openai/subscriptions", date(2026, 3, 1), date(2026, 4, 30))
    _, rows = warehouse.query("SELECT month_start, SUM(prorated_cost_usd) FROM acme_dev.openai_subscriptions_monthly"
                              " GROUP BY month_start ORDER BY month_start")
    assert rows == [(date(2026, 3, 1), Decimal(12 * 30 + 2 * 20)), (date(2026, 4, 1), Decimal(12 * 30 + 2 * 20))]

    run(settings, "openai/cost/usage_cost", past_days[0], past_days[0])
    _, priced = warehouse.query("SELECT DISTINCT price_version FROM acme_dev.openai_cost_daily WHERE price_model = 'gpt-5'"
                                " AND pricing_tier = 'default'")
    assert priced == [("gpt-5:default@2025-08-07:org=acme",)]
    _, cost = warehouse.query("SELECT input_uncached_tokens, output_tokens, input_cached_tokens, input_cost_usd,"
                              " output_cost_usd, cached_input_cost_usd FROM acme_dev.openai_cost_daily"
                              " WHERE price_model = 'gpt-5' AND pricing_tier = 'default' LIMIT 1")
    uncached, output, cached, input_cost, output_cost, cached_cost = cost[0]
    assert input_cost == Decimal(uncached) / 10**6 and output_cost == Decimal(output * 8) / 10**6
    assert cached_cost == (Decimal(cached) / 10**7).quantize(Decimal("1e-9"), ROUND_HALF_EVEN)


def test_anthropic_seed_loads_its_tables(twin_settings):
    settings = twin_settings
    seed_org(settings, "acme")
    run(settings, "anthropic/seed/seed_csv", date(2026, 3, 1), date(2026, 3, 1))
    warehouse = WarehouseSpec.from_settings(settings).open()
    with (CONFIGS / "anthropic/seed/data/default_pricing.csv").open() as fh:
        assert warehouse.read_table("acme_dev", "anthropic_model_pricing").num_rows == len(list(csv.DictReader(fh)))
    assert "claude-team" in warehouse.read_table("acme_dev", "anthropic_subscriptions").column("subscription_id").to_pylist()
    assert isinstance(warehouse.read_table("acme_dev", "anthropic_model_pricing"), pa.Table)
