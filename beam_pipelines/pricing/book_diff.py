"""Proposals for the price book from a third-party price list, as new rows only.

The book is history: each row is one model × tier × effective date and a past row is never
rewritten, because every cost already computed names the row it used. So whatever another source
says, the only edits proposed here are rows appended to the file:

- an **addition** for a model (or a model's tier) the book has no row for at all. It takes effect
  from the model's first ``effective_from`` in the book, or from 2020-01-01 for a model the book
  does not know: a model's first price applies to all of its usage (its days are UNPRICED until
  then), and there is no earlier price to rewrite. A tier the book already prices through a rule
  (a batch tier at 50% of its standard tier, Fast under its ``priority``/``fast`` alias) is not
  added when the rule gives the same rates.
- a **change** where the rate in force on ``as_of`` differs, for a column the source states: a new
  row from ``as_of`` with the source's rates, and our current values for the columns it does not
  state. Days before ``as_of`` keep the price they were computed with.
- a **conflict** instead of a change when the row in force came from the provider itself
  (``source_kind`` ``official``, ``official_scraped``, ``official_quoted``, ``official_rule``): the
  provider's page decides, so a person checks it; nothing is proposed. Also a conflict: a row in
  force that already starts on ``as_of`` (a second row that day would be ambiguous).

The result is shown as a unified diff of the CSV file with the rows inserted where the file's
order (model, service_tier, effective_from) puts them; every existing line stays byte-identical.
"""
from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from beam_pipelines.errors import ConfigError
from beam_pipelines.pricing.anthropic_cost import BATCH_TIERS as ANTHROPIC_BATCH_TIERS
from beam_pipelines.pricing.litellm_source import LITELLM_VERSION, SOURCE_URL
from beam_pipelines.pricing.openai_cost import TIER_ALIASES as OPENAI_TIER_ALIASES
from beam_pipelines.pricing.price_list import KEY_COLUMNS, OPENAI_BATCH_TIERS, RATE_SUFFIXES, PriceList, parse_price_rows

NEW_MODEL_FROM = date(2020, 1, 1)
OFFICIAL_PREFIX = "official"
THIRD_PARTY = "third_party"


@dataclass(frozen=True)
class Book:
    """Where a provider's price book lives under the configs folder, and the rules its price list applies."""

    csv: str
    batch_tiers: dict[str, str]
    tier_aliases: dict[str, str]


BOOKS = {
    "openai": Book("openai/seed/data/default_pricing.csv", OPENAI_BATCH_TIERS, OPENAI_TIER_ALIASES),
    "anthropic": Book("anthropic/seed/data/default_pricing.csv", ANTHROPIC_BATCH_TIERS, {}),
}


@dataclass(frozen=True)
class Proposal:
    kind: str  # "addition" | "change"
    row: dict[str, str]  # a complete CSV row, every header column
    detail: str

    def line(self) -> str:
        sign = "+" if self.kind == "addition" else "~"
        return f"{sign} {self.kind} {self.row['model']} {self.row['service_tier']} from {self.row['effective_from']}: {self.detail}"


@dataclass(frozen=True)
class Conflict:
    model: str
    tier: str
    effective_from: str
    source_kind: str
    differences: tuple[tuple[str, str, str], ...]  # (column, ours, litellm)
    reason: str = "official row: the provider's page decides"

    def line(self) -> str:
        values = "; ".join(f"{c} ours {o or '-'} vs litellm {t}" for c, o, t in self.differences)
        return f"! conflict {self.model} {self.tier} (row of {self.effective_from}, {self.source_kind}): {values} ({self.reason})"


