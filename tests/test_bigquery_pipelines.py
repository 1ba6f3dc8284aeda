"""The daily path on the BigQuery twin: metastore and warehouse on the emulator, providers on the simulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.gcp.generator import generate_export
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.testing.simulator import anthropic_data, openai_data
from beam_pipelines.warehouse.base import WarehouseSpec


def run(settings, pipeline, orgs, start, end):
    return run_pipeline(settings, RunRequest(pipeline, orgs=orgs, start_date=start, end_date=end))


def query(settings, sql):
    return WarehouseSpec.from_settings(settings).open().query(sql)[1]


def days(start, end):
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def test_openai_totals_match_the_simulator_reruns_are_identical_and_a_failing_org_writes_nothing(bq_settings,
                                                                                                   past_days):
    settings, (start, end) = bq_settings, past_days
    seed_org(settings, "acme")
    seed_org(settings, "globex", openai_admin_key="sk-proj-not-admin")
    result = run(settings, "openai/cost/usage_cost", ["acme", "globex"], start, end)
    status = {r["org_slug"]: r for r in result.runs}
    assert status["acme"]["status"] == "COMPLETED", status["acme"]["error_message"]
    assert status["globex"]["status"] == "FAILED" and "HTTP 401" in status["globex"]["error_message"]
    expected = defaultdict(lambda: [0, 0, 0])
    for day in days(start, end):
        for r in openai_data.day_results("sk-admin-sim-acme", day):
            expected[day][0] += 1
            expected[day][1] += r["input_tokens"]
            expected[day][2] += r["output_tokens"]
    got = query(settings, "SELECT usage_date, COUNT(*), SUM(input_tokens), SUM(output_tokens)"
                          " FROM acme_dev.openai_cost_daily GROUP BY usage_date ORDER BY usage_date")
    assert {row[0]: list(row[1:]) for row in got} == dict(expected)
    [(focus,)] = query(settings, "SELECT COUNT(*) FROM acme_dev.focus_cost_daily")
    assert status["acme"]["rows_written"] == 2 * sum(v[0] for v in expected.values()) + focus > 0, "raw, cost and FOCUS"
    assert WarehouseSpec.from_settings(settings).open().read_table("globex_dev", "openai_cost_daily") is None

    columns = "usage_date, row_key, model, input_tokens, output_tokens, total_cost_usd, price_version"
    before = query(settings, f"SELECT {columns} FROM acme_dev.openai_cost_daily ORDER BY row_key")
    again = run(settings, "openai/cost/usage_cost", ["acme"], start, end)
    assert again.runs[0]["status"] == "COMPLETED"
    assert query(settings, f"SELECT {columns} FROM acme_dev.openai_cost_daily ORDER BY row_key") == before
    stored = MetastoreSpec.from_settings(settings).open().get_run(again.runs[0]["pipeline_logging_id"])
    assert stored["status"] == "COMPLETED" and stored["outcome"]["replaced"]["openai_cost_daily"][0] == str(start)


def test_anthropic_totals_match_the_simulator(bq_settings, past_days):
    settings, (start, end) = bq_settings, past_days
    seed_org(settings, "acme")
    result = run(settings, "anthropic/cost/usage_cost", ["acme"], start, end)
    assert result.runs[0]["status"] == "COMPLETED", result.runs[0]["error_message"]
    expected = sum(r["output_tokens"] for d in days(start, end)
                   for r in anthropic_data.day_results("sk-ant-admin01-sim-acme", d))
    assert query(settings, "SELECT SUM(output_tokens) FROM acme_dev.anthropic_usage_daily_raw") == [(expected,)]


def test_late_billing_rows_replace_and_nothing_doubles(bq_settings, tmp_path):
    settings = bq_settings
    day = date(2026, 3, 2)
    final = generate_export("acme", day + timedelta(days=1), 3, 400)
    path = tmp_path / "export.parquet"
    early = final.slice(0, final.num_rows - 150)
    pq.write_table(early, path)
    seed_org(settings, "acme", gcp_billing_export=str(path))
    assert run(settings, "gcp/cost/billing", ["acme"], day, day).runs[0]["status"] == "COMPLETED"
    pq.write_table(final, path)  # late rows arrive in the export
    assert run(settings, "gcp/cost/billing", ["acme"], day + timedelta(days=1),
               day + timedelta(days=1)).runs[0]["status"] == "COMPLETED"
    got = query(settings, "SELECT usage_date, COUNT(*), COUNT(DISTINCT row_key) FROM acme_dev.gcp_billing_daily_raw"
                          " GROUP BY usage_date ORDER BY usage_date")
    import pyarrow as pa
    import pyarrow.compute as pc

    per_day = pc.value_counts(pc.cast(final.column("usage_start_time"), pa.date32())).to_pylist()
    expected = {d["values"]: d["counts"] for d in per_day}
    assert {row[0]: row[1] for row in got} == {d: n for d, n in expected.items() if d <= day + timedelta(days=1)}


def test_a_load_made_to_fail_fails_its_org_alone_and_half_writes_nothing(bq_settings, past_days, bq_project):
    """An operator added a REQUIRED column to globex's cost table: globex's commit cannot succeed."""
    settings, (start, _) = bq_settings, past_days
    for org in ("acme", "globex"):
        seed_org(settings, org)
    assert all(r["status"] == "COMPLETED" for r in run(settings, "openai/cost/usage_cost", ["globex"], start, start).runs)
    raw_before = query(settings, "SELECT COUNT(*), SUM(input_tokens) FROM globex_dev.openai_usage_daily_raw")
    warehouse = WarehouseSpec.from_settings(settings).open()
    warehouse.client.query(f"DROP TABLE `{bq_project}.globex_dev.openai_cost_daily`").result()
    warehouse.client.query(f"CREATE TABLE `{bq_project}.globex_dev.openai_cost_daily` (usage_date DATE,"
                           " must_have INT64 NOT NULL)").result()
    result = run(settings, "openai/cost/usage_cost", ["acme", "globex"], start, start + timedelta(days=1))
    status = {r["org_slug"]: r for r in result.runs}
    assert status["acme"]["status"] == "COMPLETED"
    assert status["globex"]["status"] == "FAILED" and status["globex"]["error_message"].startswith("commit: commit of ")
    assert status["globex"]["rows_written"] == 0
    assert query(settings, "SELECT COUNT(*), SUM(input_tokens) FROM globex_dev.openai_usage_daily_raw") == raw_before
    assert warehouse.pending("globex_dev", status["globex"]["pipeline_logging_id"]) == []


def test_the_emulator_is_a_mode_users_run_from_the_cli(bq_settings, home, simulator, past_days, bigquery_emulator,
                                                     bq_project):
    env = {**os.environ, "CONVERGENCE_HOME": str(home)}

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "beam_pipelines.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "metadata tables ready" in cli("provision")
    assert "dataset acme_dev:" in cli("provision", "--org", "acme")
    json.loads(cli("dev", "seed-org", "acme", "--json"))
    cli("run", "openai/cost/usage_cost", "--org", "acme", "--start-date", str(past_days[0]), "--end-date",
        str(past_days[0]), "--quiet")
    runs = json.loads(cli("runs", "--format", "json"))
    assert runs[0]["status"] == "COMPLETED" and runs[0]["config_path"] == "openai/cost/usage_cost"
    rows = json.loads(cli("query", "SELECT (SELECT COUNT(*) FROM acme_dev.openai_usage_daily_raw) + (SELECT COUNT(*)"
                              " FROM acme_dev.openai_cost_daily) + (SELECT COUNT(*) FROM acme_dev.focus_cost_daily) AS n",
                          "--format", "json"))
    assert rows[0]["n"] == runs[0]["rows_written"] > 0
    from google.cloud import bigquery

    tables = {t.table_id for t in warehouse_client(bq_project).list_tables(f"{bq_project}.acme_dev")}
    assert {"openai_cost_daily", "anthropic_cost_daily", "gcp_billing_daily_raw", "openai_model_pricing"} <= tables
    table = warehouse_client(bq_project).get_table(f"{bq_project}.acme_dev.openai_cost_daily")
    assert table.time_partitioning.field == "usage_date" and table.clustering_fields == ["model", "project_id"]
    assert isinstance(table, bigquery.Table)


def warehouse_client(project):
    from beam_pipelines.bigquery.client import make_client

    return make_client(project)


@pytest.fixture
def past_days():
    start = date(2026, 3, 2)
    return start, start + timedelta(days=2)
