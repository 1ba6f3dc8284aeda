"""Anthropic: pricing rules by hand, the client's retry rules against the simulator, the pipeline."""
from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
import requests

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.errors import ProviderError
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.pricing.anthropic_cost import BATCH_TIERS, price_anthropic_usage
from beam_pipelines.pricing.price_list import load_price_list
from beam_pipelines.providers.anthropic import AnthropicUsageClient, usage_rows
from beam_pipelines.providers.http import RetryPolicy
from beam_pipelines.testing.simulator import anthropic_data
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS

PRICES = load_price_list(CONFIGS / "anthropic/seed/data/default_pricing.csv", batch_tiers=BATCH_TIERS)
DAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 3, tzinfo=timezone.utc)
KEY = "sk-ant-admin01-test"
M = 1_000_000


def usage(model, tier="standard", window="0-200k", uncached=M, read=0, w5=0, w1=0, out=0, searches=0, workspace="w"):
    return {"usage_date": DAY, "org_slug": "acme", "row_key": f"{model}{tier}{window}", "run_id": "r",
            "model": model, "workspace_id": workspace, "api_key_id": None, "service_tier": tier, "context_window": window,
            "uncached_input_tokens": uncached, "cache_read_input_tokens": read, "cache_creation_5m_input_tokens": w5,
            "cache_creation_1h_input_tokens": w1, "output_tokens": out, "web_search_requests": searches}


def price(*rows):
    return price_anthropic_usage(pd.DataFrame(list(rows)), PRICES, NOW).to_dict("records")


def test_every_component_at_its_published_rate():
    [row] = price(usage("claude-sonnet-4-5-20250929", uncached=2 * M, read=M, w5=M, w1=M, out=M, searches=1000))
    assert row["input_cost_usd"] == pytest.approx(6.0)  # 2M x $3
    assert row["cache_read_cost_usd"] == pytest.approx(0.30)  # 0.1x input
    assert row["cache_write_5m_cost_usd"] == pytest.approx(3.75)  # 1.25x input
    assert row["cache_write_1h_cost_usd"] == pytest.approx(6.0)  # 2x input
    assert row["output_cost_usd"] == pytest.approx(15.0)
    assert row["web_search_cost_usd"] == pytest.approx(10.0)  # $10 per 1,000
    assert row["total_cost_usd"] == pytest.approx(6 + 0.3 + 3.75 + 6 + 15 + 10)
    assert row["total_input_tokens"] == 5 * M
    assert row["price_model"] == "claude-sonnet-4-5" and row["pricing_status"] == "PRICED"


@pytest.mark.parametrize("model, total", [
    ("claude-opus-4-5-20251101", 5 + 25), ("claude-opus-4-1-20250805", 15 + 75), ("claude-3-opus-20240229", 15 + 75),
    ("claude-haiku-4-5-20251001", 1 + 5), ("claude-3-5-haiku-20241022", 0.8 + 4), ("claude-3-haiku-20240307", 0.25 + 1.25),
    ("claude-3-7-sonnet-20250219", 3 + 15), ("claude-sonnet-4-20250514", 3 + 15),
])
def test_each_family_against_the_published_list(model, total):
    [row] = price(usage(model, out=M))
    assert row["total_cost_usd"] == pytest.approx(total)


def test_batch_is_half_of_every_token_rate_but_not_web_search():
    [row] = price(usage("claude-haiku-4-5", tier="batch", uncached=M, read=M, w5=M, w1=M, out=M, searches=100))
    assert row["total_cost_usd"] == pytest.approx((1 + 0.1 + 1.25 + 2 + 5) / 2 + 1.0)
    assert row["price_version"] == "claude-haiku-4-5:batch@2025-10-15:derived"


def test_long_context_prices_every_token_at_long_context_rates():
    [row] = price(usage("claude-sonnet-4-20250514", window="200k-1M", uncached=M, read=M, w5=M, w1=M, out=M))
    assert row["total_cost_usd"] == pytest.approx(6 + 0.6 + 7.5 + 12 + 22.5)
    [batch] = price(usage("claude-sonnet-4-5", tier="batch", window="200k-1M", uncached=M, out=M))
    assert batch["total_cost_usd"] == pytest.approx((6 + 22.5) / 2)
    [no_long] = price(usage("claude-haiku-4-5", window="200k-1M", out=M))
    assert no_long["pricing_status"] == "UNPRICED" and math.isnan(no_long["total_cost_usd"])


def test_unknown_model_and_priority_tier_are_flagged_with_null_cost():
    unknown, priority = price(usage("claude-5-mystery"), usage("claude-sonnet-4-5", tier="priority"))
    assert unknown["pricing_status"] == "UNPRICED" and math.isnan(unknown["total_cost_usd"])
    assert priority["pricing_status"] == "PRIORITY_TIER" and math.isnan(priority["total_cost_usd"])
    assert priority["total_input_tokens"] == M


