"""``gcp.bq_etl``: read the org's billing export for the run's days and flatten it, batch by batch.

Memory holds a few bounded batches whatever the size of the day: the export is read in batches of
at most ``READ_ROWS`` rows, each flattened in DuckDB and appended to the staged part of its day
(:class:`beam_pipelines.staging.DayParts`, at most ``PART_ROWS`` rows a part). Reading, flattening
and writing overlap: the export is read one batch ahead in a thread, ``FLATTEN_THREADS`` batches are
flattened at once (in order), and parts are written in another thread (Arrow and DuckDB release
the GIL), each hand-over bounded.
"""
from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import apache_beam as beam
import pyarrow as pa

from beam_pipelines.config.schema import TableSchema, load_schema
from beam_pipelines.gcp.config import load_bq_etl_config
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.overlap import READ_ROWS, Writer, ahead
from beam_pipelines.gcp.sources import export_source
from beam_pipelines.secrets.credentials import Credential
from beam_pipelines.staging import DayParts, remove_run, run_folder
from beam_pipelines.transforms.background import mapped
from beam_pipelines.transforms.elements import EVENTS, StagedRows, WorkItem
from beam_pipelines.transforms.fetch import FetchOrgs
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.warehouse.arrow_schema import to_arrow

RAW_TABLE = "gcp_billing_daily_raw"
FLATTEN_THREADS = 2  # batches flattened at once (DuckDB releases the GIL; one 25,000-row batch keeps one core busy)
PART_ROWS = 50_000  # rows per staged part at most: the load holds a part whole (and its sorted copy)


class GcpBillingFetcher:
    """Reads the export batch by batch, flattens each, and stages it as Parquet parts per day.

    The graph carries only :class:`StagedRows` references. If any batch fails, the org's staged
    files are removed.
    """

    provider = "gcp"

    def __init__(self, options, etl, loaded_at: datetime, staging_root: str, api_endpoint: str | None = None,
                 job_project: str | None = None, schema: TableSchema | None = None):
        self.options = options
        self.etl = etl
        self.schema = schema  # staged parts are cast to it: the load can then take them as they are
        self.loaded_at = loaded_at
        self.staging_root = staging_root
        self.api_endpoint = api_endpoint
        self.job_project = job_project

    def batches(self, item: WorkItem, credential: Credential) -> Iterator[pa.Table]:
        source = export_source(credential, self.api_endpoint, self.job_project, self.etl.export_table)
        idle: queue.SimpleQueue[Flattener] = queue.SimpleQueue()  # one DuckDB connection per flattening thread
        for _ in range(FLATTEN_THREADS):
            idle.put(Flattener(self.etl.flatten))

        def flatten(batch: pa.Table) -> pa.Table:
            flattener = idle.get()
            try:
                rows = flattener(batch, item.org_slug, item.run_id, self.loaded_at)
            finally:
                idle.put(flattener)
            return rows if self.schema is None else to_arrow(rows, self.schema, RAW_TABLE)

        read = ahead(source.batches(item.start_date, item.end_date, min(self.options.page_rows, READ_ROWS)))
        with ThreadPoolExecutor(FLATTEN_THREADS, thread_name_prefix="export-flatten") as pool:
            yield from mapped(flatten, read, pool, FLATTEN_THREADS)

    def fetch(self, item: WorkItem, credential: Credential) -> list[StagedRows]:
        parts = DayParts(run_folder(self.staging_root, item.run_id), min(self.options.page_rows, PART_ROWS))
        try:
            with Writer(parts.write) as write:
                for table in self.batches(item, credential):
                    write(table)
            return parts.close()
        except BaseException:
            parts.abort()
            remove_run(self.staging_root, item.run_id)
            raise


class ExtractGcpBilling(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        etl = load_bq_etl_config(self.ctx.configs_dir / self.options.etl_config, self.options.etl_config)
        schema = load_schema(self.ctx.configs_dir / self.options.staged_schema_file, self.options.staged_schema_file)
        fetcher = GcpBillingFetcher(self.options, etl, self.ctx.loaded_at, self.ctx.staging_root,
                                    self.ctx.provider_base_urls.get("gcp_bigquery"), self.ctx.gcp_project or None, schema)
        outputs = work_items | "DecryptAndRead" >> beam.ParDo(
            FetchOrgs(fetcher, self.step.step_id, self.step.ps_type, self.ctx, self.options.max_concurrency)
        ).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}
