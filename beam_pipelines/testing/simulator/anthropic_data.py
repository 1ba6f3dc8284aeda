"""Deterministic synthetic Anthropic Messages usage, per (admin key, UTC day).

Covers what the pricer must handle: current and retired Claude models (dated ids), the default
workspace (null id) and named ones, API keys and Console usage (null key), standard, batch and
a little priority tier, cache reads and 5-minute and 1-hour cache writes, web search requests,
and some usage in the ``200k-1M`` context window on the models that offer it.
"""
from __future__ import annotations

import hashlib
import random
from datetime import date

MODELS = (  # (model id, offers the 1M context window)
    ("claude-opus-4-5-20251101", False),
    ("claude-sonnet-4-5-20250929", True),
    ("claude-sonnet-4-20250514", True),
    ("claude-haiku-4-5-20251001", False),
    ("claude-3-5-haiku-20241022", False),
    ("claude-3-haiku-20240307", False),
    ("claude-3-opus-20240229", False),  # retired
    ("claude-3-5-sonnet-20240620", False),  # retired
)


def _seed(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


def _ident(prefix: str, key: str, n: int) -> str:
    return prefix + hashlib.sha256(f"{key}:{prefix}:{n}".encode()).hexdigest()[:24]


def org_shape(admin_key: str) -> dict:
    workspaces = [None, _ident("wrkspc_", admin_key, 1), _ident("wrkspc_", admin_key, 2)]
    keys = {w: [_ident("apikey_", f"{admin_key}{w}", j) for j in range(2)] + [None] for w in workspaces}
    return {"workspaces": workspaces, "api_keys": keys}


def day_results(admin_key: str, day: date) -> list[dict]:
    rng = random.Random(_seed("anthropic-day", admin_key, day.isoformat()))
    shape = org_shape(admin_key)
    results = []
    for workspace in shape["workspaces"]:
        for api_key in shape["api_keys"][workspace]:
            for model, long_capable in MODELS:
                for tier in ("standard", "batch", "priority"):
                    chance = {"standard": 0.35, "batch": 0.12, "priority": 0.04 if "sonnet-4-5" in model else 0}[tier]
                    if api_key is None and tier != "standard":
                        continue  # Console usage is interactive
                    windows = ("0-200k", "200k-1M") if long_capable else ("0-200k",)
                    for window in windows:
                        if rng.random() > (chance if window == "0-200k" else chance / 3):
                            continue
                        results.append(_result(rng, workspace, api_key, model, tier, window))
    return results


def _result(rng, workspace, api_key, model, tier, window) -> dict:
    requests = rng.randint(1, 60) if window == "200k-1M" else rng.randint(1, 2000)
    per_request = rng.randint(210_000, 600_000) if window == "200k-1M" else rng.randint(300, 20_000)
    total_input = requests * per_request
    cache_read = int(total_input * rng.choice((0.0, 0.2, 0.5)))
    write_5m = int(total_input * rng.choice((0.0, 0.05, 0.1)))
    write_1h = int(total_input * rng.choice((0.0, 0.0, 0.03)))
    return {
        "uncached_input_tokens": total_input - cache_read - write_5m - write_1h,
        "cache_creation": {"ephemeral_1h_input_tokens": write_1h, "ephemeral_5m_input_tokens": write_5m},
        "cache_read_input_tokens": cache_read,
        "output_tokens": requests * rng.randint(50, 2500),
        "server_tool_use": {"web_search_requests": rng.choice((0, 0, 0, rng.randint(1, 300)))},
        "api_key_id": api_key,
        "workspace_id": workspace,
        "model": model,
        "service_tier": tier,
        "context_window": window,
    }


# Anthropic's billing as the cost report shows it: the simulator's own table, independent of the
# pipeline's price list on purpose. USD per MTok: input, 5m write, 1h write, cache read, output.
BILLING = {
    "claude-opus-4-5": (5, 6.25, 10, 0.5, 25), "claude-sonnet-4-5": (3, 3.75, 6, 0.3, 15),
    "claude-sonnet-4": (3, 3.75, 6, 0.3, 15), "claude-haiku-4-5": (1, 1.25, 2, 0.1, 5),
    "claude-3-5-haiku": (0.8, 1, 1.6, 0.08, 4), "claude-3-haiku": (0.25, 0.3, 0.5, 0.03, 1.25),
    "claude-3-opus": (15, 18.75, 30, 1.5, 75), "claude-3-5-sonnet": (3, 3.75, 6, 0.3, 15),
}
WEB_SEARCH_USD = 0.01


def billed_cents(result: dict) -> dict[str, float] | None:
    """Cents per (cost_type, token_type) as Anthropic bills; None for usage not in the cost report."""
    if result["service_tier"] == "priority":
        return None
    family = result["model"][:-9]
    base = BILLING[family]
    factor = (0.5 if result["service_tier"] == "batch" else 1.0)
    long = result["context_window"] == "200k-1M"
    mult = (2, 2, 2, 2, 1.5) if long else (1, 1, 1, 1, 1)
    counts = (result["uncached_input_tokens"], result["cache_creation"]["ephemeral_5m_input_tokens"],
              result["cache_creation"]["ephemeral_1h_input_tokens"], result["cache_read_input_tokens"],
              result["output_tokens"])
    names = ("uncached_input_tokens", "cache_creation.ephemeral_5m_input_tokens",
             "cache_creation.ephemeral_1h_input_tokens", "cache_read_input_tokens", "output_tokens")
    out = {("tokens", n): c * r * m * factor / 1e6 * 100 for n, c, r, m in zip(names, counts, base, mult)}
    out[("web_search", None)] = result["server_tool_use"]["web_search_requests"] * WEB_SEARCH_USD * 100
    return out
