"""The production metastore: the central ``organizations`` dataset in BigQuery.

Same interface as the SQLite store. Every statement is parameterised (values never enter SQL
text; table names come from ``configs/system/tables.yml``, not from callers), parameter types come
from the tables' JSON schemas, and every write is idempotent so a retried call cannot duplicate a
row: runs, step logs and DQ results are written with ``MERGE`` on their ids. The reservation of a
run (duplicate check, quota, insert) is one multi-statement transaction, which BigQuery aborts if
a concurrent transaction touched the table, so two launchers cannot both reserve the same run.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from beam_pipelines.config.schema import load_schema
from beam_pipelines.metastore.base import (
    ELIGIBLE_SUBSCRIPTIONS,
    SUBSCRIPTION_STATUSES,
    Metastore,
    Reservation,
    check_run_update,
    utcnow,
)

PARAM_TYPES = {"STRING": "STRING", "JSON": "JSON", "DATE": "DATE", "TIMESTAMP": "TIMESTAMP", "INTEGER": "INT64",
               "INT64": "INT64", "BOOLEAN": "BOOL", "BOOL": "BOOL", "FLOAT": "FLOAT64", "FLOAT64": "FLOAT64",
               "BYTES": "BYTES"}


class BigQueryMetastore(Metastore):
    def __init__(self, project: str, configs_dir: Path, dataset: str = "organizations", client=None):
        from google.cloud import bigquery

        self._bq = bigquery
        self.project, self.dataset = project, dataset
        self._client = client or bigquery.Client(project=project)
        tables = yaml.safe_load((configs_dir / "system" / "tables.yml").read_text())["tables"]
        self._types = {
            name: {f.name: f.type for f in load_schema(configs_dir / "system" / spec["schema"]).fields}
            for name, spec in tables.items()
        }

    # plumbing ---------------------------------------------------------------------------------
    def _t(self, table: str) -> str:
        if table not in self._types:
            raise KeyError(table)
        return f"`{self.project}.{self.dataset}.{table}`"

    def _param(self, table: str, name: str, value, column: str | None = None):
        kind = PARAM_TYPES[self._types[table][column or name]]
        if kind == "JSON" and isinstance(value, str):  # the client serialises JSON parameters itself
            value = json.loads(value)
        return self._bq.ScalarQueryParameter(name, kind, value)

    def _run(self, sql: str, params: list) -> list[dict]:
        config = self._bq.QueryJobConfig(query_parameters=params)
        return [dict(row.items()) for row in self._client.query(sql, job_config=config).result()]

    def _merge(self, table: str, key: str, row: dict) -> None:
        columns = list(row)
        source = ", ".join(f"@{c} AS {c}" for c in columns)
        updates = ", ".join(f"{c} = S.{c}" for c in columns if c != key)
        self._run(
            f"MERGE {self._t(table)} T USING (SELECT {source}) S ON T.{key} = S.{key}"
            f" WHEN MATCHED THEN UPDATE SET {updates}"
            f" WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) VALUES ({', '.join('S.' + c for c in columns)})",
            [self._param(table, c, v) for c, v in row.items()],
        )

    def _select(self, table: str, where: str, params: dict, order: str = "", limit: int | None = None) -> list[dict]:
        sql = f"SELECT * FROM {self._t(table)} WHERE {where}" + (f" ORDER BY {order}" if order else "")
        bound = [self._param(table, n, v, c) for n, (c, v) in params.items()]
        if limit is not None:
            sql += " LIMIT @limit"
            bound.append(self._bq.ScalarQueryParameter("limit", "INT64", int(limit)))
        return self._run(sql, bound)

    # orgs, keys, subscriptions, quotas -------------------------------------------------------
    def upsert_org(self, org_slug, company_name="", admin_email=""):
        now = utcnow()
        existing = self.get_org(org_slug)
        self._merge("org_profiles", "org_slug", {
            "org_slug": org_slug, "company_name": company_name, "admin_email": admin_email, "status": "ACTIVE",
            "created_at": existing["created_at"] if existing else now, "updated_at": now})

    def get_org(self, org_slug):
        rows = self._select("org_profiles", "org_slug = @org_slug", {"org_slug": ("org_slug", org_slug)})
        return rows[0] if rows else None

    def add_api_key(self, org_slug, key_hash, expires_at=None, revoke_others=False):
        import uuid

        key_id = uuid.uuid4().hex
        now = utcnow()
        revoke = ("UPDATE {t} SET is_active = FALSE, revoked_at = @created_at WHERE org_slug = @org_slug"
                  " AND is_active;").format(t=self._t("org_api_keys")) if revoke_others else ""
        self._run(
            f"BEGIN TRANSACTION; {revoke} INSERT INTO {self._t('org_api_keys')} (org_api_key_id, org_slug, key_hash,"
            " scopes, is_active, expires_at, created_at) VALUES (@org_api_key_id, @org_slug, @key_hash, @scopes, TRUE,"
            " @expires_at, @created_at); COMMIT TRANSACTION;",
            [self._param("org_api_keys", n, v) for n, v in {
                "org_api_key_id": key_id, "org_slug": org_slug, "key_hash": key_hash,
                "scopes": "pipelines:run,pipelines:read", "expires_at": expires_at, "created_at": now}.items()],
        )
        return key_id

    def find_api_key(self, key_hash, now=None):
        rows = self._select(
            "org_api_keys", "key_hash = @key_hash AND is_active AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > @now)",
            {"key_hash": ("key_hash", key_hash), "now": ("created_at", now or utcnow())})
        return rows[0] if rows else None

    def set_subscription(self, org_slug, status, plan_name="STARTER", trial_ends_at=None):
        if status not in SUBSCRIPTION_STATUSES:
            raise ValueError(f"subscription status must be one of {SUBSCRIPTION_STATUSES}, got {status!r}")
        now = utcnow()
        current = self.get_subscription(org_slug)
        self._merge("org_subscriptions", "org_slug", {
            "org_slug": org_slug, "subscription_id": current["subscription_id"] if current else f"sub-{org_slug}",
            "plan_name": plan_name, "status": status, "trial_ends_at": trial_ends_at,
            "created_at": current["created_at"] if current else now, "updated_at": now})

    def get_subscription(self, org_slug):
        rows = self._select("org_subscriptions", "org_slug = @org_slug", {"org_slug": ("org_slug", org_slug)})
        return rows[0] if rows else None

    def set_daily_quota(self, org_slug, limit):
        self._merge("org_usage_quotas", "org_slug",
                    {"org_slug": org_slug, "daily_pipeline_limit": int(limit), "updated_at": utcnow()})

    def get_daily_quota(self, org_slug):
        rows = self._select("org_usage_quotas", "org_slug = @org_slug", {"org_slug": ("org_slug", org_slug)})
        return rows[0]["daily_pipeline_limit"] if rows else None

    # credentials ------------------------------------------------------------------------------
    def put_credential(self, org_slug, provider, credential_type, ciphertext, cipher, metadata=None):
        current = self.get_credential(org_slug, provider)
        credential_id = current["credential_id"] if current else f"{org_slug}:{provider}"
        now = utcnow()
        self._merge("org_integration_credentials", "credential_id", {
            "credential_id": credential_id, "org_slug": org_slug, "provider": provider,
            "credential_type": credential_type, "encrypted_credential": bytes(ciphertext), "cipher": cipher,
            "metadata": metadata or {}, "is_active": True, "created_at": current["created_at"] if current else now,
            "updated_at": now})
        return credential_id

    def get_credential(self, org_slug, provider):
        rows = self._select("org_integration_credentials", "org_slug = @org_slug AND provider = @provider AND is_active",
                            {"org_slug": ("org_slug", org_slug), "provider": ("provider", provider)})
        if not rows:
            return None
        row = rows[0]
        if isinstance(row.get("metadata"), str):
            row["metadata"] = json.loads(row["metadata"] or "{}")
        return row

    def eligible_orgs(self, provider, today):
        rows = self._run(
            f"SELECT s.org_slug FROM {self._t('org_subscriptions')} s JOIN {self._t('org_integration_credentials')} c"
            " ON c.org_slug = s.org_slug WHERE s.status IN UNNEST(@statuses) AND c.provider = @provider AND c.is_active"
            " AND (s.status != 'TRIAL' OR s.trial_ends_at IS NULL OR s.trial_ends_at >= @today) ORDER BY s.org_slug",
            [self._bq.ArrayQueryParameter("statuses", "STRING", list(ELIGIBLE_SUBSCRIPTIONS)),
             self._bq.ScalarQueryParameter("provider", "STRING", provider),
             self._bq.ScalarQueryParameter("today", "DATE", today)],
        )
        return [r["org_slug"] for r in rows]

    # runs -------------------------------------------------------------------------------------
    def create_run(self, run):
        row = dict(run)
        row.setdefault("created_at", utcnow())
        self._merge_insert_only("org_meta_pipeline_runs", "pipeline_logging_id", row)

    def _merge_insert_only(self, table: str, key: str, row: dict) -> None:
        """Insert unless the id exists: a retried insert is a no-op, never a second row."""
        columns = list(row)
        self._run(
            f"MERGE {self._t(table)} T USING (SELECT {', '.join(f'@{c} AS {c}' for c in columns)}) S"
            f" ON T.{key} = S.{key} WHEN NOT MATCHED THEN INSERT ({', '.join(columns)})"
            f" VALUES ({', '.join('S.' + c for c in columns)})",
            [self._param(table, c, v) for c, v in row.items()],
        )

    def update_run(self, run_id, **fields):
        check_run_update(fields)
        if not fields:
            return
        sets = ", ".join(f"{k} = @{k}" for k in fields)
        params = [self._param("org_meta_pipeline_runs", k, v) for k, v in fields.items()]
        params.append(self._param("org_meta_pipeline_runs", "pipeline_logging_id", run_id))
        self._run(f"UPDATE {self._t('org_meta_pipeline_runs')} SET {sets} WHERE pipeline_logging_id = @pipeline_logging_id",
                  params)

    def get_run(self, run_id):
        rows = self._select("org_meta_pipeline_runs", "pipeline_logging_id = @id", {"id": ("pipeline_logging_id", run_id)})
        return rows[0] if rows else None

    def list_runs(self, org_slug=None, status=None, limit=50):
        where, params = ["TRUE"], {}
        if org_slug:
            where.append("org_slug = @org_slug")
            params["org_slug"] = ("org_slug", org_slug)
        if status:
            where.append("status = @status")
            params["status"] = ("status", status)
        return self._select("org_meta_pipeline_runs", " AND ".join(where), params,
                            order="created_at DESC, pipeline_logging_id", limit=limit)

    def reserve_run(self, run, daily_limit, since, dedupe_statuses=("QUEUED", "RUNNING")):
        row = dict(run)
        row.setdefault("created_at", utcnow())
        table = self._t("org_meta_pipeline_runs")
        columns = list(row)
        params = [self._param("org_meta_pipeline_runs", c, v) for c, v in row.items()]
        params += [self._bq.ArrayQueryParameter("dedupe", "STRING", list(dedupe_statuses)),
                   self._bq.ScalarQueryParameter("since", "TIMESTAMP", since),
                   self._bq.ScalarQueryParameter("daily_limit", "INT64", daily_limit)]
        rows = self._run(
            "BEGIN TRANSACTION;"
            f" DECLARE duplicate STRING DEFAULT (SELECT pipeline_logging_id FROM {table} WHERE org_slug = @org_slug"
            " AND pipeline_id = @pipeline_id AND start_date = @start_date AND end_date = @end_date"
            " AND status IN UNNEST(@dedupe) ORDER BY created_at LIMIT 1);"
            f" DECLARE used INT64 DEFAULT (SELECT COUNT(*) FROM {table} WHERE org_slug = @org_slug"
            " AND created_at >= @since AND trigger_type != 'scheduler');"
            " IF duplicate IS NULL AND (@daily_limit IS NULL OR used < @daily_limit) THEN"
            f"   INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('@' + c for c in columns)});"
            " END IF;"
            " COMMIT TRANSACTION;"
            " SELECT CASE WHEN duplicate IS NOT NULL THEN 'duplicate' WHEN @daily_limit IS NOT NULL"
            " AND used >= @daily_limit THEN 'quota' ELSE 'created' END AS outcome,"
            " COALESCE(duplicate, IF(@daily_limit IS NOT NULL AND used >= @daily_limit, NULL, @pipeline_logging_id)) AS run_id,"
            " used;",
            params,
        )
        result = rows[-1]
        return Reservation(result["outcome"], result["run_id"], int(result["used"] or 0))

    def fail_open_runs(self, reason, run_ids=None):
        if run_ids is not None and not run_ids:
            return []
        table = self._t("org_meta_pipeline_runs")
        scope = "" if run_ids is None else " AND pipeline_logging_id IN UNNEST(@ids)"
        params = [self._bq.ScalarQueryParameter("reason", "STRING", reason),
                  self._bq.ScalarQueryParameter("now", "TIMESTAMP", utcnow())]
        if run_ids is not None:
            params.append(self._bq.ArrayQueryParameter("ids", "STRING", list(run_ids)))
        rows = self._run(
            "BEGIN TRANSACTION;"
            f" CREATE TEMP TABLE open_runs AS SELECT pipeline_logging_id FROM {table}"
            f" WHERE status IN ('QUEUED', 'RUNNING'){scope};"
            f" UPDATE {table} SET status = 'FAILED', error_message = @reason, ended_at = @now"
            " WHERE pipeline_logging_id IN (SELECT pipeline_logging_id FROM open_runs);"
            " COMMIT TRANSACTION;"
            " SELECT pipeline_logging_id FROM open_runs;",
            params,
        )
        return [r["pipeline_logging_id"] for r in rows]

    def upsert_step_log(self, step):
        self._merge("org_meta_step_logs", "step_log_id", step)

    def list_steps(self, run_id):
        return self._select("org_meta_step_logs", "pipeline_logging_id = @id", {"id": ("pipeline_logging_id", run_id)},
                            order="started_at, step_id")

    def upsert_dq_result(self, result):
        self._merge("org_meta_dq_results", "dq_result_id", result)

    def list_dq_results(self, run_id):
        rows = self._select("org_meta_dq_results", "pipeline_logging_id = @id", {"id": ("pipeline_logging_id", run_id)},
                            order="dq_result_id")
        for row in rows:
            for key in ("kwargs", "observed_value"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
        return rows

