"""The OpenAI usage & cost pipeline end to end on the FnApiRunner against the simulator."""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import apache_beam as beam
import pytest

from beam_pipelines.config.loader import load_pipeline
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.pipeline import run as run_module
from beam_pipelines.pipeline.compiler import compile_pipeline
from beam_pipelines.pipeline.run import RunRequest, plan_runs, run_pipeline
from beam_pipelines.testing.simulator import openai_data
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS
from tests.provider_bills import openai_bill

PIPELINE = "openai/cost/usage_cost"


def run(settings, orgs, start, end):
    return run_pipeline(settings, RunRequest(PIPELINE, orgs=orgs, start_date=start, end_date=end))


def days(start, end):
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def query(settings, sql):
    return LocalWarehouse(settings.warehouse_dir).query(sql)[1]


def test_warehouse_totals_match_the_simulator_and_reruns_are_identical(settings, past_days):
    start, end = past_days
    for org in ("acme", "globex"):
        seed_org(settings, org)
    result = run(settings, ["acme", "globex"], start, end)
    assert [r["status"] for r in result.runs] == ["COMPLETED", "COMPLETED"]
    for org in ("acme", "globex"):
        expected = defaultdict(lambda: [0, 0, 0, 0])
        for day in days(start, end):
            for r in openai_data.day_results(f"sk-admin-sim-{org}", day):
                e = expected[day]
                e[0] += 1
                e[1] += r["input_tokens"]
                e[2] += r["output_tokens"]
                e[3] += r["num_model_requests"]
        got = query(settings, f"SELECT usage_date, COUNT(*), SUM(input_tokens), SUM(output_tokens),"
                              f" SUM(num_model_requests) FROM {org}_dev.openai_cost_daily GROUP BY 1 ORDER BY 1")
        assert {row[0]: list(row[1:]) for row in got} == dict(expected)
        run_row = next(r for r in result.runs if r["org_slug"] == org)
        [(focus,)] = query(settings, f"SELECT COUNT(*) FROM {org}_dev.focus_cost_daily")
        assert run_row["rows_written"] == 2 * sum(v[0] for v in expected.values()) + focus, "raw, cost and FOCUS"

    columns = "usage_date, org_slug, row_key, model, input_tokens, output_tokens, total_cost_usd, price_version"
    before = query(settings, f"SELECT {columns} FROM acme_dev.openai_cost_daily ORDER BY row_key")
    again = run(settings, ["acme"], start, end)
    assert again.runs[0]["status"] == "COMPLETED"
    assert query(settings, f"SELECT {columns} FROM acme_dev.openai_cost_daily ORDER BY row_key") == before
    assert query(settings, "SELECT COUNT(DISTINCT run_id) FROM acme_dev.openai_cost_daily") == [(1,)]


def test_costs_match_the_providers_billing(settings, simulator, past_days):
    """Per day and model, to the cent fraction, for everything the usage API shows (long prompts aside)."""
    start, end = past_days
    seed_org(settings, "acme")
    run(settings, ["acme"], start, end)
    ours = dict(((day, model), cost) for day, model, cost in query(
        settings, "SELECT usage_date, model, SUM(total_cost_usd) FROM acme_dev.openai_cost_daily"
                  " WHERE pricing_status = 'PRICED' GROUP BY 1, 2"))
    billed = openai_bill(simulator.openai_base_url, "sk-admin-sim-acme", start, end)
    assert set(ours) == set(billed) and len(billed) > 7 * 5
    for key, (listed, _long_prompts) in billed.items():
        assert float(ours[key]) == pytest.approx(listed, abs=1e-4), key


def test_unknown_model_is_flagged_never_zero(settings, past_days):
    start, end = past_days
    seed_org(settings, "acme")
    run(settings, ["acme"], start, end)
    rows = query(settings, "SELECT DISTINCT model, total_cost_usd IS NULL, price_version IS NULL"
                           " FROM acme_dev.openai_cost_daily WHERE pricing_status = 'UNPRICED'")
    assert rows and all(model.startswith("ft:") and null_cost and null_version for model, null_cost, null_version in rows)
    assert query(settings, "SELECT COUNT(*) FROM acme_dev.openai_cost_daily WHERE total_cost_usd = 0") == [(0,)]


