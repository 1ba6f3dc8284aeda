"""LiteLLM's model price map as a second opinion on the price book.

LiteLLM ships every provider's list prices inside its wheel
(``litellm/model_prices_and_context_window_backup.json``). We read that file from a pinned release
and never install the package: a pinned version makes a diff reproducible (the same wheel gives the
same proposals on every machine), and not installing it keeps its dependencies out of our virtualenv.
The wheel is fetched with pip's own ``download`` command (the index pip is configured with), once,
into a cache folder.

The map states prices in US dollars per token as JSON floats (``1.25e-06``). Our book states US
dollars per million tokens as exact decimals, so each float is read back through its shortest
``repr`` (the literal a person typed into the JSON) and scaled by 10^6 as a ``Decimal``: 1.25e-06
becomes exactly 1.25, never 1.2499999999999999.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from decimal import Decimal
from pathlib import Path

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.pricing.money import RATE_DECIMALS
from beam_pipelines.pricing.price_list import model_family

LITELLM_VERSION = "1.110.2"
PRICE_MAP_MEMBER = "litellm/model_prices_and_context_window_backup.json"
SOURCE_URL = f"https://github.com/BerriAI/litellm (model_prices_and_context_window_backup.json, v{LITELLM_VERSION})"
PER_MTOK = Decimal(10) ** 6
INPUT_KEY = "input_cost_per_token"
INPUT_COLUMN = "input_usd_per_mtok"
WEB_SEARCH_COLUMN = "web_search_usd_per_request"

# LiteLLM per-token key (without tier or long-context suffix) -> our CSV column
OPENAI_COLUMNS = {
    "input_cost_per_token": "input_usd_per_mtok",
    "cache_read_input_token_cost": "cached_input_usd_per_mtok",
    "cache_creation_input_token_cost": "cache_write_30m_usd_per_mtok",
    "cache_creation_input_token_cost_above_12hr": "cache_write_12h_usd_per_mtok",
    "output_cost_per_token": "output_usd_per_mtok",
    "input_cost_per_audio_token": "audio_input_usd_per_mtok",
    "cache_read_input_audio_token_cost": "cached_audio_input_usd_per_mtok",
    "output_cost_per_audio_token": "audio_output_usd_per_mtok",
    "input_cost_per_image_token": "image_input_usd_per_mtok",
    "cache_read_input_image_token_cost": "cached_image_input_usd_per_mtok",
    "output_cost_per_image_token": "image_output_usd_per_mtok",
}
ANTHROPIC_COLUMNS = {
    "input_cost_per_token": "input_usd_per_mtok",
    "cache_creation_input_token_cost": "cache_write_5m_usd_per_mtok",  # Anthropic's default write is 5 minutes
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_usd_per_mtok",
    "cache_read_input_token_cost": "cache_read_usd_per_mtok",
    "output_cost_per_token": "output_usd_per_mtok",
}
# key suffix -> our tier; "priority" is renamed "fast" for the models whose pages call it so (see fast_tier_name)
OPENAI_TIERS = {"": "default", "_batches": "batch", "_flex": "flex", "_priority": "priority", "_ultrafast": "ultrafast"}
ANTHROPIC_TIERS = {"": "standard", "_batches": "batch"}
# long-prompt suffixes: OpenAI prices prompts over 272K higher; Anthropic's Haiku 5.5 over 100K (and older models
# over 200K) -- all stored as the tier's ``_long_context`` row
PROVIDERS = {
    "openai": (OPENAI_COLUMNS, OPENAI_TIERS, ("_above_272k_tokens",), False),
    "anthropic": (ANTHROPIC_COLUMNS, ANTHROPIC_TIERS, ("_above_200k_tokens", "_above_100k_tokens"), True),
}
GPT_MAJOR = re.compile(r"^gpt-(\d+)")
FAST_FROM_GPT_MAJOR = 6


class PriceSourceError(ConvergenceError):
    """The third-party price source cannot be fetched or read."""


def fetch_wheel(cache_dir: Path, version: str = LITELLM_VERSION) -> Path:
    """The pinned LiteLLM wheel in ``cache_dir``, downloaded by pip (no install, no dependencies) if not there yet."""
    cache_dir = Path(cache_dir)
    cached = sorted(cache_dir.glob(f"litellm-{version}-*.whl"))
    if cached:
        return cached[-1]
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"litellm=={version}", "--no-deps", "--only-binary=:all:",
               "-d", str(cache_dir)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)  # noqa: S603 - fixed argv, no shell
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PriceSourceError(f"pip download litellm=={version}: {exc}") from None
    if proc.returncode != 0:
        last = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), f"exit {proc.returncode}")
        raise PriceSourceError(f"pip download litellm=={version} failed: {last.strip()}")
    cached = sorted(cache_dir.glob(f"litellm-{version}-*.whl"))
    if not cached:
        raise PriceSourceError(f"pip download litellm=={version}: no wheel appeared in {cache_dir}")
    return cached[-1]


def read_price_map(wheel_path: Path) -> dict:
    """The price map inside a LiteLLM wheel, as a dict of model key -> entry."""
    path = Path(wheel_path)
    try:
        with zipfile.ZipFile(path) as wheel:
            raw = wheel.read(PRICE_MAP_MEMBER)
    except FileNotFoundError:
        raise PriceSourceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PriceSourceError(f"{path}: is a directory, not a wheel") from None
    except zipfile.BadZipFile:
        raise PriceSourceError(f"{path}: not a wheel (not a zip archive)") from None
    except KeyError:
        raise PriceSourceError(f"{path}: not a LiteLLM wheel (no {PRICE_MAP_MEMBER})") from None
    try:
        price_map = json.loads(raw)
    except ValueError as exc:
        raise PriceSourceError(f"{path}: {PRICE_MAP_MEMBER} is not valid JSON ({exc})") from None
    if not isinstance(price_map, dict):
        raise PriceSourceError(f"{path}: {PRICE_MAP_MEMBER} is not a JSON object")
    return price_map


def per_mtok(value: float) -> Decimal:
    """USD per token (a JSON float) -> USD per million tokens, exactly: ``1.25e-06`` -> ``Decimal('1.25')``."""
    return (Decimal(repr(float(value))) * PER_MTOK).normalize()


def exact(value: float) -> Decimal:
    """A per-request USD float as the decimal it was written as."""
    return Decimal(repr(float(value))).normalize()


def fast_tier_name(model: str) -> str:
    """OpenAI's Fast mode is ``fast`` on the GPT-6.x pages (and in the book), ``priority`` on older models."""
    found = GPT_MAJOR.match(model)
    return "fast" if found and int(found.group(1)) >= FAST_FROM_GPT_MAJOR else "priority"


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 and value == value


