"""The embedded metastore: one SQLite file under $CONVERGENCE_HOME.

Tables are created from the BigQuery JSON schemas in ``configs/system/`` plus the keys declared in
``configs/system/tables.yml``. WAL mode and a busy timeout make it safe for several processes at
once (the CLI, the launcher and its job subprocesses); every write is one short transaction.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import yaml

from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import ConfigError, NotFoundError
from beam_pipelines.metastore.base import (
    ELIGIBLE_SUBSCRIPTIONS,
    SUBSCRIPTION_STATUSES,
    Metastore,
    Reservation,
    check_run_update,
    utcnow,
)

_WRITE_LOCK = threading.Lock()

SQLITE_TYPES = {
    "STRING": "TEXT", "JSON": "TEXT", "DATE": "TEXT", "TIMESTAMP": "TEXT", "DATETIME": "TEXT",
    "INTEGER": "INTEGER", "INT64": "INTEGER", "BOOLEAN": "INTEGER", "BOOL": "INTEGER",
    "FLOAT": "REAL", "FLOAT64": "REAL", "NUMERIC": "REAL", "BYTES": "BLOB",
}


def _ddl(name: str, spec: dict, configs_dir: Path) -> list[str]:
    schema = load_schema(configs_dir / "system" / spec["schema"], f"system/{spec['schema']}")
    columns = []
    for field in schema.fields:
        sql_type = SQLITE_TYPES.get(field.type)
        if sql_type is None:
            raise ConfigError(f"system/{spec['schema']}: {field.name}: type {field.type} not supported locally")
        columns.append(f'"{field.name}" {sql_type}' + (" NOT NULL" if field.required else ""))
    columns.append("PRIMARY KEY (" + ", ".join(spec["primary_key"]) + ")")
    for unique in spec.get("unique", []):
        columns.append("UNIQUE (" + ", ".join(unique) + ")")
    statements = [f"CREATE TABLE IF NOT EXISTS {name} (\n  " + ",\n  ".join(columns) + "\n)"]
    for i, index in enumerate(spec.get("index", [])):
        statements.append(f"CREATE INDEX IF NOT EXISTS ix_{name}_{i} ON {name} ({', '.join(index)})")
    return statements


def _encode(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


class SQLiteMetastore(Metastore):
    def __init__(self, path: Path, configs_dir: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        tables = yaml.safe_load((configs_dir / "system" / "tables.yml").read_text())["tables"]
        statements = [s for name, spec in tables.items() for s in _ddl(name, spec, configs_dir)]
        with self._tx() as conn:
            for statement in statements:
                conn.execute(statement)

    # connection per thread: sqlite3 connections must not be shared across threads
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self):
        # Threads of one process queue on a mutex; SQLite's busy handler (which sleeps and
        # retries) is then only needed between processes. This keeps lock waits short under load.
        with _WRITE_LOCK:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _one(self, sql: str, params=()) -> dict | None:
        row = self._conn().execute(sql, params).fetchone()
        return dict(row) if row else None

    def _all(self, sql: str, params=()) -> list[dict]:
        return [dict(r) for r in self._conn().execute(sql, params).fetchall()]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # orgs, keys, subscriptions, quotas -------------------------------------------------------
    def upsert_org(self, org_slug, company_name="", admin_email=""):
        now = _encode(utcnow())
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO org_profiles (org_slug, company_name, admin_email, status, created_at, updated_at)"
                " VALUES (?, ?, ?, 'ACTIVE', ?, ?) ON CONFLICT (org_slug) DO UPDATE SET"
                " company_name = excluded.company_name, admin_email = excluded.admin_email,"
                " updated_at = excluded.updated_at",
                (org_slug, company_name, admin_email, now, now),
            )

    def get_org(self, org_slug):
        return self._one("SELECT * FROM org_profiles WHERE org_slug = ?", (org_slug,))

    def _require_org(self, conn, org_slug):
        if not conn.execute("SELECT 1 FROM org_profiles WHERE org_slug = ?", (org_slug,)).fetchone():
            raise NotFoundError(f"org {org_slug!r} does not exist")

    def add_api_key(self, org_slug, key_hash, expires_at=None, revoke_others=False):
        key_id = uuid.uuid4().hex
        now = _encode(utcnow())
        with self._tx() as conn:
            self._require_org(conn, org_slug)
            if revoke_others:
                conn.execute(
                    "UPDATE org_api_keys SET is_active = 0, revoked_at = ? WHERE org_slug = ? AND is_active = 1",
                    (now, org_slug),
                )
            conn.execute(
                "INSERT INTO org_api_keys (org_api_key_id, org_slug, key_hash, scopes, is_active,"
                " expires_at, created_at) VALUES (?, ?, ?, 'pipelines:run,pipelines:read', 1, ?, ?)",
                (key_id, org_slug, key_hash, _encode(expires_at), now),
            )
        return key_id

    def find_api_key(self, key_hash, now=None):
        row = self._one(
            "SELECT * FROM org_api_keys WHERE key_hash = ? AND is_active = 1 AND revoked_at IS NULL",
            (key_hash,),
        )
        if row and row["expires_at"] and datetime.fromisoformat(row["expires_at"]) <= (now or utcnow()):
            return None
        return row

    def set_subscription(self, org_slug, status, plan_name="STARTER", trial_ends_at=None):
        if status not in SUBSCRIPTION_STATUSES:
            raise ValueError(f"subscription status must be one of {SUBSCRIPTION_STATUSES}, got {status!r}")
        now = _encode(utcnow())
        with self._tx() as conn:
            self._require_org(conn, org_slug)
            conn.execute(
                "INSERT INTO org_subscriptions (subscription_id, org_slug, plan_name, status,"
                " trial_ends_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (org_slug) DO UPDATE SET plan_name = excluded.plan_name,"
                " status = excluded.status, trial_ends_at = excluded.trial_ends_at,"
                " updated_at = excluded.updated_at",
                (uuid.uuid4().hex, org_slug, plan_name, status, _encode(trial_ends_at), now, now),
            )

    def get_subscription(self, org_slug):
        return self._one("SELECT * FROM org_subscriptions WHERE org_slug = ?", (org_slug,))

    def set_daily_quota(self, org_slug, limit):
        with self._tx() as conn:
            self._require_org(conn, org_slug)
            conn.execute(
                "INSERT INTO org_usage_quotas (org_slug, daily_pipeline_limit, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (org_slug) DO UPDATE SET daily_pipeline_limit = excluded.daily_pipeline_limit,"
                " updated_at = excluded.updated_at",
                (org_slug, int(limit), _encode(utcnow())),
            )

    def get_daily_quota(self, org_slug):
        row = self._one("SELECT daily_pipeline_limit FROM org_usage_quotas WHERE org_slug = ?", (org_slug,))
        return None if row is None else row["daily_pipeline_limit"]

    # credentials ------------------------------------------------------------------------------
    def put_credential(self, org_slug, provider, credential_type, ciphertext, cipher, metadata=None):
        credential_id = uuid.uuid4().hex
        now = _encode(utcnow())
        with self._tx() as conn:
            self._require_org(conn, org_slug)
            conn.execute(
                "INSERT INTO org_integration_credentials (credential_id, org_slug, provider,"
                " credential_type, encrypted_credential, cipher, metadata, is_active, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT (org_slug, provider) DO UPDATE SET"
                " credential_type = excluded.credential_type,"
                " encrypted_credential = excluded.encrypted_credential, cipher = excluded.cipher,"
                " metadata = excluded.metadata, is_active = 1, updated_at = excluded.updated_at",
                (credential_id, org_slug, provider, credential_type, bytes(ciphertext), cipher,
                 _encode(metadata or {}), now, now),
            )
        return credential_id

    def get_credential(self, org_slug, provider):
        row = self._one(
            "SELECT * FROM org_integration_credentials WHERE org_slug = ? AND provider = ? AND is_active = 1",
            (org_slug, provider),
        )
        if row is not None:
            row["metadata"] = json.loads(row["metadata"] or "{}")
        return row

    def eligible_orgs(self, provider, today):
        placeholders = ", ".join("?" for _ in ELIGIBLE_SUBSCRIPTIONS)
        rows = self._all(
            "SELECT s.org_slug FROM org_subscriptions s"
            " JOIN org_integration_credentials c ON c.org_slug = s.org_slug"
            f" WHERE s.status IN ({placeholders}) AND c.provider = ? AND c.is_active = 1"
            " AND (s.status != 'TRIAL' OR s.trial_ends_at IS NULL OR s.trial_ends_at >= ?)"
            " ORDER BY s.org_slug",
            (*ELIGIBLE_SUBSCRIPTIONS, provider, today.isoformat()),
        )
        return [r["org_slug"] for r in rows]

    # runs -------------------------------------------------------------------------------------
    def create_run(self, run):
        row = {k: _encode(v) for k, v in run.items()}
        row.setdefault("created_at", _encode(utcnow()))
        cols = ", ".join(row)
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO org_meta_pipeline_runs ({cols}) VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )

    def update_run(self, run_id, **fields):
        check_run_update(fields)
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE org_meta_pipeline_runs SET {sets} WHERE pipeline_logging_id = ?",
                (*(_encode(v) for v in fields.values()), run_id),
            )
            if cur.rowcount != 1:
                raise NotFoundError(f"run {run_id!r} does not exist")

    def get_run(self, run_id):
        return self._one("SELECT * FROM org_meta_pipeline_runs WHERE pipeline_logging_id = ?", (run_id,))

    def list_runs(self, org_slug=None, status=None, limit=50):
        where, params = [], []
        if org_slug:
            where.append("org_slug = ?")
            params.append(org_slug)
        if status:
            where.append("status = ?")
            params.append(status)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return self._all(
            f"SELECT * FROM org_meta_pipeline_runs{clause} ORDER BY created_at DESC,"
            " pipeline_logging_id LIMIT ?",
            (*params, int(limit)),
        )

    def reserve_run(self, run, daily_limit, since, dedupe_statuses=("QUEUED", "RUNNING")):
        row = {k: _encode(v) for k, v in run.items()}
        row.setdefault("created_at", _encode(utcnow()))
        marks = ", ".join("?" for _ in dedupe_statuses)
        with self._tx() as conn:  # BEGIN IMMEDIATE: one reservation at a time, across processes
            duplicate = conn.execute(
                "SELECT pipeline_logging_id FROM org_meta_pipeline_runs WHERE org_slug = ? AND pipeline_id = ?"
                f" AND start_date = ? AND end_date = ? AND status IN ({marks}) ORDER BY created_at LIMIT 1",
                (row["org_slug"], row["pipeline_id"], row["start_date"], row["end_date"], *dedupe_statuses),
            ).fetchone()
            if duplicate:
                return Reservation("duplicate", duplicate[0])
            used = conn.execute(
                "SELECT COUNT(*) FROM org_meta_pipeline_runs WHERE org_slug = ? AND created_at >= ?"
                " AND trigger_type != 'scheduler'",
                (row["org_slug"], _encode(since)),
            ).fetchone()[0]
            if daily_limit is not None and used >= daily_limit:
                return Reservation("quota", None, used)
            cols = ", ".join(row)
            conn.execute(
                f"INSERT INTO org_meta_pipeline_runs ({cols}) VALUES ({', '.join('?' for _ in row)})",
                tuple(row.values()),
            )
        return Reservation("created", row["pipeline_logging_id"], used)

    def fail_open_runs(self, reason, run_ids=None):
        now = _encode(utcnow())
        with self._tx() as conn:
            where = "status IN ('QUEUED', 'RUNNING')"
            params: tuple = ()
            if run_ids is not None:
                if not run_ids:
                    return []
                where += f" AND pipeline_logging_id IN ({', '.join('?' for _ in run_ids)})"
                params = tuple(run_ids)
            ids = [r[0] for r in conn.execute(
                f"SELECT pipeline_logging_id FROM org_meta_pipeline_runs WHERE {where}", params)]
            if ids:
                conn.execute(
                    f"UPDATE org_meta_pipeline_runs SET status = 'FAILED', error_message = ?, ended_at = ?"
                    f" WHERE {where}", (reason, now, *params),
                )
        return ids

    def _upsert(self, table: str, key: str, values: dict) -> None:
        row = {k: _encode(v) for k, v in values.items()}
        cols = ", ".join(row)
        updates = ", ".join(f"{k} = excluded.{k}" for k in row if k != key)
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in row)})"
                f" ON CONFLICT ({key}) DO UPDATE SET {updates}",
                tuple(row.values()),
            )

    def upsert_step_log(self, step):
        self._upsert("org_meta_step_logs", "step_log_id", step)

    def upsert_dq_result(self, result):
        values = dict(result)
        for key in ("kwargs", "observed_value"):
            values[key] = json.dumps(values.get(key), sort_keys=True, default=str)
        self._upsert("org_meta_dq_results", "dq_result_id", values)

    def list_dq_results(self, run_id):
        rows = self._all("SELECT * FROM org_meta_dq_results WHERE pipeline_logging_id = ? ORDER BY dq_result_id",
                         (run_id,))
        for row in rows:
            row["kwargs"] = json.loads(row["kwargs"] or "null")
            row["observed_value"] = json.loads(row["observed_value"] or "null")
            row["success"] = bool(row["success"])
        return rows

    def list_steps(self, run_id):
        return self._all(
            "SELECT * FROM org_meta_step_logs WHERE pipeline_logging_id = ? ORDER BY started_at, step_id",
            (run_id,),
        )
