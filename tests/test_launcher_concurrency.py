"""Run requests at once, on the embedded metastore: one run per duplicate, the quota holds, nobody waits on the loop.

The launcher calls the SQLite store on its event loop and redoes a call in a worker thread when a
write would have to wait for another process (see :mod:`launcher.workers`); these tests hold
SQLite's write lock from another connection, as a job process would, to drive both paths.
"""
from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone

import pytest
import requests

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.metastore.base import new_run
from beam_pipelines.metastore.sqlite import WouldWait
from launcher.workers import ServiceCalls
from tests.launcher_support import make_app, running_server

RUN = "/api/v1/pipelines/run/{org}/openai/cost/usage_cost"
PIPELINE = "openai/cost/usage_cost"
YESTERDAY = date.today() - timedelta(days=1)


@pytest.fixture
def store(settings):
    metastore = MetastoreSpec.from_settings(settings).open()
    metastore.upsert_org("acme")
    yield metastore
    metastore.close()


def _run(day: date, org: str = "acme") -> dict:
    import uuid

    return new_run(uuid.uuid4().hex, org, PIPELINE, day, day, "QUEUED", "api", "test", "test:owner")


def _reserve(store, run, limit=None, brief=False):
    """As the launcher does: on the loop with brief waits, redone with waiting if that would wait."""
    since = datetime.combine(date.today(), time.min, timezone.utc)
    if brief:
        try:
            with store.wait_briefly_until_first_write():
                return store.reserve_run(run, daily_limit=limit, since=since)
        except WouldWait:
            pass
    return store.reserve_run(run, daily_limit=limit, since=since)


@pytest.fixture
def write_lock(settings):
    """Hold SQLite's write lock from another connection, as another process would."""
    held = []

    def hold():
        conn = sqlite3.connect(settings.metastore_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.append(conn)

    def release():
        conn = held.pop()
        conn.execute("COMMIT")
        conn.close()

    yield hold, release
    while held:
        release()


def test_threads_reserving_the_same_run_at_once_create_exactly_one(store):
    runs = [_run(YESTERDAY) for _ in range(64)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda i: _reserve(store, runs[i], brief=i % 2 == 0), range(64)))
    created = [r for r in results if r.outcome == "created"]
    assert len(created) == 1
    assert {r.run_id for r in results if r.outcome == "duplicate"} == {created[0].run_id}
    assert len(store.list_runs(org_slug="acme", limit=200)) == 1


def test_the_daily_quota_holds_when_reservations_race(store):
    runs = [_run(YESTERDAY - timedelta(days=i)) for i in range(48)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda i: _reserve(store, runs[i], limit=10, brief=i % 3 == 0), range(48)))
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == ["created"] * 10 + ["quota"] * 38
    assert len(store.list_runs(org_slug="acme", limit=200)) == 10


def test_a_brief_write_that_meets_another_writer_writes_nothing_and_reads_go_on(store, write_lock):
    hold, release = write_lock
    hold()
    run = _run(YESTERDAY)
    with store.wait_briefly_until_first_write():
        assert store.get_org("acme") is not None  # WAL: reads never wait for a writer
        with pytest.raises(WouldWait):
            store.reserve_run(run, daily_limit=None, since=datetime.now(timezone.utc))
    release()
    assert store.get_run(run["pipeline_logging_id"]) is None
    assert _reserve(store, run).outcome == "created"


