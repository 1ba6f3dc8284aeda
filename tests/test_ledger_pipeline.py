"""The dual ledger end to end on the simulator: every day MATCHED against both providers' bills,
then a model removed from the price book: that day is VARIANCE, naming the model, with its billed
amount as the variance. Read back through the CLI and the launcher's run detail."""
from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest

from beam_pipelines.cli.main import main
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.pipeline.dates import utc_today
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.settings import load_settings
from beam_pipelines.testing.simulator import anthropic_data, openai_data
from beam_pipelines.warehouse.base import WarehouseSpec

START, END = date(2026, 11, 17), date(2026, 11, 18)
FIRST = START - timedelta(days=2)  # the ledger re-reads a 3-day trailing window: bills are restated
REMOVED = "gpt-5.5"


def run(settings, pipeline, start=START, end=END):
    result = run_pipeline(settings, RunRequest(pipeline, orgs=["acme"], start_date=start, end_date=end))
    assert result.runs[0]["status"] == "COMPLETED", result.runs[0]["error_message"]
    return result.runs[0]


def ledger(warehouse):
    _, rows = warehouse.query("SELECT provider, usage_date, status, computed_cost_usd, billed_cost_usd, variance_usd,"
                              " unpriced_billed_usd, reasons FROM acme_dev.cost_reconciliation_daily"
                              " WHERE level = 'org' ORDER BY 1, 2")
    return {(p, d): dict(status=s, computed=c, billed=b, variance=v, unpriced=u,
                         reasons=json.loads(r) if isinstance(r, str) else r)  # BigQuery parses JSON itself
            for p, d, s, c, b, v, u, r in rows}


@pytest.fixture(params=["local", "bigquery"])
def twin_settings(request):
    return request.getfixturevalue("settings" if request.param == "local" else "bq_settings")


def test_every_day_matches_the_bill_and_the_billed_tables_hold_the_bill(twin_settings):
    settings = twin_settings
    seed_org(settings, "acme")
    for pipeline in ("openai/cost/usage_cost", "anthropic/cost/usage_cost"):
        run(settings, pipeline, FIRST)
    for pipeline in ("openai/ledger/billed_cost", "anthropic/ledger/billed_cost"):
        run(settings, pipeline)
    warehouse = WarehouseSpec.from_settings(settings).open()
    rows = ledger(warehouse)
    assert set(rows) == {(p, FIRST + timedelta(days=i)) for p in ("openai", "anthropic") for i in range(4)}
    assert {r["status"] for r in rows.values()} == {"MATCHED"}
    for (provider, day), row in rows.items():
        assert abs(row["variance"]) <= row["billed"] / 100 and row["billed"] > 0
    expected = {d: sum(sum((openai_data.billed_cost(r, d) or {}).values())
                       for r in openai_data.day_results("sk-admin-sim-acme", d)) for d in (START, END)}
    _, billed = warehouse.query("SELECT usage_date, SUM(amount_usd) FROM acme_dev.openai_billed_cost_daily"
                                f" WHERE usage_date >= DATE '{START.isoformat()}' GROUP BY 1")
    assert {d: float(v) for d, v in billed} == pytest.approx(expected, abs=1e-6)
    _, per_workspace = warehouse.query("SELECT COUNT(*) FROM acme_dev.cost_reconciliation_daily WHERE level = 'workspace'")
    assert per_workspace[0][0] > 0, "Anthropic rows per workspace too"
    assert sum(sum((anthropic_data.billed_cents(r, START) or {}).values())
               for r in anthropic_data.day_results("sk-ant-admin01-sim-acme", START)) / 100 == pytest.approx(
        float(rows["anthropic", START]["billed"]), abs=1e-6)


def test_a_model_missing_from_the_book_is_that_days_variance_with_its_billed_amount(home, simulator_env, configs_copy,
                                                                                    monkeypatch, capsys):
    book = configs_copy / "openai/seed/data/default_pricing.csv"
    lines = book.read_text().splitlines()
    book.write_text("\n".join(line for line in lines if not line.startswith(f"{REMOVED},")) + "\n")
    monkeypatch.setenv("CONVERGENCE_CONFIGS", str(configs_copy))
    settings = load_settings()
    seed_org(settings, "acme")
    usage = run(settings, "openai/cost/usage_cost", FIRST)
    run(settings, "openai/ledger/billed_cost")
    rows = ledger(WarehouseSpec.from_settings(settings).open())
    model = "gpt-5.5-2026-04-23"
    for day in (FIRST, START, END):
        row = rows["openai", day]
        bill = sum(v for r in openai_data.day_results("sk-admin-sim-acme", day) if r["model"] == model
                   for v in openai_data.billed_cost(r, day).values())
        assert row["status"] == "VARIANCE"
        [reason] = [r for r in row["reasons"] if r["kind"] == "unpriced_model" and r["model"] == model]
        assert reason["model"] == model and float(Decimal(reason["billed_usd"])) == pytest.approx(bill, abs=1e-6)
        assert float(row["variance"]) == pytest.approx(bill, rel=0.01), "the unpriced model's bill is the variance"

    days = (utc_today() - FIRST).days
    capsys.readouterr()
    assert main(["reconcile", "--org", "acme", "--days", str(days), "--provider", "openai"]) == 1
    out = capsys.readouterr().out
    assert f"unpriced {model} (billed $" in out and "VARIANCE" in out and "0 of 4 provider-days MATCHED" in out

    from launcher.service import LaunchService
    from tests.launcher_support import launcher_settings

    service = LaunchService(launcher_settings(), backend=None, pipelines={}, metastore=None)
    detail = service.reconciliation({"config_path": "openai/cost/usage_cost", "org_slug": "acme",
                                     "start_date": usage["start_date"], "end_date": usage["end_date"]})
    assert [(d["usage_date"], d["status"]) for d in detail] == [
        ((FIRST + timedelta(days=i)).isoformat(), "VARIANCE") for i in range(4)]
    assert usage["status"] == "COMPLETED"