def _fits_book(rate: Decimal) -> bool:
    return rate == rate.quantize(Decimal(1).scaleb(-RATE_DECIMALS))


def _parse_key(key: str, columns: dict, tiers: dict, long_suffixes: tuple) -> tuple[str, str] | None:
    """``cache_creation_input_token_cost_above_12hr_above_272k_tokens_priority`` -> (column, tier); None if unknown."""
    tier_suffix = next((s for s in tiers if s and key.endswith(s)), "")
    base = key[: len(key) - len(tier_suffix)]
    long = next((s for s in long_suffixes if base.endswith(s)), None)
    if long:
        base = base[: -len(long)]
    column = columns.get(base)
    if column is None:
        return None
    tier = tiers[tier_suffix]
    return column, f"{tier}_long_context" if long else tier


def _entry_tiers(name: str, entry: dict, provider: str) -> dict[str, dict[str, Decimal]]:
    """One entry's rates per tier, as {tier: {column: Decimal}}; a tier without an input rate is left out."""
    columns, tiers, long_suffixes, web_search = PROVIDERS[provider]
    found: dict[str, dict[str, Decimal]] = {}
    for key in sorted(entry):
        parsed = _parse_key(key, columns, tiers, long_suffixes)
        if parsed is None or not _number(entry[key]):
            continue
        column, tier = parsed
        rate = per_mtok(entry[key])
        if _fits_book(rate):  # a rate the book cannot state exactly is not proposed
            found.setdefault(tier, {}).setdefault(column, rate)
    if provider == "openai":
        found = {(tier.replace("priority", fast_tier_name(name), 1)): rates for tier, rates in found.items()}
    found = {tier: rates for tier, rates in found.items() if INPUT_COLUMN in rates}
    per_query = entry.get("search_context_cost_per_query")
    if web_search and isinstance(per_query, dict) and _number(per_query.get("search_context_size_medium")):
        fee = exact(per_query["search_context_size_medium"])
        if _fits_book(fee):
            for rates in found.values():  # the search fee is the same on every tier
                rates[WEB_SEARCH_COLUMN] = fee
    return found


