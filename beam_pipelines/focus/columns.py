"""The FOCUS 1.2 column catalogue (``configs/focus/focus_1_2_columns.yml``) and our table's schema.

The YAML is generated from the FOCUS_Spec repository at tag v1.2 (one entry per column: data type,
feature level, nullability, allowed values, normative rules). It is read once per process and is
the validator's data, so a rule fixed in the YAML is fixed everywhere. The BigQuery schema of
``focus_cost_daily`` decides the column order of the rows we build: FOCUS columns first, then the
``x_`` ones, as the spec's ColumnHandling attribute recommends.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from beam_pipelines.config.schema import TableSchema, load_schema
from beam_pipelines.errors import ConfigError
from beam_pipelines.settings import default_configs

SPEC_FILE = Path("focus") / "focus_1_2_columns.yml"
SCHEMA_FILE = Path("focus") / "schemas" / "focus_cost_daily.json"
FOCUS_VERSION = "1.2"
CUSTOM_PREFIX = "x_"
PARTITION, SCOPE = "x_ChargeDate", "x_Provider"  # focus_cost_daily is partitioned by day, each provider replacing its own


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    data_type: str  # String, Decimal, Date/Time, JSON
    feature_level: str  # Mandatory, Recommended, Conditional
    allows_nulls: bool
    allowed_values: tuple[str, ...] | None
    allowed_values_by_category: dict[str, tuple[str, ...]] | None
    value_format: str | None
    number_range: str | None
    rules: tuple[str, ...]
    focus_defined_properties: tuple[str, ...]

    @property
    def non_negative(self) -> bool:
        return bool(self.number_range and "non-negative" in self.number_range)


def _column(raw: dict) -> ColumnSpec:
    by_category = raw.get("allowed_values_by_category")
    return ColumnSpec(
        name=raw["name"],
        data_type=raw["data_type"],
        feature_level=raw["feature_level"],
        allows_nulls=bool(raw["allows_nulls"]),
        allowed_values=tuple(raw["allowed_values"]) if raw.get("allowed_values") else None,
        allowed_values_by_category={k: tuple(v) for k, v in by_category.items()} if by_category else None,
        value_format=raw.get("value_format"),
        number_range=raw.get("number_range"),
        rules=tuple(raw.get("rules") or ()),
        focus_defined_properties=tuple(p["key"] for p in raw.get("focus_defined_properties") or ()),
    )


@cache
def focus_columns(configs: Path | None = None) -> dict[str, ColumnSpec]:
    """Column name → spec, in the spec's (alphabetical) order."""
    path = (configs or default_configs()) / SPEC_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{SPEC_FILE}: cannot read: {type(exc).__name__}") from None
    return {c.name: c for c in map(_column, raw)}


@cache
def focus_schema(configs: Path | None = None) -> TableSchema:
    return load_schema((configs or default_configs()) / SCHEMA_FILE, str(SCHEMA_FILE))


def column_order() -> list[str]:
    return focus_schema().names


@dataclass(frozen=True)
class Coded:
    """A column given as its distinct values and each row's index into them. A table converts the
    few distinct values and takes; a frame takes first (a price, a SKU or a description repeats
    across thousands of rows of a batch)."""

    values: np.ndarray  # object
    codes: np.ndarray  # int, one per row

    def expand(self) -> np.ndarray:
        return self.values[self.codes]


def _check_names(values: dict[str, object]) -> None:
    unknown = set(values) - set(column_order())
    if unknown:
        raise KeyError(f"not columns of focus_cost_daily: {sorted(unknown)}")


def build_frame(values: dict[str, object], length: int) -> pd.DataFrame:
    """A frame with every column of ``focus_cost_daily`` in schema order: scalars are broadcast and a
    column not given is all NULL (FOCUS NullHandling: NULL, never an empty string or a 0)."""
    _check_names(values)
    columns = {}
    for name in column_order():
        value = values.get(name)
        if isinstance(value, Coded):
            value = value.expand()
        elif isinstance(value, (pd.Series, pd.Index)):
            value = value.array
        elif not isinstance(value, (np.ndarray, list)):
            value = np.full(length, value, dtype=object)
        columns[name] = value
    return pd.DataFrame(columns, columns=column_order())


def build_table(values: dict[str, object], length: int) -> pa.Table:
    """``build_frame`` straight into the table's Arrow schema, for rows that go on to be staged: a
    70-column pandas frame cost more to build, and to convert back, than the rows' own arithmetic."""
    from beam_pipelines.warehouse.arrow_schema import arrow_schema

    _check_names(values)
    schema = arrow_schema(focus_schema())
    columns = []
    converted: dict[tuple[int, pa.DataType], pa.Array] = {}  # one array behind several columns (BilledCost,
    for field in schema:                                      # EffectiveCost, ...) is converted once
        value = values.get(field.name)
        if isinstance(value, (Coded, pd.Series, pd.Index, np.ndarray, list)):
            key = (id(value), field.type)
            if key not in converted:
                converted[key] = (pa.array(value.values, type=field.type, from_pandas=True).take(value.codes)
                                  if isinstance(value, Coded) else pa.array(value, type=field.type, from_pandas=True))
            columns.append(converted[key])
        else:  # a scalar for every row (NULL included)
            columns.append(pa.repeat(pa.scalar(value, type=field.type), length) if value is not None
                           else pa.nulls(length, field.type))
    try:
        return pa.Table.from_arrays(columns, schema=schema)
    except (pa.ArrowInvalid, ValueError) as exc:
        raise ValueError(f"focus_cost_daily: rows do not fit the schema: {exc}") from None


def month_bounds(days: pd.Series) -> tuple[pd.Series, pd.Series]:
    """[first instant of the month, first instant of the next month) in UTC: the spec's exclusive end."""
    start = pd.to_datetime(days).dt.tz_localize(None).dt.to_period("M").dt.to_timestamp().dt.tz_localize("UTC")
    return start, start + pd.offsets.MonthBegin(1)
