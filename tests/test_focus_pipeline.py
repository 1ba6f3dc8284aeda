"""FOCUS 1.2 in each org's dataset, written by the cost pipelines in the same commit as the provider
tables: read back and checked against the specification, totals against the provider tables,
re-runs identical to the last digit, and a restated day never left behind. On both twins."""
from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.focus.columns import focus_schema
from beam_pipelines.focus.validator import validate_focus
from beam_pipelines.gcp.generator import generate_export
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.settings import load_settings
from beam_pipelines.warehouse.base import TableSpec, WarehouseSpec

START, END = date(2026, 11, 18), date(2026, 11, 19)
DAILY = ("openai/cost/usage_cost", "anthropic/cost/usage_cost", "gcp/cost/billing")


@pytest.fixture(params=["local", "bigquery"])
def twin_settings(request):
    return request.getfixturevalue("settings" if request.param == "local" else "bq_settings")


def seeded(settings, tmp_path, org="acme"):
    export = tmp_path / f"{org}_billing.parquet"
    pq.write_table(generate_export(org, END, 4, 300), export)
    seed_org(settings, org, gcp_billing_export=str(export))


def run(settings, pipeline, start=START, end=END, org="acme"):
    result = run_pipeline(settings, RunRequest(pipeline, orgs=[org], start_date=start, end_date=end))
    assert result.runs[0]["status"] == "COMPLETED", result.runs[0]["error_message"]
    return result.runs[0]


def focus_table(warehouse, org="acme") -> pa.Table:
    spec = TableSpec("focus_cost_daily", focus_schema(), "x_ChargeDate", scope_field="x_Provider")
    return pa.concat_tables(list(warehouse.read_days(f"{org}_dev", spec, START - timedelta(days=5), END)))


def totals(warehouse, sql):
    return {tuple(row[:-1]): row[-1] for row in warehouse.query(sql)[1]}


def test_focus_rows_follow_the_spec_and_the_provider_tables_to_the_last_digit(twin_settings, tmp_path):
    settings = twin_settings
    seeded(settings, tmp_path)
    for pipeline in DAILY:
        run(settings, pipeline)
    warehouse = WarehouseSpec.from_settings(settings).open()
    table = focus_table(warehouse)
    assert [f for f in validate_focus(table) if f.severity == "error"] == []
    assert set(table.column("x_Provider").to_pylist()) == {"openai", "anthropic", "gcp"}
    assert table.schema.field("BilledCost").type == pa.decimal128(38, 9), "money is exact"

    focus = totals(warehouse, "SELECT x_Provider, x_ChargeDate, SUM(ListCost) FROM acme_dev.focus_cost_daily"
                              " WHERE x_Provider <> 'gcp' GROUP BY 1, 2")
    for provider in ("openai", "anthropic"):
        computed = totals(warehouse, f"SELECT usage_date, SUM(total_cost_usd) FROM acme_dev.{provider}_cost_daily"
                                     f" WHERE pricing_status = 'PRICED' GROUP BY 1")
        assert {day: cost for (p, day), cost in focus.items() if p == provider} == {
            day: cost for (day,), cost in computed.items()}, f"{provider}: ListCost = computed list cost"
    billed = totals(warehouse, "SELECT x_ChargeDate, BillingCurrency, SUM(BilledCost) FROM acme_dev.focus_cost_daily"
                               " WHERE x_Provider = 'gcp' GROUP BY 1, 2")
    net = totals(warehouse, "SELECT usage_date, currency, SUM(net_cost) FROM acme_dev.gcp_billing_daily_raw GROUP BY 1, 2")
    assert billed == net and billed, "GCP: BilledCost = cost + credits, exactly"
    [(credits,)] = warehouse.query("SELECT COUNT(*) FROM acme_dev.focus_cost_daily WHERE ChargeCategory = 'Credit'")[1]
    assert credits > 0, "credits kept visible as their own rows"

    columns = [c for c in table.column_names if c not in ("x_RunId", "x_LoadedAt")]
    before = focus_table(warehouse).select(columns).sort_by([("x_SourceRowKey", "ascending"), ("SkuId", "ascending"),
                                                             ("ChargeCategory", "ascending")])
    for pipeline in DAILY:
        run(settings, pipeline)
    after = focus_table(warehouse).select(columns).sort_by([("x_SourceRowKey", "ascending"), ("SkuId", "ascending"),
                                                            ("ChargeCategory", "ascending")])
    assert after.equals(before), "a re-run reproduces every row and total to the last digit"


def test_a_day_that_becomes_unpriced_is_cleared_from_focus_and_nothing_else(home, simulator_env, configs_copy,
                                                                            monkeypatch, tmp_path):
    settings = load_settings()
    seeded(settings, tmp_path)
    run(settings, "openai/cost/usage_cost")
    run(settings, "anthropic/cost/usage_cost")
    warehouse = WarehouseSpec.from_settings(settings).open()
    anthropic_before = totals(warehouse, "SELECT x_ChargeDate, SUM(BilledCost) FROM acme_dev.focus_cost_daily"
                                         " WHERE x_Provider = 'anthropic' GROUP BY 1")
    book = configs_copy / "openai/seed/data/default_pricing.csv"
    header, first = book.read_text().splitlines()[:2]
    book.write_text(header + "\n" + first.replace(first.split(",")[0], "some-other-model", 1) + "\n")
    monkeypatch.setenv("CONVERGENCE_CONFIGS", str(configs_copy))
    run(load_settings(), "openai/cost/reprice")
    statuses = {s for (s,) in warehouse.query("SELECT DISTINCT pricing_status FROM acme_dev.openai_cost_daily")[1]}
    assert statuses == {"UNPRICED"}
    assert warehouse.query("SELECT COUNT(*) FROM acme_dev.focus_cost_daily WHERE x_Provider = 'openai'")[1] == [(0,)]
    assert totals(warehouse, "SELECT x_ChargeDate, SUM(BilledCost) FROM acme_dev.focus_cost_daily"
                             " WHERE x_Provider = 'anthropic' GROUP BY 1") == anthropic_before


def test_focus_check_validates_the_stored_rows(settings, tmp_path, capsys):
    from beam_pipelines.cli.main import main
    from beam_pipelines.pipeline.dates import utc_today

    seeded(settings, tmp_path)
    run(settings, "openai/cost/usage_cost")
    days = (utc_today() - START).days
    capsys.readouterr()
    assert main(["focus", "check", "--org", "acme", "--days", str(days)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