def test_rejected_key_fails_that_org_only_and_writes_nothing_for_it(settings, past_days):
    start, end = past_days
    seed_org(settings, "acme")
    seed_org(settings, "globex", openai_admin_key="sk-proj-not-admin")
    result = run(settings, ["acme", "globex"], start, end)
    status = {r["org_slug"]: r for r in result.runs}
    assert status["acme"]["status"] == "COMPLETED"
    assert status["globex"]["status"] == "FAILED"
    assert "extract_usage: openai API HTTP 401" in status["globex"]["error_message"]
    assert LocalWarehouse(settings.warehouse_dir).read_table("globex_dev", "openai_cost_daily") is None
    steps = MetastoreSpec.from_settings(settings).open().list_steps(status["globex"]["pipeline_logging_id"])
    assert [(s["step_id"], s["status"]) for s in steps] == [("extract_usage", "FAILED")]


def test_failure_after_some_pages_writes_nothing_for_that_org(settings, simulator, past_days):
    start, end = past_days
    seed_org(settings, "acme")
    seed_org(settings, "globex")
    # first page served, then the second page is malformed JSON: globex must fail whole
    simulator.faults.add("sk-admin-sim-globex", ["slow:0", "malformed"])
    result = run(settings, ["acme", "globex"], start, end)
    status = {r["org_slug"]: r["status"] for r in result.runs}
    assert status == {"acme": "COMPLETED", "globex": "FAILED"}
    assert LocalWarehouse(settings.warehouse_dir).read_table("globex_dev", "openai_usage_daily_raw") is None


def test_canary_credential_never_leaves_the_worker(settings, past_days, home):
    canary = "sk-admin-CANARY-5f0c1e7d9a2b44c1"
    seed_org(settings, "acme", openai_admin_key=canary)
    seed_org(settings, "globex", openai_admin_key="sk-CANARY-rejected-3c9d")
    result = run(settings, ["acme", "globex"], *past_days)
    assert [r["status"] for r in result.runs] == ["COMPLETED", "FAILED"]
    # job graph: build the same graph and search its serialized form
    loaded, items = plan_runs(settings, RunRequest(PIPELINE, orgs=["acme"], start_date=past_days[0],
                                                   end_date=past_days[1]), "test-owner")
    p = beam.Pipeline(runner="FnApiRunner")
    compile_pipeline(p, RunContext.from_settings(settings, loaded, datetime.now(timezone.utc),
                                                 ("acme",)), items)
    graph = p.to_runner_api().SerializeToString()
    for secret in (canary, "sk-CANARY-rejected-3c9d"):
        assert secret.encode() not in graph
        for path in home.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"secret found in {path}"


def test_an_answer_about_another_day_fails_the_org_and_touches_no_partition(settings, simulator, past_days):
    start, end = past_days
    seed_org(settings, "acme")
    assert run(settings, ["acme"], date(2026, 2, 15), date(2026, 2, 15)).runs[0]["status"] == "COMPLETED"
    before = query(settings, "SELECT COUNT(*), SUM(input_tokens) FROM acme_dev.openai_usage_daily_raw")
    simulator.faults.add("sk-admin-sim-acme", ["stray-bucket:2026-02-15"])
    result = run(settings, ["acme"], start, end)
    assert result.runs[0]["status"] == "FAILED"
    assert result.runs[0]["error_message"] == (
        f"extract_usage: openai API: answer carries usage for 2026-02-15, outside the requested {start}..{end}:"
        " nothing written")
    assert query(settings, "SELECT COUNT(*), SUM(input_tokens) FROM acme_dev.openai_usage_daily_raw") == before


def test_an_empty_answer_never_wipes_a_populated_day(settings, simulator, past_days):
    start, end = past_days
    seed_org(settings, "acme")
    first = run(settings, ["acme"], start, end)
    totals = query(settings, "SELECT usage_date, COUNT(*), SUM(total_cost_usd) FROM acme_dev.openai_cost_daily"
                             " GROUP BY 1 ORDER BY 1")
    simulator.faults.add("sk-admin-sim-acme", ["empty"])
    second = run(settings, ["acme"], start, end)
    assert second.runs[0]["status"] == "COMPLETED" and second.runs[0]["rows_written"] == 0
    assert query(settings, "SELECT usage_date, COUNT(*), SUM(total_cost_usd) FROM acme_dev.openai_cost_daily"
                           " GROUP BY 1 ORDER BY 1") == totals
    kept = second.runs[0]["outcome"]["kept"]
    assert sorted({(k["table"], k["day"]) for k in kept}) == sorted(
        (t, d.isoformat()) for t in ("openai_cost_daily", "openai_usage_daily_raw") for d in days(start, end))
    cost_day = next(k for k in kept if k["table"] == "openai_cost_daily" and k["day"] == start.isoformat())
    assert (cost_day["rows"], Decimal(str(cost_day["cost_usd"]))) == (totals[0][1], totals[0][2])
    results = MetastoreSpec.from_settings(settings).open().list_dq_results(second.runs[0]["pipeline_logging_id"])
    warnings = [r for r in results if r["expectation_type"] == "expect_populated_day_not_emptied"]
    assert len(warnings) == 2 * len(days(start, end)) and all(r["severity"] == "warning" for r in warnings)
    assert first.runs[0]["rows_written"] > 0


