"""``gcp.bq_etl``: read the org's billing export for the run's days and flatten it, batch by batch."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.errors import CredentialError
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.sources import export_source
from beam_pipelines.transforms.elements import EVENTS, StagedRows, WorkItem
from beam_pipelines.transforms.fetch import FetchOrgs
from beam_pipelines.transforms.step import StepTransform


def service_account_info(secret: str) -> dict:
    try:
        info = json.loads(secret)
    except ValueError:
        raise CredentialError("gcp credential is not a service-account JSON key") from None
    if not isinstance(info, dict) or info.get("type") != "service_account" or not info.get("client_email"):
        raise CredentialError("gcp credential is not a service-account JSON key (type/client_email)")
    return info


def remove_staging(folder: str) -> None:
    """Best effort: staged parts of a run, once loaded or abandoned."""
    try:
        if FileSystems.exists(folder):
            FileSystems.delete([folder])
    except Exception:  # noqa: S110 - leftovers are harmless; the next run writes new names
        pass


class GcpBillingFetcher:
    """Reads the export batch by batch, flattens each, and stages it as Parquet per day.

    Memory holds one batch at a time whatever the size of the day; the graph carries only
    :class:`StagedRows` references. If any batch fails, the org's staged files are removed.
    """

    provider = "gcp"

    def __init__(self, options, loaded_at: datetime, staging_root: Path | None = None, api_endpoint: str | None = None):
        self.options = options
        self.loaded_at = loaded_at
        self.staging_root = staging_root
        self.api_endpoint = api_endpoint

    def batches(self, item: WorkItem, secret: str, metadata: dict) -> Iterator[pa.Table]:
        source = export_source(metadata, service_account_info(secret), self.api_endpoint)
        flatten = Flattener()
        for batch in source.batches(item.start_date, item.end_date, self.options.page_rows):
            yield flatten(batch, item.org_slug, item.run_id, self.loaded_at)

    def fetch(self, item: WorkItem, secret: str, metadata: dict) -> list[StagedRows]:
        folder = FileSystems.join(str(self.staging_root), item.run_id)
        staged = []
        try:
            for number, table in enumerate(self.batches(item, secret, metadata)):
                column = table.column("usage_date")
                for day in pc.unique(column).to_pylist():
                    part = table.filter(pc.equal(column, day))
                    path = FileSystems.join(folder, day.isoformat(), f"part-{number:06d}.parquet")
                    with FileSystems.create(path) as fh:  # local folders are created as needed
                        pq.write_table(part, fh)
                    staged.append(StagedRows(path, day, part.num_rows))
        except BaseException:
            remove_staging(folder)
            raise
        return staged


class ExtractGcpBilling(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        fetcher = GcpBillingFetcher(self.options, self.ctx.loaded_at, self.ctx.staging_root,
                                    self.ctx.provider_base_urls.get("gcp_bigquery"))
        outputs = work_items | "DecryptAndRead" >> beam.ParDo(
            FetchOrgs(fetcher, self.step.step_id, self.step.ps_type, self.ctx.metastore, self.ctx.cipher,
                      self.options.max_concurrency)
        ).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}
