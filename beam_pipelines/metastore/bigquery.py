"""The production metastore: the central ``organizations`` dataset in BigQuery.

Same interface and the same Python types as the SQLite store. Every statement is one
parameterised statement (values never enter SQL text; table names come from
``configs/system/tables.yml``), checked by :mod:`beam_pipelines.bigquery.sql` before it is sent,
and retried with jitter on the DML conflicts and rate limits BigQuery documents. A stage of a run
writes all its rows at once: ``MERGE ... USING UNNEST(@rows)`` keyed on the row ids, so a retried
write replaces rather than duplicates.

Why a reservation cannot be an INSERT (or an insert-only MERGE) alone: BigQuery documents that
INSERT statements never conflict with one another, and that a MERGE that only inserts rows does
not conflict either, even when it has UPDATE or DELETE clauses that do not fire. Two identical
requests could both see "no open run" and both insert. What BigQuery does guarantee is that a
job id is unique within a project: ``jobs.insert`` with an id that exists fails with 409
(Already Exists). So a reservation claims the job id ``cvg_reserve_{run_key}_{seq}``, where
``seq`` is the next reservation number of that run key; of two identical requests exactly one
job is created, the other gets 409 and answers "duplicate" with the winner's run id. A claim
whose job failed (nothing inserted) is skipped by moving to the next ``seq``. The inserted
statement is also conditional (``WHERE NOT EXISTS``), which keeps stores that do not enforce job
ids (the emulator) right as long as they run statements one at a time.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from pathlib import Path

from beam_pipelines.bigquery import params as P
from beam_pipelines.bigquery.client import BigQueryRunner
from beam_pipelines.bigquery.sql import table_ref
from beam_pipelines.config.system import load_system
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

log = logging.getLogger(__name__)
RUNS = "org_meta_pipeline_runs"
CLAIM_ATTEMPTS = 8


class BigQueryMetastore(Metastore):
    def __init__(self, project: str, configs_dir: Path, location: str = "US", runner: BigQueryRunner | None = None):
        system = load_system(Path(configs_dir))
        self._configs_dir = Path(configs_dir)
        self.project, self.dataset, self.location = project, system.dataset, location
        self.runner = runner or BigQueryRunner(project, location)
        self._types = {name: {f.name: (f.type + "[]" if f.mode == "REPEATED" else f.type) for f in schema.fields}
                       for name, schema in system.schemas.items()}

    # plumbing ---------------------------------------------------------------------------------
    def _t(self, table: str) -> str:
        if table not in self._types:
            raise KeyError(table)
        return table_ref(self.project, self.dataset, table)

    def _param(self, table: str, name: str, value, column: str | None = None):
        return P.field(name, self._types[table][column or name], value)

    def _rows_param(self, table: str, rows: list[dict], columns: list[str]):
        return P.struct_rows("rows", rows, {c: self._types[table][c] for c in columns})

    def _run(self, sql: str, params=(), job_id: str | None = None):
        return self.runner.run(sql, params, job_id=job_id)

    def _select(self, table: str, where: str, params: dict, order: str = "", limit: int | None = None) -> list[dict]:
        sql = f"SELECT * FROM {self._t(table)} WHERE {where}" + (f" ORDER BY {order}" if order else "")
        bound = [self._param(table, n, v, c) for n, (c, v) in params.items()]
        if limit is not None:
            sql += " LIMIT @limit"
            bound.append(P.scalar("limit", "INT64", int(limit)))
        return self._run(sql, bound).rows

    def _merge(self, table: str, key: str, rows: list[dict], update: bool = True) -> None:
        """Upsert ``rows`` (all with the same columns) by ``key`` in one statement."""
        if not rows:
            return
        columns = list(rows[0])
        sql = f"MERGE {self._t(table)} T USING UNNEST(@rows) AS S ON T.{key} = S.{key}"
        if update:
            sql += " WHEN MATCHED THEN UPDATE SET " + ", ".join(f"{c} = S.{c}" for c in columns if c != key)
        sql += (f" WHEN NOT MATCHED THEN INSERT ({', '.join(columns)})"
                f" VALUES ({', '.join('S.' + c for c in columns)})")
        self._run(sql, [self._rows_param(table, rows, columns)])

    def statement_catalog(self) -> list[tuple[str, str, list]]:
        """Every statement this store sends, with sample parameters: for static checks and dry runs."""
        recorder = _Recorder(self)
        now = utcnow()
        run = {"pipeline_logging_id": "r", "org_slug": "o", "pipeline_id": "o-openai-usage-cost",
               "config_path": "openai/cost/usage_cost", "run_key": "k", "status": "QUEUED", "trigger_type": "api",
               "start_date": now.date(), "end_date": now.date(), "runner": "local", "owner_id": "x",
               "lease_expires_at": now, "created_at": now, "started_at": None}
        with recorder:
            self.get_org("o"), self.find_api_key("h"), self.get_subscription("o"), self.get_daily_quota("o")
            self.get_credential("o", "OPENAI"), self.eligible_orgs("OPENAI", now.date())
            self.create_runs([run]), self._state(run, OPEN_STATUSES, now, now)
            recorder.statements.append(("INSERT", self._claim_sql(run), self._claim_params(
                [{**run, "reservation_seq": 0}], OPEN_STATUSES, now)))
            self.reserve_runs([run], ("QUEUED",)), self.update_run("r", status="FAILED")
            self.close_runs([{"pipeline_logging_id": "r", "status": "FAILED"}], expired_before=now)
            self.renew_leases(["r"], "x", now), self.expired_runs(now), self.get_run("r"), self.get_runs(["r"])
            self.list_runs("o", "FAILED")
            self.upsert_step_logs([{"step_log_id": "s", "pipeline_logging_id": "r"}]), self.list_steps("r")
            self.upsert_dq_results([{"dq_result_id": "d", "pipeline_logging_id": "r"}]), self.list_dq_results("r")
        return recorder.statements

    def provision(self) -> list[str]:
        """Create the ``organizations`` dataset and every missing metadata table; returns those created."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        system = load_system(self._configs_dir)
        client = self.runner.client
        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        dataset.location = self.location
        client.create_dataset(dataset, exists_ok=True, retry=self.runner._api_retry)
        created = []
        for name, entry in system.tables.items():
            table_id = f"{self.project}.{self.dataset}.{name}"
            try:
                client.get_table(table_id, retry=self.runner._api_retry)
                continue
            except NotFound:
                pass
            table = bigquery.Table(table_id, schema=[bigquery.SchemaField.from_api_repr(f.to_json())
                                                     for f in system.schemas[name].fields])
            if entry.partition:
                table.time_partitioning = bigquery.TimePartitioning(field=entry.partition)
            if entry.cluster:
                table.clustering_fields = list(entry.cluster)
            client.create_table(table, exists_ok=True, retry=self.runner._api_retry)
            created.append(name)
        return created

    # orgs, keys, subscriptions, quotas -------------------------------------------------------
    def upsert_org(self, org_slug, company_name="", admin_email=""):
        now = utcnow()
        existing = self.get_org(org_slug)
        self._merge("org_profiles", "org_slug", [{
            "org_slug": org_slug, "company_name": company_name, "admin_email": admin_email, "status": "ACTIVE",
            "created_at": existing["created_at"] if existing else now, "updated_at": now}])

    def get_org(self, org_slug):
        rows = self._select("org_profiles", "org_slug = @org_slug", {"org_slug": ("org_slug", org_slug)})
        return rows[0] if rows else None

    def add_api_key(self, org_slug, key_hash, expires_at=None, revoke_others=False, encrypted_api_key=None):
        key_id = uuid.uuid4().hex
        now = utcnow()
        if revoke_others:
            self._run(f"UPDATE {self._t('org_api_keys')} SET is_active = FALSE, revoked_at = @now"
                      " WHERE org_slug = @org_slug AND is_active",
                      [P.scalar("now", "TIMESTAMP", now), P.scalar("org_slug", "STRING", org_slug)])
        self._merge("org_api_keys", "org_api_key_id", [{
            "org_api_key_id": key_id, "org_slug": org_slug, "org_api_key_hash": key_hash,
            "encrypted_api_key": encrypted_api_key, "scopes": list(API_KEY_SCOPES), "is_active": True,
            "expires_at": expires_at, "created_at": now, "revoked_at": None}], update=False)
        return key_id

    def find_api_key(self, key_hash, now=None):
        rows = self._select(
            "org_api_keys", "org_api_key_hash = @key_hash AND is_active AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > @now)",
            {"key_hash": ("org_api_key_hash", key_hash), "now": ("created_at", now or utcnow())})
        return rows[0] if rows else None

    def set_subscription(self, org_slug, status, plan_name="STARTER", trial_end_date=None):
        if status not in SUBSCRIPTION_STATUSES:
            raise ValueError(f"subscription status must be one of {SUBSCRIPTION_STATUSES}, got {status!r}")
        now = utcnow()
        current = self.get_subscription(org_slug)
        self._merge("org_subscriptions", "subscription_id", [{
            "subscription_id": current["subscription_id"] if current else uuid.uuid4().hex, "org_slug": org_slug,
            "plan_name": plan_name, "status": status, "trial_end_date": trial_end_date,
            "created_at": current["created_at"] if current else now, "updated_at": now}])

    def get_subscription(self, org_slug):
        rows = self._select("org_subscriptions", "org_slug = @org_slug", {"org_slug": ("org_slug", org_slug)},
                            order="COALESCE(updated_at, created_at) DESC", limit=1)
        return rows[0] if rows else None

    def set_daily_quota(self, org_slug, limit):
        self._merge("org_usage_quotas", "org_slug",
                    [{"org_slug": org_slug, "daily_pipeline_limit": int(limit), "updated_at": utcnow()}])

    def get_daily_quota(self, org_slug):
        rows = self._select("org_usage_quotas", "org_slug = @org_slug", {"org_slug": ("org_slug", org_slug)})
        return rows[0]["daily_pipeline_limit"] if rows else None

    # credentials ------------------------------------------------------------------------------
    def put_credential(self, org_slug, integration, credential_type, ciphertext, metadata=None):
        current = self.get_credential(org_slug, integration)
        credential_id = current["credential_id"] if current else uuid.uuid4().hex
        now = utcnow()
        self._merge("org_integration_credentials", "credential_id", [{
            "credential_id": credential_id, "org_slug": org_slug, "provider": integration,
            "credential_type": credential_type, "encrypted_credential": bytes(ciphertext), "metadata": metadata or {},
            "is_active": True, "created_at": current["created_at"] if current else now, "updated_at": now}])
        return credential_id

    def get_credential(self, org_slug, integration):
        rows = self._select("org_integration_credentials", "org_slug = @org_slug AND provider = @provider AND is_active",
                            {"org_slug": ("org_slug", org_slug), "provider": ("provider", integration)},
                            order="COALESCE(updated_at, created_at) DESC", limit=1)
        return rows[0] if rows else None

    def eligible_orgs(self, integration, today):
        result = self._run(
            f"SELECT DISTINCT s.org_slug FROM {self._t('org_subscriptions')} s"
            f" JOIN {self._t('org_integration_credentials')} c ON c.org_slug = s.org_slug"
            " WHERE s.status IN UNNEST(@statuses) AND c.provider = @provider AND c.is_active"
            " AND (s.status != @trial OR s.trial_end_date IS NULL OR s.trial_end_date >= @today) ORDER BY s.org_slug",
            [P.array("statuses", "STRING", ELIGIBLE_SUBSCRIPTIONS), P.scalar("provider", "STRING", integration),
             P.scalar("trial", "STRING", "TRIAL"), P.scalar("today", "DATE", today)])
        return [r["org_slug"] for r in result.rows]

    # runs -------------------------------------------------------------------------------------
    def create_runs(self, runs):
        if runs:
            columns = list(runs[0])
            self._run(f"INSERT INTO {self._t(RUNS)} ({', '.join(columns)}) SELECT {', '.join('r.' + c for c in columns)}"
                      " FROM UNNEST(@rows) r", [self._rows_param(RUNS, runs, columns)])

    def _state(self, run: dict, dedupe, now, since):
        """(open or dedupe-status run of this key, next reservation seq, runs counted against the quota)."""
        result = self._run(
            f"SELECT (SELECT pipeline_logging_id FROM {self._t(RUNS)} WHERE run_key = @run_key"
            " AND status IN UNNEST(@dedupe) AND (status NOT IN UNNEST(@open) OR lease_expires_at > @now)"
            " ORDER BY created_at LIMIT 1) AS duplicate,"
            f" (SELECT COALESCE(MAX(reservation_seq), -1) + 1 FROM {self._t(RUNS)} WHERE run_key = @run_key) AS seq,"
            f" (SELECT COUNT(*) FROM {self._t(RUNS)} WHERE org_slug = @org_slug AND created_at >= @since"
            " AND trigger_type != @scheduler) AS used",
            [P.scalar("run_key", "STRING", run["run_key"]), P.array("dedupe", "STRING", dedupe),
             P.array("open", "STRING", OPEN_STATUSES), P.scalar("now", "TIMESTAMP", now),
             P.scalar("org_slug", "STRING", run["org_slug"]), P.scalar("since", "TIMESTAMP", since),
             P.scalar("scheduler", "STRING", "scheduler")])
        row = result.rows[0]
        return row["duplicate"], int(row["seq"] or 0), int(row["used"] or 0)

    def _claim_sql(self, run: dict) -> str:
        columns = list(run) + ["reservation_seq"]
        return (f"INSERT INTO {self._t(RUNS)} ({', '.join(columns)}) SELECT {', '.join('r.' + c for c in columns)}"
                " FROM UNNEST(@rows) r"
                f" WHERE NOT EXISTS (SELECT 1 FROM {self._t(RUNS)} x WHERE x.run_key = r.run_key"
                " AND (x.reservation_seq = r.reservation_seq OR (x.status IN UNNEST(@dedupe)"
                " AND (x.status NOT IN UNNEST(@open) OR x.lease_expires_at > @now))))")

    def _claim_params(self, rows: list[dict], dedupe, now):
        columns = list(rows[0])
        return [self._rows_param(RUNS, rows, columns), P.array("dedupe", "STRING", dedupe),
                P.array("open", "STRING", OPEN_STATUSES), P.scalar("now", "TIMESTAMP", now)]

    def _claimed(self, job_id: str) -> bool | None:
        """Whether an existing reservation job inserted rows (None: it failed or inserted nothing)."""
        job = self.runner.get_job(job_id)
        deadline = time.monotonic() + 60
        while job.state != "DONE" and time.monotonic() < deadline:
            time.sleep(0.5)
            job.reload()
        if job.state != "DONE" or job.error_result:
            return None
        return bool(job.num_dml_affected_rows)

    def reserve_run(self, run, daily_limit, since, dedupe_statuses=OPEN_STATUSES):
        from google.api_core.exceptions import Conflict

        now = utcnow()
        duplicate, seq, used = self._state(run, dedupe_statuses, now, since)
        if duplicate:
            return Reservation("duplicate", duplicate)
        if daily_limit is not None and used >= daily_limit:
            return Reservation("quota", None, used)
        for _ in range(CLAIM_ATTEMPTS):
            row = {**run, "reservation_seq": seq}
            job_id = f"cvg_reserve_{run['run_key']}_{seq}"
            try:
                inserted = self._run(self._claim_sql(run), self._claim_params([row], dedupe_statuses, now),
                                     job_id=job_id).affected
            except Conflict:
                inserted = self._claimed(job_id)
                if inserted is None:  # that claim failed and inserted nothing: the next seq is free to claim
                    seq += 1
                    continue
                inserted = False
            if inserted:
                return Reservation("created", run["pipeline_logging_id"], used)
            winner, _, _ = self._state(run, dedupe_statuses, now, since)
            if winner == run["pipeline_logging_id"]:  # our own job, answered 409 on an internal retry
                return Reservation("created", winner, used)
            if winner:
                return Reservation("duplicate", winner)
            seq += 1
        raise RuntimeError(f"could not reserve run key {run['run_key']} after {CLAIM_ATTEMPTS} claims")

    def reserve_runs(self, runs, dedupe_statuses):
        from google.api_core.exceptions import Conflict

        if not runs:
            return []
        now = utcnow()
        seqs = self._next_seqs([r["run_key"] for r in runs])
        rows = [{**r, "reservation_seq": seqs.get(r["run_key"], 0)} for r in runs]
        claim = hashlib.sha256("|".join(sorted(f"{r['run_key']}:{r['reservation_seq']}" for r in rows)).encode())
        try:
            self._run(self._claim_sql(runs[0]), self._claim_params(rows, dedupe_statuses, now),
                      job_id=f"cvg_schedule_{claim.hexdigest()[:48]}")
        except Conflict:  # the same batch is being (or was) claimed by a concurrent trigger
            log.info("scheduler batch already claimed by a concurrent trigger")
        ids = [r["pipeline_logging_id"] for r in runs]
        result = self._run(f"SELECT pipeline_logging_id FROM {self._t(RUNS)} WHERE pipeline_logging_id IN UNNEST(@ids)",
                           [P.array("ids", "STRING", ids)])
        present = {r["pipeline_logging_id"] for r in result.rows}
        return [i for i in ids if i in present]

    def _next_seqs(self, keys: list[str]) -> dict[str, int]:
        result = self._run(f"SELECT run_key, MAX(reservation_seq) + 1 AS seq FROM {self._t(RUNS)}"
                           " WHERE run_key IN UNNEST(@keys) GROUP BY run_key", [P.array("keys", "STRING", keys)])
        return {r["run_key"]: int(r["seq"] or 0) for r in result.rows}

    def update_run(self, run_id, **fields):
        check_run_update(fields)
        if fields:
            self.close_runs([{"pipeline_logging_id": run_id, **fields}])

    def close_runs(self, updates, expired_before=None):
        if not updates:
            return []
        changed = []
        for columns, group in _by_columns(updates).items():  # one MERGE per shape of update
            sets = ", ".join(f"{c} = S.{c}" for c in columns if c != "pipeline_logging_id")
            guard = ""
            params = [self._rows_param(RUNS, group, list(columns))]
            if expired_before is not None:
                guard = " AND T.status IN UNNEST(@open) AND T.lease_expires_at < @before"
                params += [P.array("open", "STRING", OPEN_STATUSES), P.scalar("before", "TIMESTAMP", expired_before)]
                before = {r["pipeline_logging_id"] for r in self.expired_runs(expired_before)}
            for row in group:
                check_run_update({k: v for k, v in row.items() if k != "pipeline_logging_id"})
            self._run(f"MERGE {self._t(RUNS)} T USING UNNEST(@rows) AS S ON T.pipeline_logging_id = S.pipeline_logging_id"
                      f" WHEN MATCHED{guard} THEN UPDATE SET {sets}", params)
            ids = [r["pipeline_logging_id"] for r in group]
            changed += [i for i in ids if expired_before is None or i in before]
        return changed

    def renew_leases(self, run_ids, owner_id, until):
        if not run_ids:
            return 0
        result = self._run(f"UPDATE {self._t(RUNS)} SET owner_id = @owner, lease_expires_at = @until"
                           " WHERE pipeline_logging_id IN UNNEST(@ids) AND status IN UNNEST(@open)",
                           [P.scalar("owner", "STRING", owner_id), P.scalar("until", "TIMESTAMP", until),
                            P.array("ids", "STRING", run_ids), P.array("open", "STRING", OPEN_STATUSES)])
        return int(result.affected or 0)

    def expired_runs(self, now, limit=500):
        return self._run(f"SELECT * FROM {self._t(RUNS)} WHERE status IN UNNEST(@open) AND lease_expires_at < @now"
                         " ORDER BY lease_expires_at LIMIT @limit",
                         [P.array("open", "STRING", OPEN_STATUSES), P.scalar("now", "TIMESTAMP", now),
                          P.scalar("limit", "INT64", int(limit))]).rows

    def get_run(self, run_id):
        rows = self._select(RUNS, "pipeline_logging_id = @id", {"id": ("pipeline_logging_id", run_id)})
        return rows[0] if rows else None

    def get_runs(self, run_ids):
        if not run_ids:
            return {}
        rows = self._run(f"SELECT * FROM {self._t(RUNS)} WHERE pipeline_logging_id IN UNNEST(@ids)",
                         [P.array("ids", "STRING", list(dict.fromkeys(run_ids)))]).rows
        return {r["pipeline_logging_id"]: r for r in rows}

    def list_runs(self, org_slug=None, status=None, limit=50):
        where, params = ["TRUE"], {}
        if org_slug:
            where.append("org_slug = @org_slug")
            params["org_slug"] = ("org_slug", org_slug)
        if status:
            where.append("status = @status")
            params["status"] = ("status", status)
        return self._select(RUNS, " AND ".join(where), params, order="created_at DESC, pipeline_logging_id", limit=limit)

    # step logs and data-quality results --------------------------------------------------------
    def upsert_step_logs(self, steps):
        for group in _by_columns(steps).values():
            self._merge("org_meta_step_logs", "step_log_id", group)

    def list_steps(self, run_id):
        return self._select("org_meta_step_logs", "pipeline_logging_id = @id", {"id": ("pipeline_logging_id", run_id)},
                            order="started_at, step_id")

    def upsert_dq_results(self, results):
        for group in _by_columns(results).values():
            self._merge("org_meta_dq_results", "dq_result_id", group)

    def list_dq_results(self, run_id):
        return self._select("org_meta_dq_results", "pipeline_logging_id = @id", {"id": ("pipeline_logging_id", run_id)},
                            order="dq_result_id")


def _by_columns(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups


class _Recorder:
    """Collects the statements a store would send, without sending them."""

    def __init__(self, store: BigQueryMetastore):
        self.store, self.statements = store, []

    def __enter__(self):
        from beam_pipelines.bigquery.client import QueryResult

        class AnyRow(dict):
            def __missing__(self, key):
                return None

        def record(sql, params=(), job_id=None):
            self.statements.append((sql.split(" ", 1)[0], sql, list(params)))
            return QueryResult([AnyRow(seq=0, used=0)], 0)

        self._saved = self.store._run
        self.store._run = record
        return self

    def __exit__(self, *exc):
        self.store._run = self._saved
