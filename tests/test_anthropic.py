"""Anthropic: pricing rules by hand, the client's retry rules against the simulator, the pipeline."""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pytest
import requests

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.errors import ProviderError
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.pricing.anthropic_cost import BATCH_TIERS, price_anthropic_usage
from beam_pipelines.pricing.price_list import load_price_list
from beam_pipelines.providers.anthropic import AnthropicUsageClient, UsagePage, usage_rows
from beam_pipelines.providers.http import RetryPolicy
from beam_pipelines.testing.simulator import anthropic_data
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS

PRICES = load_price_list(CONFIGS / "anthropic/seed/data/default_pricing.csv", batch_tiers=BATCH_TIERS)
DAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 3, tzinfo=timezone.utc)
KEY = "sk-ant-admin01-test"
M = 1_000_000


def usage(model, tier="standard", window="0-200k", uncached=M, read=0, w5=0, w1=0, out=0, searches=0, workspace="w",
          geo="global", speed="standard", day=DAY):
    return {"usage_date": day, "org_slug": "acme", "row_key": f"{model}{tier}{window}{geo}{speed}", "run_id": "r",
            "model": model, "workspace_id": workspace, "api_key_id": None, "service_tier": tier, "context_window": window,
            "inference_geo": geo, "speed": speed,
            "uncached_input_tokens": uncached, "cache_read_input_tokens": read, "cache_creation_5m_input_tokens": w5,
            "cache_creation_1h_input_tokens": w1, "output_tokens": out, "web_search_requests": searches}


def price(*rows):
    return price_anthropic_usage(pd.DataFrame(list(rows)), PRICES, NOW).to_dict("records")


def D(value) -> Decimal:
    return Decimal(str(value))


def test_every_component_at_its_published_rate():
    [row] = price(usage("claude-sonnet-4-5-20250929", uncached=2 * M, read=M, w5=M, w1=M, out=M, searches=1000))
    assert row["input_cost_usd"] == D(6)  # 2M x $3
    assert row["cache_read_cost_usd"] == D("0.30")  # 0.1x input
    assert row["cache_write_5m_cost_usd"] == D("3.75")  # 1.25x input
    assert row["cache_write_1h_cost_usd"] == D(6)  # 2x input
    assert row["output_cost_usd"] == D(15)
    assert row["web_search_cost_usd"] == D(10)  # $10 per 1,000
    assert row["total_cost_usd"] == D("41.05")
    assert row["total_input_tokens"] == 5 * M
    assert row["price_model"] == "claude-sonnet-4-5" and row["pricing_status"] == "PRICED"


@pytest.mark.parametrize("model, total", [
    ("claude-fable-5-2", 8 + 40), ("claude-opus-5-5", 4 + 20), ("claude-opus-4-8", 5 + 25), ("claude-sonnet-5-5", 2 + 10),
    ("claude-haiku-5-5", "0.6"), ("claude-opus-4-5-20251101", 5 + 25), ("claude-opus-4-1-20250805", 15 + 75),
    ("claude-3-opus-20240229", 15 + 75), ("claude-haiku-4-5-20251001", 1 + 5), ("claude-3-5-haiku-20241022", "4.8"),
    ("claude-3-haiku-20240307", "1.5"), ("claude-3-7-sonnet-20250219", 3 + 15), ("claude-sonnet-4-20250514", 3 + 15),
])
def test_each_family_against_the_published_list(model, total):
    [row] = price(usage(model, out=M, day=date(2026, 11, 20)))
    assert row["total_cost_usd"] == D(total)


def test_cache_read_is_the_published_figure_not_a_multiplier():
    """Opus 5.5 reads cache at $0.20 (0.05x input), Sonnet 5.5 from 2026-10-07 at $0.10 (before: $0.20)."""
    [opus] = price(usage("claude-opus-5-5", uncached=0, read=M, day=date(2026, 11, 20)))
    assert opus["cache_read_cost_usd"] == D("0.2")
    before, after = price(usage("claude-sonnet-5-5", uncached=0, read=M, day=date(2026, 10, 6)),
                          usage("claude-sonnet-5-5", uncached=0, read=M, day=date(2026, 10, 7)))
    assert (before["cache_read_cost_usd"], after["cache_read_cost_usd"]) == (D("0.2"), D("0.1"))


def test_batch_uses_the_published_batch_table_and_derives_only_where_none_is_published():
    [row] = price(usage("claude-haiku-4-5", tier="batch", uncached=M, read=M, w5=M, w1=M, out=M, searches=100))
    assert row["total_cost_usd"] == D((1 + 0.1 + 1.25 + 2 + 5) / 2 + 1.0)  # web search is not discounted
    assert row["price_version"] == "claude-haiku-4-5:batch@2025-10-15"
    [old] = price(usage("claude-3-haiku-20240307", tier="batch", out=M))
    assert old["total_cost_usd"] == D("0.75") and old["price_version"].endswith(":derived")


