"""The production warehouse: each org's dataset ``{org}_{env}`` in BigQuery.

Write path, per org: each table's rows go to a staging table ``{dataset}._stg_{table}_{run_id}``
(one Parquet load job, ``WRITE_TRUNCATE``; the table expires by itself after a day), then one
script replaces the run's days of every table at once::

    DECLARE days_0 ARRAY<DATE> DEFAULT (SELECT ARRAY_AGG(DISTINCT usage_date) FROM staging_0);
    ...
    BEGIN TRANSACTION;
    MERGE target_0 T USING staging_0 S ON FALSE
      WHEN NOT MATCHED THEN INSERT (...) VALUES (...)
      WHEN NOT MATCHED BY SOURCE AND T.usage_date IN UNNEST(days_0) THEN DELETE;
    ...
    COMMIT TRANSACTION;

Each MERGE replaces exactly the days its staging table covers (a day the provider answered nothing
for is kept), and the transaction makes the org's tables change together or not at all. The script
carries no values: the days are read from the staging tables into variables declared first, as
BigQuery's procedural language requires. Staging tables are dropped after the commit and after a
failure. JSON columns are staged as STRING and parsed in the MERGE, so the load never depends on
how a Parquet string maps to JSON.

Why not Beam's ``WriteToBigQuery``: in Beam 2.77 its FILE_LOADS path waits for every load job in
``TriggerLoadJobs.finish_bundle`` and raises when one fails, which fails the bundle and then the
whole job. Owning the (one) load job per org and table is what lets a failed load fail that org
alone while the others commit.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipelines.bigquery import params as P
from beam_pipelines.bigquery.client import BigQueryRunner
from beam_pipelines.bigquery.sql import table_ref
from beam_pipelines.errors import WarehouseError
from beam_pipelines.warehouse.base import CommitError, DayStats, Staged, TableSpec, Warehouse

log = logging.getLogger(__name__)
STAGING_PREFIX = "_stg_"
STAGING_TTL = timedelta(days=1)


def staging_table(table: str, run_id: str) -> str:
    return f"{STAGING_PREFIX}{table}_{run_id}"


def bq_schema(spec: TableSpec, staging: bool = False) -> list:
    """SchemaFields from the table's JSON schema; in staging, JSON columns are STRING."""
    from google.cloud import bigquery

    def convert(field):
        kind = "STRING" if staging and field.type == "JSON" else field.type
        return bigquery.SchemaField(field.name, kind, mode=field.mode, description=field.description or None,
                                    fields=[convert(f) for f in field.fields])

    return [convert(f) for f in spec.schema.fields]


def merge_sql(target: str, staging: str, spec: TableSpec, days_var: str = "", scope_var: str = "") -> str:
    """The statement that replaces the staged days of one table (or, unpartitioned, the whole table)."""
    columns = spec.schema.names
    values = ", ".join(f"PARSE_JSON(S.{c})" if spec.schema.field(c).type == "JSON" else f"S.{c}" for c in columns)
    condition = ""
    if spec.partition_field is not None:
        condition = f" AND T.{spec.partition_field} IN UNNEST({days_var})"
        if spec.scope_field:
            condition += f" AND T.{spec.scope_field} = {scope_var}"
    return (f"MERGE {target} T USING {staging} S ON FALSE"
            f" WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) VALUES ({values})"
            f" WHEN NOT MATCHED BY SOURCE{condition} THEN DELETE")


def commit_script(refs: list[tuple[str, str, TableSpec]]) -> str:
    """One transaction replacing every staged table of an org: ``(target, staging, spec)`` each.

    The days (and the scope) each table replaces arrive as query parameters ``@days_<i>`` and
    ``@scope_<i>``, bound to variables declared first, as BigQuery's procedural language requires;
    the script itself carries no value. They are the run's days, not read back from the staging
    table, so a table can be cleared for a day its run produced no rows for (FOCUS for a day whose
    usage was all unpriced).
    """
    declarations, merges = [], []
    for index, (target, staging, spec) in enumerate(refs):
        if spec.partition_field is not None:
            declarations.append(f"DECLARE days_{index} ARRAY<DATE> DEFAULT @days_{index}")
            if spec.scope_field:
                declarations.append(f"DECLARE scope_{index} STRING DEFAULT @scope_{index}")
        merges.append(merge_sql(target, staging, spec, f"days_{index}", f"scope_{index}"))
    return ";\n".join([*declarations, "BEGIN TRANSACTION", *merges, "COMMIT TRANSACTION"]) + ";"


def commit_params(staged: list[Staged]) -> list:
    params = []
    for index, item in enumerate(staged):
        if item.spec.partition_field is not None:
            params.append(P.array(f"days_{index}", "DATE", list(item.days)))
            if item.spec.scope_field:
                params.append(P.scalar(f"scope_{index}", "STRING", item.scope))
    return params


