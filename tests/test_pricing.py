"""Pricing rules with hand-computed, exact expectations (no Beam), against the published 2026 price book."""
from __future__ import annotations

import csv
from datetime import date, datetime, timezone
from decimal import Decimal as D

import pandas as pd
import pytest

from beam_pipelines.errors import ConfigError
from beam_pipelines.pricing.anthropic_cost import BATCH_TIERS, price_anthropic_usage
from beam_pipelines.pricing.money import cost_nano, usd
from beam_pipelines.pricing.openai_cost import TIER_ALIASES, price_openai_usage
from beam_pipelines.pricing.price_list import TokenPrice, load_price_list, model_family
from tests.conftest import CONFIGS

PRICES = load_price_list(CONFIGS / "openai/seed/data/default_pricing.csv", tier_aliases=TIER_ALIASES)
ANTHROPIC = load_price_list(CONFIGS / "anthropic/seed/data/default_pricing.csv", batch_tiers=BATCH_TIERS)
DAY = date(2026, 11, 20)
NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)
M = 1_000_000


def usage(model, input_tokens=M, cached=0, output=M, batch=False, tier="default", day=DAY, org="acme", **classes):
    return {"usage_date": day, "org_slug": org, "row_key": f"{model}-{batch}-{tier}-{day}", "run_id": "r1",
            "project_id": "p", "api_key_id": "k", "model": model, "batch": batch, "service_tier": tier,
            "input_tokens": input_tokens, "input_cached_tokens": cached, "output_tokens": output,
            "num_model_requests": 1, **classes}


def price(rows, prices=PRICES):
    return price_openai_usage(pd.DataFrame(rows), prices, NOW).to_dict("records")


def test_money_is_exact_and_rounds_half_to_even_at_the_nano_dollar():
    import numpy as np

    tokens = np.array([3, 1, 0, 5])
    rates = np.array([166_667, 500, None, None], dtype=object)  # pico-dollars per token
    assert list(cost_nano(tokens, rates)) == [500, 0, 0, None]  # 500.001 → 500; 0.5 → 0 (even); no tokens → 0
    assert list(usd(np.array([1, None], dtype=object))) == [D("1E-9"), None]
    assert list(cost_nano(np.array([10 ** 15]), np.array([600_000_000], dtype=object))) == [6 * 10 ** 20], \
        "no overflow at any volume"


def test_every_openai_token_class_at_its_own_rate():
    # gpt-6.1-terra, published: input $1, cached $0.05, 30-minute cache write $1.25, output $5 per 1M tokens
    [row] = price([usage("gpt-6.1-terra", input_tokens=4 * M, cached=M, output=2 * M, input_cache_write_tokens=M,
                         input_uncached_tokens=2 * M, input_text_tokens=2 * M, input_cached_text_tokens=M)])
    assert (row["input_cost_usd"], row["cached_input_cost_usd"], row["cache_write_cost_usd"], row["output_cost_usd"]) \
        == (D("2"), D("0.05"), D("1.25"), D("10"))
    assert row["total_cost_usd"] == D("13.30") and row["pricing_status"] == "PRICED"
    assert row["price_version"] == "gpt-6.1-terra:default@2026-10-26"


