"""A first-party FOCUS 1.2 validator for pandas or Arrow data, driven by ``focus_1_2_columns.yml``.

Why our own: the FinOps Foundation's ``focus-validator`` on PyPI (1.0.0) only knows FOCUS ≤ 1.0;
the 1.2-capable releases are GitHub-only, exit 0 on failures and let wrong-case enum values pass
(see the research notes). Everything the YAML states per column is checked from the YAML: presence
of Mandatory columns, data types, ``allows_nulls``, ``allowed_values`` (exact casing), the
(ServiceCategory, ServiceSubcategory) pairs and the conditional nullability rules, which are parsed
from their normative text when it is written over columns and literals, e.g.

    MUST NOT be null when ChargeCategory in ('Usage','Purchase') and ChargeClass != 'Correction'
    when ChargeCategory = 'Usage' and CommitmentDiscountStatus != 'Unused': MUST NOT be null unless ...
    MUST be null in all other cases

Rules written in prose ("when the charge is related to a resource") need facts the data does not
carry and are not checked. The attribute rules (ColumnHandling, NullHandling, NumericFormat,
DateTimeFormat, CurrencyFormat, KeyValueFormat, UnitFormat) and cross-column rules (periods, unit
price × quantity, Credit rows, one category per service) are coded here.

"Match" of unit price × quantity and cost is judged at NUMERIC's scale: the difference must be
within what rounding each stored value to nine decimals can explain, half a nano-unit of the cost
plus half a nano-unit of the unit price per unit of quantity. Each finding says MUST ("error") or
SHOULD ("warning") and names the column.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa

from beam_pipelines.focus.columns import CUSTOM_PREFIX, ColumnSpec, focus_columns

ERROR, WARNING = "error", "warning"
HALF_NANO = Decimal("0.5e-9")
ISO_4217 = re.compile(r"^[A-Z]{3}$")
DATETIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UTC_NAMES = {"UTC", "utc", "+00:00", "Etc/UTC", "Z", "GMT"}
DATA_SIZES = {f"{p}{u}" for p in ("", "K", "M", "G", "T", "P", "E") for u in ("b", "B")} | \
             {f"{p}i{u}" for p in ("K", "M", "G", "T", "P", "E") for u in ("b", "B")}
TIME_PLURAL = {"Years", "Months", "Days", "Hours", "Minutes", "Seconds"}
TIME_SINGULAR = {"Year", "Month", "Day", "Hour", "Minute", "Second"}
UNIT_COLUMNS = ("ConsumedUnit", "PricingUnit", "CommitmentDiscountUnit")
KEY_VALUE = "JSON"


@dataclass(frozen=True)
class Finding:
    column: str
    rule: str
    detail: str
    severity: str = ERROR


# ---- conditional nullability, parsed from the YAML's rule text --------------------------------------------
Mask = Callable[[pd.DataFrame], np.ndarray]
_CLAUSES = (
    (re.compile(r"^(\w+) is not null$"), lambda c: lambda f: ~_null(f, c[0])),
    (re.compile(r"^(\w+) is null$"), lambda c: lambda f: _null(f, c[0])),
    (re.compile(r"^(\w+) = '([^']*)'$"), lambda c: lambda f: _values(f, c[0]) == c[1]),
    (re.compile(r"^(\w+) != '([^']*)'$"), lambda c: lambda f: _values(f, c[0]) != c[1]),
    (re.compile(r"^(\w+) in \(([^)]*)\)$"), lambda c: lambda f: _isin(_values(f, c[0]), _literals(c[1]))),
    (re.compile(r"^(\w+) not in \(([^)]*)\)$"), lambda c: lambda f: ~_isin(_values(f, c[0]), _literals(c[1]))),
)
_NULL_RULE = re.compile(r"^(MUST|SHOULD)( NOT)? be null when (.+)$")
_UNLESS_RULE = re.compile(r"^when (.+): (MUST|SHOULD) NOT be null unless (.+?)(?: \(then MAY be null\))?$")
_OTHER_CASES = "MUST be null in all other cases"


@dataclass(frozen=True)
class NullRule:
    column: str
    text: str
    must_be_null: bool  # else: must not be null
    applies: Mask  # rows the rule speaks about
    severity: str


def _isin(values: np.ndarray, literals: list[str]) -> np.ndarray:
    return np.array([v in literals for v in values], dtype=bool)


def _literals(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _condition(text: str) -> Mask | None:
    """``A and B``, alternatives joined by ``, or when``; None when any part is prose."""
    alternatives = []
    for alternative in text.split(", or when "):
        clauses = []
        for clause in alternative.split(" and "):
            for pattern, build in _CLAUSES:
                match = pattern.match(clause.strip())
                if match and match.group(1) in focus_columns():
                    clauses.append(build(match.groups()))
                    break
            else:
                return None
        alternatives.append(clauses)
    return lambda f: np.logical_or.reduce([np.logical_and.reduce([c(f) for c in a]) for a in alternatives])


@cache
def null_rules() -> tuple[NullRule, ...]:
    """Every conditional nullability rule of the YAML that is written over columns and literals."""
    rules = []
    for spec in focus_columns().values():
        previous: Mask | None = None
        for text in spec.rules:
            if match := _NULL_RULE.match(text):
                condition = _condition(match.group(3))
                if condition:
                    rules.append(NullRule(spec.name, text, not match.group(2), condition, _severity(match.group(1))))
                previous = None
            elif match := _UNLESS_RULE.match(text):
                condition, unless = _condition(match.group(1)), _condition(match.group(3))
                if condition and unless:
                    rules.append(NullRule(spec.name, text, False, _and_not(condition, unless), _severity(match.group(2))))
                previous = condition
            elif text == _OTHER_CASES and previous is not None:
                rules.append(NullRule(spec.name, text, True, _not(previous), ERROR))
    return tuple(rules)


def _and_not(a: Mask, b: Mask) -> Mask:
    return lambda f: a(f) & ~b(f)


def _not(a: Mask) -> Mask:
    return lambda f: ~a(f)


def _severity(word: str) -> str:
    return ERROR if word == "MUST" else WARNING


# ---- the validator ----------------------------------------------------------------------------------------
def validate_focus(data: pd.DataFrame | pa.Table) -> list[Finding]:
    """Findings for a FOCUS 1.2 dataset; an empty list means every checked rule holds."""
    frame = data.to_pandas() if isinstance(data, pa.Table) else data.reset_index(drop=True)
    spec = focus_columns()
    findings = _names(list(frame.columns), spec)
    frame = frame.loc[:, ~frame.columns.duplicated()]
    types = _arrow_types(data, frame, findings)
    present = [c for c in frame.columns if c in spec]
    for name in present:
        column = spec[name]
        findings += _data_type(column, types.get(name), frame[name])
        if not column.allows_nulls and (count := int(_null(frame, name).sum())):
            findings.append(_finding(name, "MUST NOT be null", f"{count} null row(s)", frame, _null(frame, name)))
        if column.data_type == "String":
            findings += _empty_strings(name, frame)
        if column.allowed_values:
            findings += _allowed(column, frame)
        if column.data_type == "Decimal":
            findings += _decimal_values(column, frame)
        if column.data_type == KEY_VALUE:
            findings += _key_values(column, frame)
        if name in UNIT_COLUMNS:
            findings += _units(name, frame)
    for rule in null_rules():
        if rule.column in frame:
            wrong = rule.applies(frame) & (~_null(frame, rule.column) if rule.must_be_null else _null(frame, rule.column))
            if wrong.any():
                findings.append(_finding(rule.column, rule.text, f"{int(wrong.sum())} row(s)", frame, wrong, rule.severity))
    findings += _pairs(frame, spec)
    findings += _periods(frame)
    findings += _currencies(frame)
    findings += _cost_matches(frame)
    findings += _credit_rows(frame)
    findings += _consistency(frame)
    return findings


def _finding(column: str, rule: str, detail: str, frame: pd.DataFrame | None = None, rows: np.ndarray | None = None,
             severity: str = ERROR) -> Finding:
    if frame is not None and rows is not None:
        where = np.flatnonzero(rows)[:3]
        examples = [frame[column].iloc[i] if column in frame else None for i in where]
        detail += f"; e.g. row(s) {list(map(int, where))}: {examples!r}"
    return Finding(column, rule, detail, severity)


def _null(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.ones(len(frame), dtype=bool)
    return frame[name].isna().to_numpy(dtype=bool)


def _values(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Column values as objects with nulls as None (a comparison with a literal is then False/True)."""
    if name not in frame:
        return np.full(len(frame), None, dtype=object)
    values = frame[name].astype(object).to_numpy(copy=True)
    values[_null(frame, name)] = None
    return values