def _client(sim, key=KEY, retries=5):
    sleeps = []
    return AnthropicUsageClient(key, sim.anthropic_base_url, RetryPolicy(retries, 0.5, 4, 5), sleep=sleeps.append), sleeps


def _rows(client, start=DAY, end=DAY + timedelta(days=2)):
    return [r for p in client.messages_pages(start, end) for r in usage_rows(p, "acme", "r", NOW)]


def _expected(key, start=DAY, days=3):
    return [r for i in range(days) for r in anthropic_data.day_results(key, start + timedelta(days=i))]


def test_pages_through_everything_keeping_default_workspace_and_console_rows(simulator):
    client, _ = _client(simulator)
    rows = _rows(client)
    expected = _expected(KEY)
    assert client.requests_made > 3
    assert [r["output_tokens"] for r in rows] == [e["output_tokens"] for e in expected]
    assert any(r["workspace_id"] is None for r in rows) and any(r["api_key_id"] is None for r in rows)
    assert {r["context_window"] for r in rows} == {"0-200k", "200k-1M"}


def test_529_storm_and_429_without_retry_after_back_off_with_jitter(simulator):
    simulator.faults.add(KEY, ["529", "529", "529", "429-no-retry-after", "429:2"])
    client, sleeps = _client(simulator)
    assert len(_rows(client)) == len(_expected(KEY))
    assert len(sleeps) == 5 and sleeps[4] == 2.0
    assert all(0 < s <= 4 for s in sleeps[:4])


def test_spend_limit_and_auth_errors_are_not_retried(simulator):
    simulator.faults.add(KEY, ["spend-limit"])
    client, sleeps = _client(simulator)
    with pytest.raises(ProviderError, match="HTTP 429: rate_limit_error: .*spend limit"):
        _rows(client)
    assert sleeps == []
    client, sleeps = _client(simulator, key="sk-ant-api03-not-admin")
    with pytest.raises(ProviderError, match="HTTP 401: authentication_error: invalid x-api-key"):
        _rows(client)
    assert sleeps == []


def test_ending_at_is_never_in_the_future(simulator):
    today = datetime.now(timezone.utc).date()
    client, _ = _client(simulator)
    rows = _rows(client, today - timedelta(days=1), today)  # the simulator answers 400 to a future ending_at
    assert {r["usage_date"] for r in rows} <= {today - timedelta(days=1), today}


def test_pipeline_two_orgs_one_rejected_totals_match_simulator_and_billing(settings, simulator, past_days, monkeypatch):
    start, end = past_days
    seed_org(settings, "acme")
    seed_org(settings, "globex", anthropic_admin_key="sk-ant-api03-wrong-kind")
    simulator.faults.add("sk-ant-admin01-sim-acme", ["529", "429-no-retry-after"])
    monkeypatch.setattr("beam_pipelines.providers.http.time.sleep", lambda s: None)
    result = run_pipeline(settings, RunRequest("anthropic/usage_cost", orgs=["acme", "globex"], start_date=start, end_date=end))
    status = {r["org_slug"]: r for r in result.runs}
    assert status["acme"]["status"] == "COMPLETED"
    assert status["globex"]["status"] == "FAILED" and "HTTP 401" in status["globex"]["error_message"]
    warehouse = LocalWarehouse(settings.warehouse_dir)
    assert warehouse.read_table("globex_dev", "anthropic_cost_daily") is None

    expected = defaultdict(lambda: [0, 0, 0])
    for i in range((end - start).days + 1):
        day = start + timedelta(days=i)
        for r in anthropic_data.day_results("sk-ant-admin01-sim-acme", day):
            expected[day][0] += 1
            expected[day][1] += r["uncached_input_tokens"] + r["cache_read_input_tokens"] + sum(r["cache_creation"].values())
            expected[day][2] += r["output_tokens"]
    _, got = warehouse.query("SELECT usage_date, COUNT(*), SUM(total_input_tokens), SUM(output_tokens)"
                             " FROM acme_dev.anthropic_cost_daily GROUP BY 1")
    assert {row[0]: list(row[1:]) for row in got} == dict(expected)

    _, ours = warehouse.query("SELECT usage_date, SUM(total_cost_usd) FROM acme_dev.anthropic_cost_daily"
                              " WHERE pricing_status = 'PRICED' GROUP BY 1")
    report = requests.get(f"{simulator.anthropic_base_url}/v1/organizations/cost_report", timeout=10,
                          params={"starting_at": f"{start}T00:00:00Z", "ending_at": f"{end + timedelta(days=1)}T00:00:00Z"},
                          headers={"x-api-key": "sk-ant-admin01-sim-acme", "anthropic-version": "2023-06-01"}).json()
    billed = {date.fromisoformat(b["starting_at"][:10]): sum(float(r["amount"]) for r in b["results"]) / 100
              for b in report["data"]}
    assert dict(ours) == pytest.approx(billed, abs=1e-4)
