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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipelines.errors import ConvergenceError, ProviderError

READ_BUFFER = 1 << 20  # bytes read from the file at a time (column chunks are streamed, not pre-buffered)
EXPORT_TABLE = re.compile(
    r"^(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.(?P<dataset>[A-Za-z0-9_]{1,1024})"
    r"\.(?P<table>gcp_billing_export(_resource)?_v1_[A-Za-z0-9_]{1,200})$"
)


def _bounds(start: date, end_inclusive: date) -> tuple[datetime, datetime]:
    return (datetime.combine(start, time.min, timezone.utc),
            datetime.combine(end_inclusive + timedelta(days=1), time.min, timezone.utc))


class LocalExportSource:
    """A Parquet file or folder in the standard export schema (the embedded twin).

    Read file by file and row group by row group (``ParquetFile.iter_batches``), skipping row groups
    whose ``usage_start_time`` statistics lie outside the days: memory holds one batch and one row
    group's pages, never the scanner's read-ahead of several row groups and files (a dataset scan
    with default read-ahead held ~0.6 GB of a 2M-row day).
    """

    def __init__(self, path: str):
        self.path = Path(path)

    def files(self) -> list[str]:
        if not self.path.exists():
            raise ProviderError("gcp", f"billing export {self.path.name} not found")
        if self.path.is_dir():  # as a dataset would list them: hidden and underscore files are not data
            return sorted(str(p) for p in self.path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
        return [str(self.path)]

    def batches(self, start: date, end_inclusive: date, page_rows: int) -> Iterator[pa.Table]:
        low, high = _bounds(start, end_inclusive)
        for name in self.files():
            try:
                yield from self._file_batches(name, low, high, page_rows)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
                raise ProviderError("gcp", f"malformed billing export {self.path.name}: {str(exc).splitlines()[0]}") from None

    def _file_batches(self, name: str, low: datetime, high: datetime, page_rows: int) -> Iterator[pa.Table]:
        parquet = pq.ParquetFile(name, pre_buffer=False, buffer_size=READ_BUFFER)
        if "usage_start_time" not in parquet.schema_arrow.names:
            raise ProviderError("gcp", f"billing export {self.path.name} lacks usage_start_time")
        groups = [i for i in range(parquet.num_row_groups) if _may_hold(parquet.metadata.row_group(i), low, high)]
        if not groups:
            return
        for batch in parquet.iter_batches(batch_size=page_rows, row_groups=groups):
            column = batch.column("usage_start_time")
            if column.type.tz is None:
                column = pc.assume_timezone(column, "UTC")
            inside = pc.and_(pc.greater_equal(column, pa.scalar(low, column.type)), pc.less(column, pa.scalar(high, column.type)))
            rows = batch.filter(inside)
            if rows.num_rows:
                yield pa.Table.from_batches([rows])


def _may_hold(group, low: datetime, high: datetime) -> bool:
    """Whether a row group's ``usage_start_time`` statistics overlap [low, high) (unknown: it may)."""
    for i in range(group.num_columns):
        column = group.column(i)
        if column.path_in_schema != "usage_start_time":
            continue
        stats = column.statistics
        if stats is None or not stats.has_min_max:
            return True
        least, most = (v if v.tzinfo else v.replace(tzinfo=timezone.utc) for v in (stats.min, stats.max))
        return least < high and most >= low
    return True


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