def test_after_its_first_write_a_call_waits_for_the_lock_as_usual(store, settings):
    run = _run(YESTERDAY)
    locked, go = threading.Event(), threading.Event()

    def other_process():
        conn = sqlite3.connect(settings.metastore_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        go.wait(30)
        conn.execute("COMMIT")
        conn.close()

    with store.wait_briefly_until_first_write():
        assert _reserve(store, run).outcome == "created"
        holder = threading.Thread(target=other_process)
        holder.start()
        assert locked.wait(30)
        threading.Timer(0.2, go.set).start()
        changed = store.close_runs([{"pipeline_logging_id": run["pipeline_logging_id"], "job_id": "job-1"}])
    holder.join(30)
    assert changed == [run["pipeline_logging_id"]]
    assert store.get_run(run["pipeline_logging_id"])["job_id"] == "job-1"


def test_a_request_that_would_wait_is_redone_off_the_loop_and_the_loop_keeps_answering(settings, write_lock,
                                                                                         monkeypatch):
    key = seed_org(settings, "acme")["api_key"]
    hold, release = write_lock
    handed_over = threading.Event()
    in_thread = ServiceCalls.in_thread

    async def spy(self, fn, *args):
        handed_over.set()
        return await in_thread(self, fn, *args)

    monkeypatch.setattr(ServiceCalls, "in_thread", spy)
    app, backend = make_app()
    with running_server(app) as url:
        hold()
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(requests.post, url + RUN.format(org="acme"), headers={"X-API-Key": key},
                                  json={"date": YESTERDAY.isoformat()}, timeout=60)
            assert handed_over.wait(30), "the reservation was not handed to a worker thread"
            assert requests.get(url + "/health", timeout=30).status_code == 200
            forged = requests.post(url + RUN.format(org="acme"), headers={"X-API-Key": "cvg_forged"}, timeout=30)
            assert forged.status_code == 401
            assert not waiting.done(), "the run was accepted while another process held the write lock"
            release()
            accepted = waiting.result(timeout=60)
    assert accepted.status_code == 202
    run = app.state.service.metastore.get_run(accepted.json()["pipeline_logging_id"])
    assert run["status"] == "QUEUED" and run["job_id"] == accepted.json()["job_id"]
    assert len(backend.launched) == 1


def test_concurrent_requests_get_exactly_the_daily_quota(settings):
    key = seed_org(settings, "acme", daily_quota=5)["api_key"]
    app, backend = make_app()
    with running_server(app) as url:
        def fire(i):
            day = (YESTERDAY - timedelta(days=i)).isoformat()
            return requests.post(url + RUN.format(org="acme"), headers={"X-API-Key": key}, json={"date": day},
                                 timeout=60).status_code

        with ThreadPoolExecutor(max_workers=24) as pool:
            codes = sorted(pool.map(fire, range(24)))
    assert codes == [202] * 5 + [429] * 19
    assert len(backend.launched) == 5


def test_a_cancelled_subscription_or_a_revoked_key_counts_from_the_next_request(settings):
    """Nothing about a key or a subscription is remembered between requests."""
    key = seed_org(settings, "acme")["api_key"]
    app, _ = make_app()
    with running_server(app) as url:
        def post(day):
            return requests.post(url + RUN.format(org="acme"), headers={"X-API-Key": key},
                                 json={"date": (YESTERDAY - timedelta(days=day)).isoformat()}, timeout=30)

        assert post(0).status_code == 202
        app.state.service.metastore.set_subscription("acme", "CANCELLED")
        assert post(1).status_code == 403
        app.state.service.metastore.set_subscription("acme", "ACTIVE")
        assert post(2).status_code == 202
        seed_org(settings, "acme")  # rotates the key: the old one is revoked
        assert post(3).status_code == 401


def test_wal_checkpoints_run_in_a_background_thread_until_close(store, settings):
    """The launcher's commits never copy the WAL into the database file; a daemon thread does, until close."""
    import time as clock

    def checkpointers():
        return [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]

    before = len(checkpointers())
    size = settings.metastore_path.stat().st_size
    store.checkpoint_in_background(every_seconds=0.01)
    assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(50):
        assert _reserve(store, _run(YESTERDAY - timedelta(days=i))).outcome == "created"
    deadline = clock.monotonic() + 30
    while settings.metastore_path.stat().st_size == size and clock.monotonic() < deadline:
        clock.sleep(0.01)
    assert settings.metastore_path.stat().st_size > size, "nothing copied the WAL into the database"
    assert len(checkpointers()) == before + 1
    store.close()
    deadline = clock.monotonic() + 30
    while len(checkpointers()) > before and clock.monotonic() < deadline:
        clock.sleep(0.01)
    assert len(checkpointers()) == before
