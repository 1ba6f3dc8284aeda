"""A price list with effective dates, model-family resolution and org overrides.

Rules (shared by every token-priced provider):
- a usage model resolves to a price row by exact name first, then by its family (the name with
  a trailing date stripped: ``gpt-4o-2024-08-06`` → ``gpt-4o``, ``claude-3-haiku-20240307`` →
  ``claude-3-haiku``), so a snapshot with a price of its own keeps it;
- the row used is the one with the latest ``effective_from`` on or before the usage day;
- an org's override for the same model and tier wins over the default list;
- a batch tier that is not listed (or lists only some rates) is derived at 50% of its standard
  tier's per-token rates (the providers' published rule; per-request fees are not discounted);
- a tier that is not listed may be listed under an alias (OpenAI's usage API reports Fast mode as
  ``priority`` for some model families and ``fast`` for others);
- a row with no rate at all withdraws the tier from its ``effective_from`` on;
- anything else with no row is *unpriced*: callers must record a NULL cost, never 0.

Rates are keyed by their CSV column, which carries the unit: ``input_usd_per_mtok`` (USD per
million tokens), ``web_search_usd_per_request``. They are exact ``Decimal`` values (at most six
decimals); other columns (sources, notes) are kept with the row but take no part in pricing.
"""
from __future__ import annotations

import bisect
import csv
import re
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

from beam_pipelines.errors import ConfigError
from beam_pipelines.pricing.money import RateError, parse_rate

DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
KEY_COLUMNS = ("model", "service_tier", "effective_from")
RATE_SUFFIXES = ("_usd_per_mtok", "_usd_per_request")
REQUIRED_RATES = ("input_usd_per_mtok",)  # image models list no text output rate
BATCH_DISCOUNT = Decimal("0.5")
OPENAI_BATCH_TIERS = {"batch": "default"}


@dataclass(frozen=True)
class TokenPrice:
    model: str
    tier: str
    effective_from: date
    rates: dict[str, Decimal | None] = field(default_factory=dict)
    org_slug: str | None = None
    derived: bool = False

    def rate(self, column: str) -> Decimal | None:
        return self.rates.get(column)

    @property
    def version(self) -> str:
        tag = f"{self.model}:{self.tier}@{self.effective_from.isoformat()}"
        if self.derived:
            tag += ":derived"
        if self.org_slug:
            tag += f":org={self.org_slug}"
        return tag

    def discounted(self, tier: str) -> TokenPrice:
        rates = {
            name: (None if value is None else value * BATCH_DISCOUNT) if name.endswith("_usd_per_mtok") else value
            for name, value in self.rates.items()
        }
        return replace(self, tier=tier, rates=rates, derived=True)


def model_family(model: str) -> str:
    return DATE_SUFFIX.sub("", model)


