"""Expectation suites in Great Expectations' JSON format, checked with pandas.

A suite file: ``{"expectation_suite_name": ..., "expectations": [{"expectation_type": ...,
"kwargs": {...}, "meta": {"severity": "critical" | "warning"}}]}``. Supported types are the GE ones
below plus ``expect_column_to_equal_sum_of_columns`` (a custom type: total = sum of components,
within ``tolerance``), since GE has no row-wise version of that rule. A failed *critical*
expectation fails the org before its data is written; a *warning* is recorded and reported.
Unknown types or kwargs are config errors, caught by ``convergence validate``.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from beam_pipelines.config.files import read_json
from beam_pipelines.errors import ConfigError

SEVERITIES = ("critical", "warning")
MAX_LISTED = 20


@dataclass(frozen=True)
class Expectation:
    expectation_type: str
    kwargs: dict
    severity: str


@dataclass(frozen=True)
class Suite:
    name: str
    expectations: tuple[Expectation, ...]


@dataclass(frozen=True)
class Result:
    expectation: Expectation
    success: bool
    observed: object


def _not_null(df: pd.DataFrame, column: str) -> tuple[bool, object]:
    nulls = int(df[column].isna().sum())
    return nulls == 0, {"null_count": nulls}


def _between(df: pd.DataFrame, column: str, min_value=None, max_value=None) -> tuple[bool, object]:
    values = pd.to_numeric(df[column], errors="coerce").dropna()
    bad = pd.Series(False, index=values.index)
    if min_value is not None:
        bad |= values < min_value
    if max_value is not None:
        bad |= values > max_value
    return not bad.any(), {"unexpected_count": int(bad.sum()),
                           "min": None if values.empty else float(values.min()),
                           "max": None if values.empty else float(values.max())}


def _compound_unique(df: pd.DataFrame, column_list: list[str]) -> tuple[bool, object]:
    duplicated = int(df.duplicated(subset=column_list, keep=False).sum())
    return duplicated == 0, {"duplicated_rows": duplicated}


def _row_count(df: pd.DataFrame, min_value=None, max_value=None) -> tuple[bool, object]:
    n = len(df)
    ok = (min_value is None or n >= min_value) and (max_value is None or n <= max_value)
    return ok, {"row_count": n}


def _not_in_set(df: pd.DataFrame, column: str, value_set: list, report_column: str | None = None) -> tuple[bool, object]:
    hits = df[df[column].isin(value_set)]
    observed: dict = {"unexpected_count": len(hits)}
    if report_column:
        observed[f"unexpected_{report_column}"] = sorted(map(str, hits[report_column].dropna().unique()))[:MAX_LISTED]
    return hits.empty, observed


def _in_set(df: pd.DataFrame, column: str, value_set: list) -> tuple[bool, object]:
    outside = df[df[column].notna() & ~df[column].isin(value_set)]
    return outside.empty, {"unexpected_count": len(outside),
                           "unexpected_values": sorted(map(str, outside[column].unique()))[:MAX_LISTED]}


def _exact(series: pd.Series) -> pd.Series:
    """Money columns hold Decimal: compare them exactly; other numbers as numbers."""
    if series.dtype == object:
        return series.map(lambda v: None if v is None or v != v else Decimal(str(v)))
    return pd.to_numeric(series, errors="coerce")


def _sum_of_columns(df: pd.DataFrame, column: str, sum_columns: list[str], tolerance: float = 1e-6,
                    ignore_null: bool = True) -> tuple[bool, object]:
    total = _exact(df[column])
    parts = sum(_exact(df[c]).fillna(0) for c in sum_columns)
    mask = total.notna() if ignore_null else pd.Series(True, index=df.index)
    diff = (total - parts)[mask].map(abs)
    bad = diff > Decimal(str(tolerance)) if diff.dtype == object else diff > tolerance
    return not bad.any(), {"unexpected_count": int(bad.sum()), "max_difference": str(diff.max()) if len(diff) else "0"}


CHECKS: dict[str, Callable] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_between": _between,
    "expect_compound_columns_to_be_unique": _compound_unique,
    "expect_table_row_count_to_be_between": _row_count,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_to_equal_sum_of_columns": _sum_of_columns,
}


def load_suite(path: Path, display: str) -> Suite:
    raw = read_json(path, display, "suite file")
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise ConfigError(f"{display}: expectations: must be a list")
    expectations = []
    for i, item in enumerate(raw["expectations"]):
        where = f"{display}: expectations[{i}]"
        kind = item.get("expectation_type")
        if kind not in CHECKS:
            raise ConfigError(f"{where}.expectation_type: unsupported {kind!r}")
        kwargs = item.get("kwargs") or {}
        severity = (item.get("meta") or {}).get("severity", "critical")
        if severity not in SEVERITIES:
            raise ConfigError(f"{where}.meta.severity: must be critical or warning, got {severity!r}")
        try:  # bind kwargs now, so a typo is a config error rather than a run-time one
            import inspect

            inspect.signature(CHECKS[kind]).bind(None, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{where}.kwargs: {exc}") from None
        expectations.append(Expectation(kind, kwargs, severity))
    return Suite(str(raw.get("expectation_suite_name") or path.stem), tuple(expectations))


def columns_used(expectation: Expectation) -> set[str]:
    kw = expectation.kwargs
    return {c for c in [kw.get("column"), kw.get("report_column"), *kw.get("column_list", []), *kw.get("sum_columns", [])] if c}


def evaluate(suite: Suite, frame: pd.DataFrame) -> list[Result]:
    results = []
    for expectation in suite.expectations:
        missing = sorted(columns_used(expectation) - set(frame.columns))
        if missing:
            results.append(Result(expectation, False, {"missing_columns": missing}))
            continue
        success, observed = CHECKS[expectation.expectation_type](frame, **expectation.kwargs)
        results.append(Result(expectation, bool(success), _jsonable(observed)))
    return results


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
