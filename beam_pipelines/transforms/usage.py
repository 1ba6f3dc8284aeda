"""Shared extract and price steps for providers with a paged usage API and a token price list.

A provider adds a fetcher (which client, which pages, how a page becomes rows) and a pricing
function; the Beam wiring (decrypt + fetch, side-input pricing, events) is written once here.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import apache_beam as beam
import pandas as pd

from beam_pipelines.errors import one_line_error
from beam_pipelines.pricing.overrides import OrgPriceLists
from beam_pipelines.pricing.price_list import load_price_list
from beam_pipelines.providers.http import PageQuery, ProviderClient, RetryPolicy, provider_session
from beam_pipelines.secrets.credentials import Credential
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, RunsBatch, UsageRecords, WorkItem
from beam_pipelines.transforms.fetch import BATCH_ROWS, FetchOrgs
from beam_pipelines.transforms.runs import run_counts, split_runs
from beam_pipelines.transforms.step import StepTransform


class PagedUsageFetcher:
    """All pages of one org's usage as records, in cursor order, on the fetch step's event loop.

    Between ``setup`` and ``teardown`` (the fetch step's, once per worker) every org is fetched over
    one shared session, at most ``max_concurrency`` requests at once; a fetch outside them (a test, a
    script) opens and closes its own.
    """

    provider = ""
    client_cls: type[ProviderClient]
    rows_fn: Callable
    fleet_batches = False  # usage rows of many orgs travel together (RunsBatch) through pricing and FOCUS

    def __init__(self, base_url: str, options, loaded_at: datetime):
        self.base_url = base_url
        self.options = options
        self.loaded_at = loaded_at
        self._session = None

    async def setup(self) -> None:
        self._session = provider_session(self.base_url, self.options.max_concurrency)

    async def teardown(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __getstate__(self):
        return {**self.__dict__, "_session": None}  # a session is per process, never part of the job graph

    def query(self, client, item: WorkItem) -> PageQuery | None:
        raise NotImplementedError

    async def fetch(self, item: WorkItem, credential: Credential) -> list[UsageRecords]:
        """The org's rows in chunks of at most ``BATCH_ROWS``, as records: the fetch step makes frames
        of them, many orgs' rows at a time where the fetcher has ``fleet_batches``."""
        session = self._session or provider_session(self.base_url, 1)
        client = self.client_cls(credential.secret, self.base_url, RetryPolicy.from_options(self.options), session=session)
        rows_fn = type(self).rows_fn
        chunks, pending = [], UsageRecords()
        try:
            async for page in client.iter_pages(self.query(client, item)):
                pending += rows_fn(page, item.org_slug, item.run_id, self.loaded_at)
                while len(pending) >= BATCH_ROWS:
                    chunks.append(UsageRecords(pending[:BATCH_ROWS]))
                    pending = UsageRecords(pending[BATCH_ROWS:])
        finally:
            if session is not self._session:
                await session.close()
        if pending:
            chunks.append(pending)
        return chunks


class ExtractUsage(StepTransform):
    kind = "extract"
    fetcher_cls: type[PagedUsageFetcher]

    def expand(self, work_items):
        fetcher = self.fetcher_cls(self.ctx.provider_base_urls[self.fetcher_cls.provider], self.options,
                                   self.ctx.loaded_at)
        fetch = beam.ParDo(FetchOrgs(fetcher, self.step.step_id, self.step.ps_type, self.ctx, self.options.max_concurrency))
        if fetcher.fleet_batches:
            fetch = fetch.with_output_types(RunsBatch)
        outputs = work_items | "DecryptAndFetch" >> fetch.with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}


