"""Anthropic cost maths on a batch of usage rows, as Anthropic bills:

    cost = uncached × input + cache read × cache_read + 5m writes × cache_write_5m
           + 1h writes × cache_write_1h + output × output + web searches × per-request fee

Input buckets are exclusive (total input = uncached + cache read + both cache writes), so
nothing is counted twice. Batch is 50% of every token rate (derived when not listed). A result in
the ``200k-1M`` context window is priced entirely at the model's long-context rates; a model
without them is UNPRICED. Priority Tier usage is billed under a separate commitment, so it is
flagged ``PRIORITY_TIER`` with a NULL cost rather than priced at list.
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from beam_pipelines.pricing.price_list import PriceList
from beam_pipelines.pricing.rates import counts, lookup_rates

BATCH_TIERS = {"batch": "standard", "batch_long_context": "standard_long_context"}
LONG_CONTEXT = "200k-1M"
PRIORITY_TIERS = {"priority", "priority_on_demand"}
PRICED, UNPRICED, PRIORITY_TIER = "PRICED", "UNPRICED", "PRIORITY_TIER"
PER_TOKEN = 1e-6
COMPONENTS = (  # (token column, rate column, cost column)
    ("uncached_input_tokens", "input_usd_per_mtok", "input_cost_usd"),
    ("cache_read_input_tokens", "cache_read_usd_per_mtok", "cache_read_cost_usd"),
    ("cache_creation_5m_input_tokens", "cache_write_5m_usd_per_mtok", "cache_write_5m_cost_usd"),
    ("cache_creation_1h_input_tokens", "cache_write_1h_usd_per_mtok", "cache_write_1h_cost_usd"),
    ("output_tokens", "output_usd_per_mtok", "output_cost_usd"),
)
PASS_THROUGH = ("usage_date", "org_slug", "row_key", "run_id", "model", "workspace_id", "api_key_id",
                "service_tier", "context_window")


def pricing_tiers(raw: pd.DataFrame) -> np.ndarray:
    tier = raw["service_tier"].astype(object).where(raw["service_tier"].notna(), "standard").to_numpy(dtype=object)
    long = (raw["context_window"].astype(object) == LONG_CONTEXT).to_numpy()
    return np.where(long, tier.astype(str) + "_long_context", tier)


def price_anthropic_usage(raw: pd.DataFrame, prices: PriceList, loaded_at: datetime) -> pd.DataFrame:
    tiers = pricing_tiers(raw)
    rate_columns = tuple(rate for _, rate, _ in COMPONENTS) + ("web_search_usd_per_request",)
    found = lookup_rates(prices, raw["org_slug"], raw["model"], tiers, raw["usage_date"], rate_columns)
    priority = raw["service_tier"].isin(PRIORITY_TIERS).to_numpy()
    priced = found.priced & ~priority
    for tokens, rate, _ in COMPONENTS:  # a listed model missing a rate it needs is unpriced, not free
        priced &= ~(np.isnan(found.rate(rate)) & (counts(raw, tokens) > 0))
    priced &= ~(np.isnan(found.rate("web_search_usd_per_request")) & (counts(raw, "web_search_requests") > 0))
    out = {name: raw[name].array for name in PASS_THROUGH}
    out["price_model"] = np.where(priority, None, found.price_model)
    out["pricing_tier"] = tiers
    total = np.zeros(len(raw))
    for tokens, rate, cost in COMPONENTS:
        n = counts(raw, tokens)
        out[tokens] = n
        out[cost] = np.where(priced, n * np.nan_to_num(found.rate(rate)) * PER_TOKEN, np.nan)
        total = total + out[cost]
    searches = counts(raw, "web_search_requests")
    out["web_search_requests"] = searches
    out["web_search_cost_usd"] = np.where(priced, searches * np.nan_to_num(found.rate("web_search_usd_per_request")), np.nan)
    out["total_input_tokens"] = sum(counts(raw, tokens) for tokens, _, _ in COMPONENTS[:4])
    out["total_cost_usd"] = total + out["web_search_cost_usd"]
    out["pricing_status"] = np.where(priority, PRIORITY_TIER, np.where(priced, PRICED, UNPRICED))
    out["price_version"] = np.where(priced, found.price_version, None)
    out["loaded_at"] = loaded_at
    return pd.DataFrame(out)
