"""Deterministic synthetic OpenAI completions usage and OpenAI's own bill for it, per (admin key, day).

The same key and day always give the same results, so warehouse totals can be checked against
:func:`day_results` directly. The model mix follows what OpenAI served on that day (each model has
a launch and a shutdown date): GPT-6.2 Sol, 6.1 Terra, 6 Luna and 5.6 Terra/Luna next to the 2025
models still billed, dated snapshots (resolved to their family by the pricer), batch and the
default/flex/priority/ultrafast tiers, cache writes, images in prompts, a realtime model with audio,
and a fine-tuned model that no price list knows (it must come out UNPRICED, never $0).

:data:`BILLING` is the simulator's own price table, typed in from OpenAI's published pricing
tables and kept apart from the pipeline's price book on purpose: it is the independent figure the
pipeline is checked against. Like the real bill it includes what daily usage cannot show: a few
requests with prompts over 272K tokens, billed at the long-context rates as their own line items.
"""
from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from datetime import date

NEVER = date(9999, 12, 31)


@dataclass(frozen=True)
class Model:
    id: str  # as the usage API reports it (dated snapshot or alias)
    family: str  # the price table's name
    tiers: tuple[str, ...]  # service tiers the usage reports (besides batch)
    batch: bool
    served_from: date
    served_until: date = NEVER  # shutdown day (exclusive)
    extras: frozenset = frozenset()  # token classes beyond text: cache_write, image, audio
    daily: bool = False  # used every day by every key (so every test day has it)


MODELS = (
    Model("gpt-6.2-sol", "gpt-6.2-sol", ("default", "priority", "ultrafast"), True, date(2026, 11, 17),
          extras=frozenset({"cache_write", "image"})),
    Model("gpt-6.1-terra", "gpt-6.1-terra", ("default", "flex", "priority"), True, date(2026, 10, 26),
          extras=frozenset({"cache_write", "image"})),
    Model("gpt-6-luna", "gpt-6-luna", ("default", "flex"), False, date(2026, 9, 22), extras=frozenset({"cache_write"})),
    Model("gpt-5.6-terra", "gpt-5.6-terra", ("default", "flex", "priority"), True, date(2026, 7, 9),
          extras=frozenset({"cache_write", "image"})),
    Model("gpt-5.6-luna", "gpt-5.6-luna", ("default", "flex"), False, date(2026, 7, 9), extras=frozenset({"cache_write"})),
    Model("gpt-5.5-2026-04-23", "gpt-5.5", ("default", "flex", "priority"), True, date(2026, 4, 23),
          extras=frozenset({"image"})),
    Model("gpt-5.4-2026-03-05", "gpt-5.4", ("default", "flex"), True, date(2026, 3, 5)),
    Model("gpt-5.4-mini-2026-03-17", "gpt-5.4-mini", ("default", "priority"), False, date(2026, 3, 17)),
    Model("gpt-5.2-2025-12-11", "gpt-5.2", ("default", "flex", "priority"), True, date(2025, 12, 11)),
    Model("gpt-5-2025-08-07", "gpt-5", ("default", "flex"), True, date(2025, 8, 7), date(2026, 12, 11)),
    Model("gpt-5-mini-2025-08-07", "gpt-5-mini", ("default", "flex"), False, date(2025, 8, 7), date(2026, 12, 11)),
    Model("gpt-4.1-2025-04-14", "gpt-4.1", ("default", "priority"), True, date(2025, 4, 14), date(2027, 1, 14)),
    Model("gpt-4o-mini-2024-07-18", "gpt-4o-mini", ("default",), True, date(2024, 7, 18), date(2027, 1, 14),
          extras=frozenset({"image"})),
    Model("o3-2025-04-16", "o3", ("default", "flex"), False, date(2025, 6, 10), date(2026, 12, 11)),
    Model("o4-mini-2025-04-16", "o4-mini", ("default",), False, date(2025, 4, 16), date(2026, 10, 23)),
    Model("gpt-realtime-2", "gpt-realtime-2", ("default",), False, date(2026, 7, 22), extras=frozenset({"audio"})),
    Model("ft:gpt-4o-mini-2024-07-18:acme::B7xQ2kLm", "", ("default",), False, date(2024, 9, 1), date(2027, 1, 14),
          daily=True),
)
LONG_CONTEXT_FAMILIES = {"gpt-6.2-sol", "gpt-6.1-terra", "gpt-6-luna", "gpt-5.6-terra", "gpt-5.6-luna", "gpt-5.5",
                         "gpt-5.4"}


