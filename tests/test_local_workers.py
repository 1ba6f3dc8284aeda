"""A large local job spread over worker processes: each org runs once, in one process, and every run
is closed, also when a worker dies."""
from __future__ import annotations

import dataclasses
import errno
import os
import threading
from datetime import date

import pytest

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.errors import ConfigError
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.pipeline import local_workers, progress
from beam_pipelines.pipeline.local_workers import MIN_ORGS_PER_WORKER, deal, worker_count
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.settings import Settings, load_settings
from beam_pipelines.transforms.elements import WorkItem
from beam_pipelines.warehouse.local import LocalWarehouse

PIPELINE = "openai/cost/usage_cost"
ORGS = ["wk1", "wk2", "wk3", "wk4", "wk5"]


def test_only_large_local_jobs_are_spread_and_never_over_more_processes_than_allowed(monkeypatch):
    two = Settings(local_workers=2)
    assert worker_count(two, "DataflowRunner", 100_000) == 1
    assert worker_count(two, "FnApiRunner", 2 * MIN_ORGS_PER_WORKER - 1) == 1
    assert worker_count(two, "FnApiRunner", 2 * MIN_ORGS_PER_WORKER) == 2
    assert worker_count(two, "DirectRunner", 100_000) == 2
    assert worker_count(Settings(local_workers=1), "FnApiRunner", 100_000) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert worker_count(Settings(local_workers=0), "FnApiRunner", 100_000) == 3, "0 means one per core"


def test_local_workers_setting_is_read_and_checked(home, monkeypatch):
    monkeypatch.setenv("CONVERGENCE_LOCAL_WORKERS", "3")
    assert load_settings().local_workers == 3
    monkeypatch.setenv("CONVERGENCE_LOCAL_WORKERS", "many")
    with pytest.raises(ConfigError, match="CONVERGENCE_LOCAL_WORKERS: must be a whole number, got 'many'"):
        load_settings()
    monkeypatch.setenv("CONVERGENCE_LOCAL_WORKERS", "-1")
    with pytest.raises(ConfigError, match="CONVERGENCE_LOCAL_WORKERS: must be 0 or more"):
        load_settings()


def test_dealing_gives_every_org_to_exactly_one_shard():
    items = [WorkItem(f"org{i}", f"run{i}", date(2026, 11, 1), date(2026, 11, 1)) for i in range(7)]
    shards = deal(items, 3)
    assert [len(s) for s in shards] == [3, 2, 2]
    assert sorted((i for s in shards for i in s), key=lambda i: i.run_id) == items


def test_workers_are_forked_only_from_one_thread_with_embedded_services(monkeypatch):
    embedded = Settings()
    assert (embedded.metastore, embedded.sink, embedded.cipher) == ("sqlite", "local", "local")
    monkeypatch.setattr(threading, "active_count", lambda: 1)  # this test process may run the simulator's thread
    assert local_workers.start_method(embedded) == "fork"
    for cloud in (dataclasses.replace(embedded, metastore="bigquery"), dataclasses.replace(embedded, sink="bigquery"),
                  dataclasses.replace(embedded, cipher="kms")):
        assert local_workers.start_method(cloud) == "spawn", "cloud clients keep threads a fork does not carry"
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert local_workers.start_method(embedded) == "spawn", "another thread may hold a lock the fork copies"


@pytest.fixture(params=["spawn", "fork"])
def start(request, monkeypatch):
    """Both ways a worker starts (this test process runs the simulator's thread: left alone, it spawns)."""
    monkeypatch.setattr(local_workers, "start_method", lambda settings: request.param)
    return request.param


def _spread(settings, monkeypatch) -> Settings:
    monkeypatch.setattr(local_workers, "MIN_ORGS_PER_WORKER", 2)
    for org in ORGS:
        seed_org(settings, org)
    return dataclasses.replace(settings, local_workers=2)


def _costs(settings, org) -> list:
    return LocalWarehouse(settings.warehouse_dir).query(
        f"SELECT usage_date, model, SUM(total_cost_usd) FROM {org}_dev.openai_cost_daily GROUP BY 1, 2 ORDER BY 1, 2")[1]


def test_a_spread_job_runs_each_org_once_and_writes_what_one_process_writes(settings, past_days, monkeypatch, start):
    start, end = past_days
    spread = _spread(settings, monkeypatch)
    seen = []
    result = run_pipeline(spread, RunRequest(PIPELINE, orgs=ORGS, start_date=start, end_date=end),
                          on_progress=lambda done, total: seen.append((done, total)))

    assert [r["org_slug"] for r in result.runs] == ORGS, "runs come back in the orgs' order"
    assert [r["status"] for r in result.runs] == ["COMPLETED"] * 5
    assert progress.done("extract_usage") == 3, "this process fetched its shard (orgs 1, 3, 5) ..."
    assert seen[-1] == (5, 5), "... and the worker's two came through the shared count"
    spread_costs = {org: _costs(settings, org) for org in ORGS}
    assert all(spread_costs.values())

    one = dataclasses.replace(spread, local_workers=1)
    again = run_pipeline(one, RunRequest(PIPELINE, orgs=ORGS, start_date=start, end_date=end))
    assert [r["status"] for r in again.runs] == ["COMPLETED"] * 5
    assert {org: _costs(settings, org) for org in ORGS} == spread_costs
    assert progress.done("extract_usage") == 5


def _die(*args):
    os._exit(3)  # a worker killed before it closed anything (out of memory, say)


def test_a_worker_that_dies_has_its_runs_closed_failed_and_the_others_commit(settings, past_days, monkeypatch, start):
    start, end = past_days
    spread = _spread(settings, monkeypatch)
    monkeypatch.setattr(local_workers, "_work", _die)  # forked, or spawned by reference: the worker runs _die

    result = run_pipeline(spread, RunRequest(PIPELINE, orgs=ORGS, start_date=start, end_date=end))

    by_org = {r["org_slug"]: r for r in result.runs}
    assert [by_org[o]["status"] for o in ORGS] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED", "COMPLETED"]
    for org in ("wk2", "wk4"):
        assert "worker process ended with exit code 3" in by_org[org]["error_message"]
        assert not LocalWarehouse(settings.warehouse_dir).has_table(f"{org}_dev", "openai_cost_daily")
    for org in ("wk1", "wk3", "wk5"):
        assert _costs(settings, org)
    store = MetastoreSpec.from_settings(settings).open()
    try:
        assert all(store.get_run(r["pipeline_logging_id"])["status"] in ("COMPLETED", "FAILED") for r in result.runs)
    finally:
        store.close()


def test_a_worker_that_cannot_start_has_its_runs_closed_failed(settings, past_days, monkeypatch, start):
    spread = _spread(settings, monkeypatch)
    if start == "spawn":
        monkeypatch.setattr(local_workers, "_work", lambda *args: None)  # a lambda cannot be sent to a spawned process
    else:
        def no_fork():
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        monkeypatch.setattr(os, "fork", no_fork)  # the system's process limit reached
    start, end = past_days

    result = run_pipeline(spread, RunRequest(PIPELINE, orgs=ORGS, start_date=start, end_date=end))

    failed = [r for r in result.runs if r["status"] == "FAILED"]
    assert [r["org_slug"] for r in failed] == ["wk2", "wk4"]
    assert all("worker process could not start" in r["error_message"] for r in failed)