@dataclass
class BookDiff:
    """The proposals for one CSV file, and the file's text before and after them."""

    display: str
    as_of: date
    original: str
    proposals: list[Proposal] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    updated: str = ""

    @property
    def additions(self) -> list[Proposal]:
        return [p for p in self.proposals if p.kind == "addition"]

    @property
    def changes(self) -> list[Proposal]:
        return [p for p in self.proposals if p.kind == "change"]

    def unified_diff(self) -> str:
        return "".join(difflib.unified_diff(_lines(self.original), _lines(self.updated),
                                            fromfile=f"a/{self.display}", tofile=f"b/{self.display}"))

    def summary(self) -> str:
        head = (f"{self.display} vs LiteLLM v{LITELLM_VERSION} as of {self.as_of}: {len(self.additions)} addition(s), "
                f"{len(self.changes)} change(s), {len(self.conflicts)} conflict(s)")
        return "\n".join([head, *(f"  {p.line()}" for p in self.proposals), *(f"  {c.line()}" for c in self.conflicts)])


def _lines(text: str) -> list[str]:
    return io.StringIO(text).readlines()  # splits on "\n" only, keeping each line's ending


def _text(value) -> str:
    return "" if value is None else format(Decimal(value).normalize(), "f")


def _records(text: str, source: str) -> tuple[list[str], list[tuple[tuple[str, str, str] | None, str]]]:
    """The header and every record with its exact original text (a quoted field may span lines)."""
    lines = _lines(text)
    reader = csv.reader(io.StringIO(text))
    records, header, start = [], None, 0
    for fields in reader:
        chunk = "".join(lines[start:reader.line_num])
        start = reader.line_num
        if header is None:
            header = fields
            records.append((None, chunk))
        elif fields:
            row = dict(zip(header, fields))
            records.append((tuple(row.get(c, "") for c in KEY_COLUMNS), chunk))
    if header is None:
        raise ConfigError(f"{source}: price list has no header")
    return header, records


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as fh:  # newline="": line endings exactly as stored
        return fh.read()


def _terminator(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _render(header: list[str], rows: list[dict], terminator: str) -> list[str]:
    out = []
    for row in rows:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=terminator).writerow([row.get(c, "") for c in header])
        out.append(buffer.getvalue())
    return out


def insert_rows(text: str, rows: list[dict], source: str) -> str:
    """``text`` with ``rows`` inserted in the file's order (model, service_tier, effective_from); old lines untouched."""
    header, records = _records(text, source)
    terminator = _terminator(text)
    if rows and records and not records[-1][1].endswith("\n"):
        records[-1] = (records[-1][0], records[-1][1] + terminator)
    ordered = sorted(rows, key=lambda r: tuple(r[c] for c in KEY_COLUMNS))
    for row, line in zip(ordered, _render(header, ordered, terminator)):
        key = tuple(row[c] for c in KEY_COLUMNS)
        index = next((i for i, (k, _) in enumerate(records) if k is not None and k > key), len(records))
        records.insert(index, (key, line))
    return "".join(chunk for _, chunk in records)


def _proposed_row(header: list[str], base: dict[str, str], theirs: dict, tier: str, effective: date, as_of: date,
                  note: str) -> dict[str, str]:
    row = {c: base.get(c, "") for c in header}
    row.update({c: _text(v) for c, v in theirs.items()})
    row.update(service_tier=tier, effective_from=effective.isoformat(), source_url=SOURCE_URL,
               source_read_on=as_of.isoformat(), source_kind=THIRD_PARTY, notes=note)
    return row


def _in_force(rows: list[dict], as_of: date) -> dict | None:
    earlier = [r for r in rows if date.fromisoformat(r["effective_from"].strip()) <= as_of]
    return max(earlier, key=lambda r: r["effective_from"]) if earlier else None


