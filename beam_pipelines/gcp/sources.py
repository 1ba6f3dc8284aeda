"""Where an org's billing export is read from: BigQuery (production) or a local Parquet twin.

Both stream the requested days in batches, so memory stays bounded by the batch size.

BigQuery: the export table is day-partitioned by ingestion time, so the query filters the
``_PARTITIONTIME`` pseudo-column from the first requested day on (a row can only be exported on
or after its usage day, and late rows keep arriving after it) as well as ``usage_start_time``.
Dates are query parameters; the table id cannot be one in BigQuery, so it is validated against
the export's naming rule and quoted, never taken verbatim.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from beam_pipelines.errors import ConvergenceError, ProviderError

EXPORT_TABLE = re.compile(
    r"^(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.(?P<dataset>[A-Za-z0-9_]{1,1024})"
    r"\.(?P<table>gcp_billing_export(_resource)?_v1_[A-Za-z0-9_]{1,200})$"
)


def _bounds(start: date, end_inclusive: date) -> tuple[datetime, datetime]:
    return (datetime.combine(start, time.min, timezone.utc),
            datetime.combine(end_inclusive + timedelta(days=1), time.min, timezone.utc))


class LocalExportSource:
    """A Parquet file or folder in the standard export schema (the embedded twin)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def batches(self, start: date, end_inclusive: date, page_rows: int) -> Iterator[pa.Table]:
        if not self.path.exists():
            raise ProviderError("gcp", f"billing export {self.path.name} not found")
        low, high = _bounds(start, end_inclusive)
        try:
            dataset = ds.dataset(self.path, format="parquet")
            if "usage_start_time" not in dataset.schema.names:
                raise ProviderError("gcp", f"billing export {self.path.name} lacks usage_start_time")
            column = ds.field("usage_start_time")
            for batch in dataset.to_batches(filter=(column >= low) & (column < high), batch_size=page_rows,
                                            batch_readahead=1, fragment_readahead=1):
                if batch.num_rows:
                    yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
            raise ProviderError("gcp", f"malformed billing export {self.path.name}: {str(exc).splitlines()[0]}") from None


class BigQueryExportSource:
    """The customer's export table, read with the org's credential (a key, or the worker's identity)."""

    def __init__(self, table_id: str, credentials, project: str | None, api_endpoint: str | None = None,
                 pattern: re.Pattern = EXPORT_TABLE):
        match = pattern.match(table_id or "")
        if not match:
            raise ConvergenceError(f"billing export table {table_id!r}: expected project.dataset.gcp_billing_export_v1_XXXX")
        self.table_id = table_id
        self._credentials = credentials
        self._project = project or match.group("project")
        self._endpoint = api_endpoint

    def query(self) -> str:
        project, dataset, table = self.table_id.split(".")
        return (
            f"SELECT * FROM `{project}.{dataset}.{table}`"
            " WHERE DATE(_PARTITIONTIME) >= @partition_start"
            " AND usage_start_time >= @usage_start AND usage_start_time < @usage_end"
        )

    def client(self):
        from google.cloud import bigquery

        options = {"api_endpoint": self._endpoint} if self._endpoint else None
        return bigquery.Client(project=self._project, credentials=self._credentials, client_options=options)

    def batches(self, start: date, end_inclusive: date, page_rows: int) -> Iterator[pa.Table]:
        from google.api_core import exceptions as google_errors
        from google.cloud import bigquery

        low, high = _bounds(start, end_inclusive)
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter("partition_start", "DATE", start),
            bigquery.ScalarQueryParameter("usage_start", "TIMESTAMP", low),
            bigquery.ScalarQueryParameter("usage_end", "TIMESTAMP", high),
        ])
        client = self.client()
        try:
            rows = client.query(self.query(), job_config=config).result(page_size=page_rows)
            for batch in rows.to_arrow_iterable(bqstorage_client=None):
                if batch.num_rows:
                    yield pa.Table.from_batches([batch])
        except google_errors.GoogleAPICallError as exc:
            raise ProviderError("gcp", f"BigQuery: {exc.message}", getattr(exc, "code", None)) from None
        finally:
            client.close()


def export_source(credential, api_endpoint: str | None = None, job_project: str | None = None,
                  pattern: re.Pattern = EXPORT_TABLE):
    """The org's export as its credential's metadata names it: a local Parquet twin or a BigQuery table."""
    metadata = credential.metadata or {}
    if metadata.get("billing_export_path"):
        return LocalExportSource(metadata["billing_export_path"])
    if metadata.get("billing_export_table"):
        from beam_pipelines.gcp.credentials import google_credentials

        credentials, project = google_credentials(credential)
        return BigQueryExportSource(metadata["billing_export_table"], credentials, job_project or project, api_endpoint,
                                    pattern)
    raise ConvergenceError("gcp integration names no billing export (billing_export_table or billing_export_path)")