def test_crashed_job_closes_every_run_as_failed(settings, past_days, monkeypatch):
    seed_org(settings, "acme")

    def explode(*args, **kwargs):
        raise RuntimeError("worker pool lost")

    monkeypatch.setattr(run_module, "compile_pipeline", explode)
    result = run(settings, ["acme"], *past_days)
    assert result.runs[0]["status"] == "FAILED"
    assert result.runs[0]["error_message"] == "job crashed: RuntimeError: worker pool lost"


def test_all_orgs_selects_only_eligible_orgs(settings, past_days):
    seed_org(settings, "acme")
    seed_org(settings, "trialing", subscription="TRIAL", trial_ends=date.today() + timedelta(days=3))
    seed_org(settings, "lapsed", subscription="TRIAL", trial_ends=date(2020, 1, 1))
    seed_org(settings, "suspended", subscription="SUSPENDED")
    result = run_pipeline(settings, RunRequest(PIPELINE, all_orgs=True, start_date=past_days[0], end_date=past_days[0]))
    assert sorted(r["org_slug"] for r in result.runs) == ["acme", "trialing"]


def test_config_from_another_folder(settings, configs_copy, past_days, monkeypatch):
    (configs_copy / "openai/cost/usage_cost.yml").rename(configs_copy / "openai/cost/usage_daily.yml")
    monkeypatch.setenv("CONVERGENCE_CONFIGS", str(configs_copy))
    from beam_pipelines.settings import load_settings

    other = load_settings()
    assert load_pipeline(other.configs_dir, "openai/usage_daily").pipeline_id == "openai/cost/usage_daily"
    with pytest.raises(Exception, match="no such pipeline"):
        load_pipeline(other.configs_dir, PIPELINE)
    assert CONFIGS != other.configs_dir


def test_a_suspended_org_is_refused_by_the_cli_and_the_template_and_nothing_is_fetched(settings, simulator, past_days):
    from beam_pipelines.metastore.base import new_run
    from beam_pipelines.pipeline import template

    seed_org(settings, "paused", subscription="SUSPENDED")
    before = simulator.requests
    result = run(settings, ["paused"], *past_days)
    assert result.runs[0]["status"] == "FAILED"
    assert result.runs[0]["error_message"] == ("extract_usage: refused: subscription status is SUSPENDED"
                                               " (nothing fetched)")
    store = MetastoreSpec.from_settings(settings).open()
    run_id = "ab" * 16
    store.create_runs([new_run(run_id, "paused", PIPELINE, past_days[0], past_days[0], "QUEUED", "scheduler", "dataflow",
                               "dataflow:job")])
    template.run([f"--pipeline={PIPELINE}", "--org_slugs=paused", f"--run_ids={run_id}", f"--start_date={past_days[0]}",
                  f"--end_date={past_days[0]}", "--runner=FnApiRunner"]).wait_until_finish()
    assert store.get_run(run_id)["status"] == "FAILED" and "SUSPENDED" in store.get_run(run_id)["error_message"]
    assert simulator.requests == before, "no provider call for a refused org"
    assert LocalWarehouse(settings.warehouse_dir).read_table("paused_dev", "openai_usage_daily_raw") is None


def test_a_trial_that_ends_between_launch_and_run_is_refused_at_run_time(settings, simulator, past_days):
    from beam_pipelines.metastore.base import new_run
    from beam_pipelines.pipeline.run import run_recorded

    seed_org(settings, "trial", subscription="TRIAL", trial_ends=date.today() + timedelta(days=1))
    store = MetastoreSpec.from_settings(settings).open()
    run_id = "cd" * 16  # recorded by the launcher while the trial was live
    store.create_runs([new_run(run_id, "trial", PIPELINE, past_days[0], past_days[0], "QUEUED", "api", "local", "l")])
    store.set_subscription("trial", "TRIAL", trial_end_date=date.today() - timedelta(days=1))  # then it ended
    result = run_recorded(settings, PIPELINE, {"trial": run_id}, past_days[0], past_days[0])
    assert result.runs[0]["status"] == "FAILED"
    assert f"refused: trial ended on {date.today() - timedelta(days=1)}" in result.runs[0]["error_message"]
