"""The metastore interface, shared by the embedded (SQLite) and production (BigQuery) stores.

A :class:`MetastoreSpec` is what travels into the job graph: a path or a project id, never a
connection or a credential. Workers open the store from it in ``setup``.

Both stores return the same Python types: ``date`` for DATE columns, aware ``datetime`` (UTC) for
TIMESTAMP, ``bool``, ``int``, ``bytes``, parsed JSON, ``list`` for REPEATED. A shared contract test
runs the same cases on both.

Runs have an owner and a lease. Whoever creates or runs a run holds it (``owner_id``) and keeps
renewing ``lease_expires_at`` while it lives; an open run whose lease has passed belongs to a dead
owner, never blocks a new run, and is closed as FAILED by the next process that looks (see
:mod:`beam_pipelines.runs.reaper`).
"""
from __future__ import annotations

import abc
import hashlib
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

ELIGIBLE_SUBSCRIPTIONS = ("ACTIVE", "TRIAL")
SUBSCRIPTION_STATUSES = ("ACTIVE", "TRIAL", "SUSPENDED", "EXPIRED", "CANCELLED")
OPEN_STATUSES = ("QUEUED", "RUNNING")
RUN_STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED")
TERMINAL_STATUSES = ("COMPLETED", "FAILED")
API_KEY_SCOPES = ("pipelines:run", "pipelines:read")


def lease_seconds() -> float:
    """How long an owner's silence is tolerated (``CONVERGENCE_LEASE_SECONDS``, default 120)."""
    return float(os.environ.get("CONVERGENCE_LEASE_SECONDS", "120"))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def lease_until(now: datetime | None = None, seconds: float | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=lease_seconds() if seconds is None else seconds)


def run_key(org_slug: str, config_path: str, start: date, end: date) -> str:
    """The same run asked twice (org, pipeline config, days) has the same key."""
    text = "|".join((org_slug, config_path, start.isoformat(), end.isoformat()))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def pipeline_display_id(org_slug: str, config_path: str) -> str:
    """``{org}-{provider}-{pipeline}`` in kebab case, as the onboarding service names runs."""
    provider, _, name = config_path.split("/")
    return f"{org_slug}-{provider}-{name}".replace("_", "-")


@dataclass(frozen=True)
class Reservation:
    outcome: str  # "created" | "duplicate" | "quota"
    run_id: str | None = None  # the created run, or the duplicate it collided with
    used: int = 0  # runs already counted against the quota


@dataclass(frozen=True)
class MetastoreSpec:
    kind: str  # "sqlite" | "bigquery"
    path: str = ""
    configs_dir: str = ""
    project: str = ""
    location: str = "US"

    @classmethod
    def from_settings(cls, settings) -> MetastoreSpec:
        if settings.metastore == "bigquery":
            return cls(kind="bigquery", configs_dir=str(settings.configs_dir), project=settings.gcp_project,
                       location=settings.bigquery_location)
        return cls(kind="sqlite", path=str(settings.metastore_path), configs_dir=str(settings.configs_dir))

    def open(self) -> Metastore:
        from pathlib import Path

        if self.kind == "bigquery":
            from beam_pipelines.metastore.bigquery import BigQueryMetastore

            return BigQueryMetastore(self.project, Path(self.configs_dir), location=self.location)
        from beam_pipelines.metastore.sqlite import SQLiteMetastore

        return SQLiteMetastore(Path(self.path), Path(self.configs_dir))


RUN_UPDATABLE = frozenset({"status", "rows_written", "error_message", "runner", "job_id", "started_at", "ended_at",
                           "duration_ms", "owner_id", "lease_expires_at", "outcome"})


def check_run_update(fields: dict) -> None:
    """Only a run's outcome may change; who, what and when it was asked for never do."""
    unknown = set(fields) - RUN_UPDATABLE - {"pipeline_logging_id"}
    if unknown:
        raise ValueError(f"cannot update run fields {sorted(unknown)}")


def new_run(run_id: str, org_slug: str, config_path: str, start: date, end: date, status: str, trigger: str,
            runner: str, owner_id: str, now: datetime | None = None, lease: datetime | None = None) -> dict:
    """A run record with its derived ids; every entry point builds runs this way."""
    now = now or utcnow()
    return {"pipeline_logging_id": run_id, "org_slug": org_slug,
            "pipeline_id": pipeline_display_id(org_slug, config_path), "config_path": config_path,
            "run_key": run_key(org_slug, config_path, start, end), "status": status, "trigger_type": trigger,
            "start_date": start, "end_date": end, "runner": runner, "owner_id": owner_id,
            "lease_expires_at": lease or lease_until(now), "created_at": now,
            "started_at": now if status == "RUNNING" else None}