@functools.lru_cache(maxsize=1024)
def served_on(day: date) -> tuple[Model, ...]:
    return tuple(m for m in MODELS if m.served_from <= day < m.served_until)


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
    """Every result of one day (a new list; the results are shared: do not change them). Each page of a
    day asks again, so a day is generated once and kept (a fleet of 1,000 orgs asks 3,000 times)."""
    return list(_day_results(admin_key, day))


@functools.lru_cache(maxsize=8192)
def _day_results(admin_key: str, day: date) -> tuple[dict, ...]:
    """Every completions result of one day, grouped by model, project, key, batch and tier."""
    rng = random.Random(_seed("day", admin_key, day.isoformat()))
    shape = org_shape(admin_key)
    results = []
    for project in shape["projects"]:
        for api_key in shape["api_keys"][project]:
            for model in served_on(day):
                for batch in (False, True) if model.batch else (False,):
                    for tier in model.tiers if not batch else ("default",):
                        if rng.random() > (0.5 if tier == "default" and not batch else 0.25) and not model.daily:
                            continue
                        if model.family and not rates_for(model.family, _tier(batch, tier), day):
                            continue  # a tier the model did not offer yet
                        results.append(_result(rng, project, api_key, model, batch, tier, day))
    return tuple(results)


def _result(rng: random.Random, project: str, api_key: str, model: Model, batch: bool, tier: str, day: date) -> dict:
    requests = rng.randint(1, 4000)
    input_tokens = requests * rng.randint(200, 6000)
    published = rates_for(model.family, _tier(batch, tier), day) if model.family else Rates(0, 0, 0)
    writes_priced = "cache_write" in model.extras and published.cache_write
    cached = int(input_tokens * rng.choice((0.0, 0.1, 0.35, 0.6))) if published.cached is not None else 0
    cache_write = int((input_tokens - cached) * rng.choice((0.0, 0.05, 0.1))) if writes_priced else 0
    uncached = input_tokens - cached - cache_write
    audio = int(uncached * 0.4) if "audio" in model.extras else 0
    cached_audio = int(cached * 0.4) if "audio" in model.extras else 0
    image = int(uncached * rng.choice((0.0, 0.02, 0.05))) if "image" in model.extras else 0
    cached_image = int(cached * 0.02) if image else 0
    output = requests * rng.randint(50, 1500)
    output_audio = int(output * 0.5) if "audio" in model.extras else 0
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": input_tokens,
        "input_cached_tokens": cached,
        "input_cache_write_tokens": cache_write,
        "input_uncached_tokens": uncached,
        "output_tokens": output,
        "input_text_tokens": uncached - audio - image,
        "output_text_tokens": output - output_audio,
        "input_cached_text_tokens": cached - cached_audio - cached_image,
        "input_audio_tokens": audio,
        "input_cached_audio_tokens": cached_audio,
        "output_audio_tokens": output_audio,
        "input_image_tokens": image,
        "input_cached_image_tokens": cached_image,
        "output_image_tokens": 0,
        "num_model_requests": requests,
        "project_id": project,
        "user_id": None,
        "api_key_id": api_key,
        "model": model.id,
        "batch": batch,
        "service_tier": tier,
    }


# ---- OpenAI's bill -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rates:
    """USD per million tokens as the pricing tables print them; None where a table shows none."""
    input: float
    cached: float | None
    output: float
    cache_write: float | None = None  # 30-minute write
    audio_in: float | None = None
    cached_audio_in: float | None = None
    audio_out: float | None = None