def _names(columns: list[str], spec: dict[str, ColumnSpec]) -> list[Finding]:
    findings = []
    by_lower = {name.lower(): name for name in spec}
    for name in {c for c in columns if columns.count(c) > 1}:
        findings.append(Finding(name, "ColumnHandling: column IDs are unique", "the column appears more than once"))
    for name in columns:
        if name in spec or name.startswith(CUSTOM_PREFIX):
            continue
        if name.lower() in by_lower:
            findings.append(Finding(name, "ColumnHandling: Column IDs MUST use Pascal case as the spec names them",
                                    f"the spec's column is {by_lower[name.lower()]!r}"))
        else:
            findings.append(Finding(name, "ColumnHandling: custom columns MUST be prefixed with 'x_'",
                                    "not a FOCUS 1.2 column and not prefixed"))
    for name, column in spec.items():
        if name not in columns and column.feature_level == "Mandatory":
            findings.append(Finding(name, "MUST be present in a FOCUS dataset", "Mandatory column missing"))
        elif name not in columns and column.feature_level == "Recommended":
            findings.append(Finding(name, "SHOULD be present in a FOCUS dataset", "Recommended column missing", WARNING))
    custom_seen = False
    for name in columns:
        custom_seen |= name.startswith(CUSTOM_PREFIX)
        if custom_seen and name in spec:
            findings.append(Finding(name, "ColumnHandling: custom columns SHOULD be listed after all FOCUS columns",
                                    "a FOCUS column follows a custom one", WARNING))
            break
    return findings


