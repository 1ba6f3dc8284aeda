"""Data-quality checks on Arrow tables (staged billing parts) give exactly the results of the pandas checks."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pytest

from beam_pipelines.gcp.config import load_bq_etl_config
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.generator import generate_export
from beam_pipelines.quality.arrow import evaluate_table
from beam_pipelines.quality.suite import Expectation, Suite, evaluate, load_suite
from beam_pipelines.settings import REPO_CONFIGS

BILLING_SUITE = load_suite(REPO_CONFIGS / "data_quality/expectations/billing_cost_suite.json", "billing_cost_suite.json")
ETL = load_bq_etl_config(REPO_CONFIGS / "gcp/bq_etl/config.yml", "gcp/bq_etl/config.yml")
NOW = datetime(2026, 3, 5, tzinfo=timezone.utc)


def _flat(rows: int = 400) -> pa.Table:
    return Flattener(ETL.flatten)(generate_export("acme", date(2026, 3, 2), 1, rows), "acme", "run-q", NOW)


def _set(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


def _assert_same(suite: Suite, table: pa.Table) -> list:
    got = evaluate_table(suite, table)
    assert got == evaluate(suite, table.to_pandas())
    return got


def test_a_clean_part_passes_the_billing_suite_as_in_pandas():
    results = _assert_same(BILLING_SUITE, _flat())
    assert all(r.success for r in results)


def test_broken_rows_fail_the_same_expectations_with_the_same_observations():
    table = _flat(60)
    n = table.num_rows
    table = _set(table, "currency_conversion_rate", [float("nan"), 0.0, None] + [1.0] * (n - 3))
    net = table.column("net_cost").to_pylist()
    table = _set(table, "net_cost", [net[0] + Decimal("0.000002"), None] + net[2:])
    table = _set(table, "credits_total", [Decimal("0.5")] + table.column("credits_total").to_pylist()[1:])
    table = _set(table, "cost_usd", [None] * n)
    results = _assert_same(BILLING_SUITE, table)
    failed = {(r.expectation.expectation_type, r.expectation.kwargs.get("column")) for r in results if not r.success}
    assert failed == {("expect_column_to_equal_sum_of_columns", "net_cost"), ("expect_column_values_to_be_between", "credits_total"),
                      ("expect_column_values_to_be_between", "currency_conversion_rate"),
                      ("expect_column_values_to_not_be_null", "currency_conversion_rate"),
                      ("expect_column_values_to_not_be_null", "cost_usd")}


@pytest.mark.parametrize("expectation", [
    Expectation("expect_compound_columns_to_be_unique", {"column_list": ["row_key", "usage_date"]}, "critical"),
    Expectation("expect_table_row_count_to_be_between", {"min_value": 1, "max_value": 10}, "warning"),
    Expectation("expect_column_values_to_not_be_in_set", {"column": "cost_type", "value_set": ["tax"],
                                                          "report_column": "sku_id"}, "warning"),
    Expectation("expect_column_values_to_be_in_set", {"column": "currency", "value_set": ["USD"]}, "warning"),
    Expectation("expect_column_values_to_be_between", {"column": "usage_amount", "min_value": 10.5}, "warning"),
    Expectation("expect_column_values_to_be_between", {"column": "cost", "min_value": -0.5, "max_value": 2}, "warning"),
    Expectation("expect_column_to_equal_sum_of_columns", {"column": "net_cost_usd", "sum_columns": ["cost_usd", "credits_total_usd"],
                                                          "tolerance": 0}, "critical"),
    Expectation("expect_column_to_equal_sum_of_columns", {"column": "usage_amount", "sum_columns": ["usage_amount_in_pricing_units"]},
                "warning"),
    Expectation("expect_column_values_to_not_be_null", {"column": "no_such_column"}, "critical"),
])
def test_every_expectation_type_matches_the_pandas_check(expectation):
    _assert_same(Suite("one", (expectation,)), _flat(300))


def test_an_empty_part_gives_the_pandas_results():
    _assert_same(BILLING_SUITE, _flat(10).slice(0, 0))