# family: tier: [(effective from, rates)], standard/batch/flex/priority as published (priority is
# the "fast" table on GPT-6.x pages; ultrafast only on GPT-6.2 Sol).
BILLING: dict[str, dict[str, list[tuple[date, Rates]]]] = {
    "gpt-6.2-sol": {"default": [(date(2026, 11, 17), Rates(2, 0.1, 10, 2.5))],
                    "batch": [(date(2026, 11, 17), Rates(1, 0.05, 5, 1.25))],
                    "priority": [(date(2026, 11, 17), Rates(4, 0.2, 20, 5))],
                    "ultrafast": [(date(2026, 11, 17), Rates(6, 0.3, 30))]},
    "gpt-6.1-terra": {"default": [(date(2026, 10, 26), Rates(1, 0.05, 5, 1.25))],
                      "batch": [(date(2026, 10, 26), Rates(0.5, 0.025, 2.5, 0.625))],
                      "flex": [(date(2026, 10, 26), Rates(0.5, 0.025, 2.5, 0.625))],
                      "priority": [(date(2026, 10, 26), Rates(2, 0.1, 10, 2.5))]},
    "gpt-6-luna": {"default": [(date(2026, 9, 22), Rates(0.1, 0.01, 0.5, 0.125))],
                   "flex": [(date(2026, 9, 22), Rates(0.05, 0.005, 0.25, 0.0625))]},
    "gpt-5.6-terra": {"default": [(date(2026, 7, 9), Rates(2.5, 0.25, 15, 3.125)),
                                  (date(2026, 7, 30), Rates(2, 0.2, 12, 2.5))],
                      "batch": [(date(2026, 7, 9), Rates(1.25, 0.125, 7.5, 1.5625)),
                                (date(2026, 7, 30), Rates(1, 0.1, 6, 1.25))],
                      "flex": [(date(2026, 7, 9), Rates(1.25, 0.125, 7.5, 1.5625)),
                               (date(2026, 7, 30), Rates(1, 0.1, 6, 1.25))],
                      "priority": [(date(2026, 7, 30), Rates(4, 0.4, 24, 5))]},
    "gpt-5.6-luna": {"default": [(date(2026, 7, 9), Rates(1, 0.1, 6, 1.25)),
                                 (date(2026, 7, 30), Rates(0.2, 0.02, 1.2, 0.25))],
                     "flex": [(date(2026, 7, 9), Rates(0.5, 0.05, 3, 0.625)),
                              (date(2026, 7, 30), Rates(0.1, 0.01, 0.6, 0.125))]},
    "gpt-5.5": {"default": [(date(2026, 4, 23), Rates(5, 0.5, 30))],
                "batch": [(date(2026, 4, 23), Rates(2.5, 0.25, 15))],
                "flex": [(date(2026, 4, 23), Rates(2.5, 0.25, 15))],
                "priority": [(date(2026, 4, 23), Rates(12.5, 1.25, 75))]},
    "gpt-5.4": {"default": [(date(2026, 3, 5), Rates(2.5, 0.25, 15))],
                "batch": [(date(2026, 3, 5), Rates(1.25, 0.13, 7.5))],
                "flex": [(date(2026, 3, 5), Rates(1.25, 0.13, 7.5))]},
    "gpt-5.4-mini": {"default": [(date(2026, 3, 17), Rates(0.75, 0.075, 4.5))],
                     "priority": [(date(2026, 3, 17), Rates(1.5, 0.15, 9))]},
    "gpt-5.2": {"default": [(date(2025, 12, 11), Rates(1.75, 0.175, 14))],
                "batch": [(date(2025, 12, 11), Rates(0.875, 0.0875, 7))],
                "flex": [(date(2025, 12, 11), Rates(0.875, 0.0875, 7))],
                "priority": [(date(2025, 12, 11), Rates(3.5, 0.35, 28))]},
    "gpt-5": {"default": [(date(2025, 8, 7), Rates(1.25, 0.125, 10))],
              "batch": [(date(2025, 8, 7), Rates(0.625, 0.0625, 5))],
              "flex": [(date(2025, 8, 7), Rates(0.625, 0.0625, 5))]},
    "gpt-5-mini": {"default": [(date(2025, 8, 7), Rates(0.25, 0.025, 2))],
                   "flex": [(date(2025, 8, 7), Rates(0.125, 0.0125, 1))]},
    "gpt-4.1": {"default": [(date(2025, 4, 14), Rates(2, 0.5, 8))],
                "batch": [(date(2025, 4, 14), Rates(1, None, 4))],
                "priority": [(date(2025, 4, 14), Rates(3.5, 0.875, 14))]},
    "gpt-4o-mini": {"default": [(date(2024, 7, 18), Rates(0.15, 0.075, 0.6))],
                    "batch": [(date(2024, 7, 18), Rates(0.075, None, 0.3))]},
    "o3": {"default": [(date(2025, 4, 16), Rates(10, None, 40)), (date(2025, 6, 10), Rates(2, 0.5, 8))],
           "flex": [(date(2025, 6, 10), Rates(1, 0.25, 4))]},
    "o4-mini": {"default": [(date(2025, 4, 16), Rates(1.1, 0.275, 4.4))]},
    "gpt-realtime-2": {"default": [(date(2026, 7, 22), Rates(4, 0.4, 24, None, 32, 0.4, 64))]},
}
LONG_CONTEXT_LINE = "long context"


