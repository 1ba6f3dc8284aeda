"""Today's models at today's prices: November 2026 from the simulator, priced by the pipelines and
compared per model with the providers' own bills; a day before a price cut keeps the old price."""
from __future__ import annotations

import csv
from datetime import date, timedelta

import pytest

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS
from tests.provider_bills import anthropic_bill, openai_bill

NOVEMBER = (date(2026, 11, 17), date(2026, 11, 23))  # GPT-6.2 launched on the 17th, Fable 5.2 on the 9th


def run(settings, pipeline, start, end):
    result = run_pipeline(settings, RunRequest(pipeline, orgs=["acme"], start_date=start, end_date=end))
    assert result.runs[0]["status"] == "COMPLETED", result.runs[0]["error_message"]


def query(settings, sql):
    return LocalWarehouse(settings.warehouse_dir).query(sql)[1]


def per_model(bill: dict) -> dict:
    totals: dict = {}
    for (_, model), amount in bill.items():
        totals[model] = [a + b for a, b in zip(totals.get(model, [0.0, 0.0]), amount)] if isinstance(amount, list) \
            else totals.get(model, 0.0) + amount
    return totals


def published_models(path) -> set[str]:
    with open(path) as fh:
        return {row["model"] for row in csv.DictReader(fh)}


def test_november_2026_openai_within_1pct_of_the_bill_per_model(settings, simulator):
    seed_org(settings, "acme")
    run(settings, "openai/cost/usage_cost", *NOVEMBER)
    ours = dict(query(settings, "SELECT model, SUM(total_cost_usd) FROM acme_dev.openai_cost_daily"
                                " WHERE pricing_status = 'PRICED' GROUP BY 1"))
    billed = per_model(openai_bill(simulator.openai_base_url, "sk-admin-sim-acme", *NOVEMBER))
    assert {"gpt-6.2-sol", "gpt-6.1-terra", "gpt-6-luna", "gpt-5.6-terra", "gpt-5.5-2026-04-23"} <= set(billed)
    assert set(ours) == set(billed)
    for model, (listed, long_prompts) in billed.items():
        assert float(ours[model]) == pytest.approx(listed + long_prompts, rel=0.01), model
        assert float(ours[model]) == pytest.approx(listed, abs=1e-4), f"{model}: only long prompts may differ"
    assert sum(long for _, long in billed.values()) > 0, "the bill shows what daily usage cannot"

    unpriced = query(settings, "SELECT DISTINCT model FROM acme_dev.openai_cost_daily WHERE pricing_status <> 'PRICED'")
    assert [m for (m,) in unpriced if not m.startswith("ft:")] == [], "nothing of a published model is UNPRICED"
    tiers = {t for (t,) in query(settings, "SELECT DISTINCT pricing_tier FROM acme_dev.openai_cost_daily")}
    assert {"default", "batch", "flex", "priority", "ultrafast"} <= tiers
    [(writes, write_cost, images)] = query(settings, "SELECT SUM(input_cache_write_tokens), SUM(cache_write_cost_usd),"
                                                     " SUM(input_image_tokens) FROM acme_dev.openai_cost_daily")
    assert writes > 0 and write_cost > 0 and images > 0


def test_november_2026_anthropic_within_1pct_of_the_bill_per_model(settings, simulator):
    seed_org(settings, "acme")
    run(settings, "anthropic/cost/usage_cost", *NOVEMBER)
    ours = dict(query(settings, "SELECT model, SUM(total_cost_usd) FROM acme_dev.anthropic_cost_daily"
                                " WHERE pricing_status = 'PRICED' GROUP BY 1"))
    billed = per_model(anthropic_bill(simulator.anthropic_base_url, "sk-ant-admin01-sim-acme", *NOVEMBER))
    assert {"claude-fable-5-2", "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"} <= set(billed)
    assert set(ours) == set(billed)
    for model, amount in billed.items():
        assert float(ours[model]) == pytest.approx(amount, rel=0.01), model
        assert float(ours[model]) == pytest.approx(amount, abs=1e-4), model

    statuses = dict(query(settings, "SELECT pricing_status, COUNT(*) FROM acme_dev.anthropic_cost_daily GROUP BY 1"))
    assert set(statuses) <= {"PRICED", "PRIORITY_TIER"}, "nothing of a published model is UNPRICED"
    seen = set(query(settings, "SELECT DISTINCT pricing_tier, inference_geo, speed FROM acme_dev.anthropic_cost_daily"))
    assert {t for t, _, _ in seen} >= {"standard", "batch", "fast", "standard_long_context"}
    assert ("standard", "us", "standard") in seen
    assert published_models(CONFIGS / "anthropic/seed/data/default_pricing.csv") >= {
        "claude-opus-4-8", "claude-opus-5", "claude-opus-5-5", "claude-sonnet-5", "claude-sonnet-5-5", "claude-haiku-5-5",
        "claude-fable-5", "claude-fable-5-1"}


def test_a_day_before_a_price_cut_keeps_the_old_price(settings, simulator):
    """GPT-5.6 Terra launched at $2.50 / $15 and costs $2.00 / $12 from 2026-07-30."""
    start, end = date(2026, 7, 28), date(2026, 7, 31)
    seed_org(settings, "acme")
    run(settings, "openai/cost/usage_cost", start, end)
    versions = query(settings, "SELECT DISTINCT usage_date, price_version FROM acme_dev.openai_cost_daily"
                               " WHERE model = 'gpt-5.6-terra'")
    assert {day for day, _ in versions} == {start + timedelta(days=i) for i in range(4)}
    for day, version in versions:
        assert version.endswith("@2026-07-09" if day < date(2026, 7, 30) else "@2026-07-30"), (day, version)
    ours = dict(((d, m), c) for d, m, c in query(
        settings, "SELECT usage_date, model, SUM(total_cost_usd) FROM acme_dev.openai_cost_daily"
                  " WHERE model = 'gpt-5.6-terra' GROUP BY 1, 2"))
    billed = openai_bill(simulator.openai_base_url, "sk-admin-sim-acme", start, end)
    for day in (start, end):
        assert float(ours[day, "gpt-5.6-terra"]) == pytest.approx(billed[day, "gpt-5.6-terra"][0], abs=1e-4)