def _same_prices(a: dict[str, dict], b: dict[str, dict]) -> bool:
    """No rate that both state differs (a snapshot that lists fewer tiers is still the same price)."""
    return all(a[t][c] == b[t][c] for t in a.keys() & b.keys() for c in a[t].keys() & b[t].keys())


def _provider_entries(price_map: dict, provider: str) -> dict[str, dict]:
    """``name -> entry`` for the provider's per-token models, the ``openai/`` style prefix removed.

    Left out: entries without a per-token input price (per image, per second, per character), sized
    image entries (``high/1024-x-1024/gpt-image-1``), and fine-tuned ``ft:`` entries, which usage
    reports as ``ft:<base>:<org>::<id>`` and which therefore never match a book row.
    """
    entries: dict[str, dict] = {}
    prefix = f"{provider}/"
    for key, entry in price_map.items():
        if not isinstance(entry, dict) or entry.get("litellm_provider") != provider or not _number(entry.get(INPUT_KEY)):
            continue
        name = key.removeprefix(prefix)
        if "/" in name or name.startswith("ft:"):
            continue
        if name not in entries or key == name:  # an unprefixed key wins over its prefixed twin
            entries[name] = {**entry, "_key": key}
    return entries


def litellm_rows(price_map: dict, provider: str) -> list[dict]:
    """The provider's LiteLLM prices as book rows: ``model``, ``service_tier``, rate columns (``Decimal``), ``litellm_key``.

    Naming follows the book: a dated snapshot (``gpt-4o-2024-08-06``) is listed under its family
    (``gpt-4o``), which the price list falls back to, unless its rates differ from the family's
    (``gpt-4o-2024-05-13``), in which case it keeps its own name and its own row. Where LiteLLM has
    only dated keys, the latest one speaks for the family.
    """
    if provider not in PROVIDERS:
        raise PriceSourceError(f"unknown provider {provider!r} (expected one of {', '.join(PROVIDERS)})")
    families: dict[str, list[str]] = {}
    entries = _provider_entries(price_map, provider)
    for name in entries:
        families.setdefault(model_family(name), []).append(name)
    rows = []
    for family, names in families.items():
        reference = family if family in names else max(names)
        family_tiers = _entry_tiers(reference, entries[reference], provider)
        named = [(family, reference, family_tiers)]
        for name in sorted(set(names) - {reference}):
            tiers = _entry_tiers(name, entries[name], provider)
            if not _same_prices(tiers, family_tiers):
                named.append((name, name, tiers))
        for model, source, tiers in named:
            for tier, rates in tiers.items():
                rows.append({"model": model, "service_tier": tier, **rates, "litellm_key": entries[source]["_key"]})
    return sorted(rows, key=lambda r: (r["model"], r["service_tier"]))
