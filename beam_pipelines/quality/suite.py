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
from pandas.api.types import infer_dtype

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


@dataclass(frozen=True)
class Groups:
    """Which group each row belongs to (``keys``) and every group to report (``ids``, in order, a group
    without rows included). One frame is one group; a fleet batch has a group per run. Every check is
    written once, grouped: a check per run would cost a fleet a thousand passes over tiny frames."""

    keys: np.ndarray
    ids: list

    def count(self, flags) -> dict:
        """Rows flagged True, per group."""
        sums = pd.Series(np.asarray(flags, dtype=np.int64)).groupby(self.keys, sort=False).sum().to_dict()
        return {g: int(sums.get(g, 0)) for g in self.ids}  # a dict: Series.get costs microseconds a group

    def listed(self, values: pd.Series, flags) -> dict:
        """The distinct non-null ``values`` of flagged rows, per group, as sorted strings (first MAX_LISTED)."""
        mask = np.asarray(flags, dtype=bool)
        picked = pd.DataFrame({"group": self.keys[mask], "value": values.to_numpy()[mask]}).dropna(subset=["value"])
        found = {g: sorted(map(str, rows["value"].unique()))[:MAX_LISTED] for g, rows in picked.groupby("group", sort=False)}
        return {g: found.get(g, []) for g in self.ids}


def _not_null(df: pd.DataFrame, groups: Groups, column: str) -> dict:
    return {g: (n == 0, {"null_count": n}) for g, n in groups.count(df[column].isna()).items()}


def _between(df: pd.DataFrame, groups: Groups, column: str, min_value=None, max_value=None) -> dict:
    values = pd.Series(pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float))
    bad = np.zeros(len(df), dtype=bool)
    if min_value is not None:
        bad |= (values < min_value).to_numpy()
    if max_value is not None:
        bad |= (values > max_value).to_numpy()
    low = values.groupby(groups.keys, sort=False).min().to_dict()
    high = values.groupby(groups.keys, sort=False).max().to_dict()

    def bound(found: dict, g) -> float | None:
        value = found.get(g)
        return None if value is None or value != value else float(value)

    return {g: (n == 0, {"unexpected_count": n, "min": bound(low, g), "max": bound(high, g)})
            for g, n in groups.count(bad).items()}


def _compound_unique(df: pd.DataFrame, groups: Groups, column_list: list[str]) -> dict:
    keyed = df[column_list].reset_index(drop=True).assign(__group__=groups.keys)
    return {g: (n == 0, {"duplicated_rows": n}) for g, n in groups.count(keyed.duplicated(keep=False)).items()}


def _row_count(df: pd.DataFrame, groups: Groups, min_value=None, max_value=None) -> dict:
    return {g: ((min_value is None or n >= min_value) and (max_value is None or n <= max_value), {"row_count": n})
            for g, n in groups.count(np.ones(len(df), dtype=bool)).items()}


def _not_in_set(df: pd.DataFrame, groups: Groups, column: str, value_set: list, report_column: str | None = None) -> dict:
    hits = df[column].isin(value_set).to_numpy()
    listed = groups.listed(df[report_column], hits) if report_column else {}
    out = {}
    for g, n in groups.count(hits).items():
        observed: dict = {"unexpected_count": n}
        if report_column:
            observed[f"unexpected_{report_column}"] = listed[g]
        out[g] = (n == 0, observed)
    return out


def _in_set(df: pd.DataFrame, groups: Groups, column: str, value_set: list) -> dict:
    outside = (df[column].notna() & ~df[column].isin(value_set)).to_numpy()
    listed = groups.listed(df[column], outside)
    return {g: (n == 0, {"unexpected_count": n, "unexpected_values": listed[g]}) for g, n in groups.count(outside).items()}


def _exact(series: pd.Series) -> pd.Series:
    """Money columns hold Decimal: compare them exactly; other numbers as numbers."""
    if series.dtype == object:
        if infer_dtype(series, skipna=True) == "decimal":  # already exact (checked in C, not per value in Python)
            return series.where(series.notna(), None)
        return series.map(lambda v: None if v is None or v != v else v if isinstance(v, Decimal) else Decimal(str(v)))
    return pd.to_numeric(series, errors="coerce")


def _sum_of_columns(df: pd.DataFrame, groups: Groups, column: str, sum_columns: list[str], tolerance: float = 1e-6,
                    ignore_null: bool = True) -> dict:
    total = _exact(df[column].reset_index(drop=True))
    parts = sum(_exact(df[c].reset_index(drop=True)).fillna(0) for c in sum_columns)
    mask = total.notna().to_numpy(dtype=bool) if ignore_null else np.ones(len(df), dtype=bool)
    diff = (total - parts)[mask].map(abs)
    bad = diff > Decimal(str(tolerance)) if diff.dtype == object else diff > tolerance
    unexpected = bad.astype("int64").groupby(groups.keys[mask], sort=False).sum().to_dict()
    largest = {g: max(rows) for g, rows in diff.groupby(groups.keys[mask], sort=False)}
    return {g: (int(unexpected.get(g, 0)) == 0, {"unexpected_count": int(unexpected.get(g, 0)),
                                                 "max_difference": str(largest[g]) if g in largest else "0"})
            for g in groups.ids}


CHECKS: dict[str, Callable] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_between": _between,
    "expect_compound_columns_to_be_unique": _compound_unique,
    "expect_table_row_count_to_be_between": _row_count,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_to_equal_sum_of_columns": _sum_of_columns,
}


def check(kind: str, frame: pd.DataFrame, **kwargs) -> tuple[bool, object]:
    """One expectation on one frame: (success, observed)."""
    return CHECKS[kind](frame, Groups(np.zeros(len(frame), dtype=np.int64), [0]), **kwargs)[0]


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

            inspect.signature(CHECKS[kind]).bind(None, None, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"{where}.kwargs: {exc}") from None
        expectations.append(Expectation(kind, kwargs, severity))
    return Suite(str(raw.get("expectation_suite_name") or path.stem), tuple(expectations))


def columns_used(expectation: Expectation) -> set[str]:
    kw = expectation.kwargs
    return {c for c in [kw.get("column"), kw.get("report_column"), *kw.get("column_list", []), *kw.get("sum_columns", [])] if c}


def evaluate(suite: Suite, frame: pd.DataFrame) -> list[Result]:
    return _evaluate_groups(suite, frame, Groups(np.zeros(len(frame), dtype=np.int64), [0]))[0]


def evaluate_runs(suite: Suite, frame: pd.DataFrame, run_column: str = "run_id") -> dict[str, list[Result]]:
    """``evaluate`` for every run of a many-run frame at once: each run's results are what ``evaluate``
    gives on that run's rows alone, with one grouped pass per expectation."""
    keys = frame[run_column].astype(object).to_numpy()
    return _evaluate_groups(suite, frame, Groups(keys, list(dict.fromkeys(keys))))


def _evaluate_groups(suite: Suite, frame: pd.DataFrame, groups: Groups) -> dict:
    out: dict = {g: [] for g in groups.ids}
    for expectation in suite.expectations:
        missing = sorted(columns_used(expectation) - set(frame.columns))
        if missing:
            for g in groups.ids:
                out[g].append(Result(expectation, False, {"missing_columns": missing}))
            continue
        observed = CHECKS[expectation.expectation_type](frame, groups, **expectation.kwargs)
        for g in groups.ids:
            success, value = observed[g]
            out[g].append(Result(expectation, bool(success), _jsonable(value)))
    return out


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
