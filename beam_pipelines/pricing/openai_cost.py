"""OpenAI cost maths on a batch of usage rows (a pandas DataFrame), vectorised per batch.

OpenAI reports ``input_tokens`` *including* cached and cache-write tokens, so:

    uncached input = input_tokens - input_cached_tokens      (cache writes bill at the input rate)
    cost = uncached text input × input + cached × cached_input + text output × output
           + uncached audio input × audio_input + audio output × audio_output

Audio tokens are split out only for models whose price row has audio rates; cached audio is
billed at the cached rate. Prices are per million tokens. A row whose model (or tier) has no
price gets NULL costs and ``pricing_status = 'UNPRICED'``.
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from beam_pipelines.pricing.price_list import PriceList
from beam_pipelines.pricing.rates import counts, lookup_rates

PRICED = "PRICED"
UNPRICED = "UNPRICED"
PER_TOKEN = 1e-6
STANDARD_TIERS = {None, "", "default", "auto", "standard"}
RATE_COLUMNS = ("input_usd_per_mtok", "cached_input_usd_per_mtok", "output_usd_per_mtok",
                "audio_input_usd_per_mtok", "audio_output_usd_per_mtok")

COST_COLUMNS = [
    "usage_date", "org_slug", "row_key", "run_id", "project_id", "api_key_id", "model",
    "price_model", "batch", "service_tier", "pricing_tier", "input_tokens", "input_cached_tokens",
    "input_uncached_tokens", "input_audio_tokens", "output_tokens", "output_audio_tokens",
    "num_model_requests", "input_cost_usd", "cached_input_cost_usd", "output_cost_usd",
    "audio_cost_usd", "total_cost_usd", "pricing_status", "price_version", "loaded_at",
]


def _pricing_tiers(raw: pd.DataFrame) -> np.ndarray:
    tier = raw["service_tier"].astype(object).where(raw["service_tier"].notna(), "default")
    tier = tier.where(~tier.isin(STANDARD_TIERS), "default").astype(str).to_numpy(dtype=object)
    batch = raw["batch"].astype(object).to_numpy() == True  # noqa: E712 (object array of bool/None)
    return np.where(batch, "batch", tier)


def price_openai_usage(raw: pd.DataFrame, prices: PriceList, loaded_at: datetime) -> pd.DataFrame:
    """Cost rows for one org's batch of raw usage rows (one output row per input row)."""
    if raw.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    tiers = _pricing_tiers(raw)
    found = lookup_rates(prices, raw["org_slug"], raw["model"], tiers, raw["usage_date"], RATE_COLUMNS)
    input_rate, output_rate = found.rate("input_usd_per_mtok"), found.rate("output_usd_per_mtok")
    cached_rate = found.rate("cached_input_usd_per_mtok", fallback="input_usd_per_mtok")
    audio_in_rate, audio_out_rate = found.rate("audio_input_usd_per_mtok"), found.rate("audio_output_usd_per_mtok")
    has_audio = ~np.isnan(audio_in_rate) | ~np.isnan(audio_out_rate)
    priced, price_model, price_version = found.priced, found.price_model, found.price_version

    input_tokens = counts(raw, "input_tokens")
    cached = counts(raw, "input_cached_tokens")
    output = counts(raw, "output_tokens")
    audio_in = np.where(has_audio, counts(raw, "input_audio_tokens"), 0)
    audio_out = np.where(has_audio, counts(raw, "output_audio_tokens"), 0)
    uncached = input_tokens - cached

    input_cost = (uncached - audio_in) * input_rate * PER_TOKEN
    cached_cost = cached * cached_rate * PER_TOKEN
    output_cost = (output - audio_out) * output_rate * PER_TOKEN
    audio_cost = (
        audio_in * np.nan_to_num(audio_in_rate) + audio_out * np.nan_to_num(audio_out_rate)
    ) * PER_TOKEN
    audio_cost = np.where(priced, audio_cost, np.nan)
    total = input_cost + cached_cost + output_cost + audio_cost

    out = pd.DataFrame(
        {
            "usage_date": raw["usage_date"].array,
            "org_slug": raw["org_slug"].array,
            "row_key": raw["row_key"].array,
            "run_id": raw["run_id"].array,
            "project_id": raw["project_id"].array,
            "api_key_id": raw["api_key_id"].array,
            "model": raw["model"].array,
            "price_model": price_model,
            "batch": raw["batch"].array,
            "service_tier": raw["service_tier"].array,
            "pricing_tier": tiers,
            "input_tokens": input_tokens,
            "input_cached_tokens": cached,
            "input_uncached_tokens": uncached,
            "input_audio_tokens": counts(raw, "input_audio_tokens"),
            "output_tokens": output,
            "output_audio_tokens": counts(raw, "output_audio_tokens"),
            "num_model_requests": counts(raw, "num_model_requests"),
            "input_cost_usd": input_cost,
            "cached_input_cost_usd": cached_cost,
            "output_cost_usd": output_cost,
            "audio_cost_usd": audio_cost,
            "total_cost_usd": total,
            "pricing_status": np.where(priced, PRICED, UNPRICED),
            "price_version": price_version,
            "loaded_at": loaded_at,
        }
    )
    return out
