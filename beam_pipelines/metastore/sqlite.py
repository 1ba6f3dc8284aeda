"""The embedded metastore: one SQLite file under $CONVERGENCE_HOME.

Tables are created from the BigQuery JSON schemas in ``configs/system/`` plus the keys declared in
``configs/system/tables.yml``. WAL mode and a busy timeout make it safe for several processes at
once (the CLI, the launcher and its job subprocesses); every write is one short transaction.
Values are stored as SQLite can hold them (ISO text, JSON text, 0/1) and decoded back to the
types the BigQuery store returns, using each column's declared type.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path

from beam_pipelines.config.schema import TableSchema
from beam_pipelines.config.system import load_system
from beam_pipelines.errors import ConfigError, NotFoundError
from beam_pipelines.metastore.base import (
    API_KEY_SCOPES,
    ELIGIBLE_SUBSCRIPTIONS,
    OPEN_STATUSES,
    SUBSCRIPTION_STATUSES,
    Metastore,
    Reservation,
    check_run_update,
    utcnow,
)

_WRITE_LOCK = threading.Lock()
BUSY_TIMEOUT_MS = 30000
BRIEF_WAIT_SECONDS = 0.005
SQLITE_TYPES = {
    "STRING": "TEXT", "JSON": "TEXT", "DATE": "TEXT", "TIMESTAMP": "TEXT", "DATETIME": "TEXT",
    "INTEGER": "INTEGER", "INT64": "INTEGER", "BOOLEAN": "INTEGER", "BOOL": "INTEGER",
    "FLOAT": "REAL", "FLOAT64": "REAL", "NUMERIC": "TEXT", "BYTES": "BLOB",
}
RUNS = "org_meta_pipeline_runs"
IN_CHUNK = 500  # ids bound per IN (...) list: far below SQLite's limit on bound variables


class WouldWait(Exception):
    """A write asked not to wait (see ``wait_briefly_until_first_write``) found another writer first."""


def _ddl(name: str, entry, schema: TableSchema) -> list[str]:
    columns = []
    for field in schema.fields:
        sql_type = "TEXT" if field.mode == "REPEATED" else SQLITE_TYPES.get(field.type)
        if sql_type is None:
            raise ConfigError(f"{schema.source}: {field.name}: type {field.type} not supported locally")
        columns.append(f'"{field.name}" {sql_type}' + (" NOT NULL" if field.required else ""))
    columns.append("PRIMARY KEY (" + ", ".join(entry.primary_key) + ")")
    for unique in entry.unique:
        columns.append("UNIQUE (" + ", ".join(unique) + ")")
    statements = [f"CREATE TABLE IF NOT EXISTS {name} (\n  " + ",\n  ".join(columns) + "\n)"]
    for index in entry.index:
        statements.append(f"CREATE INDEX IF NOT EXISTS {_index_name(name, index)} ON {name} ({', '.join(index)})")
    return statements


def _index_name(table: str, columns) -> str:
    """Named by its columns, so an index the config changes is a new one (made on every existing file)."""
    return f"ix_{table}__" + "__".join(columns)


def _stale_indexes(conn: sqlite3.Connection, tables) -> list[str]:
    """Our indexes (``ix_`` on a configured table) that the config no longer asks for, older names included."""
    wanted = {_index_name(name, index) for name, entry in tables.items() for index in entry.index}
    found = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix!_%' ESCAPE '!'")
    return [name for name, table in found.fetchall() if table in tables and name not in wanted]


_PLAIN = frozenset({str, int, float, type(None), bytes})  # stored as they are: most of a fleet's step-log values


def _encode(value):
    if type(value) in _PLAIN:
        return value
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _decoder(schema: TableSchema):
    kinds = {f.name: ("REPEATED" if f.mode == "REPEATED" else f.type) for f in schema.fields}

    def decode(row: sqlite3.Row) -> dict:
        out = {}
        for key in row.keys():
            value, kind = row[key], kinds.get(key)
            if value is None:
                out[key] = None
            elif kind == "DATE":
                out[key] = date.fromisoformat(value)
            elif kind == "TIMESTAMP":
                moment = datetime.fromisoformat(value)
                out[key] = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
            elif kind in ("BOOLEAN", "BOOL"):
                out[key] = bool(value)
            elif kind in ("JSON", "REPEATED"):
                out[key] = json.loads(value)
            elif kind == "BYTES":
                out[key] = bytes(value)
            else:
                out[key] = value
        return out

    return decode


class SQLiteMetastore(Metastore):
    def __init__(self, path: Path, configs_dir: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        self._checkpointer: threading.Event | None = None
        system = load_system(Path(configs_dir))
        self._decode = {name: _decoder(schema) for name, schema in system.schemas.items()}
        self._json_columns = {name: {f.name for f in schema.fields if f.type == "JSON" or f.mode == "REPEATED"}
                              for name, schema in system.schemas.items()}
        statements = [s for name, entry in system.tables.items() for s in _ddl(name, entry, system.schemas[name])]
        if not self.path.exists():  # state under $CONVERGENCE_HOME is private: create the file 0600
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._tx() as conn:
            for statement in statements:
                conn.execute(statement)
            for index in _stale_indexes(conn, system.tables):
                conn.execute(f'DROP INDEX IF EXISTS "{index}"')

    # connection per thread: sqlite3 connections must not be shared across threads
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
            if self._checkpointer is not None:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self):
        # Threads of one process queue on a mutex; SQLite's busy handler (which sleeps and
        # retries) is then only needed between processes. This keeps lock waits short under load.
        brief = getattr(self._local, "brief", False)
        if not _WRITE_LOCK.acquire(timeout=BRIEF_WAIT_SECONDS if brief else -1):
            raise WouldWait("another thread of this process is still writing")
        try:
            conn = self._conn()
            self._begin(conn, brief)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._local.brief = False  # something is written: the caller can no longer redo its call
        finally:
            _WRITE_LOCK.release()

    @staticmethod
    def _begin(conn: sqlite3.Connection, brief: bool) -> None:
        if not brief:
            conn.execute("BEGIN IMMEDIATE")
            return
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            raise WouldWait("another process is writing") from None
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    @contextmanager
    def wait_briefly_until_first_write(self):
        """In this thread, until a write commits, a write that cannot start at once raises :class:`WouldWait`.

        For an event loop that calls the store itself (the launcher on the embedded default): reads
        never wait in WAL mode, and a call that meets a busy writer before it has written anything can
        be redone in a worker thread instead of stalling every request. "At once" allows a few
        milliseconds for another thread of this process (its transactions are short once it has the
        GIL, which the waiting loop gives up) and nothing for another process. After its first
        commit the call cannot be redone, so its later writes wait as usual.
        """
        self._local.brief = True
        try:
            yield
        finally:
            self._local.brief = False

    def _all(self, table: str, sql: str, params=()) -> list[dict]:
        decode = self._decode[table]
        return [decode(r) for r in self._conn().execute(sql, params).fetchall()]

    def _one(self, table: str, sql: str, params=()) -> dict | None:
        rows = self._all(table, sql, params)
        return rows[0] if rows else None

    def checkpoint_in_background(self, every_seconds: float = 0.5) -> None:
        """Copy the WAL into the database from a daemon thread, never inside this process's commits.

        By default the commit that takes the WAL past 1000 pages also checkpoints it: copies those
        pages and syncs the file, 5-15 ms here, inside whichever request made that commit. When the
        store is called on an event loop (the launcher), that stalls every request in flight. A
        PASSIVE checkpoint neither waits for nor blocks readers and writers. Other processes keep
        their own automatic checkpoints. Stops with :meth:`close`.
        """
        if self._checkpointer is not None:
            return
        self._checkpointer = stop = threading.Event()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")

        def run():
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            while not stop.wait(every_seconds):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # the next round tries again
                    pass
            conn.close()

        threading.Thread(target=run, name="sqlite-checkpoint", daemon=True).start()

    def close(self) -> None:
        stop, self._checkpointer = self._checkpointer, None
        if stop is not None:
            stop.set()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _insert(self, conn, table: str, row: dict, upsert_key: str | None = None) -> None:
        self._insert_many(conn, table, [row], upsert_key)

    def _insert_many(self, conn, table: str, rows: list[dict], upsert_key: str | None = None) -> None:
        """Rows with the same columns go in one ``executemany`` (a fleet's step logs: thousands of rows)."""
        json_columns = self._json_columns[table]
        by_columns: dict[tuple, list[tuple]] = {}
        for row in rows:
            values = tuple((None if v is None else json.dumps(v, sort_keys=True, default=str)) if k in json_columns
                           else _encode(v) for k, v in row.items())
            by_columns.setdefault(tuple(row), []).append(values)
        for columns, values in by_columns.items():
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            if upsert_key:
                updates = ", ".join(f"{k} = excluded.{k}" for k in columns if k != upsert_key)
                sql += f" ON CONFLICT ({upsert_key}) DO UPDATE SET {updates}"
            conn.executemany(sql, values)

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
        return self._one("org_profiles", "SELECT * FROM org_profiles WHERE org_slug = ?", (org_slug,))

    def _require_org(self, conn, org_slug):
        if not conn.execute("SELECT 1 FROM org_profiles WHERE org_slug = ?", (org_slug,)).fetchone():
            raise NotFoundError(f"org {org_slug!r} does not exist")

    def add_api_key(self, org_slug, key_hash, expires_at=None, revoke_others=False, encrypted_api_key=None):
        key_id = uuid.uuid4().hex
        now = utcnow()
        with self._tx() as conn:
            self._require_org(conn, org_slug)
            if revoke_others:
                conn.execute("UPDATE org_api_keys SET is_active = 0, revoked_at = ? WHERE org_slug = ? AND is_active = 1",
                             (_encode(now), org_slug))
            self._insert(conn, "org_api_keys", {
                "org_api_key_id": key_id, "org_slug": org_slug, "org_api_key_hash": key_hash,
                "encrypted_api_key": encrypted_api_key, "scopes": list(API_KEY_SCOPES), "is_active": True,
                "expires_at": expires_at, "created_at": now})
        return key_id

    def find_api_key(self, key_hash, now=None):
        row = self._one("org_api_keys", "SELECT * FROM org_api_keys WHERE org_api_key_hash = ? AND is_active = 1"
                        " AND revoked_at IS NULL", (key_hash,))
        if row and row["expires_at"] and row["expires_at"] <= (now or utcnow()):
            return None
        return row

    def set_subscription(self, org_slug, status, plan_name="STARTER", trial_end_date=None):
        if status not in SUBSCRIPTION_STATUSES:
            raise ValueError(f"subscription status must be one of {SUBSCRIPTION_STATUSES}, got {status!r}")
        now = _encode(utcnow())
        with self._tx() as conn:
            self._require_org(conn, org_slug)
            conn.execute(
                "INSERT INTO org_subscriptions (subscription_id, org_slug, plan_name, status,"
                " trial_end_date, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (org_slug) DO UPDATE SET plan_name = excluded.plan_name,"
                " status = excluded.status, trial_end_date = excluded.trial_end_date,"
                " updated_at = excluded.updated_at",
                (uuid.uuid4().hex, org_slug, plan_name, status, _encode(trial_end_date), now, now),
            )

    def get_subscription(self, org_slug):
        return self._one("org_subscriptions", "SELECT * FROM org_subscriptions WHERE org_slug = ?"
                         " ORDER BY COALESCE(updated_at, created_at) DESC LIMIT 1", (org_slug,))

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
        row = self._conn().execute("SELECT daily_pipeline_limit FROM org_usage_quotas WHERE org_slug = ?",
                                   (org_slug,)).fetchone()
        return None if row is None else row[0]

    # credentials ------------------------------------------------------------------------------
    def put_credential(self, org_slug, integration, credential_type, ciphertext, metadata=None):
        credential_id = uuid.uuid4().hex
        now = _encode(utcnow())
        with self._tx() as conn:
            self._require_org(conn, org_slug)
            conn.execute(
                "INSERT INTO org_integration_credentials (credential_id, org_slug, provider, credential_type,"
                " encrypted_credential, metadata, is_active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT (org_slug, provider) DO UPDATE SET credential_type = excluded.credential_type,"
                " encrypted_credential = excluded.encrypted_credential, metadata = excluded.metadata, is_active = 1,"
                " updated_at = excluded.updated_at",
                (credential_id, org_slug, integration, credential_type, bytes(ciphertext), json.dumps(metadata or {}),
                 now, now),
            )
        return credential_id

    def get_credential(self, org_slug, integration):
        return self._one("org_integration_credentials",
                         "SELECT * FROM org_integration_credentials WHERE org_slug = ? AND provider = ? AND is_active = 1"
                         " ORDER BY COALESCE(updated_at, created_at) DESC LIMIT 1", (org_slug, integration))

    def eligible_orgs(self, integration, today):
        placeholders = ", ".join("?" for _ in ELIGIBLE_SUBSCRIPTIONS)
        rows = self._conn().execute(
            "SELECT DISTINCT s.org_slug FROM org_subscriptions s"
            " JOIN org_integration_credentials c ON c.org_slug = s.org_slug"
            f" WHERE s.status IN ({placeholders}) AND c.provider = ? AND c.is_active = 1"
            " AND (s.status != 'TRIAL' OR s.trial_end_date IS NULL OR s.trial_end_date >= ?)"
            " ORDER BY s.org_slug",
            (*ELIGIBLE_SUBSCRIPTIONS, integration, today.isoformat()),
        ).fetchall()
        return [r[0] for r in rows]

    # runs -------------------------------------------------------------------------------------
    def create_runs(self, runs):
        with self._tx() as conn:
            self._insert_many(conn, RUNS, list(runs))

    def _taken(self, conn, key: str, statuses, now: datetime):
        marks = ", ".join("?" for _ in statuses)
        return conn.execute(
            f"SELECT pipeline_logging_id FROM {RUNS} WHERE run_key = ? AND status IN ({marks})"
            " AND (status NOT IN ('QUEUED', 'RUNNING') OR lease_expires_at > ?) ORDER BY created_at LIMIT 1",
            (key, *statuses, _encode(now))).fetchone()

    def reserve_run(self, run, daily_limit, since, dedupe_statuses=OPEN_STATUSES):
        now = utcnow()
        with self._tx() as conn:  # BEGIN IMMEDIATE: one reservation at a time, across processes
            duplicate = self._taken(conn, run["run_key"], dedupe_statuses, now)
            if duplicate:
                return Reservation("duplicate", duplicate[0])
            used = conn.execute(
                f"SELECT COUNT(*) FROM {RUNS} WHERE org_slug = ? AND created_at >= ? AND trigger_type != 'scheduler'",
                (run["org_slug"], _encode(since))).fetchone()[0]
            if daily_limit is not None and used >= daily_limit:
                return Reservation("quota", None, used)
            seq = conn.execute(f"SELECT COALESCE(MAX(reservation_seq), -1) + 1 FROM {RUNS} WHERE run_key = ?",
                               (run["run_key"],)).fetchone()[0]
            self._insert(conn, RUNS, {**run, "reservation_seq": seq})
        return Reservation("created", run["pipeline_logging_id"], used)

    def reserve_runs(self, runs, dedupe_statuses):
        now = utcnow()
        created = []
        with self._tx() as conn:
            for run in runs:
                if self._taken(conn, run["run_key"], dedupe_statuses, now):
                    continue
                seq = conn.execute(f"SELECT COALESCE(MAX(reservation_seq), -1) + 1 FROM {RUNS} WHERE run_key = ?",
                                   (run["run_key"],)).fetchone()[0]
                self._insert(conn, RUNS, {**run, "reservation_seq": seq})
                created.append(run["pipeline_logging_id"])
        return created

    def update_run(self, run_id, **fields):
        check_run_update(fields)
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE {RUNS} SET {sets} WHERE pipeline_logging_id = ?",
                               (*(_encode(v) for v in fields.values()), run_id))
            if cur.rowcount != 1:
                raise NotFoundError(f"run {run_id!r} does not exist")

    def close_runs(self, updates, expired_before=None):
        changed = []
        with self._tx() as conn:
            for update in updates:
                fields = {k: v for k, v in update.items() if k != "pipeline_logging_id"}
                check_run_update(fields)
                sets = ", ".join(f"{k} = ?" for k in fields)
                where, extra = "pipeline_logging_id = ?", ()
                if expired_before is not None:
                    where += " AND status IN ('QUEUED', 'RUNNING') AND lease_expires_at < ?"
                    extra = (_encode(expired_before),)
                cur = conn.execute(f"UPDATE {RUNS} SET {sets} WHERE {where}",
                                   (*(_encode(v) for v in fields.values()), update["pipeline_logging_id"], *extra))
                if cur.rowcount:
                    changed.append(update["pipeline_logging_id"])
        return changed

    def renew_leases(self, run_ids, owner_id, until):
        if not run_ids:
            return 0
        marks = ", ".join("?" for _ in run_ids)
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE {RUNS} SET owner_id = ?, lease_expires_at = ? WHERE status IN ('QUEUED', 'RUNNING')"
                               f" AND pipeline_logging_id IN ({marks})", (owner_id, _encode(until), *run_ids))
            return cur.rowcount

    def expired_runs(self, now, limit=500):
        marks = ", ".join("?" for _ in OPEN_STATUSES)
        return self._all(RUNS, f"SELECT * FROM {RUNS} WHERE status IN ({marks}) AND lease_expires_at < ?"
                               " ORDER BY lease_expires_at LIMIT ?", (*OPEN_STATUSES, _encode(now), int(limit)))

    def get_run(self, run_id):
        return self._one(RUNS, f"SELECT * FROM {RUNS} WHERE pipeline_logging_id = ?", (run_id,))

    def get_runs(self, run_ids):
        found = {}
        ids = list(dict.fromkeys(run_ids))
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start:start + IN_CHUNK]
            rows = self._all(RUNS, f"SELECT * FROM {RUNS} WHERE pipeline_logging_id IN ({', '.join('?' * len(chunk))})",
                             tuple(chunk))
            found.update((r["pipeline_logging_id"], r) for r in rows)
        return found

    def list_runs(self, org_slug=None, status=None, limit=50):
        where, params = [], []
        if org_slug:
            where.append("org_slug = ?")
            params.append(org_slug)
        if status:
            where.append("status = ?")
            params.append(status)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        return self._all(RUNS, f"SELECT * FROM {RUNS}{clause} ORDER BY created_at DESC, pipeline_logging_id LIMIT ?",
                         (*params, int(limit)))

    # step logs and data-quality results --------------------------------------------------------
    def upsert_step_logs(self, steps):
        if steps:
            with self._tx() as conn:
                self._insert_many(conn, "org_meta_step_logs", steps, upsert_key="step_log_id")

    def list_steps(self, run_id):
        return self._all("org_meta_step_logs", "SELECT * FROM org_meta_step_logs WHERE pipeline_logging_id = ?"
                                               " ORDER BY started_at, step_id", (run_id,))

    def upsert_dq_results(self, results):
        if results:
            with self._tx() as conn:
                self._insert_many(conn, "org_meta_dq_results", results, upsert_key="dq_result_id")

    def list_dq_results(self, run_id):
        return self._all("org_meta_dq_results", "SELECT * FROM org_meta_dq_results WHERE pipeline_logging_id = ?"
                                                " ORDER BY dq_result_id", (run_id,))
