"""Deterministic synthetic Anthropic Messages usage and Anthropic's bill for it, per (admin key, day).

The model mix follows what Anthropic served on that day (launch and retirement dates): Claude
Fable 5.2/5.1, Opus 5.5/4.8, Sonnet 5.5/4.6, Haiku 5.5 next to the 4.5 generation and older dated
ids. It covers what the pricer must handle: the default workspace (null id) and named ones, API keys
and Console usage (null key), standard, batch and a little priority tier, fast mode (``speed``),
US-only inference (``inference_geo``), cache reads and 5-minute and 1-hour cache writes, web
search requests, and usage in the ``200k-1M`` context window on the models that offer it.

:data:`BILLING` is the simulator's own table, typed in from Anthropic's published pricing page and
kept apart from the pipeline's price book on purpose: the cost report is the independent figure the
pipeline is checked against.
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
    id: str
    family: str
    served_from: date
    served_until: date = NEVER
    long_until: date | None = None  # last day the 200k-1M window was served (None: never; NEVER: still)
    fast: bool = False  # offers fast mode


MODELS = (
    Model("claude-fable-5-2", "claude-fable-5-2", date(2026, 11, 9), long_until=NEVER),
    Model("claude-fable-5-1", "claude-fable-5-1", date(2026, 9, 1), long_until=NEVER),
    Model("claude-opus-5-5", "claude-opus-5-5", date(2026, 9, 22), long_until=NEVER, fast=True),
    Model("claude-opus-4-8", "claude-opus-4-8", date(2026, 5, 28), fast=True),
    Model("claude-sonnet-5-5", "claude-sonnet-5-5", date(2026, 9, 28), long_until=NEVER),
    Model("claude-haiku-5-5", "claude-haiku-5-5", date(2026, 10, 7), long_until=NEVER),
    Model("claude-sonnet-4-6", "claude-sonnet-4-6", date(2026, 2, 17), long_until=NEVER),
    Model("claude-opus-4-6", "claude-opus-4-6", date(2026, 2, 5), long_until=NEVER),
    Model("claude-opus-4-5-20251101", "claude-opus-4-5", date(2025, 11, 24)),
    Model("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", date(2025, 9, 29), long_until=date(2026, 4, 29)),
    Model("claude-haiku-4-5-20251001", "claude-haiku-4-5", date(2025, 10, 15)),
    Model("claude-sonnet-4-20250514", "claude-sonnet-4", date(2025, 5, 22), date(2026, 6, 15), long_until=date(2026, 4, 29)),
    Model("claude-3-opus-20240229", "claude-3-opus", date(2024, 2, 29), date(2026, 1, 5)),
)


def served_on(day: date) -> list[Model]:
    return [m for m in MODELS if m.served_from <= day < m.served_until]


def _seed(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


def _ident(prefix: str, key: str, n: int) -> str:
    return prefix + hashlib.sha256(f"{key}:{prefix}:{n}".encode()).hexdigest()[:24]


def org_shape(admin_key: str) -> dict:
    workspaces = [None, _ident("wrkspc_", admin_key, 1), _ident("wrkspc_", admin_key, 2)]
    keys = {w: [_ident("apikey_", f"{admin_key}{w}", j) for j in range(2)] + [None] for w in workspaces}
    return {"workspaces": workspaces, "api_keys": keys}


def _variants(model: Model, day: date, console: bool):
    """(service tier, context window, speed, inference geo, chance) the model may show that day."""
    long = model.long_until is not None and day <= model.long_until
    for window in ("0-200k", "200k-1M") if long else ("0-200k",):
        scale = 1 if window == "0-200k" else 1 / 3
        yield "standard", window, "standard", "global", 0.3 * scale
        yield "standard", window, "standard", "us", 0.06 * scale
        if not console:  # Console usage is interactive
            yield "batch", window, "standard", "global", 0.1 * scale
            if model.fast and window == "0-200k":
                yield "standard", window, "fast", "global", 0.15
            if "sonnet-4-5" in model.id and window == "0-200k":
                yield "priority", window, "standard", "global", 0.04


def day_results(admin_key: str, day: date) -> list[dict]:
    """Every result of one day (a new list; the results are shared: do not change them). Each page of a
    day asks again, so a day is generated once and kept (a fleet of 1,000 orgs asks 3,000 times)."""
    return list(_day_results(admin_key, day))


@functools.lru_cache(maxsize=8192)
def _day_results(admin_key: str, day: date) -> tuple[dict, ...]:
    rng = random.Random(_seed("anthropic-day", admin_key, day.isoformat()))
    shape = org_shape(admin_key)
    results = []
    for workspace in shape["workspaces"]:
        for api_key in shape["api_keys"][workspace]:
            for model in served_on(day):
                for tier, window, speed, geo, chance in _variants(model, day, api_key is None):
                    if rng.random() <= chance:
                        results.append(_result(rng, workspace, api_key, model, tier, window, speed, geo))
    return tuple(results)


def _result(rng, workspace, api_key, model, tier, window, speed, geo) -> dict:
    requests = rng.randint(1, 60) if window == "200k-1M" else rng.randint(1, 2000)
    top = 95_000 if model.family == "claude-haiku-5-5" else 20_000  # Haiku 5.5 reprices prompts over 100K
    per_request = rng.randint(210_000, 600_000) if window == "200k-1M" else rng.randint(300, top)
    total_input = requests * per_request
    cached = speed != "fast"  # fast-mode cache prices are not published: the simulator sends none
    cache_read = int(total_input * rng.choice((0.0, 0.2, 0.5))) if cached else 0
    write_5m = int(total_input * rng.choice((0.0, 0.05, 0.1))) if cached else 0
    write_1h = int(total_input * rng.choice((0.0, 0.0, 0.03))) if cached else 0
    return {
        "uncached_input_tokens": total_input - cache_read - write_5m - write_1h,
        "cache_creation": {"ephemeral_1h_input_tokens": write_1h, "ephemeral_5m_input_tokens": write_5m},
        "cache_read_input_tokens": cache_read,
        "output_tokens": requests * rng.randint(50, 2500),
        "server_tool_use": {"web_search_requests": rng.choice((0, 0, 0, rng.randint(1, 300))) if cached else 0},
        "api_key_id": api_key,
        "workspace_id": workspace,
        "model": model.id,
        "service_tier": tier,
        "context_window": window,
        "inference_geo": geo,
        "speed": speed,
    }


# ---- Anthropic's bill ----------------------------------------------------------------------------
# USD per MTok: input, 5m write, 1h write, cache read, output; per family, tier and effective date.
Rates = tuple  # (input, write_5m, write_1h, read, output)
BILLING: dict[str, dict[str, list[tuple[date, Rates]]]] = {
    "claude-fable-5-2": {"standard": [(date(2026, 11, 9), (8, 10, 16, 0.2, 40))],
                         "batch": [(date(2026, 11, 9), (4, 5, 8, 0.1, 20))]},
    "claude-fable-5-1": {"standard": [(date(2026, 9, 1), (10, 12.5, 20, 0.25, 50))],
                         "batch": [(date(2026, 9, 1), (5, 6.25, 10, 0.125, 25))]},
    "claude-opus-5-5": {"standard": [(date(2026, 9, 22), (4, 5, 8, 0.2, 20))],
                        "batch": [(date(2026, 9, 22), (2, 2.5, 4, 0.1, 10))],
                        "fast": [(date(2026, 9, 22), (8, None, None, None, 40))]},
    "claude-opus-4-8": {"standard": [(date(2026, 5, 28), (5, 6.25, 10, 0.5, 25))],
                        "batch": [(date(2026, 5, 28), (2.5, 3.125, 5, 0.25, 12.5))],
                        "fast": [(date(2026, 5, 28), (10, None, None, None, 50))]},
    "claude-sonnet-5-5": {"standard": [(date(2026, 9, 28), (2, 2.5, 4, 0.2, 10)),
                                       (date(2026, 10, 7), (2, 2.5, 4, 0.1, 10))],
                          "batch": [(date(2026, 9, 28), (1, 1.25, 2, 0.1, 5)),
                                    (date(2026, 10, 7), (1, 1.25, 2, 0.05, 5))]},
    "claude-haiku-5-5": {"standard": [(date(2026, 10, 7), (0.1, 0.125, 0.2, 0.01, 0.5))],
                         "batch": [(date(2026, 10, 7), (0.05, 0.0625, 0.1, 0.005, 0.25))],
                         "standard_long_context": [(date(2026, 10, 7), (0.5, 0.625, 1, 0.05, 2.5))],
                         "batch_long_context": [(date(2026, 10, 7), (0.25, 0.3125, 0.5, 0.025, 1.25))]},
    "claude-sonnet-4-6": {"standard": [(date(2026, 2, 17), (3, 3.75, 6, 0.3, 15))],
                          "batch": [(date(2026, 2, 17), (1.5, 1.875, 3, 0.15, 7.5))],
                          "standard_long_context": [(date(2026, 2, 17), (6, 7.5, 12, 0.6, 22.5)),
                                                    (date(2026, 3, 13), (3, 3.75, 6, 0.3, 15))]},
    "claude-opus-4-6": {"standard": [(date(2026, 2, 5), (5, 6.25, 10, 0.5, 25))],
                        "batch": [(date(2026, 2, 5), (2.5, 3.125, 5, 0.25, 12.5))],
                        "standard_long_context": [(date(2026, 2, 5), (10, 12.5, 20, 1, 37.5)),
                                                  (date(2026, 3, 13), (5, 6.25, 10, 0.5, 25))]},
    "claude-opus-4-5": {"standard": [(date(2025, 11, 24), (5, 6.25, 10, 0.5, 25))],
                        "batch": [(date(2025, 11, 24), (2.5, 3.125, 5, 0.25, 12.5))]},
    "claude-sonnet-4-5": {"standard": [(date(2025, 9, 29), (3, 3.75, 6, 0.3, 15))],
                          "batch": [(date(2025, 9, 29), (1.5, 1.875, 3, 0.15, 7.5))],
                          "standard_long_context": [(date(2025, 9, 29), (6, 7.5, 12, 0.6, 22.5))]},
    "claude-haiku-4-5": {"standard": [(date(2025, 10, 15), (1, 1.25, 2, 0.1, 5))],
                         "batch": [(date(2025, 10, 15), (0.5, 0.625, 1, 0.05, 2.5))]},
    "claude-sonnet-4": {"standard": [(date(2025, 5, 22), (3, 3.75, 6, 0.3, 15))],
                        "standard_long_context": [(date(2025, 8, 12), (6, 7.5, 12, 0.6, 22.5))]},
    "claude-3-opus": {"standard": [(date(2024, 2, 29), (15, 18.75, 30, 1.5, 75))]},
}
WEB_SEARCH_USD = 0.01
GEO_MULTIPLIER = {"us": 1.1}  # "a 1.1x multiplier on all token pricing categories"
TOKEN_TYPES = ("uncached_input_tokens", "cache_creation.ephemeral_5m_input_tokens",
               "cache_creation.ephemeral_1h_input_tokens", "cache_read_input_tokens", "output_tokens")


def _rates(family: str, tier: str, day: date) -> Rates | None:
    versions = [r for since, r in BILLING[family].get(tier, ()) if since <= day]
    return versions[-1] if versions else None


def _batch_rates(family: str, day: date) -> Rates:
    """Batch is 50% of every token rate where the page prints no batch table (older models)."""
    return _rates(family, "batch", day) or tuple(r * 0.5 for r in _rates(family, "standard", day))


def billed_cents(result: dict, day: date) -> dict[str, float] | None:
    """Cents per (cost_type, token_type) as Anthropic bills; None for usage not in the cost report."""
    if result["service_tier"] == "priority":
        return None  # billed under the Priority Tier commitment, not in the cost report
    family = next(m for m in MODELS if m.id == result["model"]).family
    tier = "fast" if result["speed"] == "fast" else result["service_tier"]
    base = _batch_rates(family, day) if tier == "batch" else _rates(family, tier, day)
    if result["context_window"] == "200k-1M":
        long = _rates(family, f"{result['service_tier']}_long_context", day)
        if long is None and tier == "batch" and _rates(family, "standard_long_context", day):
            long = tuple(r * 0.5 for r in _rates(family, "standard_long_context", day))
        base = long or base  # Claude 4.6+ bill the 1M window at standard rates
    geo = GEO_MULTIPLIER.get(result["inference_geo"], 1.0)
    counts = (result["uncached_input_tokens"], result["cache_creation"]["ephemeral_5m_input_tokens"],
              result["cache_creation"]["ephemeral_1h_input_tokens"], result["cache_read_input_tokens"],
              result["output_tokens"])
    out = {("tokens", name): n * rate * geo / 1e6 * 100
           for name, n, rate in zip(TOKEN_TYPES, counts, base) if n}
    searches = result["server_tool_use"]["web_search_requests"]
    if searches:
        out[("web_search", None)] = searches * WEB_SEARCH_USD * 100
    return out
