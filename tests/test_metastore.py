"""The metastore contract: the same cases on the embedded SQLite store and on BigQuery (emulator)."""
from __future__ import annotations

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta

import pytest

from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import NotFoundError
from beam_pipelines.metastore.base import lease_until, new_run, run_key, utcnow
from beam_pipelines.metastore.bigquery import BigQueryMetastore
from beam_pipelines.metastore.sqlite import SQLiteMetastore
from tests.conftest import CONFIGS

TABLES = ["org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas",
          "org_integration_credentials", "org_meta_pipeline_runs", "org_meta_step_logs", "org_meta_dq_results"]
DAY = date(2026, 3, 1)


@pytest.fixture(params=["sqlite", "bigquery"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteMetastore(tmp_path / "m.sqlite3", CONFIGS)
        return
    request.getfixturevalue("bq_env")
    project = request.getfixturevalue("bq_project")
    store = BigQueryMetastore(project, CONFIGS)
    assert sorted(store.provision()) == sorted(TABLES)
    assert store.provision() == [], "provisioning twice creates nothing"
    yield store


def run(run_id, org="acme", status="QUEUED", start=DAY, end=DAY, lease=None, trigger="api", owner="me"):
    return new_run(run_id, org, "openai/cost/usage_cost", start, end, status, trigger, "local", owner,
                   lease=lease or lease_until())


def test_sqlite_tables_and_columns_come_from_the_json_schemas(tmp_path):
    store = SQLiteMetastore(tmp_path / "m.sqlite3", CONFIGS)
    conn = sqlite3.connect(store.path)
    for table in TABLES:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        assert columns == load_schema(CONFIGS / "system" / f"{table}.json").names
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


def test_api_keys_store_only_hashes_and_expire_or_revoke(store):
    store.upsert_org("acme")
    store.add_api_key("acme", "a" * 64, encrypted_api_key=b"\x00kms\xff")
    row = store.find_api_key("a" * 64)
    assert row["org_slug"] == "acme" and row["encrypted_api_key"] == b"\x00kms\xff"
    assert row["is_active"] is True and row["scopes"] == ["pipelines:run", "pipelines:read"]
    assert row["created_at"].tzinfo is not None
    store.add_api_key("acme", "b" * 64, revoke_others=True)
    assert store.find_api_key("a" * 64) is None
    store.add_api_key("acme", "c" * 64, expires_at=utcnow() - timedelta(seconds=1))
    assert store.find_api_key("c" * 64) is None


def test_sqlite_refuses_keys_of_unknown_orgs(tmp_path):
    with pytest.raises(NotFoundError):
        SQLiteMetastore(tmp_path / "m.sqlite3", CONFIGS).add_api_key("nobody", "d" * 64)


def test_eligible_orgs_need_live_subscription_and_credential(store):
    today = date(2026, 3, 10)
    cases = {"active": ("ACTIVE", None), "trial_ok": ("TRIAL", date(2026, 3, 10)),
             "trial_over": ("TRIAL", date(2026, 3, 9)), "suspended": ("SUSPENDED", None),
             "cancelled": ("CANCELLED", None), "no_cred": ("ACTIVE", None)}
    for org, (status, ends) in cases.items():
        store.upsert_org(org)
        store.set_subscription(org, status, trial_end_date=ends)
        if org != "no_cred":
            store.put_credential(org, "OPENAI", "API_KEY", b"ct")
    assert store.eligible_orgs("OPENAI", today) == ["active", "trial_ok"]
    assert store.eligible_orgs("CLAUDE", today) == []
    sub = store.get_subscription("trial_ok")
    assert sub["trial_end_date"] == date(2026, 3, 10) and isinstance(sub["updated_at"], datetime)
    credential = store.get_credential("active", "OPENAI")
    assert credential["encrypted_credential"] == b"ct" and credential["metadata"] == {}


def _write_like_the_sibling(store, rows: dict[str, dict]) -> None:
    """Insert rows the way the onboarding service does: its own INSERTs, its column names."""
    for table, row in rows.items():
        if isinstance(store, SQLiteMetastore):
            with store._tx() as conn:
                store._insert(conn, table, row)
        else:
            from beam_pipelines.bigquery import params as P

            columns = list(row)
            store.runner.run(f"INSERT INTO {store._t(table)} ({', '.join(columns)}) VALUES"
                             f" ({', '.join('@' + c for c in columns)})",
                             [P.field(c, store._types[table][c], row[c]) for c in columns])


def test_reads_a_metastore_written_with_the_siblings_names(store):
    now = utcnow()
    _write_like_the_sibling(store, {
        "org_profiles": {"org_slug": "sib", "company_name": "Sib", "admin_email": "a@sib.io", "status": "ACTIVE",
                         "created_at": now, "updated_at": now},
        "org_api_keys": {"org_api_key_id": "k1", "org_slug": "sib", "org_api_key_hash": "e" * 64,
                         "encrypted_api_key": b"kms-ciphertext", "scopes": ["pipelines:run"], "is_active": True,
                         "expires_at": None, "created_at": now, "revoked_at": None},
        "org_subscriptions": {"subscription_id": "s1", "org_slug": "sib", "plan_name": "PROFESSIONAL", "status": "TRIAL",
                              "trial_end_date": date(2026, 12, 31), "created_at": now, "updated_at": None},
        "org_integration_credentials": {"credential_id": "c1", "org_slug": "sib", "provider": "GCP_SA",
                                        "credential_type": "SERVICE_ACCOUNT_JSON", "encrypted_credential": b"sa",
                                        "metadata": {"billing_export_table": "p.d.gcp_billing_export_v1_X"},
                                        "is_active": True, "created_at": now, "updated_at": None},
    })
    assert store.find_api_key("e" * 64)["org_slug"] == "sib"
    assert store.get_subscription("sib")["trial_end_date"] == date(2026, 12, 31)
    assert store.get_credential("sib", "GCP_SA")["metadata"]["billing_export_table"].endswith("_X")
    assert store.eligible_orgs("GCP_SA", date(2026, 11, 26)) == ["sib"]


def test_reservation_refuses_duplicates_and_quota_but_not_an_expired_owner(store):
    store.upsert_org("acme")
    since = utcnow() - timedelta(hours=1)
    assert store.reserve_run(run("r1"), 5, since).outcome == "created"
    duplicate = store.reserve_run(run("r2"), 5, since)
    assert (duplicate.outcome, duplicate.run_id) == ("duplicate", "r1")
    other_days = store.reserve_run(run("r3", start=date(2026, 3, 2), end=date(2026, 3, 2)), 2, since)
    assert other_days.outcome == "created"
    quota = store.reserve_run(run("r4", start=date(2026, 3, 3), end=date(2026, 3, 3)), 2, since)
    assert (quota.outcome, quota.used) == ("quota", 2)
    # an open run whose lease passed belongs to a dead owner: it never blocks a new run
    store.renew_leases(["r1"], "dead", utcnow() - timedelta(seconds=1))
    assert store.reserve_run(run("r5"), 10, since).outcome == "created"
    assert store.get_run("r5")["reservation_seq"] == 1


def test_scheduler_batch_reserves_only_keys_not_taken(store):
    store.upsert_org("acme")
    store.upsert_org("globex")
    store.reserve_run(run("done"), None, utcnow(), ("QUEUED", "RUNNING"))
    store.close_runs([{"pipeline_logging_id": "done", "status": "COMPLETED"}])
    batch = [run("s1", trigger="scheduler"), run("s2", org="globex", trigger="scheduler")]
    assert store.reserve_runs(batch, ("QUEUED", "RUNNING", "COMPLETED")) == ["s2"]
    assert store.reserve_runs([run("s3", org="globex", trigger="scheduler")], ("QUEUED", "RUNNING", "COMPLETED")) == []


def test_runs_close_in_batches_and_leases_guard_against_closing_a_live_run(store):
    store.upsert_org("acme")
    store.create_runs([run("a", status="RUNNING"), run("b", status="RUNNING", start=date(2026, 3, 2),
                                                      end=date(2026, 3, 2))])
    store.renew_leases(["a"], "ghost", utcnow() - timedelta(seconds=5))
    expired = store.expired_runs(utcnow())
    assert [r["pipeline_logging_id"] for r in expired] == ["a"] and expired[0]["owner_id"] == "ghost"
    closed = store.close_runs([{"pipeline_logging_id": i, "status": "FAILED", "error_message": "owner gone"}
                               for i in ("a", "b")], expired_before=utcnow())
    assert closed == ["a"], "b's owner is alive: nobody else may close it"
    assert store.get_run("b")["status"] == "RUNNING"
    store.close_runs([{"pipeline_logging_id": "b", "status": "COMPLETED", "rows_written": 3,
                       "outcome": {"replaced": {"t": ["2026-03-02"]}}, "ended_at": utcnow()}])
    b = store.get_run("b")
    assert (b["status"], b["rows_written"], b["outcome"]["replaced"]) == ("COMPLETED", 3, {"t": ["2026-03-02"]})
    assert b["start_date"] == date(2026, 3, 2) and b["run_key"] == run_key("acme", "openai/cost/usage_cost",
                                                                           date(2026, 3, 2), date(2026, 3, 2))
    assert b["pipeline_id"] == "acme-openai-usage-cost" and b["config_path"] == "openai/cost/usage_cost"
    assert store.renew_leases(["b"], "late", lease_until()) == 0, "a closed run takes no lease"
    with pytest.raises(ValueError):
        store.update_run("b", org_slug="globex")


def test_runs_are_read_back_many_at_once_as_one_at_a_time(store):
    store.upsert_org("acme")
    ids = [f"r{i:04d}" for i in range(1203)]  # more than one bound list's worth
    store.create_runs([run(i, status="RUNNING") for i in ids])
    store.close_runs([{"pipeline_logging_id": "r0007", "status": "COMPLETED", "rows_written": 5, "ended_at": utcnow(),
                       "outcome": {"replaced": {"t": ["2026-03-01"]}}}])
    found = store.get_runs(["r0007", "nope", *ids[300:], "r0007"])
    assert sorted(found) == sorted(["r0007", *ids[300:]]), "every existing id once, unknown ids left out"
    for run_id in ("r0007", "r1202"):
        assert found[run_id] == store.get_run(run_id)
    assert found["r0007"]["outcome"]["replaced"] == {"t": ["2026-03-01"]} and found["r1202"]["status"] == "RUNNING"
    assert store.get_runs([]) == {}
    assert store.fail_open_runs("owner said so", ["r0007", "r0008", "nope"]) == ["r0008"]


def test_step_logs_and_dq_results_upsert_by_id_never_duplicate(store):
    store.upsert_org("acme")
    store.create_runs([run("r1", status="RUNNING")])
    for rows in (5, 7):
        store.upsert_step_logs([
            {"step_log_id": f"r1:{s}", "pipeline_logging_id": "r1", "org_slug": "acme", "step_id": s,
             "ps_type": "openai.usage", "status": "COMPLETED", "rows_processed": rows, "error_message": None,
             "started_at": utcnow(), "ended_at": utcnow(), "duration_ms": 1} for s in ("extract", "load")])
        store.upsert_dq_results([
            {"dq_result_id": f"r1:v:{i:03d}", "pipeline_logging_id": "r1", "org_slug": "acme", "step_id": "v",
             "table_name": "t", "suite_name": "s", "expectation_type": "expect_x", "kwargs": {"column": "c"},
             "success": i == 0, "observed_value": {"n": rows}, "severity": "warning", "created_at": utcnow()}
            for i in range(2)])
    steps = store.list_steps("r1")
    assert sorted((s["step_id"], s["rows_processed"]) for s in steps) == [("extract", 7), ("load", 7)]
    results = store.list_dq_results("r1")
    assert [(r["success"], r["observed_value"], r["kwargs"]) for r in results] == [
        (True, {"n": 7}, {"column": "c"}), (False, {"n": 7}, {"column": "c"})]


def test_fifty_concurrent_identical_reservations_make_one_run(store):
    store.upsert_org("acme")
    since = utcnow() - timedelta(hours=1)

    def reserve(i):
        return store.reserve_run(run(f"c{i:02d}"), None, since)

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(reserve, range(50)))
    created = [o for o in outcomes if o.outcome == "created"]
    assert len(created) == 1
    assert {o.run_id for o in outcomes} == {created[0].run_id}
    assert len(store.list_runs(limit=100)) == 1


def test_bigquery_reservation_claims_a_job_id_derived_from_the_run_key(bq_env, bq_project, monkeypatch):
    """Two identical reservations submit the same job id; BigQuery refuses the second with 409."""
    from google.api_core.exceptions import Conflict

    store = BigQueryMetastore(bq_project, CONFIGS)
    store.provision()
    store.upsert_org("acme")
    sent, seen = [], set()
    original = store.runner.run

    def job_ids_are_unique(sql, params=(), job_id=None):  # the rule BigQuery enforces; the emulator does not
        if job_id is not None:
            sent.append(job_id)
            if job_id in seen:
                raise Conflict(f"Already Exists: Job {bq_project}:US.{job_id}")
            seen.add(job_id)
        return original(sql, params, job_id)

    monkeypatch.setattr(store.runner, "run", job_ids_are_unique)
    first = run("j1")
    assert store.reserve_run(first, None, utcnow()).outcome == "created"
    # a second request that read the same state before the first committed claims the same id
    real_state, calls = store._state, []

    def stale_first_read(*args):
        calls.append(args)
        return (None, 0, 0) if len(calls) == 1 else real_state(*args)

    monkeypatch.setattr(store, "_state", stale_first_read)
    second = store.reserve_run(run("j2"), None, utcnow())
    assert (second.outcome, second.run_id) == ("duplicate", "j1")
    assert sent[:2] == [f"cvg_reserve_{first['run_key']}_0"] * 2


def _insert_runs(path, configs, worker, n):
    store = SQLiteMetastore(path, configs)
    for i in range(n):
        store.create_runs([run(f"w{worker}-{i}", status="RUNNING", start=DAY + timedelta(days=i))])
        store.close_runs([{"pipeline_logging_id": f"w{worker}-{i}", "status": "COMPLETED", "rows_written": i}])


def test_several_processes_write_at_once(tmp_path):
    store = SQLiteMetastore(tmp_path / "m.sqlite3", CONFIGS)
    store.upsert_org("acme")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_insert_runs, args=(store.path, CONFIGS, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    runs = store.list_runs(limit=1000)
    assert len(runs) == 160 and {r["status"] for r in runs} == {"COMPLETED"}


def test_sqlite_indexes_follow_the_config_on_an_existing_file(tmp_path):
    path = tmp_path / "meta.sqlite3"
    SQLiteMetastore(path, CONFIGS).close()
    with sqlite3.connect(path) as conn:  # a file from before indexes were named by their columns
        conn.execute("DROP INDEX ix_org_meta_pipeline_runs__org_slug__created_at__trigger_type")
        conn.execute("CREATE INDEX ix_org_meta_pipeline_runs_0 ON org_meta_pipeline_runs (org_slug, created_at)")

    store = SQLiteMetastore(path, CONFIGS)
    store.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                            " AND tbl_name = 'org_meta_pipeline_runs' AND name LIKE 'ix!_%' ESCAPE '!'")}
        plan = " ".join(str(r[-1]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM org_meta_pipeline_runs"
            " WHERE org_slug = ? AND created_at >= ? AND trigger_type != 'scheduler'", ("acme", "2026-11-01")))
    assert names == {"ix_org_meta_pipeline_runs__org_slug__created_at__trigger_type",
                     "ix_org_meta_pipeline_runs__status", "ix_org_meta_pipeline_runs__run_key"}
    assert "COVERING INDEX ix_org_meta_pipeline_runs__org_slug__created_at__trigger_type" in plan, plan
