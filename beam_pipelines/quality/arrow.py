"""Expectation suites checked on Arrow tables, so a staged billing part is checked without pandas.

A part of a billing day has NUMERIC money columns; in pandas each value becomes a ``Decimal``
object and the exact sum check maps every row in Python (~0.65 s per 100k rows). Here the checks
the billing suite uses run as Arrow compute over the columns, with the observed values
:func:`beam_pipelines.quality.suite.evaluate` reports for the same rows (counts, ``min``/``max`` as
floats, the largest difference as the exact decimal's text). Anything else (other expectation
types, sums over float columns) is handed to the pandas check on just the columns it reads.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.quality.suite import Result, Suite, _jsonable, columns_used
from beam_pipelines.quality.suite import check as pandas_check

_EXACT = pa.decimal256(60, 9)  # room for sums of NUMERIC values


def evaluate_table(suite: Suite, table: pa.Table) -> list[Result]:
    """``evaluate`` for an Arrow table: the same results as on ``table.to_pandas()``."""
    results = []
    for expectation in suite.expectations:
        used = columns_used(expectation)
        missing = sorted(used - set(table.column_names))
        if missing:
            results.append(Result(expectation, False, {"missing_columns": missing}))
            continue
        check = ARROW_CHECKS.get(expectation.expectation_type)
        outcome = check(table, **expectation.kwargs) if check else None
        if outcome is None:
            outcome = pandas_check(expectation.expectation_type, _frame(table, used), **expectation.kwargs)
        success, observed = outcome
        results.append(Result(expectation, bool(success), _jsonable(observed)))
    return results


def _frame(table: pa.Table, columns: set[str]) -> pd.DataFrame:
    if not columns:
        return pd.DataFrame(index=range(table.num_rows))
    return table.select(sorted(columns)).to_pandas()


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _missing(values: pa.Array) -> pa.Array:
    """pandas' ``isna``: NULL, and NaN in a float column."""
    nulls = pc.is_null(values)
    return pc.or_(nulls, pc.fill_null(pc.is_nan(values), False)) if pa.types.is_floating(values.type) else nulls


def _not_null(table: pa.Table, column: str):
    nulls = pc.sum(_missing(_column(table, column))).as_py() or 0
    return nulls == 0, {"null_count": nulls}


def _number(values: pa.Array) -> bool:
    kind = values.type
    return pa.types.is_decimal(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _bound(values: pa.Array, limit) -> pa.Scalar:
    """A limit as a scalar comparable with the column: exact for decimals (the limit's shortest text)."""
    if pa.types.is_decimal(values.type):
        return pa.scalar(Decimal(repr(limit)) if isinstance(limit, float) else Decimal(limit))
    return pa.scalar(float(limit)) if isinstance(limit, float) or pa.types.is_floating(values.type) else pa.scalar(limit)


def _between(table: pa.Table, column: str, min_value=None, max_value=None):
    values = _column(table, column)
    if not _number(values):
        return None  # pandas coerces text to numbers
    present = values.filter(pc.invert(_missing(values)))
    bad = pa.array([False] * len(present), pa.bool_())
    if min_value is not None:
        bad = pc.or_(bad, pc.less(present, _bound(present, min_value)))
    if max_value is not None:
        bad = pc.or_(bad, pc.greater(present, _bound(present, max_value)))
    unexpected = pc.sum(bad).as_py() or 0
    low, high = (pc.min_max(present)[k].as_py() for k in ("min", "max"))
    return unexpected == 0, {"unexpected_count": unexpected, "min": None if low is None else float(low),
                             "max": None if high is None else float(high)}


def _row_count(table: pa.Table, min_value=None, max_value=None):
    n = table.num_rows
    ok = (min_value is None or n >= min_value) and (max_value is None or n <= max_value)
    return ok, {"row_count": n}


def _sum_of_columns(table: pa.Table, column: str, sum_columns: list[str], tolerance: float = 1e-6,
                    ignore_null: bool = True):
    arrays = [_column(table, c) for c in (column, *sum_columns)]
    if not ignore_null or not all(pa.types.is_decimal(a.type) for a in arrays):
        return None  # floats and NULL totals compared as pandas does
    total, *components = (a.cast(_EXACT) for a in arrays)
    parts = pa.array([0] * len(total), pa.int64()).cast(_EXACT)
    for component in components:
        parts = pc.add(parts, pc.fill_null(component, pa.scalar(0, _EXACT))).cast(_EXACT)
    diff = pc.abs(pc.subtract(total, parts)).filter(pc.is_valid(total))
    unexpected = pc.sum(pc.greater(diff, pa.scalar(Decimal(str(tolerance))))).as_py() or 0
    largest = pc.max(diff).as_py()
    return unexpected == 0, {"unexpected_count": unexpected, "max_difference": str(largest) if len(diff) else "0"}


ARROW_CHECKS: dict[str, Callable] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_between": _between,
    "expect_table_row_count_to_be_between": _row_count,
    "expect_column_to_equal_sum_of_columns": _sum_of_columns,
}
