"""Deterministic synthetic OpenAI completions usage, per (admin key, UTC day).

The same key and day always give the same results, so the pipeline's warehouse totals can be
checked against :func:`day_results` directly. The model mix includes dated snapshots (resolved
to their family by the pricer), batch and non-batch, flex and priority tiers, and a fine-tuned
model that no price list knows (it must come out UNPRICED, not $0).
"""
from __future__ import annotations

import hashlib
import random
from datetime import date

MODELS = (
    ("gpt-5", ("default", "flex", "priority")),
    ("gpt-5-mini-2025-08-07", ("default", "flex")),
    ("gpt-4.1-2025-04-14", ("default", "priority")),
    ("gpt-4.1-mini", ("default",)),
    ("gpt-4o-2024-08-06", ("default",)),
    ("gpt-4o-mini-2024-07-18", ("default",)),
    ("o3-2025-04-16", ("default", "flex")),
    ("o4-mini-2025-04-16", ("default",)),
    ("ft:gpt-4o-mini-2024-07-18:acme::B7xQ2kLm", ("default",)),
)
BATCH_MODELS = {"gpt-5", "gpt-4.1-2025-04-14", "gpt-4o-mini-2024-07-18", "o3-2025-04-16"}


def _seed(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


def _ident(prefix: str, key: str, n: int) -> str:
    return prefix + hashlib.sha256(f"{key}:{prefix}:{n}".encode()).hexdigest()[:16]


def org_shape(admin_key: str) -> dict:
    """Projects and API keys of the org behind an admin key (stable across days)."""
    rng = random.Random(_seed("shape", admin_key))
    projects = [_ident("proj_", admin_key, i) for i in range(rng.randint(2, 3))]
    keys = {p: [_ident("key_", admin_key + p, j) for j in range(rng.randint(1, 2))] for p in projects}
    return {"projects": projects, "api_keys": keys}


def day_results(admin_key: str, day: date) -> list[dict]:
    """Every completions result of one day, grouped by model, project, key, batch and tier."""
    rng = random.Random(_seed("day", admin_key, day.isoformat()))
    shape = org_shape(admin_key)
    results = []
    for project in shape["projects"]:
        for api_key in shape["api_keys"][project]:
            for model, tiers in MODELS:
                for batch in (False, True):
                    if batch and model not in BATCH_MODELS:
                        continue
                    for tier in tiers if not batch else ("default",):
                        if rng.random() > (0.55 if tier == "default" and not batch else 0.3):
                            continue
                        results.append(_result(rng, project, api_key, model, batch, tier))
    return results


def _result(rng: random.Random, project: str, api_key: str, model: str, batch: bool, tier: str) -> dict:
    requests = rng.randint(1, 4000)
    input_tokens = requests * rng.randint(200, 6000)
    cached = int(input_tokens * rng.choice((0.0, 0.1, 0.35, 0.6)))
    cache_write = int((input_tokens - cached) * rng.choice((0.0, 0.05)))
    uncached = input_tokens - cached - cache_write
    output = requests * rng.randint(50, 1500)
    image = int(uncached * rng.choice((0.0, 0.0, 0.02)))
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": input_tokens,
        "input_cached_tokens": cached,
        "input_cache_write_tokens": cache_write,
        "input_uncached_tokens": uncached,
        "output_tokens": output,
        "input_text_tokens": uncached - image,
        "output_text_tokens": output,
        "input_cached_text_tokens": cached,
        "input_audio_tokens": 0,
        "input_cached_audio_tokens": 0,
        "output_audio_tokens": 0,
        "input_image_tokens": image,
        "input_cached_image_tokens": 0,
        "output_image_tokens": 0,
        "num_model_requests": requests,
        "project_id": project,
        "user_id": None,
        "api_key_id": api_key,
        "model": model,
        "batch": batch,
        "service_tier": tier,
    }


# OpenAI's own billing, as the simulator's costs endpoint reports it. Kept apart from the
# pipeline's price list on purpose: it is the independent figure the pipeline is checked against.
BILLING_PER_MTOK = {  # family: (input, cached input, output), standard tier
    "gpt-5": (1.25, 0.125, 10.0),
    "gpt-5-mini": (0.25, 0.025, 2.0),
    "gpt-4.1": (2.0, 0.5, 8.0),
    "gpt-4.1-mini": (0.4, 0.1, 1.6),
    "gpt-4o": (2.5, 1.25, 10.0),
    "gpt-4o-mini": (0.15, 0.075, 0.6),
    "o3": (2.0, 0.5, 8.0),
    "o4-mini": (1.1, 0.275, 4.4),
}
TIER_FACTOR = {"default": 1.0, "batch": 0.5, "flex": 0.5, "priority": 2.0}
PRIORITY_PER_MTOK = {"gpt-4.1": (3.5, 0.875, 14.0)}


def billed_family(model: str) -> str | None:
    if model.startswith("ft:"):
        return None
    for family in sorted(BILLING_PER_MTOK, key=len, reverse=True):
        if model == family or model.startswith(family + "-20"):
            return family
    return None


def billed_cost(result: dict) -> dict[str, float] | None:
    """USD per line item (input, cached input, output) as OpenAI bills it; None if not billed here."""
    family = billed_family(result["model"])
    if family is None:
        return None
    tier = "batch" if result["batch"] else result["service_tier"]
    if tier == "priority" and family in PRIORITY_PER_MTOK:
        rates, factor = PRIORITY_PER_MTOK[family], 1.0
    else:
        rates, factor = BILLING_PER_MTOK[family], TIER_FACTOR[tier]
    uncached = result["input_tokens"] - result["input_cached_tokens"]
    return {
        "input": uncached * rates[0] * factor / 1e6,
        "cached input": result["input_cached_tokens"] * rates[1] * factor / 1e6,
        "output": result["output_tokens"] * rates[2] * factor / 1e6,
    }
