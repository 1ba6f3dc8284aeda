"""Re-pricing from stored raw usage: yesterday's UNPRICED rows priced once the book knows the model,
without calling the provider; `prices missing` before and after."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pytest

from beam_pipelines.cli.main import main
from beam_pipelines.config.schema import load_schema
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.pipeline.dates import utc_today
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.settings import load_settings
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.base import TableSpec, WarehouseSpec
from tests.conftest import CONFIGS

FINE_TUNE = "ft:gpt-4o-mini-2024-07-18:acme::B7xQ2kLm"
# OpenAI's published inference price of a fine-tuned gpt-4o-mini: $0.30 in, $0.15 cached, $1.20 out
FT_ROW = {"model": FINE_TUNE, "service_tier": "default", "effective_from": "2024-09-01",
          "input_usd_per_mtok": "0.3", "cached_input_usd_per_mtok": "0.15", "output_usd_per_mtok": "1.2"}
COST = "SELECT row_key, model, pricing_status, total_cost_usd, price_version, run_id FROM acme_dev.openai_cost_daily"


def rows(warehouse, sql):
    return {r[0]: r[1:] for r in warehouse.query(sql)[1]}


def add_to_book(configs):
    path = configs / "openai/seed/data/default_pricing.csv"
    book = pd.read_csv(path, dtype=str, keep_default_na=False)
    book = pd.concat([book, pd.DataFrame([FT_ROW])], ignore_index=True).fillna("")
    book.to_csv(path, index=False)


def test_reprice_prices_yesterdays_unpriced_rows_from_stored_usage(home, simulator_env, configs_copy, monkeypatch, capsys):
    monkeypatch.setenv("CONVERGENCE_CONFIGS", str(configs_copy))
    settings = load_settings()
    yesterday = utc_today() - timedelta(days=1)
    seed_org(settings, "acme")
    day = ["--start-date", yesterday.isoformat(), "--end-date", yesterday.isoformat()]
    assert main(["run", "openai/cost/usage_cost", "--org", "acme", "--quiet", *day]) == 0
    warehouse = WarehouseSpec.from_settings(settings).open()
    before = rows(warehouse, COST)
    raw_before = warehouse.query("SELECT * FROM acme_dev.openai_usage_daily_raw ORDER BY row_key")[1]
    unpriced = {k for k, (_, status, *_) in before.items() if status == "UNPRICED"}
    assert unpriced and {before[k][0] for k in unpriced} == {FINE_TUNE}

    capsys.readouterr()
    assert main(["prices", "missing", "--org", "acme", *day]) == 0
    listed = capsys.readouterr().out
    assert "1 model(s)" in listed and FINE_TUNE in listed

    add_to_book(configs_copy)
    simulator_env.faults.add("sk-admin-sim-acme", ["500"] * 20)  # the provider is never asked again
    assert main(["reprice", "openai", "--org", "acme", "--quiet", *day]) == 0
    after = rows(warehouse, COST)
    assert set(after) == set(before), "the same usage rows, replaced in place"
    new_run = {run for *_, run in after.values()}
    assert len(new_run) == 1 and new_run != {run for *_, run in before.values()}
    [raw_row] = [r for r in warehouse.query(f"SELECT input_uncached_tokens, input_cached_tokens, output_tokens, row_key"
                                            f" FROM acme_dev.openai_usage_daily_raw WHERE model = '{FINE_TUNE}'")[1]][:1]
    for key in unpriced:
        model, status, cost, version, _ = after[key]
        assert status == "PRICED" and version == f"{FINE_TUNE}:default@2024-09-01" and cost > 0
    uncached, cached, output, key = raw_row
    assert after[key][2] == (Decimal(uncached) * Decimal("0.3") + Decimal(cached) * Decimal("0.15")
                             + Decimal(output) * Decimal("1.2")) / 10**6
    for key in set(before) - unpriced:
        assert after[key][:4] == before[key][:4], "rows already priced keep their cost and version"
    assert warehouse.query("SELECT * FROM acme_dev.openai_usage_daily_raw ORDER BY row_key")[1] == raw_before
    [run] = MetastoreSpec.from_settings(settings).open().list_runs(org_slug="acme", limit=1)
    assert (run["config_path"], run["trigger_type"], run["status"]) == ("openai/cost/reprice", "reprice", "COMPLETED")

    capsys.readouterr()
    assert main(["prices", "missing", "--org", "acme", *day]) == 0
    assert "0 model(s)" in capsys.readouterr().out


@pytest.fixture(params=["local", "bigquery"])
def twin_settings(request):
    return request.getfixturevalue("settings" if request.param == "local" else "bq_settings")


def test_reprice_with_an_org_price_and_nothing_stored_keeps_the_day(twin_settings, past_days):
    """On both twins: the org's own price row prices the fine-tune; a day with no stored usage is kept."""
    settings = twin_settings
    day = past_days[0]
    seed_org(settings, "acme")
    result = run_pipeline(settings, RunRequest("openai/cost/usage_cost", orgs=["acme"], start_date=day, end_date=day))
    assert result.runs[0]["status"] == "COMPLETED", result.runs[0]["error_message"]
    warehouse = WarehouseSpec.from_settings(settings).open()
    schema = load_schema(CONFIGS / "openai/seed/schemas/openai_model_pricing.json")
    override = pd.DataFrame([{**{c: None for c in schema.names}, "model": FINE_TUNE, "service_tier": "default",
                              "effective_from": date(2024, 9, 1), "input_usd_per_mtok": Decimal("0.5"),
                              "output_usd_per_mtok": Decimal("2"), "is_custom": True,
                              "updated_at": datetime.now(timezone.utc)}])[schema.names]
    warehouse.replace_table("acme_dev", TableSpec("openai_model_pricing", schema, None),
                            to_arrow(override, schema, "openai_model_pricing"))
    result = run_pipeline(settings, RunRequest("openai/cost/reprice", orgs=["acme"], start_date=day,
                                               end_date=day + timedelta(days=1), trigger="reprice"))
    run = result.runs[0]
    assert run["status"] == "COMPLETED", run["error_message"]
    _, priced = warehouse.query(f"SELECT DISTINCT pricing_status, price_version FROM acme_dev.openai_cost_daily"
                                f" WHERE model = '{FINE_TUNE}'")
    assert priced == [("PRICED", f"{FINE_TUNE}:default@2024-09-01:org=acme")]
    _, days = warehouse.query("SELECT DISTINCT usage_date FROM acme_dev.openai_cost_daily")
    assert days == [(day,)], "the day with no stored usage is left as it was"
    assert [k["day"] for k in run["outcome"]["kept"]] == [] and run["rows_written"] > 0
