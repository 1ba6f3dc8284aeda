"""A token price list with effective dates, model-family resolution and org overrides.

Rules (shared by every token-priced provider):
- a usage model resolves to a price row by exact name first, then by its family (the name with
  a trailing date stripped: ``gpt-4o-2024-08-06`` → ``gpt-4o``, ``claude-3-haiku-20240307`` →
  ``claude-3-haiku``), so a snapshot with a price of its own keeps it;
- the row used is the one with the latest ``effective_from`` on or before the usage day;
- an org's override for the same model and tier wins over the default list;
- a batch row that is not listed is derived at 50% of the standard row (the published rule);
- anything else with no row is *unpriced*: callers must record a NULL cost, never 0.
"""
from __future__ import annotations

import bisect
import csv
import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from beam_pipelines.errors import ConfigError

DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
REQUIRED_COLUMNS = ("model", "service_tier", "effective_from", "input_usd_per_mtok", "output_usd_per_mtok")
PRICE_COLUMNS = (
    "input_usd_per_mtok",
    "cached_input_usd_per_mtok",
    "output_usd_per_mtok",
    "audio_input_usd_per_mtok",
    "audio_output_usd_per_mtok",
)
STANDARD_TIER = "default"
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class TokenPrice:
    """USD per million tokens. ``None`` means the component is not separately priced."""

    model: str
    tier: str
    effective_from: date
    input: float
    output: float
    cached_input: float | None = None
    audio_input: float | None = None
    audio_output: float | None = None
    org_slug: str | None = None
    derived: bool = False

    @property
    def version(self) -> str:
        tag = f"{self.model}:{self.tier}@{self.effective_from.isoformat()}"
        if self.derived:
            tag += ":derived"
        if self.org_slug:
            tag += f":org={self.org_slug}"
        return tag

    def batch_discounted(self) -> TokenPrice:
        def half(value: float | None) -> float | None:
            return None if value is None else value * BATCH_DISCOUNT

        return replace(
            self,
            tier="batch",
            input=self.input * BATCH_DISCOUNT,
            output=self.output * BATCH_DISCOUNT,
            cached_input=half(self.cached_input),
            audio_input=half(self.audio_input),
            audio_output=half(self.audio_output),
            derived=True,
        )


def _fill_batch_gaps(batch: TokenPrice, standard: TokenPrice) -> TokenPrice:
    """A batch row may publish only some rates; the others are 50% of the standard ones."""
    derived = standard.batch_discounted()
    gaps = {
        attr: getattr(derived, attr)
        for attr in ("cached_input", "audio_input", "audio_output")
        if getattr(batch, attr) is None and getattr(derived, attr) is not None
    }
    return replace(batch, **gaps) if gaps else batch


def model_family(model: str) -> str:
    return DATE_SUFFIX.sub("", model)


class PriceList:
    """Immutable lookup structure; picklable so it can be a Beam side input."""

    def __init__(self, prices: list[TokenPrice]):
        self._rows: dict[tuple[str | None, str, str], list[TokenPrice]] = {}
        for price in prices:
            self._rows.setdefault((price.org_slug, price.model, price.tier), []).append(price)
        for key, rows in self._rows.items():
            rows.sort(key=lambda p: p.effective_from)
            dates = [p.effective_from for p in rows]
            if len(set(dates)) != len(dates):
                raise ConfigError(f"price list: duplicate effective_from for {key[1]} {key[2]}")
        self._models = {model for (_, model, _) in self._rows}

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def models(self) -> set[str]:
        return set(self._models)

    def with_overrides(self, overrides: list[TokenPrice]) -> PriceList:
        return PriceList([p for rows in self._rows.values() for p in rows] + list(overrides))

    def resolve_model(self, model: str | None) -> str | None:
        """The price-list model a usage model bills as, or None when it has no price."""
        if not model:
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
        return rows[index] if index >= 0 else None

    def lookup(self, model: str | None, tier: str, day: date, org_slug: str | None = None) -> TokenPrice | None:
        price_model = self.resolve_model(model)
        if price_model is None:
            return None
        owners = (org_slug, None) if org_slug else (None,)
        standard = None
        if tier == "batch":
            standard = next((p for o in owners if (p := self._effective(o, price_model, STANDARD_TIER, day))), None)
        for owner in owners:
            found = self._effective(owner, price_model, tier, day)
            if found is not None:
                return _fill_batch_gaps(found, standard) if standard else found
        return standard.batch_discounted() if standard else None


def _number(value: str, source: str, line: int, column: str, required: bool) -> float | None:
    value = (value or "").strip()
    if not value:
        if required:
            raise ConfigError(f"{source}: line {line}: {column}: required")
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{source}: line {line}: {column}: not a number: {value!r}") from None
    if number < 0 or number != number:
        raise ConfigError(f"{source}: line {line}: {column}: must be >= 0, got {value!r}")
    return number


def parse_price_rows(rows: list[dict], source: str, org_slug: str | None = None) -> list[TokenPrice]:
    prices = []
    for line, row in enumerate(rows, start=2):
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
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
        values = {
            c: _number(str(row.get(c) or ""), source, line, c, c in REQUIRED_COLUMNS)
            for c in PRICE_COLUMNS
        }
        prices.append(
            TokenPrice(
                model=model,
                tier=tier,
                effective_from=effective,
                input=values["input_usd_per_mtok"],
                output=values["output_usd_per_mtok"],
                cached_input=values["cached_input_usd_per_mtok"],
                audio_input=values["audio_input_usd_per_mtok"],
                audio_output=values["audio_output_usd_per_mtok"],
                org_slug=org_slug,
            )
        )
    return prices


def load_price_list(path: Path, display: str | None = None) -> PriceList:
    source = display or path.name
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read price list: {exc.strerror}") from None
    if not rows:
        raise ConfigError(f"{source}: price list has no rows")
    return PriceList(parse_price_rows(rows, source))
