"""The metastore interface, shared by the embedded (SQLite) and production (BigQuery) stores.

A :class:`MetastoreSpec` is what travels into the job graph: a path or a project id, never a
connection or a credential. Workers open the store from it in ``setup``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import date, datetime, timezone

ELIGIBLE_SUBSCRIPTIONS = ("ACTIVE", "TRIAL")
SUBSCRIPTION_STATUSES = ("ACTIVE", "TRIAL", "SUSPENDED", "CANCELLED")
RUN_STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED")
TERMINAL_STATUSES = ("COMPLETED", "FAILED")


@dataclass(frozen=True)
class Reservation:
    outcome: str  # "created" | "duplicate" | "quota"
    run_id: str | None = None  # the created run, or the duplicate it collided with
    used: int = 0  # runs already counted against the quota


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class MetastoreSpec:
    kind: str  # "sqlite" | "bigquery"
    path: str = ""
    configs_dir: str = ""
    project: str = ""
    dataset: str = "organizations"

    @classmethod
    def from_settings(cls, settings) -> MetastoreSpec:
        if settings.metastore == "bigquery":
            return cls(kind="bigquery", configs_dir=str(settings.configs_dir), project=settings.gcp_project)
        return cls(kind="sqlite", path=str(settings.metastore_path), configs_dir=str(settings.configs_dir))

    def open(self) -> Metastore:
        from pathlib import Path

        if self.kind == "bigquery":
            from beam_pipelines.metastore.bigquery import BigQueryMetastore

            return BigQueryMetastore(self.project, Path(self.configs_dir), self.dataset)
        from beam_pipelines.metastore.sqlite import SQLiteMetastore

        return SQLiteMetastore(Path(self.path), Path(self.configs_dir))


RUN_UPDATABLE = frozenset({"status", "rows_written", "error_message", "runner", "job_id", "started_at", "ended_at",
                           "duration_ms"})


def check_run_update(fields: dict) -> None:
    """Only a run's outcome may change; who, what and when it was asked for never do."""
    unknown = set(fields) - RUN_UPDATABLE
    if unknown:
        raise ValueError(f"cannot update run fields {sorted(unknown)}")


class Metastore(abc.ABC):
    """Rows are plain dicts keyed by the column names of the JSON schemas in configs/system/."""

    # orgs, keys, subscriptions, quotas
    @abc.abstractmethod
    def upsert_org(self, org_slug: str, company_name: str = "", admin_email: str = "") -> None: ...

    @abc.abstractmethod
    def get_org(self, org_slug: str) -> dict | None: ...

    @abc.abstractmethod
    def add_api_key(self, org_slug: str, key_hash: str, expires_at: datetime | None = None,
                    revoke_others: bool = False) -> str: ...

    @abc.abstractmethod
    def find_api_key(self, key_hash: str, now: datetime | None = None) -> dict | None:
        """The active, unexpired key row with this SHA-256 hash, or None."""

    @abc.abstractmethod
    def set_subscription(self, org_slug: str, status: str, plan_name: str = "STARTER",
                         trial_ends_at: date | None = None) -> None: ...

    @abc.abstractmethod
    def get_subscription(self, org_slug: str) -> dict | None: ...

    @abc.abstractmethod
    def set_daily_quota(self, org_slug: str, limit: int) -> None: ...

    @abc.abstractmethod
    def get_daily_quota(self, org_slug: str) -> int | None: ...

    # credentials
    @abc.abstractmethod
    def put_credential(self, org_slug: str, provider: str, credential_type: str, ciphertext: bytes,
                       cipher: str, metadata: dict | None = None) -> str: ...

    @abc.abstractmethod
    def get_credential(self, org_slug: str, provider: str) -> dict | None:
        """The active credential row (ciphertext included) or None."""

    @abc.abstractmethod
    def eligible_orgs(self, provider: str, today: date) -> list[str]:
        """Orgs with an ACTIVE or unexpired TRIAL subscription and an active credential."""

    # runs
    @abc.abstractmethod
    def create_run(self, run: dict) -> None: ...

    @abc.abstractmethod
    def update_run(self, run_id: str, **fields) -> None: ...

    @abc.abstractmethod
    def get_run(self, run_id: str) -> dict | None: ...

    @abc.abstractmethod
    def list_runs(self, org_slug: str | None = None, status: str | None = None,
                  limit: int = 50) -> list[dict]: ...

    @abc.abstractmethod
    def reserve_run(self, run: dict, daily_limit: int | None, since: datetime,
                    dedupe_statuses: tuple[str, ...] = ("QUEUED", "RUNNING")) -> Reservation:
        """Atomically: refuse a duplicate (same org, pipeline, dates in ``dedupe_statuses``), then
        refuse when the org already created ``daily_limit`` runs since ``since``, else insert ``run``."""

    @abc.abstractmethod
    def fail_open_runs(self, reason: str, run_ids: list[str] | None = None) -> list[str]:
        """Mark QUEUED/RUNNING runs (all, or those listed) FAILED with ``reason``; returns their ids."""

    @abc.abstractmethod
    def upsert_step_log(self, step: dict) -> None:
        """Insert or replace by ``step_log_id``: a retried write never duplicates a step row."""

    @abc.abstractmethod
    def list_steps(self, run_id: str) -> list[dict]: ...

    @abc.abstractmethod
    def upsert_dq_result(self, result: dict) -> None:
        """Insert or replace by ``dq_result_id``."""

    @abc.abstractmethod
    def list_dq_results(self, run_id: str) -> list[dict]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