class BigQueryWarehouse(Warehouse):
    kind = "bigquery"

    def __init__(self, project: str, location: str = "US", runner: BigQueryRunner | None = None):
        if not project:
            raise WarehouseError("GCP_PROJECT_ID: required for the BigQuery warehouse")
        self.project, self.location = project, location
        self.runner = runner or BigQueryRunner(project, location)
        self.client = self.runner.client
        self._ensured: set[tuple[str, str]] = set()
        self._datasets: set[str] = set()

    def _ref(self, dataset: str, table: str) -> str:
        return table_ref(self.project, dataset, table)

    def _id(self, dataset: str, table: str) -> str:
        return f"{self.project}.{dataset}.{table}"

    # datasets and tables --------------------------------------------------------------------------
    def ensure_dataset(self, dataset: str, description: str = "") -> None:
        from google.cloud import bigquery

        if dataset in self._datasets:
            return
        ds = bigquery.Dataset(f"{self.project}.{dataset}")
        ds.location = self.location
        if description:
            ds.description = description
        self.client.create_dataset(ds, exists_ok=True, retry=self.runner._api_retry)
        self._datasets.add(dataset)

    def ensure_table(self, dataset: str, spec: TableSpec) -> None:
        from google.cloud import bigquery

        if (dataset, spec.table) in self._ensured:
            return
        self.ensure_dataset(dataset)
        table = bigquery.Table(self._id(dataset, spec.table), schema=bq_schema(spec))
        if spec.partition_field:
            table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                                field=spec.partition_field)
        if spec.cluster_by:
            table.clustering_fields = list(spec.cluster_by)
        if spec.description:
            table.description = spec.description
        self.client.create_table(table, exists_ok=True, retry=self.runner._api_retry)
        self._ensured.add((dataset, spec.table))

    # two-phase writes -----------------------------------------------------------------------------
    def stage(self, dataset, spec, run_id, parts: Iterable[pa.Table], scope=None, ordered=False) -> Staged | None:
        from google.cloud import bigquery

        self.ensure_table(dataset, spec)
        fd, path = tempfile.mkstemp(prefix="convergence-stage-", suffix=".parquet")
        os.close(fd)
        rows, days, writer = 0, set(), None
        try:
            for part in parts:
                if not part.num_rows:
                    continue
                if spec.partition_field:
                    days.update(pc.unique(part.column(spec.partition_field)).to_pylist())
                if writer is None:
                    writer = pq.ParquetWriter(path, part.schema, compression="zstd")
                writer.write_table(part)
                rows += part.num_rows
            if writer is not None:
                writer.close()
            if not rows:
                return None
            staging_id = self._create_staging(dataset, spec, run_id)
            config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                                            schema=bq_schema(spec, staging=True))
            with open(path, "rb") as fh:
                job = self.client.load_table_from_file(fh, staging_id, job_config=config, location=self.location)
            job.result(retry=self.runner._api_retry, timeout=self.runner._timeout)
        except Exception:
            with contextlib.suppress(Exception):
                self.discard(dataset, run_id, only=spec.table)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return Staged(dataset, spec.table, run_id, tuple(sorted(days)), rows, scope, staging_id, spec)

    def stage_empty(self, dataset, spec, run_id, scope=None) -> Staged:
        self.ensure_table(dataset, spec)
        return Staged(dataset, spec.table, run_id, (), 0, scope, self._create_staging(dataset, spec, run_id), spec)

    def _create_staging(self, dataset: str, spec: TableSpec, run_id: str) -> str:
        """The run's staging table for ``spec`` (JSON as STRING; it expires by itself within a day)."""
        from google.cloud import bigquery

        staging_id = self._id(dataset, staging_table(spec.table, run_id))
        table = bigquery.Table(staging_id, schema=bq_schema(spec, staging=True))
        table.expires = datetime.now(timezone.utc) + STAGING_TTL
        self.client.create_table(table, exists_ok=True, retry=self.runner._api_retry)
        return staging_id

    def commit(self, staged: list[Staged]) -> list[str]:
        """Every staged table of the org in one transaction: all replaced, or none."""
        if not staged:
            return []
        self.commit_dataset(staged)
        refs = [(self._ref(s.dataset, s.table), self._ref(s.dataset, staging_table(s.table, s.run_id)), s.spec)
                for s in staged]
        tables = [s.table for s in staged]
        try:
            self.runner.run(commit_script(refs), commit_params(staged))
        except Exception as exc:
            raise CommitError(f"commit of {', '.join(tables)} failed: {getattr(exc, 'message', exc)}", [],
                              tables) from exc
        for item in staged:
            self._drop(item.dataset, staging_table(item.table, item.run_id))
        return tables

    def _drop(self, dataset: str, table: str) -> None:
        try:
            self.client.delete_table(self._id(dataset, table), not_found_ok=True, retry=self.runner._api_retry)
        except Exception as exc:  # it expires by itself within a day
            log.warning("could not drop staging table %s.%s: %s", dataset, table, type(exc).__name__)

    def _staging_tables(self, dataset: str, run_id: str) -> list[str]:
        from google.api_core.exceptions import NotFound

        try:
            listed = list(self.client.list_tables(f"{self.project}.{dataset}", retry=self.runner._api_retry))
        except NotFound:
            return []
        suffix = f"_{run_id}"
        return sorted(t.table_id for t in listed if t.table_id.startswith(STAGING_PREFIX) and t.table_id.endswith(suffix))

    def pending(self, dataset: str, run_id: str) -> list[str]:
        return [t[len(STAGING_PREFIX):-len(run_id) - 1] for t in self._staging_tables(dataset, run_id)]

    def discard(self, dataset: str, run_id: str, only: str | None = None) -> list[str]:
        dropped = []
        for name in self._staging_tables(dataset, run_id):
            table = name[len(STAGING_PREFIX):-len(run_id) - 1]
            if only is None or table == only:
                self._drop(dataset, name)
                dropped.append(table)
        return dropped

    def replace_table(self, dataset: str, spec: TableSpec, rows: pa.Table) -> int:
        run_id = f"replace{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S%f')}"
        staged = self.stage(dataset, spec, run_id, [rows])
        if staged is None:
            self.ensure_table(dataset, spec)
            self.runner.run(f"TRUNCATE TABLE {self._ref(dataset, spec.table)}")
            return 0
        self.commit([staged])
        return staged.rows

    # reads ----------------------------------------------------------------------------------------
    def _exists(self, dataset: str, table: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_table(self._id(dataset, table), retry=self.runner._api_retry)
            return True
        except NotFound:
            return False

    def day_stats(self, dataset, spec, days, total_column, scope=None) -> dict[date, DayStats]:
        if not days or not self._exists(dataset, spec.table):
            return {}
        pf = spec.partition_field
        total = f"SUM({total_column})" if total_column else "NULL"
        where = f"{pf} IN UNNEST(@days)" + (f" AND {spec.scope_field} = @scope" if spec.scope_field else "")
        params = [P.array("days", "DATE", days)] + ([P.scalar("scope", "STRING", scope)] if spec.scope_field else [])
        result = self.runner.run(f"SELECT {pf} AS day, COUNT(*) AS n, {total} AS total FROM"
                                 f" {self._ref(dataset, spec.table)} WHERE {where} GROUP BY day", params)
        return {r["day"]: DayStats(int(r["n"]), r["total"]) for r in result.rows}

    def days_written_by(self, dataset, spec, run_id, start, end) -> list[date]:
        if spec.partition_field is None or not self._exists(dataset, spec.table):
            return []
        pf = spec.partition_field
        result = self.runner.run(f"SELECT DISTINCT {pf} AS day FROM {self._ref(dataset, spec.table)}"
                                 f" WHERE {pf} BETWEEN @start AND @end AND {spec.run_field} = @run_id ORDER BY day",
                                 [P.scalar("run_id", "STRING", run_id), P.scalar("start", "DATE", start),
                                  P.scalar("end", "DATE", end)])
        return [r["day"] for r in result.rows]

    def has_table(self, dataset: str, table: str) -> bool:
        return self._exists(dataset, table)

    def read_days(self, dataset, spec, start, end) -> Iterator[pa.Table]:
        from google.cloud import bigquery

        if not self._exists(dataset, spec.table):
            return
        pf = spec.partition_field
        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("start", "DATE", start),
                                                           bigquery.ScalarQueryParameter("end", "DATE", end)])
        job = self.client.query(f"SELECT * FROM {self._ref(dataset, spec.table)} WHERE {pf} BETWEEN @start AND @end",
                                job_config=config, location=self.location, retry=self.runner._api_retry)
        for part in job.result(retry=self.runner._api_retry).to_arrow_iterable(bqstorage_client=None):
            if part.num_rows:
                yield pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part

    def read_table(self, dataset: str, table: str) -> pa.Table | None:
        if not self._exists(dataset, table):
            return None
        result = self.client.query(f"SELECT * FROM {self._ref(dataset, table)}", location=self.location,
                                   retry=self.runner._api_retry).result(retry=self.runner._api_retry)
        rows = result.to_arrow(create_bqstorage_client=False)
        return rows if rows.num_rows else None

    def query(self, sql: str, params: dict | None = None) -> tuple[list[str], list[tuple]]:
        from google.api_core.exceptions import GoogleAPICallError
        from google.cloud import bigquery

        bound = [bigquery.ScalarQueryParameter(k, _infer(v), v) for k, v in (params or {}).items()]
        try:
            job = self.client.query(sql, job_config=bigquery.QueryJobConfig(
                query_parameters=bound, default_dataset=None), location=self.location, retry=self.runner._api_retry)
            result = job.result(retry=self.runner._api_retry)
        except GoogleAPICallError as exc:
            raise WarehouseError(f"query failed: {exc.message}") from None
        columns = [f.name for f in result.schema]
        return columns, [tuple(row.values()) for row in result]


def _infer(value) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    if isinstance(value, date):
        return "DATE"
    return "STRING"
