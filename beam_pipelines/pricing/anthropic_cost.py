"""Anthropic cost maths on a batch of usage rows, as Anthropic bills, in exact money:

    cost = uncached × input + cache read × cache_read + 5m writes × cache_write_5m
           + 1h writes × cache_write_1h + output × output + web searches × per-request fee

Input buckets are exclusive (total input = uncached + cache read + both cache writes), so nothing is
counted twice. Tiers: ``batch`` and ``standard`` as reported, ``fast`` when the usage was run with
``speed=fast``. Batch rates are the published batch rows, or 50% of every token rate where none is
published. A result in the ``200k-1M`` context window is priced at the model's long-context rows
and only there: models from Claude 4.6 on "include the full 1M token context window at standard
pricing", which the price book states as long-context rows equal to the standard ones, so a model
without such rows (it never served the window) comes out UNPRICED rather than guessed. Usage run
in the US (``inference_geo=us``) costs 1.1× on every token category, as the pricing page states;
web search is per request and not multiplied. Priority Tier usage is billed under a separate
commitment: it is flagged ``PRIORITY_TIER`` with a NULL cost rather than priced at list. A token
class without a published rate makes the row UNPRICED.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import numpy as np
import pandas as pd

from beam_pipelines.pricing.money import cost_nano, usd
from beam_pipelines.pricing.price_list import PriceList
from beam_pipelines.pricing.rates import counts, lookup_rates

BATCH_TIERS = {"batch": "standard", "batch_long_context": "standard_long_context"}
LONG_CONTEXT = "200k-1M"
PRIORITY_TIERS = {"priority", "priority_on_demand"}
GEO_MULTIPLIERS = {"us": Decimal("1.1")}  # pricing page: "a 1.1x multiplier on all token pricing categories"
PRICED, UNPRICED, PRIORITY_TIER = "PRICED", "UNPRICED", "PRIORITY_TIER"
TOKEN_CLASSES = (  # (token column, rate column, cost column)
    ("uncached_input_tokens", "input_usd_per_mtok", "input_cost_usd"),
    ("cache_read_input_tokens", "cache_read_usd_per_mtok", "cache_read_cost_usd"),
    ("cache_creation_5m_input_tokens", "cache_write_5m_usd_per_mtok", "cache_write_5m_cost_usd"),
    ("cache_creation_1h_input_tokens", "cache_write_1h_usd_per_mtok", "cache_write_1h_cost_usd"),
    ("output_tokens", "output_usd_per_mtok", "output_cost_usd"),
)
REQUEST_CLASSES = (("web_search_requests", "web_search_usd_per_request", "web_search_cost_usd"),)
PASS_THROUGH = ("usage_date", "org_slug", "row_key", "run_id", "model", "workspace_id", "api_key_id",
                "service_tier", "context_window", "inference_geo", "speed")
COST_COLUMNS = [*PASS_THROUGH, "price_model", "pricing_tier", "price_multiplier",
                *(t for t, _, _ in TOKEN_CLASSES), *(t for t, _, _ in REQUEST_CLASSES), "total_input_tokens",
                *(c for _, _, c in TOKEN_CLASSES), *(c for _, _, c in REQUEST_CLASSES), "total_cost_usd",
                "pricing_status", "price_version", "loaded_at"]


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    return raw[name] if name in raw else pd.Series([None] * len(raw), index=raw.index, dtype=object)


def base_tiers(raw: pd.DataFrame) -> np.ndarray:
    tier = _column(raw, "service_tier").astype(object).where(_column(raw, "service_tier").notna(), "standard")
    tier = tier.to_numpy(dtype=object)
    fast = (_column(raw, "speed").astype(object) == "fast").to_numpy()
    return np.where(fast & (tier == "standard"), "fast", tier)


def price_anthropic_usage(raw: pd.DataFrame, prices: PriceList, loaded_at: datetime) -> pd.DataFrame:
    if raw.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    raw = raw.assign(**{c: _column(raw, c) for c in PASS_THROUGH if c not in raw})
    tiers = base_tiers(raw)
    long = (raw["context_window"].astype(object) == LONG_CONTEXT).to_numpy()
    rate_columns = tuple(r for _, r, _ in TOKEN_CLASSES + REQUEST_CLASSES)
    found = lookup_rates(prices, raw["org_slug"], raw["model"], tiers, raw["usage_date"], rate_columns)
    if long.any():  # the 200k-1M window is priced only from the model's long-context rows
        long_tiers = np.where(long, tiers.astype(str) + "_long_context", tiers)
        found = lookup_rates(prices, raw["org_slug"], raw["model"], long_tiers, raw["usage_date"], rate_columns)
        tiers = long_tiers
    multiplier = raw["inference_geo"].astype(object).map(lambda g: GEO_MULTIPLIERS.get(g, Decimal(1))).to_numpy()
    priority = raw["service_tier"].isin(PRIORITY_TIERS).to_numpy()
    priced = found.priced & ~priority
    nano, out = {}, {name: raw[name].array for name in PASS_THROUGH}
    for tokens, rate, cost in TOKEN_CLASSES:
        n = counts(raw, tokens)
        nano[cost] = cost_nano(n, found.rate(rate), multiplier)
        out[tokens] = n
    for tokens, rate, cost in REQUEST_CLASSES:  # $ per request: nano-dollars per request × 1000 = pico
        n = counts(raw, tokens)
        nano[cost] = cost_nano(n, found.rate(rate))
        out[tokens] = n
    for cost in nano:
        priced &= ~pd.isna(nano[cost]).astype(bool)
    out["price_model"] = np.where(priority, None, found.price_model)
    out["pricing_tier"] = tiers
    out["price_multiplier"] = multiplier
    out["total_input_tokens"] = sum(counts(raw, tokens) for tokens, _, _ in TOKEN_CLASSES[:4])
    total = np.zeros(len(raw), dtype=object)
    for _, _, cost in TOKEN_CLASSES + REQUEST_CLASSES:
        out[cost] = usd(np.where(priced, nano[cost], None))
        total = total + np.where(priced, nano[cost], 0)
    out["total_cost_usd"] = usd(np.where(priced, total, None))
    out["pricing_status"] = np.where(priority, PRIORITY_TIER, np.where(priced, PRICED, UNPRICED))
    out["price_version"] = np.where(priced, found.price_version, None)
    out["loaded_at"] = loaded_at
    return pd.DataFrame(out, columns=COST_COLUMNS)

