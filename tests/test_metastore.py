"""The embedded SQLite metastore: tables from the JSON schemas, eligibility, multi-process safety."""
from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import date, datetime, timedelta, timezone

import pytest

from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import NotFoundError
from beam_pipelines.metastore.sqlite import SQLiteMetastore
from tests.conftest import CONFIGS

TABLES = ["org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas",
          "org_integration_credentials", "org_meta_pipeline_runs", "org_meta_step_logs"]


@pytest.fixture
def store(tmp_path):
    return SQLiteMetastore(tmp_path / "m.sqlite3", CONFIGS)


def test_tables_and_columns_come_from_the_json_schemas(store):
    conn = sqlite3.connect(store.path)
    for table in TABLES:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        assert columns == load_schema(CONFIGS / "system" / f"{table}.json").names


def test_api_keys_store_only_hashes_and_expire_or_revoke(store):
    store.upsert_org("acme")
    store.add_api_key("acme", "a" * 64)
    assert store.find_api_key("a" * 64)["org_slug"] == "acme"
    store.add_api_key("acme", "b" * 64, revoke_others=True)
    assert store.find_api_key("a" * 64) is None
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    store.add_api_key("acme", "c" * 64, expires_at=past)
    assert store.find_api_key("c" * 64) is None
    with pytest.raises(NotFoundError):
        store.add_api_key("nobody", "d" * 64)


def test_eligible_orgs_need_live_subscription_and_credential(store):
    today = date(2026, 3, 10)
    cases = {"active": ("ACTIVE", None), "trial_ok": ("TRIAL", date(2026, 3, 10)),
             "trial_over": ("TRIAL", date(2026, 3, 9)), "suspended": ("SUSPENDED", None),
             "cancelled": ("CANCELLED", None), "no_cred": ("ACTIVE", None)}
    for org, (status, ends) in cases.items():
        store.upsert_org(org)
        store.set_subscription(org, status, trial_ends_at=ends)
        if org != "no_cred":
            store.put_credential(org, "openai", "admin_api_key", b"ct", "local-aes-gcm")
    assert store.eligible_orgs("openai", today) == ["active", "trial_ok"]
    assert store.eligible_orgs("anthropic", today) == []


def test_step_logs_upsert_by_id_never_duplicate(store):
    store.upsert_org("acme")
    store.create_run({"pipeline_logging_id": "r1", "org_slug": "acme", "pipeline_id": "openai/cost/usage_cost",
                      "status": "RUNNING", "trigger_type": "cli", "start_date": date(2026, 3, 1),
                      "end_date": date(2026, 3, 1)})
    for rows in (5, 7):
        store.upsert_step_log({"step_log_id": "r1:extract_usage", "pipeline_logging_id": "r1", "org_slug": "acme",
                               "step_id": "extract_usage", "ps_type": "openai.usage", "status": "COMPLETED",
                               "rows_processed": rows})
    [step] = store.list_steps("r1")
    assert step["rows_processed"] == 7
    with pytest.raises(ValueError):
        store.update_run("r1", org_slug="globex")


def _insert_runs(path, configs, worker, n):
    store = SQLiteMetastore(path, configs)
    for i in range(n):
        store.create_run({"pipeline_logging_id": f"w{worker}-{i}", "org_slug": "acme",
                          "pipeline_id": "openai/cost/usage_cost", "status": "QUEUED", "trigger_type": "api",
                          "start_date": "2026-03-01", "end_date": "2026-03-01"})
        store.update_run(f"w{worker}-{i}", status="COMPLETED", rows_written=i)


def test_several_processes_write_at_once(store):
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
