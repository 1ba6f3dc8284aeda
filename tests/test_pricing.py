"""Pricing rules with hand-computed expectations (no Beam)."""
from __future__ import annotations

import math
from datetime import date, datetime, timezone

import pandas as pd
import pytest

from beam_pipelines.errors import ConfigError
from beam_pipelines.pricing.openai_cost import price_openai_usage
from beam_pipelines.pricing.price_list import TokenPrice, load_price_list, model_family
from tests.conftest import CONFIGS

PRICES = load_price_list(CONFIGS / "openai/seed/data/default_pricing.csv")
DAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 3, tzinfo=timezone.utc)


def usage(model, input_tokens=1_000_000, cached=0, output=1_000_000, batch=False, tier="default", day=DAY,
          org="acme", audio_in=0, audio_out=0):
    return {
        "usage_date": day, "org_slug": org, "row_key": f"{model}-{batch}-{tier}", "run_id": "r1",
        "project_id": "p", "api_key_id": "k", "model": model, "batch": batch, "service_tier": tier,
        "input_tokens": input_tokens, "input_cached_tokens": cached, "output_tokens": output,
        "input_audio_tokens": audio_in, "output_audio_tokens": audio_out, "num_model_requests": 1,
    }


def price(rows, prices=PRICES):
    return price_openai_usage(pd.DataFrame(rows), prices, NOW).to_dict("records")


def test_dated_snapshot_resolves_to_family_and_records_the_price_row():
    [row] = price([usage("gpt-4o-2024-08-06", input_tokens=2_000_000, cached=500_000, output=300_000)])
    # uncached 1.5M x $2.50 + cached 0.5M x $1.25 + output 0.3M x $10
    assert row["input_cost_usd"] == pytest.approx(3.75)
    assert row["cached_input_cost_usd"] == pytest.approx(0.625)
    assert row["output_cost_usd"] == pytest.approx(3.0)
    assert row["total_cost_usd"] == pytest.approx(7.375)
    assert row["price_model"] == "gpt-4o"
    assert row["price_version"] == "gpt-4o:default@2024-10-02"
    assert row["pricing_status"] == "PRICED"
    assert row["input_uncached_tokens"] == 1_500_000


def test_snapshot_with_its_own_price_keeps_it():
    [row] = price([usage("gpt-4o-2024-05-13")])
    assert row["total_cost_usd"] == pytest.approx(5.0 + 15.0)
    assert row["price_model"] == "gpt-4o-2024-05-13"


def test_effective_dates_pick_the_price_in_force_on_the_usage_day():
    before, after = price([usage("o3", day=date(2025, 5, 1)), usage("o3", day=date(2025, 7, 1))])
    assert before["total_cost_usd"] == pytest.approx(10.0 + 40.0)
    assert after["total_cost_usd"] == pytest.approx(2.0 + 8.0)
    assert before["price_version"] == "o3:default@2025-04-16"


def test_batch_uses_published_batch_row_and_derives_missing_cached_rate():
    [row] = price([usage("gpt-4.1-mini", input_tokens=1_000_000, cached=400_000, output=0, batch=True)])
    # batch row: input $0.20; cached not published -> 50% of standard cached $0.10 = $0.05
    assert row["input_cost_usd"] == pytest.approx(0.6 * 0.20)
    assert row["cached_input_cost_usd"] == pytest.approx(0.4 * 0.05)
    assert row["pricing_tier"] == "batch"


def test_batch_without_a_batch_row_is_half_the_standard_price():
    [row] = price([usage("o4-mini-2025-04-16", batch=True)])
    assert row["total_cost_usd"] == pytest.approx(0.55 + 2.20)  # published batch row
    [row] = price([usage("gpt-5-chat-latest", batch=True)])
    assert row["total_cost_usd"] == pytest.approx((1.25 + 10.0) / 2)
    assert row["price_version"] == "gpt-5-chat-latest:batch@2025-08-07:derived"


def test_flex_and_priority_tiers():
    flex, priority = price([usage("gpt-5", tier="flex"), usage("gpt-5", tier="priority")])
    assert flex["total_cost_usd"] == pytest.approx(0.625 + 5.0)
    assert priority["total_cost_usd"] == pytest.approx(2.5 + 20.0)


def test_unknown_model_and_unpublished_tier_are_null_never_zero():
    unknown, fine_tuned, no_flex = price([
        usage("gpt-9-ultra"), usage("ft:gpt-4o-mini-2024-07-18:acme::x1"), usage("gpt-4.1", tier="flex"),
    ])
    for row in (unknown, fine_tuned, no_flex):
        assert row["pricing_status"] == "UNPRICED"
        assert math.isnan(row["total_cost_usd"])
        assert math.isnan(row["input_cost_usd"]) and math.isnan(row["audio_cost_usd"])
        assert row["price_version"] is None


def test_usage_before_any_price_row_is_unpriced():
    [row] = price([usage("gpt-5", day=date(2024, 1, 1))])
    assert row["pricing_status"] == "UNPRICED"


def test_audio_tokens_use_audio_rates_only_where_priced():
    [audio] = price([usage("gpt-4o-audio-preview", input_tokens=1_000_000, output=1_000_000,
                           audio_in=250_000, audio_out=100_000)])
    # text: 0.75M x 2.50 in, 0.9M x 10 out; audio: 0.25M x 40 + 0.1M x 80
    assert audio["input_cost_usd"] == pytest.approx(1.875)
    assert audio["output_cost_usd"] == pytest.approx(9.0)
    assert audio["audio_cost_usd"] == pytest.approx(10.0 + 8.0)
    assert audio["total_cost_usd"] == pytest.approx(1.875 + 9.0 + 18.0)
    [plain] = price([usage("gpt-4o", audio_in=250_000)])
    assert plain["audio_cost_usd"] == 0 and plain["total_cost_usd"] == pytest.approx(12.5)


def test_org_override_wins_for_that_org_only():
    override = TokenPrice("gpt-4o", "default", date(2026, 1, 1), {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 4.0,
                          "cached_input_usd_per_mtok": 0.5}, org_slug="acme")
    prices = PRICES.with_overrides([override])
    acme, other = price([usage("gpt-4o-2024-08-06"), usage("gpt-4o-2024-08-06", org="globex")], prices)
    assert acme["total_cost_usd"] == pytest.approx(5.0)
    assert acme["price_version"] == "gpt-4o:default@2026-01-01:org=acme"
    assert other["total_cost_usd"] == pytest.approx(12.5)


def test_model_family():
    assert model_family("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert model_family("claude-3-haiku-20240307") == "claude-3-haiku"
    assert model_family("gpt-5") == "gpt-5"


def test_price_list_errors_name_line_and_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("model,service_tier,effective_from,input_usd_per_mtok,output_usd_per_mtok\n"
                    "gpt-x,default,2025-01-01,abc,1\n")
    with pytest.raises(ConfigError, match="p.csv: line 2: input_usd_per_mtok: not a number"):
        load_price_list(path)
    path.write_text("model,service_tier,effective_from,input_usd_per_mtok,output_usd_per_mtok\n"
                    "gpt-x,default,2025-13-01,1,1\n")
    with pytest.raises(ConfigError, match="effective_from"):
        load_price_list(path)
    path.write_text("model,service_tier,effective_from,input_usd_per_mtok,output_usd_per_mtok\n"
                    "gpt-x,default,2025-01-01,-1,1\n")
    with pytest.raises(ConfigError, match="must be >= 0"):
        load_price_list(path)
