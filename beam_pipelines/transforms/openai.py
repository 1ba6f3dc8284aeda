"""OpenAI steps: ``openai.usage`` (extract) and ``openai.cost`` (price)."""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam
import pandas as pd

from beam_pipelines.pricing.openai_cost import UNPRICED, price_openai_usage
from beam_pipelines.pricing.overrides import price_list_for_run
from beam_pipelines.providers.http import RetryPolicy
from beam_pipelines.providers.openai import OpenAIUsageClient, usage_rows
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, WorkItem
from beam_pipelines.transforms.fetch import FetchOrgs, one_line_error
from beam_pipelines.transforms.step import StepTransform


class OpenAIUsageFetcher:
    """Pages of ``/organization/usage/completions`` for one org, as raw-row DataFrames."""

    provider = "openai"

    def __init__(self, base_url: str, options, loaded_at: datetime):
        self.base_url = base_url
        self.options = options
        self.loaded_at = loaded_at

    def fetch(self, item: WorkItem, secret: str, metadata: dict) -> list[pd.DataFrame]:
        client = OpenAIUsageClient(secret, self.base_url, RetryPolicy.from_options(self.options))
        try:
            return [
                pd.DataFrame.from_records(usage_rows(page, item.org_slug, item.run_id, self.loaded_at))
                for page in client.completions_pages(
                    item.start_date, item.end_date, self.options.page_limit, self.options.group_by
                )
            ]
        finally:
            client.session.close()


class ExtractOpenAIUsage(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        fetcher = OpenAIUsageFetcher(self.ctx.provider_base_urls["openai"], self.options, self.ctx.loaded_at)
        outputs = work_items | "DecryptAndFetch" >> beam.ParDo(
            FetchOrgs(fetcher, self.step.step_id, self.step.ps_type, self.ctx.metastore,
                      self.ctx.cipher, self.options.max_concurrency)
        ).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}


class _PriceBatches(beam.DoFn):
    def __init__(self, step: StepTransform, price_fn):
        self._step = step
        self._price_fn = price_fn

    def process(self, batch: OrgBatch, prices):
        started = datetime.now(timezone.utc)
        try:
            cost = self._price_fn(batch.rows, prices, self._step.ctx.loaded_at)
        except Exception as exc:
            yield beam.pvalue.TaggedOutput(
                EVENTS, self._step.event(batch.run_id, batch.org_slug, error=one_line_error(exc), started_at=started)
            )
            return
        unpriced = sorted(set(cost.loc[cost["pricing_status"] == UNPRICED, "model"].dropna()))
        yield OrgBatch(batch.org_slug, batch.run_id, cost)
        yield beam.pvalue.TaggedOutput(
            EVENTS,
            self._step.event(batch.run_id, batch.org_slug, rows=len(cost), started_at=started,
                             unpriced_models=unpriced),
        )


class PriceTokenUsage(StepTransform):
    """Price batches with the price list as a side input (default list + the orgs' overrides)."""

    kind = "transform"
    provider = ""
    price_fn = None

    def expand(self, batches):
        prices = price_list_for_run(
            self.ctx.configs_dir / self.options.pricing_file, self.options.pricing_file,
            self.provider, self.ctx,
        )
        price_side = batches.pipeline | "PriceList" >> beam.Create([prices])
        outputs = batches | "Price" >> beam.ParDo(
            _PriceBatches(self, type(self).price_fn), beam.pvalue.AsSingleton(price_side)
        ).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}


class PriceOpenAIUsage(PriceTokenUsage):
    provider = "openai"
    price_fn = staticmethod(price_openai_usage)
