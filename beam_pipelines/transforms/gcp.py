"""``gcp.bq_etl``: read the org's billing export for the run's days and flatten it, batch by batch."""
from __future__ import annotations

import json
from datetime import datetime

import apache_beam as beam
import pyarrow as pa

from beam_pipelines.errors import CredentialError
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.sources import export_source
from beam_pipelines.transforms.elements import EVENTS, WorkItem
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


class GcpBillingFetcher:
    provider = "gcp"

    def __init__(self, options, loaded_at: datetime, api_endpoint: str | None = None):
        self.options = options
        self.loaded_at = loaded_at
        self.api_endpoint = api_endpoint

    def fetch(self, item: WorkItem, secret: str, metadata: dict) -> list[pa.Table]:
        source = export_source(metadata, service_account_info(secret), self.api_endpoint)
        flatten = Flattener()
        return [flatten(batch, item.org_slug, item.run_id, self.loaded_at)
                for batch in source.batches(item.start_date, item.end_date, self.options.page_rows)]


class ExtractGcpBilling(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        fetcher = GcpBillingFetcher(self.options, self.ctx.loaded_at, self.ctx.provider_base_urls.get("gcp_bigquery"))
        outputs = work_items | "DecryptAndRead" >> beam.ParDo(
            FetchOrgs(fetcher, self.step.step_id, self.step.ps_type, self.ctx.metastore, self.ctx.cipher,
                      self.options.max_concurrency)
        ).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}