def _arrow_types(data, frame: pd.DataFrame, findings: list[Finding]) -> dict[str, pa.DataType]:
    if isinstance(data, pa.Table):
        return {f.name: f.type for f in data.schema}
    types = {}
    for name in frame.columns:
        if name not in focus_columns():
            continue
        try:
            types[name] = pa.array(frame[name], from_pandas=True).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            findings.append(Finding(name, "a column holds values of one data type", f"mixed values: {str(exc)[:120]}"))
    return types


def _data_type(column: ColumnSpec, arrow: pa.DataType | None, values: pd.Series) -> list[Finding]:
    if arrow is None or pa.types.is_null(arrow):
        return []
    if pa.types.is_dictionary(arrow):
        arrow = arrow.value_type
    wanted, ok = column.data_type, True
    if wanted == "Decimal":
        ok = pa.types.is_decimal(arrow)
    elif wanted in ("String", KEY_VALUE):
        ok = pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow)
    elif wanted == "Date/Time":
        if pa.types.is_timestamp(arrow):
            if arrow.tz not in UTC_NAMES:
                return [Finding(column.name, "DateTimeFormat: Date/time values MUST be in UTC", f"type {arrow}")]
            return []
        if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
            text = values.dropna().astype(str)
            bad = ~text.str.match(DATETIME_TEXT)
            if bad.any():
                return [Finding(column.name, "DateTimeFormat: 'YYYY-MM-DDTHH:mm:ssZ'", f"e.g. {text[bad].iloc[0]!r}")]
            return []
        ok = False
    if ok:
        return []
    rule = {"Decimal": "NumericFormat: MUST be of type Decimal"}.get(wanted, f"MUST be of type {wanted}")
    return [Finding(column.name, rule, f"column type is {arrow}")]


def _empty_strings(name: str, frame: pd.DataFrame) -> list[Finding]:
    values = _values(frame, name)
    empty = np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    if not empty.any():
        return []
    return [_finding(name, "NullHandling: MUST NOT use empty strings to represent null", f"{int(empty.sum())} row(s)",
                     frame, empty)]


def _allowed(column: ColumnSpec, frame: pd.DataFrame) -> list[Finding]:
    values = _values(frame, column.name)
    bad = np.array([v is not None and v not in column.allowed_values for v in values], dtype=bool)
    if not bad.any():
        return []
    lower = {v.lower(): v for v in column.allowed_values}
    wrong = sorted({str(v) for v in values[bad]})
    hints = [f"{w!r} (case-sensitive: {lower[w.lower()]!r})" if w.lower() in lower else repr(w) for w in wrong[:5]]
    return [Finding(column.name, "MUST be one of the allowed values", f"{int(bad.sum())} row(s): {', '.join(hints)}")]


