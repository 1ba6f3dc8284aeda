"""The `convergence` command as a user runs it (subprocesses, real simulator, isolated home)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

CANARY = "sk-admin-CANARY-cli-91b2c3d4e5f6"


@pytest.fixture
def cli(home, simulator):
    env = {**os.environ, "CONVERGENCE_HOME": str(home), "OPENAI_BASE_URL": simulator.openai_base_url,
           "ANTHROPIC_BASE_URL": simulator.anthropic_base_url}
    env.pop("CONVERGENCE_CONFIGS", None)
    env.pop("ENVIRONMENT", None)

    def call(*args, extra_env=None, check=None):
        proc = subprocess.run([sys.executable, "-m", "beam_pipelines.cli.main", *args], capture_output=True,
                              text=True, env={**env, **(extra_env or {})}, timeout=300)
        if check is not None:
            assert proc.returncode == check, proc.stderr
        return proc

    return call


def test_validate_reports_a_bad_config_as_one_line(cli, configs_copy):
    assert "ok  openai/cost/usage_cost" in cli("validate", check=0).stdout
    path = configs_copy / "openai/cost/usage_cost.yml"
    data = yaml.safe_load(path.read_text())
    data["steps"][0]["ps_type"] = "openai.usages"
    path.write_text(yaml.safe_dump(data))
    proc = cli("--configs", str(configs_copy), "validate", check=1)
    assert proc.stderr.strip().splitlines() == [
        "error: openai/cost/usage_cost.yml: steps[0].ps_type: unknown ps_type 'openai.usages'"
    ]
    proc = cli("run", "openai/cost/usage_cost", "--org", "x", extra_env={"CONVERGENCE_CONFIGS": str(configs_copy)},
               check=1)
    assert len(proc.stderr.strip().splitlines()) == 1 and "unknown ps_type" in proc.stderr


def test_seed_org_prints_the_key_once_and_is_refused_in_production(cli, home):
    created = json.loads(cli("dev", "seed-org", "acme", "--json", check=0).stdout)
    assert created["org_slug"] == "acme" and created["api_key"].startswith("cvg_")
    assert created["api_key"].encode() not in (home / "metastore.sqlite3").read_bytes()
    proc = cli("dev", "seed-org", "acme", extra_env={"ENVIRONMENT": "production"}, check=1)
    assert proc.stderr.strip() == "error: dev seed-org is refused when ENVIRONMENT=production"
    assert "error: org slug" in cli("dev", "seed-org", "Bad-Slug", check=1).stderr


def test_run_then_inspect_runs_and_query(cli, past_days, home):
    start, end = past_days
    cli("dev", "seed-org", "acme", "--openai-admin-key", CANARY, check=0)
    cli("dev", "seed-org", "globex", "--openai-admin-key", "sk-nope", check=0)
    proc = cli("-v", "run", "openai/usage_cost", "--org", "acme", "--org", "globex", "--start-date", str(start),
               "--end-date", str(end), check=1)  # globex fails, so the exit code is non-zero
    assert "acme" in proc.stdout and "COMPLETED" in proc.stdout and "FAILED" in proc.stdout
    runs = json.loads(cli("runs", "--format", "json", check=0).stdout)
    assert {r["org_slug"]: r["status"] for r in runs} == {"acme": "COMPLETED", "globex": "FAILED"}
    acme = next(r for r in runs if r["org_slug"] == "acme")
    shown = json.loads(cli("runs", "show", acme["pipeline_logging_id"], "--format", "json", check=0).stdout)
    steps = [s["step_id"] for s in shown["steps"]]
    assert steps[0] == "extract_usage" and sorted(steps) == sorted([
        "extract_usage", "transform_cost", "validate_cost", "transform_focus", "load_usage_raw", "load_cost_daily",
        "load_focus"])
    assert {c["expectation_type"] for c in shown["data_quality"]} >= {"expect_compound_columns_to_be_unique"}
    assert shown["rows_written"] == acme["rows_written"] > 0
    assert "transform_cost" in cli("runs", "show", acme["pipeline_logging_id"], check=0).stdout
    assert cli("runs", "show", "nope", check=1).stderr.strip() == "error: run 'nope' does not exist"
    rows = json.loads(cli("query", "SELECT (SELECT COUNT(*) FROM acme_dev.openai_usage_daily_raw) + (SELECT COUNT(*)"
                              " FROM acme_dev.openai_cost_daily) + (SELECT COUNT(*) FROM acme_dev.focus_cost_daily) AS n",
                          "--format", "json", check=0).stdout)
    assert rows[0]["n"] == acme["rows_written"], "raw, cost and FOCUS rows"
    csv_out = cli("query", "SELECT model FROM acme_dev.openai_cost_daily LIMIT 1", "--format", "csv", check=0).stdout
    assert csv_out.splitlines()[0] == "model"
    # the credential never shows up in output, logs or run records
    logs = "".join(p.read_text(errors="replace") for p in (home / "logs").glob("*"))
    for text in (proc.stdout, proc.stderr, logs, json.dumps(runs), json.dumps(shown)):
        assert CANARY not in text and "sk-nope" not in text


def test_future_and_reversed_dates_are_refused(cli):
    cli("dev", "seed-org", "acme", check=0)
    proc = cli("run", "openai/cost/usage_cost", "--org", "acme", "--start-date", "2999-01-01", check=1)
    assert "in the future" in proc.stderr
    proc = cli("run", "openai/cost/usage_cost", "--org", "acme", "--start-date", "2026-03-05",
               "--end-date", "2026-03-01", check=1)
    assert proc.stderr.strip() == "error: end date 2026-03-01 is before start date 2026-03-05"
    assert "does not exist" in cli("run", "openai/cost/usage_cost", "--org", "ghost", check=1).stderr


def test_a_provider_echoing_the_key_never_puts_it_anywhere(cli, home, simulator, past_days):
    """A 429 body that repeats the admin key (whole and masked): 0 files, 0 lines of output hold any of it."""
    canary = "sk-admin-CANARY-echo-7f3e9a2b4c6d8e0f"
    cli("dev", "seed-org", "acme", "--openai-admin-key", canary, check=0)
    simulator.faults.add(canary, ["429-echo-key"] * 3)
    proc = cli("-v", "run", "openai/cost/usage_cost", "--org", "acme", "--start-date", str(past_days[0]),
               "--end-date", str(past_days[0]), check=0)
    shown = cli("runs", "--format", "json", check=0).stdout
    masked = f"{canary[:8]}****{canary[-4:]}"
    for text in (proc.stdout, proc.stderr, shown):
        assert canary not in text and masked not in text and canary[-4:] + ")" not in text
    files = [p for p in home.rglob("*") if p.is_file()]
    assert files and not [p for p in files if canary.encode() in p.read_bytes() or masked.encode() in p.read_bytes()]
    log = (home / "logs" / "convergence.log").read_text()
    assert "retrying /organization/usage/completions" in log and "[REDACTED]" in log
    assert "[REDACTED]" in proc.stderr, "-v shows the retries, redacted"


def test_state_under_the_home_is_private(cli, home, past_days):
    cli("dev", "seed-org", "acme", check=0)
    cli("run", "openai/cost/usage_cost", "--org", "acme", "--start-date", str(past_days[0]), "--end-date",
        str(past_days[0]), check=0)
    paths = list(home.rglob("*"))
    assert any(p.suffix == ".parquet" for p in paths) and any(p.name == "convergence.log" for p in paths)
    loose = [(str(p.relative_to(home)), oct(p.stat().st_mode & 0o777)) for p in paths
             if p.stat().st_mode & 0o777 not in ((0o700,) if p.is_dir() else (0o600,))]
    assert loose == [], "files 0600, folders 0700"


def test_validate_accepts_configs_before_or_after_the_command(cli, configs_copy):
    (configs_copy / "openai/cost/usage_cost.yml").write_text("name: [broken")
    for args in (("--configs", str(configs_copy), "validate"), ("validate", "--configs", str(configs_copy))):
        proc = cli(*args, check=1)
        assert "openai/cost/usage_cost.yml: line 1: invalid YAML" in proc.stderr
    assert "ok  system configs" in cli("validate", check=0).stdout


def test_the_command_runs_its_exit_handlers_and_flushes_its_output_before_it_leaves(home, tmp_path):
    """`convergence` leaves without taking the interpreter apart (``entry``), never without its exit
    handlers, its whole output or its exit code."""
    marker = tmp_path / "exit-handlers-ran"
    env = {**os.environ, "CONVERGENCE_HOME": str(home)}
    env.pop("CONVERGENCE_CONFIGS", None)

    def convergence(*args):
        code = ("import atexit, sys\nfrom beam_pipelines.cli.main import entry\n"
                f"atexit.register(lambda: open({str(marker)!r}, 'a').write('ran;'))\n"
                f"sys.argv = ['convergence', *{list(args)!r}]\nentry()\n")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)

    ok = convergence("validate")
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("gcp/bq_etl/config.yml"), ok.stderr
    failed = convergence("runs", "show", "nope")
    assert failed.returncode == 1 and failed.stderr.strip() == "error: run 'nope' does not exist"
    assert marker.read_text() == "ran;ran;"


def test_seed_fleet_makes_many_orgs_a_fleet_run_can_take(cli, home):
    proc = cli("dev", "seed-fleet", "--orgs", "3", "--prefix", "fl", check=0)
    assert proc.stdout.strip().startswith("3 orgs ready (fl0000 .. fl0002)") and "cvg_" not in proc.stdout
    from beam_pipelines.metastore import MetastoreSpec
    from beam_pipelines.settings import load_settings

    store = MetastoreSpec.from_settings(load_settings()).open()
    assert all(store.get_org(slug) for slug in ("fl0000", "fl0001", "fl0002")) and not store.get_org("fl0003")
    assert "--orgs: must be at least 1" in cli("dev", "seed-fleet", "--orgs", "0", check=1).stderr
