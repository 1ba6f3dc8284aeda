"""Runs that tell the truth: kill -9 during fetch and during the commit, a launcher restart beside a live job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date

import pytest

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.settings import load_settings
from beam_pipelines.warehouse.local import LocalWarehouse
from launcher.backends.local import LocalBackend
from tests.launcher_support import launcher_settings

DAY = date(2026, 3, 2)
LEASE = "2"


@pytest.fixture
def env(home, simulator, monkeypatch):
    monkeypatch.setenv("CONVERGENCE_LEASE_SECONDS", LEASE)
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", simulator.anthropic_base_url)
    return {**os.environ}


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "beam_pipelines.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def start_run(env, prelude: str = ""):
    """`convergence run` in a child process; ``prelude`` may patch a method to stop at a chosen moment."""
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import sys
        from beam_pipelines.cli.main import main
        sys.exit(main(["run", "openai/cost/usage_cost", "--org", "acme", "--start-date", "{DAY}", "--end-date", "{DAY}",
                       "--quiet"]))
    """)
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def runs(settings):
    return MetastoreSpec.from_settings(settings).open().list_runs(limit=50)


def totals(settings):
    return LocalWarehouse(settings.warehouse_dir).query(
        "SELECT COUNT(*), SUM(input_tokens) FROM acme_dev.openai_usage_daily_raw")[1]


def test_kill_during_fetch_leaves_no_run_running_once_the_lease_passes(env, simulator):
    settings = load_settings()
    seed_org(settings, "acme")
    simulator.faults.add("sk-admin-sim-acme", ["slow:60"])
    proc = start_run(env)
    run = wait_for(lambda: next(iter(runs(settings)), None))
    assert run["status"] == "RUNNING" and run["owner_id"].startswith("cli:")
    time.sleep(float(LEASE) * 1.5)
    assert runs(settings)[0]["status"] == "RUNNING", "a live owner keeps its lease"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(float(LEASE) + 1)
    listed = json.loads(cli(env, "runs", "--format", "json").stdout)
    assert listed[0]["status"] == "FAILED"
    assert listed[0]["error_message"].startswith(f"owner {run['owner_id']} gone since ")
    assert "nothing replaced" in listed[0]["error_message"]
    assert not [r for r in runs(settings) if r["status"] in ("QUEUED", "RUNNING")]


STOP_IN_COMMIT = """
    import os, time
    from beam_pipelines.warehouse.local import LocalWarehouse
    def stuck(self, folder, manifest):
        open(os.environ["CONVERGENCE_HOME"] + "/in-commit", "w").close()
        time.sleep(600)
    LocalWarehouse._write_manifest = stuck
"""


def test_kill_during_the_commit_replaces_nothing_and_a_rerun_restores_the_totals(env):
    settings = load_settings()
    seed_org(settings, "acme")
    assert cli(env, "run", "openai/cost/usage_cost", "--org", "acme", "--start-date", str(DAY), "--end-date", str(DAY),
               "--quiet").returncode == 0
    expected = totals(settings)
    proc = start_run(env, STOP_IN_COMMIT)
    wait_for(lambda: (settings.home / "in-commit").exists())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    warehouse_dir = settings.warehouse_dir / "acme_dev"
    assert list((warehouse_dir / "_staging").rglob("*.parquet")) or list(warehouse_dir.rglob("part-*.parquet"))
    assert totals(settings) == expected, "readers see the last commit while a run is half done"
    time.sleep(float(LEASE) + 1)
    listed = json.loads(cli(env, "runs", "--format", "json").stdout)
    killed = listed[0]
    assert killed["status"] == "FAILED" and "gone since" in killed["error_message"]
    assert "nothing replaced" in killed["error_message"]
    assert not list((warehouse_dir / "_staging").rglob("*.parquet")), "the dead writer's staged files are gone"
    assert cli(env, "run", "openai/cost/usage_cost", "--org", "acme", "--start-date", str(DAY), "--end-date", str(DAY),
               "--quiet").returncode == 0
    assert totals(settings) == expected
    named = {f for files in json.loads((warehouse_dir / "_manifest.json").read_text())["tables"]["openai_usage_daily_raw"]
             ["partitions"].values() for f in files}
    on_disk = {str(p.relative_to(warehouse_dir)) for p in (warehouse_dir / "openai_usage_daily_raw").rglob("*.parquet")}
    assert on_disk == named, "orphans of the killed commit were cleaned by the next one"


def test_a_launcher_restart_never_fails_a_live_cli_job(env, simulator):
    settings = load_settings()
    seed_org(settings, "acme")
    simulator.faults.add("sk-admin-sim-acme", ["slow:6"])
    proc = start_run(env)
    wait_for(lambda: next(iter(runs(settings)), None))
    backend = LocalBackend(launcher_settings())
    backend.start()  # a (re)starting launcher reaps only dead owners
    try:
        assert runs(settings)[0]["status"] == "RUNNING"
        assert proc.wait(timeout=120) == 0
    finally:
        backend.stop()
    assert runs(settings)[0]["status"] == "COMPLETED"
