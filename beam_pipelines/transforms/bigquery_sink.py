"""The production load: Beam's ``WriteToBigQuery`` with FILE_LOADS into day-partition decorators.

Every row goes to ``{project}:{org}_{env}.{table}${YYYYMMDD}`` with ``WRITE_TRUNCATE``, so a
re-run replaces each (org, table, day) partition instead of appending. The schema comes from the
table's JSON file; day partitioning on ``usage_date`` and clustering travel in
``additional_bq_parameters`` (Beam issue #34571: clustering is only applied that way).

Why this cannot lose or duplicate a partition (Beam issues #23306, #24535, #23670): with
WRITE_TRUNCATE, Beam 2.77 groups every temp-table copy job of one destination into one element
(``GroupByKey`` on the table id, the fix for #24535), so only the first copy truncates and the
rest append; temp tables are deleted only after the copy jobs report (side input on the copy
output). A destination is one day of one org, so truncation never reaches another day or org.
Two things Beam cannot know are done here: days of the run with no rows get their partition
deleted (no element would reach the sink, leaving stale rows), and orgs that failed upstream are
filtered out before the sink, so nothing of theirs is written.
"""
from __future__ import annotations

import math
from datetime import date, datetime

import apache_beam as beam
import pandas as pd
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery

from beam_pipelines.config.schema import load_schema
from beam_pipelines.transforms.elements import OrgBatch, StagedRows, WorkItem
from beam_pipelines.transforms.step import StepTransform


def json_row(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
            out[key] = None
        elif isinstance(value, (datetime, pd.Timestamp)):
            out[key] = value.isoformat()
        elif isinstance(value, date):
            out[key] = value.isoformat()
        elif hasattr(value, "item"):
            out[key] = value.item()
        else:
            out[key] = value
    return out


def batch_rows(batch: OrgBatch, failed_runs):
    if batch.run_id in set(failed_runs):
        return
    rows = batch.rows.read() if isinstance(batch.rows, StagedRows) else batch.rows
    frame = rows if isinstance(rows, pd.DataFrame) else rows.to_pandas()
    for row in frame.to_dict("records"):
        yield json_row(row)


def partition_destination(project: str, env_suffix: str, table: str, field: str):
    def destination(row: dict) -> str:
        return f"{project}:{row['org_slug']}_{env_suffix}.{table}${row[field].replace('-', '')[:8]}"

    return destination


class _DeleteEmptyPartitions(beam.DoFn):
    """Delete the partitions of run days that received no rows (the re-run found nothing there)."""

    def __init__(self, project: str, env_suffix: str, table: str, test_client=None):
        self._project, self._env, self._table, self._client = project, env_suffix, table, test_client

    def setup(self):
        from apache_beam.io.gcp.bigquery_tools import BigQueryWrapper

        self._bq = BigQueryWrapper(client=self._client)

    def process(self, keyed, failed_runs):
        (org_slug, run_id, iso_day), rows = keyed
        if run_id in set(failed_runs) or rows > 0:
            return
        decorated = f"{self._table}${iso_day.replace('-', '')}"
        try:
            self._bq._delete_table(self._project, f"{org_slug}_{self._env}", decorated)
        except Exception as exc:  # a partition that never existed is fine; anything else is not
            if "404" not in str(exc) and "Not found" not in str(exc):
                raise
        yield decorated


class BigQueryLoad(StepTransform):
    kind = "load"
    test_client = None  # set by tests: Beam's BigQuery client stand-in
    validate = True  # tests turn off the gs:// temp location check (they write temp files locally)

    def expand(self, batches):
        options = self.options
        schema = load_schema(self.ctx.configs_dir / options.schema_file, options.schema_file)
        failed = beam.pvalue.AsList(self.inputs["failed_runs"])
        bq_parameters = {"timePartitioning": {"type": "DAY", "field": options.partition_field}}
        if options.cluster_by:
            bq_parameters["clustering"] = {"fields": list(options.cluster_by)}
        rows = batches | "Rows" >> beam.FlatMap(batch_rows, failed)
        _ = rows | "WriteToBigQuery" >> WriteToBigQuery(
            table=partition_destination(self.ctx.gcp_project, self.ctx.env_suffix, options.table, options.partition_field),
            schema={"fields": schema.to_json()},
            method=WriteToBigQuery.Method.FILE_LOADS,
            write_disposition=BigQueryDisposition.WRITE_TRUNCATE,
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            additional_bq_parameters=bq_parameters,
            custom_gcs_temp_location=self.ctx.bigquery_temp_location or None,
            test_client=type(self).test_client,
            validate=type(self).validate,
        )
        counted = rows | "KeyRows" >> beam.Map(
            lambda r: ((r["org_slug"], r["run_id"], r[options.partition_field][:10]), 1))
        days = self.inputs["work_items"] | "EveryDay" >> beam.FlatMap(
            lambda w: [((w.org_slug, w.run_id, d.isoformat()), 0) for d in WorkItem.days(w)])
        emptied = (
            (counted, days) | "AllPartitions" >> beam.Flatten()
            | "CountPerPartition" >> beam.CombinePerKey(sum)
            | "DeleteEmpty" >> beam.ParDo(
                _DeleteEmptyPartitions(self.ctx.gcp_project, self.ctx.env_suffix, options.table, type(self).test_client),
                failed)
        )
        per_org = counted | "PerOrg" >> beam.Map(lambda kv: ((kv[0][0], kv[0][1]), 1)) | beam.CombinePerKey(sum)
        events = per_org | "Events" >> beam.MapTuple(
            lambda key, n: self.event(key[1], key[0], rows=n, table=options.table))
        return {"events": events, "emptied": emptied}
