"""OpenAI cost maths on a batch of usage rows, one output row per input row, in exact money.

The completions usage API splits input into classes that do not overlap (its OpenAPI spec):

    input_tokens = uncached + cached + cache writes
    uncached     = text + audio + image            (input_text/audio/image_tokens)
    cached       = cached text + audio + image      (input_cached_text/audio/image_tokens)
    output       = text + audio + image             (output_text/audio/image_tokens)

Each class is priced at its own published rate. Where the API leaves the split out (older answers),
the missing part is derived from the totals. Fallbacks follow how OpenAI bills: images on a text
model are input tokens (``image_input`` → ``input``, cached images → cached input); a cache write on
a model without a cache-write price is billed as input (models before GPT-5.6); cached input on a
model without a cached price is billed as input. Audio, image output and everything else have no
fallback: such tokens without a published rate make the row UNPRICED, with NULL costs, never $0.

Tiers: ``batch`` rows when the usage is batch, else the reported ``service_tier`` (``default`` for
auto/standard/none, ``flex``, ``priority``/``fast`` which OpenAI reports for the same Fast mode,
``ultrafast``). Cache writes are priced at the 30-minute rate: the usage API does not split 30-minute
from 12-hour writes. Long prompts (over 272K input tokens, priced higher per request) and the
regional-processing uplift cannot be seen in daily aggregates: both are priced at the standard rate,
and the ledger shows the difference against OpenAI's bill.
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from beam_pipelines.pricing.money import cost_nano, usd
from beam_pipelines.pricing.price_list import PriceList
from beam_pipelines.pricing.rates import counts, lookup_rates, present

PRICED = "PRICED"
UNPRICED = "UNPRICED"
STANDARD_TIERS = {None, "", "default", "auto", "standard"}
TIER_ALIASES = {"priority": "fast", "fast": "priority"}
# (cost column, token column, rate column, fallback rate columns in order)
CLASSES = (
    ("input_cost_usd", "input_text_tokens", "input_usd_per_mtok", ()),
    ("cached_input_cost_usd", "input_cached_text_tokens", "cached_input_usd_per_mtok", ("input_usd_per_mtok",)),
    ("cache_write_cost_usd", "input_cache_write_tokens", "cache_write_30m_usd_per_mtok", ("input_usd_per_mtok",)),
    ("audio_input_cost_usd", "input_audio_tokens", "audio_input_usd_per_mtok", ()),
    ("cached_audio_input_cost_usd", "input_cached_audio_tokens", "cached_audio_input_usd_per_mtok",
     ("cached_input_usd_per_mtok", "input_usd_per_mtok")),
    ("image_input_cost_usd", "input_image_tokens", "image_input_usd_per_mtok", ("input_usd_per_mtok",)),
    ("cached_image_input_cost_usd", "input_cached_image_tokens", "cached_image_input_usd_per_mtok",
     ("cached_input_usd_per_mtok", "input_usd_per_mtok")),
    ("output_cost_usd", "output_text_tokens", "output_usd_per_mtok", ()),
    ("audio_output_cost_usd", "output_audio_tokens", "audio_output_usd_per_mtok", ()),
    ("image_output_cost_usd", "output_image_tokens", "image_output_usd_per_mtok", ()),
)
RATE_COLUMNS = tuple(dict.fromkeys(c for _, _, rate, fallbacks in CLASSES for c in (rate, *fallbacks)))
TOKEN_COLUMNS = ("input_tokens", "input_cached_tokens", "input_cache_write_tokens", "input_uncached_tokens",
                 "input_text_tokens", "input_cached_text_tokens", "input_audio_tokens", "input_cached_audio_tokens",
                 "input_image_tokens", "input_cached_image_tokens", "output_tokens", "output_text_tokens",
                 "output_audio_tokens", "output_image_tokens", "num_model_requests")
COST_COLUMNS = [
    "usage_date", "org_slug", "row_key", "run_id", "project_id", "api_key_id", "model", "price_model", "batch",
    "service_tier", "pricing_tier", *TOKEN_COLUMNS, *(cost for cost, _, _, _ in CLASSES), "total_cost_usd",
    "pricing_status", "price_version", "loaded_at",
]


def pricing_tiers(raw: pd.DataFrame) -> np.ndarray:
    tier = raw["service_tier"].astype(object).where(raw["service_tier"].notna(), "default")
    tier = tier.where(~tier.isin(STANDARD_TIERS), "default").astype(str).to_numpy(dtype=object)
    batch = raw["batch"].astype(object).to_numpy() == True  # noqa: E712 (object array of bool/None)
    return np.where(batch, "batch", tier)


def token_classes(raw: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every token class of the spec, taken as reported or derived from the totals."""
    n = {c: counts(raw, c) for c in TOKEN_COLUMNS}

    def reported_or(column: str, derived: np.ndarray) -> np.ndarray:
        return np.where(present(raw, column), n[column], derived)

    n["input_uncached_tokens"] = reported_or(
        "input_uncached_tokens", n["input_tokens"] - n["input_cached_tokens"] - n["input_cache_write_tokens"])
    n["input_text_tokens"] = reported_or(
        "input_text_tokens", n["input_uncached_tokens"] - n["input_audio_tokens"] - n["input_image_tokens"])
    n["input_cached_text_tokens"] = reported_or(
        "input_cached_text_tokens", n["input_cached_tokens"] - n["input_cached_audio_tokens"]
        - n["input_cached_image_tokens"])
    n["output_text_tokens"] = reported_or(
        "output_text_tokens", n["output_tokens"] - n["output_audio_tokens"] - n["output_image_tokens"])
    return n


def price_openai_usage(raw: pd.DataFrame, prices: PriceList, loaded_at: datetime) -> pd.DataFrame:
    """Cost rows for one org's batch of raw usage rows (one output row per input row)."""
    if raw.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    tiers = pricing_tiers(raw)
    found = lookup_rates(prices, raw["org_slug"], raw["model"], tiers, raw["usage_date"], RATE_COLUMNS)
    tokens = token_classes(raw)
    priced = found.priced.copy()
    nano = {}
    for cost, token_column, rate, fallbacks in CLASSES:
        rates = found.rate(rate)
        for fallback in fallbacks:
            rates = np.where(pd.isna(rates), found.rate(fallback), rates)
        nano[cost] = cost_nano(tokens[token_column], rates)
        priced &= ~pd.isna(nano[cost]).astype(bool)
    out = {name: raw[name].array for name in ("usage_date", "org_slug", "row_key", "run_id", "project_id", "api_key_id",
                                              "model")}
    out.update(price_model=found.price_model, batch=raw["batch"].array, service_tier=raw["service_tier"].array,
               pricing_tier=tiers)
    out.update({column: tokens[column] for column in TOKEN_COLUMNS})
    total = np.zeros(len(raw), dtype=object)
    for cost, _, _, _ in CLASSES:
        out[cost] = usd(np.where(priced, nano[cost], None))
        total = total + np.where(priced, nano[cost], 0)
    out["total_cost_usd"] = usd(np.where(priced, total, None))
    out["pricing_status"] = np.where(priced, PRICED, UNPRICED)
    out["price_version"] = np.where(priced, found.price_version, None)
    out["loaded_at"] = loaded_at
    return pd.DataFrame(out, columns=COST_COLUMNS)