class PriceList:
    """Immutable lookup structure; picklable so it can be a Beam side input.

    ``batch_tiers`` maps each discounted tier to the standard tier it derives from.
    """

    def __init__(self, prices: list[TokenPrice], batch_tiers: dict[str, str] | None = None,
                 tier_aliases: dict[str, str] | None = None):
        self.batch_tiers = dict(OPENAI_BATCH_TIERS if batch_tiers is None else batch_tiers)
        self.tier_aliases = dict(tier_aliases or {})
        self._rows: dict[tuple[str | None, str, str], list[TokenPrice]] = {}
        for price in prices:
            self._rows.setdefault((price.org_slug, price.model, price.tier), []).append(price)
        for key, rows in self._rows.items():
            rows.sort(key=lambda p: p.effective_from)
            dates = [p.effective_from for p in rows]
            if len(set(dates)) != len(dates):
                raise ConfigError(f"price list: duplicate effective_from for {key[1]} {key[2]}")
        self._models = {model for (_, model, _) in self._rows}
        self._override_orgs = frozenset(org for (org, _, _) in self._rows if org)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def all_prices(self) -> list[TokenPrice]:
        return [p for rows in self._rows.values() for p in rows]

    def models(self) -> set[str]:
        return set(self._models)

    @property
    def override_orgs(self) -> frozenset[str]:
        """The orgs with rows of their own in this list; any other org's lookups are the default list's."""
        return self._override_orgs

    def with_overrides(self, overrides: list[TokenPrice]) -> PriceList:
        return PriceList(self.all_prices() + list(overrides), self.batch_tiers, self.tier_aliases)

    def resolve_model(self, model: str | None) -> str | None:
        """The price-list model a usage model bills as, or None when it has no price (also for a missing
        model, which pandas may hand over as NaN rather than None)."""
        if not isinstance(model, str) or not model:
            return None
        if model in self._models:
            return model
        family = model_family(model)
        return family if family in self._models else None

    def _effective(self, org: str | None, model: str, tier: str, day: date) -> TokenPrice | None:
        rows = self._rows.get((org, model, tier))
        if not rows:
            return None
        index = bisect.bisect_right([p.effective_from for p in rows], day) - 1
        if index < 0 or not any(v is not None for v in rows[index].rates.values()):
            return None  # not yet listed, or withdrawn from that day (a row without any rate)
        return rows[index]

    def _first(self, owners, model: str, tier: str, day: date) -> TokenPrice | None:
        for name in (tier, self.tier_aliases.get(tier)):
            found = next((p for o in owners if name and (p := self._effective(o, model, name, day))), None)
            if found is not None:
                return found
        return None

    def lookup(self, model: str | None, tier: str, day: date, org_slug: str | None = None) -> TokenPrice | None:
        price_model = self.resolve_model(model)
        if price_model is None:
            return None
        owners = (org_slug, None) if org_slug else (None,)
        found = self._first(owners, price_model, tier, day)
        standard_tier = self.batch_tiers.get(tier)
        if standard_tier is None:
            return found
        standard = self._first(owners, price_model, standard_tier, day)
        if standard is None:
            return found
        derived = standard.discounted(tier)
        if found is None:
            return derived
        gaps = {k: v for k, v in derived.rates.items() if found.rates.get(k) is None and v is not None}
        return replace(found, rates={**found.rates, **gaps}) if gaps else found


def _number(value: str, source: str, line: int, column: str, required: bool) -> Decimal | None:
    value = (value or "").strip()
    if not value:
        if required:
            raise ConfigError(f"{source}: line {line}: {column}: required")
        return None
    try:
        return parse_rate(value)
    except RateError as exc:
        raise ConfigError(f"{source}: line {line}: {column}: {exc}") from None


def parse_price_rows(rows: list[dict], source: str, org_slug: str | None = None) -> list[TokenPrice]:
    prices = []
    for line, row in enumerate(rows, start=2):
        missing = [c for c in (*KEY_COLUMNS, *REQUIRED_RATES) if c not in row]
        if missing:
            raise ConfigError(f"{source}: missing column(s) {missing}")
        model = (row["model"] or "").strip()
        tier = (row["service_tier"] or "").strip()
        if not model or not tier:
            raise ConfigError(f"{source}: line {line}: model and service_tier are required")
        try:
            effective = date.fromisoformat(str(row["effective_from"]).strip())
        except ValueError:
            raise ConfigError(
                f"{source}: line {line}: effective_from: not a YYYY-MM-DD date: {row['effective_from']!r}"
            ) from None
        columns = [c for c in row if c and c.endswith(RATE_SUFFIXES)]
        withdrawn = all(not str(row.get(c) or "").strip() for c in columns)  # no rate at all: not offered from then
        rates = {column: _number(str(row.get(column) or ""), source, line, column,
                                 column in REQUIRED_RATES and not withdrawn) for column in columns}
        prices.append(TokenPrice(model, tier, effective, rates, org_slug))
    return prices


def load_price_list(path: Path, display: str | None = None, batch_tiers: dict[str, str] | None = None,
                    tier_aliases: dict[str, str] | None = None) -> PriceList:
    source = display or path.name
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read price list: {exc.strerror}") from None
    if not rows:
        raise ConfigError(f"{source}: price list has no rows")
    return PriceList(parse_price_rows(rows, source), batch_tiers, tier_aliases)
