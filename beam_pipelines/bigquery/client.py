"""One way to reach BigQuery: the client factory and a retrying statement runner.

``BIGQUERY_EMULATOR_HOST`` (which google-cloud-bigquery itself honours) points every client at a
local emulator; then anonymous credentials are used, since an emulator checks none. Every job runs
in ``BIGQUERY_LOCATION`` (default ``US``).

Retries: the library already retries HTTP 5xx and rate limits of each API call. What it does not
retry are the DML conflicts BigQuery documents for concurrent mutating statements ("Could not
serialize access to table ... due to concurrent update", "Transaction is aborted due to concurrent
update") and per-table DML rate limits; those are retried here with exponential backoff and full
jitter, so concurrent writers spread out instead of colliding again in step.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from beam_pipelines.bigquery.sql import check_statement

log = logging.getLogger(__name__)

RETRYABLE_MESSAGES = ("could not serialize access", "concurrent update", "rate limits exceeded",
                      "exceeded rate limits", "too many dml statements", "resources exceeded during query execution")
RETRYABLE_REASONS = {"rateLimitExceeded", "backendError", "internalError", "jobRateLimitExceeded"}


def emulator_host() -> str:
    return os.environ.get("BIGQUERY_EMULATOR_HOST", "").strip()


def make_client(project: str, location: str = "US"):
    """A google.cloud.bigquery.Client for ``project`` in ``location``, or the emulator's."""
    from google.cloud import bigquery

    if emulator_host():
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project, location=location, credentials=AnonymousCredentials())
    return bigquery.Client(project=project, location=location)


def is_retryable(exc: BaseException) -> bool:
    from google.api_core import exceptions as google_errors

    if isinstance(exc, (google_errors.TooManyRequests, google_errors.InternalServerError,
                        google_errors.ServiceUnavailable, google_errors.BadGateway)):
        return True
    if isinstance(exc, google_errors.GoogleAPICallError):
        reasons = {e.get("reason") for e in (exc.errors or []) if isinstance(e, dict)}
        return bool(reasons & RETRYABLE_REASONS) or any(m in str(exc.message).lower() for m in RETRYABLE_MESSAGES)
    return False


@dataclass
class QueryResult:
    rows: list[dict]
    affected: int | None = None  # rows changed by a DML statement


class BigQueryRunner:
    """Runs checked, parameterised statements with retries; rows come back as plain dicts."""

    def __init__(self, project: str, location: str = "US", client=None, attempts: int | None = None,
                 api_deadline: float | None = None):
        self.project, self.location = project, location
        self.client = client or make_client(project, location)
        self.attempts = attempts or int(os.environ.get("BIGQUERY_DML_ATTEMPTS", "6"))
        deadline = api_deadline or float(os.environ.get("BIGQUERY_RETRY_DEADLINE_SECONDS", "600"))
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

        self._api_retry = DEFAULT_RETRY.with_deadline(deadline)
        self._job_retry = DEFAULT_JOB_RETRY.with_deadline(deadline)
        self._timeout = min(deadline, 300.0)

    def job_config(self, params=(), dry_run: bool = False):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(query_parameters=list(params), dry_run=dry_run, use_query_cache=False)

    def run(self, sql: str, params=(), job_id: str | None = None) -> QueryResult:
        """Run one statement. With ``job_id`` the job is submitted exactly once (no retry under that id)."""
        check_statement(sql)
        if job_id is not None:
            return self._once(sql, params, job_id)
        retrying = Retrying(stop=stop_after_attempt(self.attempts), wait=wait_random_exponential(multiplier=0.5, max=20),
                            retry=retry_if_exception(is_retryable), reraise=True,
                            before_sleep=lambda s: log.warning("BigQuery statement retried (%s): %s", s.attempt_number,
                                                               type(s.outcome.exception()).__name__))
        return retrying(self._once, sql, params, None)

    def _once(self, sql: str, params, job_id: str | None) -> QueryResult:
        job = self.client.query(sql, job_config=self.job_config(params), job_id=job_id, location=self.location,
                                retry=self._api_retry, job_retry=None if job_id else self._job_retry,
                                timeout=self._timeout)
        rows = [dict(row.items()) for row in job.result(retry=self._api_retry, timeout=self._timeout)]
        return QueryResult(rows, job.num_dml_affected_rows)

    def dry_run(self, sql: str, params=()) -> None:
        """Validate a statement against the service without running it (costs nothing)."""
        check_statement(sql)
        self.client.query(sql, job_config=self.job_config(params, dry_run=True), location=self.location,
                          retry=self._api_retry, timeout=self._timeout)

    def get_job(self, job_id: str):
        return self.client.get_job(job_id, location=self.location, retry=self._api_retry, timeout=self._timeout)