def test_classes_missing_from_an_older_answer_are_derived_from_the_totals():
    [row] = price([usage("gpt-4.1-mini-2025-04-14", input_tokens=3 * M, cached=M, output=M, input_image_tokens=M // 2)])
    assert (row["input_uncached_tokens"], row["input_text_tokens"], row["input_cached_text_tokens"]) == (2 * M, 1.5 * M, M)
    # gpt-4.1-mini: input $0.40, cached $0.10, output $1.60; images on a text model bill as input
    assert row["input_cost_usd"] == D("0.6") and row["image_input_cost_usd"] == D("0.2")
    assert row["cached_input_cost_usd"] == D("0.1") and row["total_cost_usd"] == D("2.5")


def test_a_day_before_a_price_cut_keeps_the_price_in_force_that_day():
    launch, after = price([usage("gpt-5.6-terra", day=date(2026, 7, 20)), usage("gpt-5.6-terra", day=date(2026, 8, 1))])
    assert launch["total_cost_usd"] == D("2.50") + D("15") and launch["price_version"].endswith("@2026-07-09")
    assert after["total_cost_usd"] == D("2.00") + D("12") and after["price_version"].endswith("@2026-07-30")


def test_tiers_batch_flex_fast_and_its_priority_alias():
    batch, flex, fast, priority, ultrafast = price([
        usage("gpt-6.1-terra", batch=True), usage("gpt-6.1-terra", tier="flex"), usage("gpt-6.1-terra", tier="fast"),
        usage("gpt-6.1-terra", tier="priority"), usage("gpt-6-astra", tier="ultrafast")])
    assert batch["total_cost_usd"] == D("0.5") + D("2.5") and batch["pricing_tier"] == "batch"
    assert flex["total_cost_usd"] == D("0.5") + D("2.5")
    assert fast["total_cost_usd"] == priority["total_cost_usd"] == D("2") + D("10"), "Fast is reported either way"
    assert ultrafast["pricing_status"] == "PRICED" and ultrafast["price_version"].startswith("gpt-6-astra:ultrafast@")


def test_batch_without_a_batch_row_is_half_the_standard_price_and_says_so():
    [row] = price([usage("gpt-5-chat-latest", batch=True, day=date(2025, 9, 1))])
    assert row["total_cost_usd"] == (D("1.25") + D("10")) / 2
    assert row["price_version"] == "gpt-5-chat-latest:batch@2025-08-07:derived"


def test_unknown_models_unpublished_tiers_and_unpriced_classes_are_null_never_zero():
    rows = price([usage("gpt-9-ultra"), usage("ft:gpt-4o-mini-2024-07-18:acme::x1"), usage("gpt-4.1", tier="scale"),
                  usage("gpt-6.1-terra", output_audio_tokens=1000)])
    for row in rows:
        assert row["pricing_status"] == "UNPRICED" and row["price_version"] is None
        assert row["total_cost_usd"] is None and row["input_cost_usd"] is None


def test_audio_tokens_use_audio_rates():
    [row] = price([usage("gpt-realtime-2", input_tokens=M, output=M, input_audio_tokens=M // 4, output_audio_tokens=M // 10)])
    rates = next(r for r in csv.DictReader(open(CONFIGS / "openai/seed/data/default_pricing.csv"))
                 if r["model"] == "gpt-realtime-2" and r["service_tier"] == "default")
    expected = (D(rates["input_usd_per_mtok"]) * D("0.75") + D(rates["audio_input_usd_per_mtok"]) * D("0.25")
                + D(rates["output_usd_per_mtok"]) * D("0.9") + D(rates["audio_output_usd_per_mtok"]) * D("0.1"))
    assert row["total_cost_usd"] == expected.quantize(D("1E-9"))


def test_org_override_wins_for_that_org_only():
    override = TokenPrice("gpt-4o", "default", date(2026, 1, 1), {"input_usd_per_mtok": D(1), "output_usd_per_mtok": D(4),
                          "cached_input_usd_per_mtok": D("0.5")}, org_slug="acme")
    prices = PRICES.with_overrides([override])
    acme, other = price([usage("gpt-4o-2024-08-06"), usage("gpt-4o-2024-08-06", org="globex")], prices)
    assert acme["total_cost_usd"] == D(5) and acme["price_version"] == "gpt-4o:default@2026-01-01:org=acme"
    assert other["total_cost_usd"] == D("12.5")


def anthropic(model, tier="standard", window="0-200k", geo=None, speed=None, day=DAY, **tokens):
    base = {"uncached_input_tokens": M, "cache_read_input_tokens": M, "cache_creation_5m_input_tokens": M,
            "cache_creation_1h_input_tokens": M, "output_tokens": M, "web_search_requests": 10}
    return {"usage_date": day, "org_slug": "acme", "row_key": f"{model}{tier}{window}{geo}{speed}", "run_id": "r",
            "model": model, "workspace_id": None, "api_key_id": None, "service_tier": tier, "context_window": window,
            "inference_geo": geo, "speed": speed, **base, **tokens}


def price_anthropic(rows):
    return price_anthropic_usage(pd.DataFrame(rows), ANTHROPIC, NOW).to_dict("records")


def test_claude_rates_as_published_including_a_cache_read_that_breaks_the_usual_ratio():
    # Opus 5.5: input $4, 5m write $5, 1h write $8, cache read $0.20 (0.05x input, not 0.1x), output $20
    [row] = price_anthropic([anthropic("claude-opus-5-5")])
    assert row["cache_read_cost_usd"] == D("0.2") and row["web_search_cost_usd"] == D("0.1")
    assert row["total_cost_usd"] == D(4) + D(5) + D(8) + D("0.2") + D(20) + D("0.1")


def test_us_inference_costs_one_point_one_times_every_token_category():
    [glob, us] = price_anthropic([anthropic("claude-opus-5-5", geo="global"), anthropic("claude-opus-5-5", geo="us")])
    assert us["input_cost_usd"] == glob["input_cost_usd"] * D("1.1") and us["price_multiplier"] == D("1.1")
    assert us["web_search_cost_usd"] == glob["web_search_cost_usd"], "per-request fees are not multiplied"


def test_long_context_is_priced_only_from_long_context_rows():
    old, new, never = price_anthropic([anthropic("claude-sonnet-4-5-20250929", window="200k-1M", day=date(2026, 3, 1)),
                                       anthropic("claude-sonnet-5", window="200k-1M"),
                                       anthropic("claude-haiku-4-5", window="200k-1M")])
    assert old["pricing_tier"] == "standard_long_context" and old["input_cost_usd"] == D(6)
    assert new["pricing_tier"] == "standard_long_context" and new["input_cost_usd"] == D(2), "1M at standard pricing"
    assert never["pricing_status"] == "UNPRICED", "a model that never served the window is not guessed"


def test_priority_is_flagged_and_fast_mode_without_cache_prices_is_unpriced():
    priority, fast, fast_plain = price_anthropic([
        anthropic("claude-opus-5-5", tier="priority"), anthropic("claude-opus-5-5", speed="fast"),
        anthropic("claude-opus-5-5", speed="fast", cache_read_input_tokens=0, cache_creation_5m_input_tokens=0,
                  cache_creation_1h_input_tokens=0, web_search_requests=0)])
    assert priority["pricing_status"] == "PRIORITY_TIER" and priority["total_cost_usd"] is None
    assert fast["pricing_status"] == "UNPRICED", "fast-mode cache prices are not published: never priced at $0"
    assert fast_plain["pricing_status"] == "PRICED" and fast_plain["total_cost_usd"] == D(8) + D(40)


def test_model_family():
    assert model_family("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert model_family("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert model_family("gpt-6.2-sol") == "gpt-6.2-sol"


def test_every_price_row_cites_its_source():
    for provider in ("openai", "anthropic"):
        with open(CONFIGS / f"{provider}/seed/data/default_pricing.csv") as fh:
            for row in csv.DictReader(fh):
                assert row["source_url"].startswith("https://") and date.fromisoformat(row["source_read_on"])


def test_price_list_errors_name_line_and_column(tmp_path):
    path = tmp_path / "p.csv"
    for body, message in (("gpt-x,default,2025-01-01,abc,1", "line 2: input_usd_per_mtok: not a number"),
                          ("gpt-x,default,2025-13-01,1,1", "effective_from"),
                          ("gpt-x,default,2025-01-01,-1,1", "must be a number >= 0"),
                          ("gpt-x,default,2025-01-01,0.1234567,1", "more than 6 decimals")):
        path.write_text("model,service_tier,effective_from,input_usd_per_mtok,output_usd_per_mtok\n" + body + "\n")
        with pytest.raises(ConfigError, match=message):
            load_price_list(path)


def test_the_int64_path_gives_the_exact_path_to_the_nano_dollar():
    """Costs without a multiplier are computed in int64 when every product fits; they must equal the exact
    Python-integer path everywhere, ties included, and anything larger must take the exact path."""
    import numpy as np

    from beam_pipelines.pricing import money

    rng = np.random.default_rng(7)
    tokens = np.concatenate([rng.integers(0, 10 ** 9, 5000), [0, 1, 3, 5, 500, 1500, 2500]])
    rates = np.array([None if r % 11 == 0 else int(r) for r in rng.integers(0, 10 ** 8, len(tokens) - 7)]
                     + [None, 500, 500, 500, 1, 1, 1], dtype=object)  # 1.5 and 2.5 nano: ties to even
    fast = money._cost_nano_int64(tokens, rates)
    exact = money.cost_nano(tokens, rates, np.array([1] * len(tokens), dtype=object))  # a multiplier: the exact path
    assert fast is not None and list(fast) == list(exact)
    assert all(v is None or type(v) is int for v in fast)
    assert money._cost_nano_int64(np.array([10 ** 15]), np.array([600_000_000], dtype=object)) is None