def propose(header: list[str], book_rows: list[dict], source_rows: list[dict], as_of: date, book: Book,
            source: str) -> tuple[list[Proposal], list[Conflict]]:
    """Additions, changes and conflicts for ``source_rows`` (from :func:`litellm_rows`) against the book's rows."""
    prices = PriceList(parse_price_rows(book_rows, source), book.batch_tiers, book.tier_aliases)
    rate_columns = [c for c in header if c.endswith(RATE_SUFFIXES)]
    by_key: dict[tuple[str, str], list[dict]] = {}
    first: dict[str, str] = {}
    for row in book_rows:
        model, tier = row["model"].strip(), row["service_tier"].strip()
        by_key.setdefault((model, tier), []).append(row)
        first[model] = min(first.get(model, row["effective_from"]), row["effective_from"])
    proposals, conflicts = [], []
    for theirs_row in source_rows:
        model, tier, key = theirs_row["model"], theirs_row["service_tier"], theirs_row.get("litellm_key", "")
        theirs = {c: theirs_row[c] for c in rate_columns if theirs_row.get(c) is not None}
        if "input_usd_per_mtok" not in theirs:
            continue
        book_tier = next((t for t in (tier, book.tier_aliases.get(tier)) if t and (model, t) in by_key), None)
        current = prices.lookup(model, book_tier or tier, as_of)
        ours = current.rates if current else {}
        differences = tuple((c, _text(ours.get(c)), _text(v)) for c, v in theirs.items() if ours.get(c) != v)
        if book_tier is None:
            if current is not None and not differences:
                continue  # priced the same by a rule (batch at 50%, the alias) or through the model's family
            known = model in first
            effective = date.fromisoformat(first[model]) if known else NEW_MODEL_FROM
            why = "new tier of a known model: from the model's first price" if known \
                else "new model: its first price applies to all of its usage"
            note = f"Proposed from LiteLLM v{LITELLM_VERSION} (key {key}); {why}; not checked against the provider's page"
            proposals.append(Proposal("addition", _proposed_row(header, {"model": model}, theirs, tier, effective, as_of,
                                                                note), f"{why} (litellm key {key})"))
            continue
        row = _in_force(by_key[(model, book_tier)], as_of)
        if row is None or not differences:
            continue  # nothing in force yet on as_of, or the same price
        kind = (row.get("source_kind") or "").strip()
        if kind.startswith(OFFICIAL_PREFIX):
            conflicts.append(Conflict(model, book_tier, row["effective_from"], kind, differences))
        elif row["effective_from"].strip() == as_of.isoformat():
            conflicts.append(Conflict(model, book_tier, row["effective_from"], kind, differences,
                                      "a row already starts on as_of"))
        else:
            changed = ", ".join(f"{c} {o or '-'} -> {t}" for c, o, t in differences)
            note = (f"Proposed from LiteLLM v{LITELLM_VERSION} (key {key}): differs from the row of {row['effective_from']}"
                    f" ({kind or 'no source_kind'}) in {changed}; other columns copied from that row")
            proposals.append(Proposal("change", _proposed_row(header, row, theirs, book_tier, as_of, as_of, note),
                                      f"was the row of {row['effective_from']} ({kind}): {changed}"))
    return proposals, conflicts


def diff_book(path: Path, source_rows: list[dict], as_of: date, book: Book, display: str | None = None) -> BookDiff:
    """Read the CSV at ``path`` and propose rows from ``source_rows``; the file is not written."""
    display = display or path.name
    try:
        text = _read(path)
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read price list: {exc.strerror}") from None
    header, _ = _records(text, display)
    book_rows = list(csv.DictReader(io.StringIO(text)))
    proposals, conflicts = propose(header, book_rows, source_rows, as_of, book, display)
    result = BookDiff(display, as_of, text, proposals, conflicts)
    result.updated = insert_rows(text, [p.row for p in proposals], display)
    check = list(csv.DictReader(io.StringIO(result.updated)))
    PriceList(parse_price_rows(check, f"{display} (with the proposed rows)"), book.batch_tiers, book.tier_aliases)
    return result


def apply_diff(path: Path, result: BookDiff) -> bool:
    """Write the file with the proposed rows; False (nothing written) when there is nothing to add."""
    if result.updated == result.original:
        return False
    try:
        if _read(path) != result.original:
            raise ConfigError(f"{result.display}: changed since it was read; run the diff again")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(result.updated, encoding="utf-8", newline="")
        tmp.replace(path)  # all or nothing: a reader never sees half a file
    except OSError as exc:
        raise ConfigError(f"{result.display}: cannot write price list: {exc.strerror}") from None
    return True