def _tier(batch: bool, tier: str) -> str:
    return "batch" if batch else tier


@functools.lru_cache(maxsize=4096)  # asked for every result of every day: a fleet's days ask the same few
def rates_for(family: str, tier: str, day: date) -> Rates | None:
    """The rates in force on ``day`` (None before the tier was offered)."""
    versions = [r for since, r in BILLING[family].get(tier, ()) if since <= day]
    return versions[-1] if versions else None


def _long_share(result: dict) -> float:
    """Share of a result's tokens sent in prompts over 272K: invisible in usage, visible in the bill."""
    if not any(result["model"].startswith(f) for f in LONG_CONTEXT_FAMILIES) or result["batch"]:
        return 0.0
    digest = _seed("long", *sorted(result.items()))
    return 0.004 if digest[0] < 40 else 0.0


def billed_lines(result: dict, day: date) -> dict[str, tuple[int, float]] | None:
    """(tokens, USD) per line item as OpenAI bills the result; None for models it bills elsewhere (fine-tunes).

    The token count is the line's quantity in the costs API; the long-prompt surcharge line counts the
    share of tokens it applies to.
    """
    model = next(m for m in MODELS if m.id == result["model"])
    if not model.family:
        return None
    tier = _tier(result["batch"], result["service_tier"])
    r = rates_for(model.family, tier, day)
    classes = {  # line item: (tokens, USD per MTok, long-context multiplier)
        "input": (result["input_text_tokens"] + result["input_image_tokens"], r.input, 2),
        "cached input": (result["input_cached_text_tokens"] + result["input_cached_image_tokens"], r.cached, 2),
        "cache write": (result["input_cache_write_tokens"], r.cache_write or r.input, 2),
        "output": (result["output_text_tokens"], r.output, 1.5),
        "audio input": (result["input_audio_tokens"], r.audio_in, 1),
        "cached audio input": (result["input_cached_audio_tokens"], r.cached_audio_in, 1),
        "audio output": (result["output_audio_tokens"], r.audio_out, 1),
    }
    prefix = "" if tier == "default" else f"{tier} "
    share = _long_share(result)
    lines: dict[str, tuple[int, float]] = {}
    for item, (tokens, rate, long_multiplier) in classes.items():
        if not tokens:
            continue
        lines[prefix + item] = (tokens, tokens * rate / 1e6)
        if share:  # the surcharge on the long prompts' tokens, on a line of its own
            lines[f"{prefix}{item}, {LONG_CONTEXT_LINE}"] = (
                round(tokens * share), tokens * share * rate * (long_multiplier - 1) / 1e6)
    return lines


def billed_cost(result: dict, day: date) -> dict[str, float] | None:
    """USD per line item as OpenAI bills the result; None for models it bills elsewhere (fine-tunes)."""
    lines = billed_lines(result, day)
    return None if lines is None else {item: usd for item, (_, usd) in lines.items()}
