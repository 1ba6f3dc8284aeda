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

PRICED = "PRICED"
UNPRICED = "UNPRICED"
PER_TOKEN = 1e-6
STANDARD_TIERS = {None, "", "default", "auto", "standard"}

COST_COLUMNS = [
    "usage_date", "org_slug", "row_key", "run_id", "project_id", "api_key_id", "model",
    "price_model", "batch", "service_tier", "pricing_tier", "input_tokens", "input_cached_tokens",
    "input_uncached_tokens", "input_audio_tokens", "output_tokens", "output_audio_tokens",
    "num_model_requests", "input_cost_usd", "cached_input_cost_usd", "output_cost_usd",
    "audio_cost_usd", "total_cost_usd", "pricing_status", "price_version", "loaded_at",
]


def pricing_tier(batch: object, service_tier: object) -> str:
    if batch is True:
        return "batch"
    if service_tier is None or (isinstance(service_tier, float) and np.isnan(service_tier)):
        return "default"
    return "default" if service_tier in STANDARD_TIERS else str(service_tier)


def _pricing_tiers(raw: pd.DataFrame) -> np.ndarray:
    tier = raw["service_tier"].astype(object).where(raw["service_tier"].notna(), "default")
    tier = tier.where(~tier.isin(STANDARD_TIERS), "default").astype(str).to_numpy(dtype=object)
    batch = raw["batch"].astype(object).to_numpy() == True  # noqa: E712 (object array of bool/None)
    return np.where(batch, "batch", tier)


def _counts(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.zeros(len(frame), dtype=np.int64)
    return frame[column].fillna(0).to_numpy(dtype=np.int64)


def price_openai_usage(raw: pd.DataFrame, prices: PriceList, loaded_at: datetime) -> pd.DataFrame:
    """Cost rows for one org's batch of raw usage rows (one output row per input row)."""
    if raw.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    tiers = _pricing_tiers(raw)
    keys = pd.DataFrame(
        {"org": raw["org_slug"].to_numpy(), "model": raw["model"].array,
         "tier": tiers, "day": raw["usage_date"].to_numpy()}
    )
    # Price each distinct (org, model, tier, day) once, then broadcast by group code.
    codes = keys.groupby(list(keys.columns), dropna=False, sort=False).ngroup().to_numpy()
    distinct = keys.drop_duplicates().itertuples(index=False)
    found_distinct = [prices.lookup(k.model, k.tier, k.day, org_slug=k.org) for k in distinct]

    def rate(attr: str, fallback: str | None = None) -> np.ndarray:
        values = []
        for price in found_distinct:
            value = None if price is None else getattr(price, attr)
            if value is None and price is not None and fallback is not None:
                value = getattr(price, fallback)
            values.append(np.nan if value is None else value)
        return np.asarray(values, dtype=float)[codes]

    input_rate, output_rate = rate("input"), rate("output")
    cached_rate = rate("cached_input", fallback="input")
    audio_in_rate, audio_out_rate = rate("audio_input"), rate("audio_output")
    has_audio = ~np.isnan(audio_in_rate) | ~np.isnan(audio_out_rate)
    priced = np.asarray([p is not None for p in found_distinct], dtype=bool)[codes]
    price_model = np.asarray([p.model if p else None for p in found_distinct], dtype=object)[codes]
    price_version = np.asarray([p.version if p else None for p in found_distinct], dtype=object)[codes]

    input_tokens = _counts(raw, "input_tokens")
    cached = _counts(raw, "input_cached_tokens")
    output = _counts(raw, "output_tokens")
    audio_in = np.where(has_audio, _counts(raw, "input_audio_tokens"), 0)
    audio_out = np.where(has_audio, _counts(raw, "output_audio_tokens"), 0)
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
            "input_audio_tokens": _counts(raw, "input_audio_tokens"),
            "output_tokens": output,
            "output_audio_tokens": _counts(raw, "output_audio_tokens"),
            "num_model_requests": _counts(raw, "num_model_requests"),
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