class Metastore(abc.ABC):
    """Rows are plain dicts keyed by the column names of the JSON schemas in configs/system/."""

    # orgs, keys, subscriptions, quotas (written by the onboarding service in production) ----------
    @abc.abstractmethod
    def upsert_org(self, org_slug: str, company_name: str = "", admin_email: str = "") -> None: ...

    @abc.abstractmethod
    def get_org(self, org_slug: str) -> dict | None: ...

    @abc.abstractmethod
    def add_api_key(self, org_slug: str, key_hash: str, expires_at: datetime | None = None,
                    revoke_others: bool = False, encrypted_api_key: bytes | None = None) -> str: ...

    @abc.abstractmethod
    def find_api_key(self, key_hash: str, now: datetime | None = None) -> dict | None:
        """The active, unexpired key row with this SHA-256 hash, or None."""

    @abc.abstractmethod
    def set_subscription(self, org_slug: str, status: str, plan_name: str = "STARTER",
                         trial_end_date: date | None = None) -> None: ...

    @abc.abstractmethod
    def get_subscription(self, org_slug: str) -> dict | None:
        """The org's current subscription row (the latest, if onboarding keeps several)."""

    @abc.abstractmethod
    def set_daily_quota(self, org_slug: str, limit: int) -> None: ...

    @abc.abstractmethod
    def get_daily_quota(self, org_slug: str) -> int | None: ...

    # credentials: ``integration`` is the onboarding service's name (OPENAI, CLAUDE, GCP_SA) ---------
    @abc.abstractmethod
    def put_credential(self, org_slug: str, integration: str, credential_type: str, ciphertext: bytes,
                       metadata: dict | None = None) -> str: ...

    @abc.abstractmethod
    def get_credential(self, org_slug: str, integration: str) -> dict | None:
        """The active credential row (ciphertext included; the latest if there are several) or None."""

    @abc.abstractmethod
    def eligible_orgs(self, integration: str, today: date) -> list[str]:
        """Orgs with an ACTIVE or unexpired TRIAL subscription and an active credential."""

    # runs ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_runs(self, runs: list[dict]) -> None:
        """Insert runs created by their own process (the CLI); ids are fresh, so nothing to dedupe."""

    @abc.abstractmethod
    def reserve_run(self, run: dict, daily_limit: int | None, since: datetime,
                    dedupe_statuses: tuple[str, ...] = OPEN_STATUSES) -> Reservation:
        """Insert ``run`` unless a run with its ``run_key`` is in ``dedupe_statuses`` (an open one only
        while its lease holds), or the org already created ``daily_limit`` runs since ``since``."""

    @abc.abstractmethod
    def reserve_runs(self, runs: list[dict], dedupe_statuses: tuple[str, ...]) -> list[str]:
        """The scheduler's batch: insert every run whose key is not taken, in one statement; returns
        the ids inserted."""

    @abc.abstractmethod
    def update_run(self, run_id: str, **fields) -> None: ...

    @abc.abstractmethod
    def close_runs(self, updates: list[dict], expired_before: datetime | None = None) -> list[str]:
        """Apply each update (``pipeline_logging_id`` + outcome fields) in one write; with
        ``expired_before``, only to runs still open whose lease ended before it. Returns the ids changed."""

    @abc.abstractmethod
    def renew_leases(self, run_ids: list[str], owner_id: str, until: datetime) -> int:
        """Take or extend the lease of the open runs listed; returns how many were renewed."""

    @abc.abstractmethod
    def expired_runs(self, now: datetime, limit: int = 500) -> list[dict]:
        """Open runs whose lease has passed (their owner is gone)."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> dict | None: ...

    @abc.abstractmethod
    def get_runs(self, run_ids: list[str]) -> dict[str, dict]:
        """The runs that exist among ``run_ids``, by id, in one read (a job reads back a fleet's runs)."""

    @abc.abstractmethod
    def list_runs(self, org_slug: str | None = None, status: str | None = None,
                  limit: int = 50) -> list[dict]: ...

    def fail_open_runs(self, reason: str, run_ids: list[str]) -> list[str]:
        """Close the listed runs that are still open as FAILED with ``reason`` (their owner says so)."""
        now = utcnow()
        found = self.get_runs(run_ids)
        open_ids = [i for i in dict.fromkeys(run_ids) if i in found and found[i]["status"] in OPEN_STATUSES]
        return self.close_runs([{"pipeline_logging_id": i, "status": "FAILED", "error_message": reason,
                                 "ended_at": now} for i in open_ids])

    # step logs and data-quality results ------------------------------------------------------------
    @abc.abstractmethod
    def upsert_step_logs(self, steps: list[dict]) -> None:
        """Insert or replace by ``step_log_id``, all in one write: a retry never duplicates a row."""

    @abc.abstractmethod
    def list_steps(self, run_id: str) -> list[dict]: ...

    @abc.abstractmethod
    def upsert_dq_results(self, results: list[dict]) -> None:
        """Insert or replace by ``dq_result_id``, all in one write."""

    @abc.abstractmethod
    def list_dq_results(self, run_id: str) -> list[dict]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