class _OrgPricedBatches(beam.DoFn):
    """Runs the step's ``work(batch, prices)`` on each batch with its orgs' price list: the default
    list (a side input) plus each org's own rows, read once per org and worker (override rows are
    keyed by org, so orgs priced together never see each other's prices).

    A :class:`RunsBatch` is worked as one frame and reported per run; if the batch raises, each run
    is worked alone, so an exception fails only the org whose rows caused it.
    """

    def __init__(self, step: StepTransform, provider: str):
        self._step = step
        self._provider = provider

    def setup(self):
        self._warehouse = self._step.ctx.warehouse.open()
        self._lists = None

    def process(self, batch: OrgBatch | RunsBatch, defaults):
        if self._lists is None:
            self._lists = OrgPriceLists(defaults, self._provider, self._warehouse, self._step.ctx.org_dataset)
        if isinstance(batch, RunsBatch):
            yield from self._runs(batch)
        else:
            yield from self._one(batch)

    def _runs(self, batch: RunsBatch):
        started = datetime.now(timezone.utc)
        try:
            rows, details = self._step.work_runs(batch.rows, self._lists.for_orgs(sorted({o for o, _ in batch.runs})))
        except Exception:
            for single in split_runs(batch):  # each run alone, still as a RunsBatch (one kind per edge)
                for output in self._one(single):
                    if isinstance(output, OrgBatch):
                        output = RunsBatch(((output.org_slug, output.run_id),), output.rows)
                    yield output
            return
        if len(rows):
            yield RunsBatch(batch.runs, rows)
        counts = run_counts(rows)
        for org_slug, run_id in batch.runs:
            yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(run_id, org_slug, rows=counts.get(run_id, 0),
                                                                    started_at=started, **details.get(run_id, {})))

    def _one(self, batch: OrgBatch):
        started = datetime.now(timezone.utc)
        try:
            rows, detail = self._step.work(batch, self._lists.for_org(batch.org_slug))
        except Exception as exc:
            yield beam.pvalue.TaggedOutput(
                EVENTS, self._step.event(batch.run_id, batch.org_slug, error=one_line_error(exc), started_at=started)
            )
            return
        if len(rows):
            yield OrgBatch(batch.org_slug, batch.run_id, rows)
        yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(batch.run_id, batch.org_slug, rows=len(rows),
                                                                started_at=started, **detail))


class OrgPricedStep(StepTransform):
    """A transform of org batches that needs the provider's price list (``options.pricing_file``)."""

    kind = "transform"
    provider = ""
    batch_tiers: dict[str, str] | None = None
    tier_aliases: dict[str, str] | None = None

    def work(self, batch: OrgBatch, prices) -> tuple[pd.DataFrame, dict]:
        raise NotImplementedError

    def work_runs(self, rows: pd.DataFrame, prices) -> tuple[pd.DataFrame, dict[str, dict]]:
        """``work`` on many runs' rows at once: the rows, and each run's event detail by run id."""
        raise NotImplementedError

    def expand(self, batches):
        prices = load_price_list(self.ctx.configs_dir / self.options.pricing_file, self.options.pricing_file,
                                 self.batch_tiers, self.tier_aliases)
        price_side = batches.pipeline | "PriceList" >> beam.Create([prices])
        price = beam.ParDo(_OrgPricedBatches(self, self.provider), beam.pvalue.AsSingleton(price_side))
        if batches.element_type is RunsBatch:
            price = price.with_output_types(RunsBatch)
        outputs = batches | "Price" >> price.with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}


class PriceTokenUsage(OrgPricedStep):
    """Price usage rows: one cost row per usage row, unknown models flagged, never $0."""

    price_fn: Callable

    def work(self, batch: OrgBatch, prices) -> tuple[pd.DataFrame, dict]:
        cost, details = self.work_runs(batch.rows, prices)
        return cost, details.get(batch.run_id, {"unpriced_models": [], "cost_usd": 0})

    def work_runs(self, rows: pd.DataFrame, prices) -> tuple[pd.DataFrame, dict[str, dict]]:
        cost = type(self).price_fn(rows, prices, self.ctx.loaded_at)
        run_ids = cost["run_id"].astype(object).to_numpy()
        unpriced = (cost["pricing_status"] != "PRICED").to_numpy() & cost["model"].notna().to_numpy()
        totals: dict[str, object] = {}
        for run_id, total in zip(run_ids, cost["total_cost_usd"].to_numpy()):
            totals[run_id] = totals.get(run_id, 0) + (total if total is not None else 0)
        models: dict[str, set] = {}
        for run_id, model in zip(run_ids[unpriced], cost["model"].astype(object).to_numpy()[unpriced]):
            models.setdefault(run_id, set()).add(model)
        return cost, {run_id: {"unpriced_models": sorted(models.get(run_id, ())), "cost_usd": total}
                      for run_id, total in totals.items()}