def test_long_context_prices_every_token_at_long_context_rates():
    [row] = price(usage("claude-sonnet-4-20250514", window="200k-1M", uncached=M, read=M, w5=M, w1=M, out=M))
    assert row["total_cost_usd"] == D(6 + 0.6 + 7.5 + 12 + 22.5)
    [batch] = price(usage("claude-sonnet-4-5", tier="batch", window="200k-1M", uncached=M, out=M))
    assert batch["total_cost_usd"] == D((6 + 22.5) / 2)
    [no_long] = price(usage("claude-haiku-4-5", window="200k-1M", out=M))
    assert no_long["pricing_status"] == "UNPRICED" and no_long["total_cost_usd"] is None


def test_the_1m_window_premium_ends_when_the_book_says_so():
    """Sonnet 4.6 charged $6/$22.50 over 200K until 2026-03-12; from 2026-03-13 the window is standard."""
    before, after = price(usage("claude-sonnet-4-6", window="200k-1M", out=M, day=date(2026, 3, 12)),
                          usage("claude-sonnet-4-6", window="200k-1M", out=M, day=date(2026, 3, 13)))
    assert (before["total_cost_usd"], after["total_cost_usd"]) == (D("28.5"), D(18))
    [fable] = price(usage("claude-fable-5-2", window="200k-1M", out=M, day=date(2026, 11, 20)))
    assert fable["total_cost_usd"] == D(48) and fable["pricing_tier"] == "standard_long_context"


def test_haiku_5_5_over_the_window_costs_five_times():
    short, long = price(usage("claude-haiku-5-5", read=M, out=M, day=date(2026, 11, 20)),
                        usage("claude-haiku-5-5", window="200k-1M", read=M, out=M, day=date(2026, 11, 20)))
    assert short["total_cost_usd"] == D("0.61") and long["total_cost_usd"] == D("3.05")


def test_us_inference_costs_1_1x_on_tokens_but_not_on_web_search():
    [row] = price(usage("claude-opus-5-5", geo="us", uncached=M, out=M, searches=1000, day=date(2026, 11, 20)))
    assert row["input_cost_usd"] == D("4.4") and row["output_cost_usd"] == D(22)
    assert row["web_search_cost_usd"] == D(10) and row["price_multiplier"] == D("1.1")


def test_fast_mode_is_its_own_table_and_unpublished_cache_rates_never_price_at_zero():
    fast, fast_cached = price(usage("claude-opus-5-5", speed="fast", out=M, day=date(2026, 11, 20)),
                              usage("claude-opus-5-5", speed="fast", read=M, day=date(2026, 11, 20)))
    assert fast["total_cost_usd"] == D(48) and fast["pricing_tier"] == "fast"
    assert fast_cached["pricing_status"] == "UNPRICED" and fast_cached["total_cost_usd"] is None


def test_unknown_model_and_priority_tier_are_flagged_with_null_cost():
    unknown, priority = price(usage("claude-5-mystery"), usage("claude-sonnet-4-5", tier="priority"))
    assert unknown["pricing_status"] == "UNPRICED" and unknown["total_cost_usd"] is None
    assert priority["pricing_status"] == "PRIORITY_TIER" and priority["total_cost_usd"] is None
    assert priority["total_input_tokens"] == M


def test_the_documents_example_result_is_carried_whole(simulator):
    """The usage report's own example (reference sheet), through the client's row mapping and the pricer."""
    example = {"uncached_input_tokens": 1500, "cache_creation": {"ephemeral_1h_input_tokens": 1000,
               "ephemeral_5m_input_tokens": 500}, "cache_read_input_tokens": 200, "output_tokens": 500,
               "server_tool_use": {"web_search_requests": 10}, "api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
               "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ", "model": "claude-sonnet-4-20250514",
               "service_tier": "standard", "context_window": "0-200k"}
    page = UsagePage.model_validate({"data": [{"starting_at": "2026-03-02T00:00:00Z", "ending_at": "2026-03-03T00:00:00Z",
                                               "results": [example]}], "has_more": False, "next_page": None})
    [row] = usage_rows(page, "acme", "r", NOW)
    assert (row["cache_creation_1h_input_tokens"], row["cache_creation_5m_input_tokens"], row["web_search_requests"]) \
        == (1000, 500, 10)
    [priced] = price_anthropic_usage(pd.DataFrame([row]), PRICES, NOW).to_dict("records")
    assert priced["total_input_tokens"] == 3200
    # 1500x3 + 500x3.75 + 1000x6 + 200x0.3 + 500x15 per MTok, + 10 searches x $0.01
    assert priced["total_cost_usd"] == D("0.119935")


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
    monkeypatch.setattr("beam_pipelines.providers.http.backoff_sleep", lambda s: None)
    result = run_pipeline(settings, RunRequest("anthropic/usage_cost", orgs=["acme", "globex"], start_date=start, end_date=end))
    status = {r["org_slug"]: r for r in result.runs}
    assert status["acme"]["status"] == "COMPLETED", status["acme"]["error_message"]
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
    assert {day: float(cost) for day, cost in ours} == pytest.approx(billed, abs=1e-4)