def _decimals(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Exact Decimals (None for null); a float is read through its shortest repr, a non-number stays as is."""
    out = np.full(len(frame), None, dtype=object)
    for i, v in enumerate(_values(frame, name)):
        if v is None or isinstance(v, Decimal):
            out[i] = v
        else:
            try:
                out[i] = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
            except (InvalidOperation, TypeError, ValueError):
                out[i] = v
    return out


def _decimal_values(column: ColumnSpec, frame: pd.DataFrame) -> list[Finding]:
    values = _decimals(frame, column.name)
    invalid = np.array([v is not None and not (isinstance(v, Decimal) and v.is_finite()) for v in values], dtype=bool)
    findings = []
    if invalid.any():
        findings.append(_finding(column.name, "NumericFormat: MUST be a valid decimal value", f"{int(invalid.sum())} row(s)",
                                 frame, invalid))
    if column.non_negative:
        negative = np.array([isinstance(v, Decimal) and v.is_finite() and v < 0 for v in values], dtype=bool)
        if negative.any():
            findings.append(_finding(column.name, "MUST be a non-negative decimal value", f"{int(negative.sum())} row(s)",
                                     frame, negative))
    return findings


def _key_values(column: ColumnSpec, frame: pd.DataFrame) -> list[Finding]:
    bad, extra = np.zeros(len(frame), dtype=bool), np.zeros(len(frame), dtype=bool)
    for i, text in enumerate(_values(frame, column.name)):
        if text is None:
            continue
        parsed = _json_object(text)
        if parsed is None:
            bad[i] = True
        elif column.focus_defined_properties:
            extra[i] = any(k not in column.focus_defined_properties and not k.startswith(CUSTOM_PREFIX) for k in parsed)
    findings = []
    if bad.any():
        findings.append(_finding(column.name, "KeyValueFormat: a serialized JSON object with unique keys and scalar values",
                                 f"{int(bad.sum())} row(s)", frame, bad))
    if extra.any():
        findings.append(_finding(column.name, "keys that are not FOCUS-defined properties MUST start with 'x_'",
                                 f"{int(extra.sum())} row(s)", frame, extra))
    return findings


def _json_object(text) -> dict | None:
    if not isinstance(text, str):
        return None
    pairs_seen: list[list] = []

    def pairs(items):
        pairs_seen.append(items)
        return dict(items)

    try:
        parsed = json.loads(text, object_pairs_hook=pairs)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or len(pairs_seen) != 1 or len(pairs_seen[0]) != len(parsed):
        return None  # not an object, a nested object, or a repeated key
    return parsed if all(not isinstance(v, list) for v in parsed.values()) else None


def _unit_ok(unit: str) -> bool:
    """UnitFormat: "<plural-units>", "<unit>-<plural-time>", "<units>/<time>", with an optional whole-number quantity."""
    match = re.match(r"^(?:\d+ )?([A-Za-z][A-Za-z0-9]*)(?:-([A-Za-z]+)|/(?:\d+ )?([A-Za-z]+))?$", unit)
    if not match:
        return False
    base, per_time, rate = match.groups()
    base_ok = base in DATA_SIZES or base[0].isupper()
    if per_time is not None:
        return base_ok and per_time in TIME_PLURAL
    if rate is not None:
        return base_ok and (rate in TIME_SINGULAR or rate in TIME_PLURAL)
    return base_ok


def _units(name: str, frame: pd.DataFrame) -> list[Finding]:
    bad = np.array([v is not None and not _unit_ok(str(v)) for v in _values(frame, name)], dtype=bool)
    if not bad.any():
        return []
    return [_finding(name, "SHOULD conform to UnitFormat", f"{int(bad.sum())} row(s)", frame, bad, WARNING)]


def _pairs(frame: pd.DataFrame, spec: dict[str, ColumnSpec]) -> list[Finding]:
    if "ServiceSubcategory" not in frame or "ServiceCategory" not in frame:
        return []
    allowed = spec["ServiceSubcategory"].allowed_values_by_category or {}
    categories, subcategories = _values(frame, "ServiceCategory"), _values(frame, "ServiceSubcategory")
    bad = np.array([c is not None and s is not None and s not in allowed.get(c, ()) for c, s in zip(categories, subcategories)],
                   dtype=bool)
    if not bad.any():
        return []
    return [_finding("ServiceSubcategory", "MUST have exactly one parent ServiceCategory as listed",
                     f"{int(bad.sum())} row(s) pair a subcategory with another category", frame, bad)]


def _timestamps(frame: pd.DataFrame, name: str) -> pd.Series | None:
    if name not in frame:
        return None
    try:
        return pd.to_datetime(frame[name], utc=True)
    except (ValueError, TypeError):
        return None


def _periods(frame: pd.DataFrame) -> list[Finding]:
    findings = []
    for kind in ("Charge", "Billing"):
        start, end = _timestamps(frame, f"{kind}PeriodStart"), _timestamps(frame, f"{kind}PeriodEnd")
        if start is None or end is None:
            continue
        bad = (start.notna() & end.notna() & (end <= start)).to_numpy(dtype=bool)
        if bad.any():
            findings.append(_finding(f"{kind}PeriodEnd", f"{kind}PeriodEnd is the exclusive end bound: it MUST be after "
                                     f"{kind}PeriodStart", f"{int(bad.sum())} row(s)", frame, bad))
    start, end = _timestamps(frame, "BillingPeriodStart"), _timestamps(frame, "BillingPeriodEnd")
    if start is not None and end is not None:
        ends = pd.DataFrame({"s": start, "e": end}).dropna().groupby("s")["e"].nunique()
        if (ends > 1).any():
            findings.append(Finding("BillingPeriodEnd", "a billing period has one exclusive end bound",
                                    f"billing period(s) starting {list(map(str, ends[ends > 1].index[:3]))} have several ends"))
    return findings


def _currencies(frame: pd.DataFrame) -> list[Finding]:
    if "BillingCurrency" not in frame:
        return []
    bad = np.array([v is not None and not ISO_4217.match(str(v)) for v in _values(frame, "BillingCurrency")], dtype=bool)
    if not bad.any():
        return []
    return [_finding("BillingCurrency", "CurrencyFormat: MUST be an ISO 4217 three-letter code of a national currency",
                     f"{int(bad.sum())} row(s)", frame, bad)]


def _matches(price: Decimal, quantity: Decimal, cost: Decimal) -> bool:
    return abs(price * quantity - cost) <= HALF_NANO * (abs(quantity) + 1)


def _cost_matches(frame: pd.DataFrame) -> list[Finding]:
    findings = []
    if "PricingQuantity" not in frame:
        return findings
    quantity = _decimals(frame, "PricingQuantity")
    correction = _values(frame, "ChargeClass") == "Correction"
    for price_name, cost_name in (("ListUnitPrice", "ListCost"), ("ContractedUnitPrice", "ContractedCost")):
        if price_name not in frame or cost_name not in frame:
            continue
        price, cost = _decimals(frame, price_name), _decimals(frame, cost_name)
        bad = np.array([not k and all(isinstance(v, Decimal) and v.is_finite() for v in (p, q, c)) and not _matches(p, q, c)
                        for p, q, c, k in zip(price, quantity, cost, correction)], dtype=bool)
        if bad.any():
            findings.append(_finding(cost_name, f"{price_name} * PricingQuantity MUST match {cost_name} (ChargeClass not "
                                     "'Correction')", f"{int(bad.sum())} row(s)", frame, bad))
    return findings


def _credit_rows(frame: pd.DataFrame) -> list[Finding]:
    """Credits are unrelated to other charges: with no unit price, every cost equals BilledCost."""
    if "ChargeCategory" not in frame or "BilledCost" not in frame:
        return []
    credit = _values(frame, "ChargeCategory") == "Credit"
    billed = _decimals(frame, "BilledCost")
    findings = []
    for cost_name, price_name in (("ListCost", "ListUnitPrice"), ("ContractedCost", "ContractedUnitPrice"), ("EffectiveCost", None)):
        if cost_name not in frame:
            continue
        no_price = _null(frame, price_name) if price_name else np.ones(len(frame), dtype=bool)
        cost = _decimals(frame, cost_name)
        bad = credit & no_price & np.array([c is not None and b is not None and c != b for c, b in zip(cost, billed)], dtype=bool)
        if bad.any():
            findings.append(_finding(cost_name, f"{cost_name} MUST equal BilledCost for charges unrelated to other charges "
                                     "(e.g. Credit)", f"{int(bad.sum())} row(s)", frame, bad))
    if "ChargeFrequency" in frame:
        bad = (_values(frame, "ChargeCategory") == "Purchase") & (_values(frame, "ChargeFrequency") == "Usage-Based")
        if bad.any():
            findings.append(_finding("ChargeFrequency", "MUST NOT be 'Usage-Based' when ChargeCategory = 'Purchase'",
                                     f"{int(bad.sum())} row(s)", frame, bad))
    return findings


def _consistency(frame: pd.DataFrame) -> list[Finding]:
    findings = []
    for key, value, rule, severity in (
        ("ServiceName", "ServiceCategory", "each ServiceName MUST map to exactly one ServiceCategory", ERROR),
        ("ServiceName", "ServiceSubcategory", "each ServiceName SHOULD map to exactly one ServiceSubcategory", WARNING),
        ("SkuPriceId", "SkuId", "a SkuPriceId MUST have exactly one parent SkuId", ERROR),
    ):
        if key not in frame or value not in frame:
            continue
        pairs = pd.DataFrame({"k": _values(frame, key), "v": _values(frame, value)}).dropna()
        counts = pairs.groupby("k")["v"].nunique()
        if (counts > 1).any():
            findings.append(Finding(value, rule, f"{key} value(s) {list(counts[counts > 1].index[:3])} have several", severity))
    return findings
