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
        return series.map(lambda v: None if v is None or v != v else v if isinstance(v, Decimal) else Decimal(str(v)))
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


def evaluate_runs(suite: Suite, frame: pd.DataFrame, run_column: str = "run_id") -> dict[str, list[Result]]:
    """``evaluate`` for every run of a many-run frame at once: each run's results are exactly what
    ``evaluate`` gives on that run's rows alone, computed with one grouped pass per expectation
    (a fleet's orgs have a few dozen rows each; a pass per org would cost a thousand times more)."""
    runs = frame[run_column].astype(object)
    run_ids = list(dict.fromkeys(runs))
    out: dict[str, list[Result]] = {r: [] for r in run_ids}
    for expectation in suite.expectations:
        missing = sorted(columns_used(expectation) - set(frame.columns))
        for run_id in run_ids:
            if missing:
                out[run_id].append(Result(expectation, False, {"missing_columns": missing}))
        if missing:
            continue
        observed = GROUPED[expectation.expectation_type](frame, runs, **expectation.kwargs)
        for run_id in run_ids:
            success, value = observed[run_id]
            out[run_id].append(Result(expectation, bool(success), _jsonable(value)))
    return out


def _per_run(flags: pd.Series, runs: pd.Series) -> dict:
    return flags.astype("int64").groupby(runs.to_numpy(), sort=False).sum().to_dict()


def _g_not_null(df, runs, column):
    nulls = _per_run(df[column].isna(), runs)
    return {r: (n == 0, {"null_count": int(n)}) for r, n in nulls.items()}


def _g_between(df, runs, column, min_value=None, max_value=None):
    values = pd.to_numeric(df[column], errors="coerce")
    bad = pd.Series(False, index=df.index)
    if min_value is not None:
        bad |= values < min_value
    if max_value is not None:
        bad |= values > max_value
    keys = runs.to_numpy()
    unexpected = _per_run(bad, runs)
    low, high = values.groupby(keys, sort=False).min(), values.groupby(keys, sort=False).max()
    return {r: (n == 0, {"unexpected_count": int(n), "min": None if pd.isna(low[r]) else float(low[r]),
                         "max": None if pd.isna(high[r]) else float(high[r])}) for r, n in unexpected.items()}


def _g_compound_unique(df, runs, column_list):
    keyed = df[column_list].assign(_run=runs.to_numpy())
    duplicated = _per_run(keyed.duplicated(keep=False), runs)
    return {r: (n == 0, {"duplicated_rows": int(n)}) for r, n in duplicated.items()}


def _g_row_count(df, runs, min_value=None, max_value=None):
    sizes = runs.groupby(runs.to_numpy(), sort=False).size().to_dict()
    return {r: _row_count(pd.DataFrame(index=range(n)), min_value, max_value) for r, n in sizes.items()}


def _listed_per_run(values: pd.Series, flags: pd.Series, runs: pd.Series) -> dict:
    """The distinct non-null ``values`` of flagged rows, per run, as sorted strings (first MAX_LISTED)."""
    mask = flags.to_numpy(dtype=bool)
    picked = pd.DataFrame({"run": runs.to_numpy()[mask], "value": values.to_numpy()[mask]}).dropna(subset=["value"])
    return {r: sorted(map(str, group["value"].unique()))[:MAX_LISTED] for r, group in picked.groupby("run", sort=False)}


def _g_not_in_set(df, runs, column, value_set, report_column=None):
    hits = df[column].isin(value_set)
    listed = _listed_per_run(df[report_column], hits, runs) if report_column else {}
    out = {}
    for r, n in _per_run(hits, runs).items():
        observed: dict = {"unexpected_count": int(n)}
        if report_column:
            observed[f"unexpected_{report_column}"] = listed.get(r, [])
        out[r] = (n == 0, observed)
    return out


def _g_in_set(df, runs, column, value_set):
    outside = df[column].notna() & ~df[column].isin(value_set)
    listed = _listed_per_run(df[column], outside, runs)
    return {r: (n == 0, {"unexpected_count": int(n), "unexpected_values": listed.get(r, [])})
            for r, n in _per_run(outside, runs).items()}


def _g_sum_of_columns(df, runs, column, sum_columns, tolerance=1e-6, ignore_null=True):
    total = _exact(df[column])
    parts = sum(_exact(df[c]).fillna(0) for c in sum_columns)
    mask = (total.notna() if ignore_null else pd.Series(True, index=df.index)).to_numpy(dtype=bool)
    diff = (total - parts)[mask].map(abs)
    bad = diff > Decimal(str(tolerance)) if diff.dtype == object else diff > tolerance
    keys = runs.to_numpy()
    unexpected = bad.astype("int64").groupby(keys[mask], sort=False).sum().to_dict()
    largest = {r: max(group) for r, group in diff.groupby(keys[mask], sort=False)}
    return {r: (unexpected.get(r, 0) == 0, {"unexpected_count": int(unexpected.get(r, 0)),
                                            "max_difference": str(largest[r]) if r in largest else "0"})
            for r in dict.fromkeys(keys)}


GROUPED: dict[str, Callable] = {
    "expect_column_values_to_not_be_null": _g_not_null,
    "expect_column_values_to_be_between": _g_between,
    "expect_compound_columns_to_be_unique": _g_compound_unique,
    "expect_table_row_count_to_be_between": _g_row_count,
    "expect_column_values_to_not_be_in_set": _g_not_in_set,
    "expect_column_values_to_be_in_set": _g_in_set,
    "expect_column_to_equal_sum_of_columns": _g_sum_of_columns,
}


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
