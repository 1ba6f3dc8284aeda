"""Admit, decrypt and fetch inside the worker, for many orgs at once.

:class:`FetchOrgs` is the ParDo between ``Reshuffle`` and the cost step. For each work item it
first asks again whether the org may run (subscription and credential, read now, not when the job
was launched), then decrypts the org's credential *here* (the only place a secret ever exists) and
lets a provider fetcher page through the API. Fetching is I/O-bound: a fetcher whose ``fetch`` is a
coroutine function (the HTTP providers) runs on one event loop per worker, at most
``max_concurrency`` requests at once (the fetcher's session bounds them) and more orgs queued
behind them; any other (the billing export) on a pool of ``max_concurrency`` threads. Pages of one
org stay in cursor order because one coroutine (or thread) walks them.

An org's batches are emitted only once its whole fetch succeeded and every row falls inside the
requested days, so a failure half-way through, or an answer about another day, leaves nothing
behind: the org gets one failed :class:`StepEvent` and the other orgs carry on.

A fetcher whose rows are small aggregates (``fleet_batches``: usage pages) has the rows of the
orgs it finished gathered into :class:`RunsBatch` es of about ``GATHER_ROWS`` rows, so pricing and
FOCUS run once per thousands of rows rather than once per org, while later orgs are still fetched.
Its rows stay records (:class:`UsageRecords`) until then and are checked as such: a DataFrame per
org, and pandas to check it, cost a fleet more CPU than fetching it.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Iterator
from datetime import date, datetime, timezone
from typing import Protocol

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.errors import ConvergenceError, ProviderError, one_line_error, redact
from beam_pipelines.pipeline import progress
from beam_pipelines.runs.admission import admit
from beam_pipelines.secrets.credentials import Credential, open_credential
from beam_pipelines.transforms.background import EventLoop, PooledDoFn
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, RunsBatch, StagedRows, StepEvent, UsageRecords, WorkItem

log = logging.getLogger(__name__)


class OrgFetcher(Protocol):
    provider: str

    def fetch(self, item: WorkItem, credential: Credential) -> list:
        """All of one org's data for the item's dates (records, frames or staged parts), in order. A fetcher
        may also have ``setup`` and ``teardown``, which the fetch step calls once per worker. Where
        ``fetch`` is a coroutine function, so are those, and all of them run on the step's event loop."""


def check_days(batches: list, item: WorkItem, provider: str, field: str = "usage_date") -> None:
    """Fail closed on any row outside the requested days: it would replace a day nobody asked for."""
    seen: set[date] = set()
    for rows in batches:
        if isinstance(rows, StagedRows):
            seen.add(rows.day)
        elif isinstance(rows, UsageRecords):
            seen.update(r[field] for r in rows if r[field] is not None)
        elif isinstance(rows, pa.Table):
            seen.update(d for d in pc.unique(rows.column(field)).to_pylist() if d is not None)
        elif len(rows):
            seen.update(pd.unique(rows[field]))
    outside = sorted(d for d in seen if not item.start_date <= d <= item.end_date)
    if outside:
        raise ProviderError(provider, f"answer carries usage for {outside[0].isoformat()}"
                            + (f" (and {len(outside) - 1} more day(s))" if len(outside) > 1 else "")
                            + f", outside the requested {item.start_date}..{item.end_date}: nothing written")


def check_unique_keys(parts: list, provider: str) -> None:
    """A provider answering the same group twice would double its cost: fail closed instead.

    Applies to aggregated usage (records, or DataFrames keyed by group); billing-export rows (Arrow)
    carry a content hash that two legitimately identical export rows share.
    """
    keys: list = []
    for part in parts:
        if isinstance(part, UsageRecords) and part and "row_key" in part[0]:
            keys += [r["row_key"] for r in part]
        elif isinstance(part, pd.DataFrame) and "row_key" in part:
            keys += part["row_key"].tolist()
    repeated = len(keys) - len(set(keys))
    if repeated:
        raise ProviderError(provider, f"response repeats {repeated} usage group(s) across pages")


AHEAD = 4  # orgs submitted per fetch thread, so fetching goes on while the bundle's thread prices and stages
BATCH_ROWS = 50_000  # rows per OrgBatch of aggregated usage: pages merge up to this (per-element overhead dominates)
# Rows gathered from finished orgs before a RunsBatch goes downstream: enough that pandas' per-frame
# cost is small per row, few enough that pricing, FOCUS and staging of the first orgs run (in this
# thread) while later orgs are still being fetched (in the pool), instead of after the whole fetch.
GATHER_ROWS = 10_000  # 5,000 -> 10,000: ~5% less CPU per org at 1,000 orgs, same wall within noise
IDLE_GATHER_ROWS = GATHER_ROWS // 4  # gathered rows sent on when the bundle's thread would otherwise wait


def coalesce(parts: list) -> list:
    """An org's pages as few DataFrames as fit ``BATCH_ROWS`` each (records become frames); other parts
    (staged files) as they are."""
    out, pending, size = [], [], 0
    for part in parts:
        if isinstance(part, (pd.DataFrame, UsageRecords)) and size + len(part) <= BATCH_ROWS:
            pending.append(part)
            size += len(part)
            continue
        if pending:
            out.append(UsageRecords.frame(pending))
            pending, size = [], 0
        if isinstance(part, (pd.DataFrame, UsageRecords)):
            pending, size = [part], len(part)
        else:
            out.append(part)
    if pending:
        out.append(UsageRecords.frame(pending))
    return out


class _RunsGatherer:
    """Gathers whole orgs' rows into RunsBatches of about ``GATHER_ROWS`` rows (an org is never split):
    one frame for many orgs' records."""

    def __init__(self):
        self._runs, self._parts, self.rows = [], [], 0

    def add(self, batches: list[OrgBatch]) -> Iterator[RunsBatch]:
        for batch in batches:
            if (batch.org_slug, batch.run_id) not in self._runs[-1:]:
                self._runs.append((batch.org_slug, batch.run_id))
            self._parts.append(batch.rows)
            self.rows += len(batch.rows)
        if self.rows >= GATHER_ROWS:
            yield from self.flush()

    def flush(self) -> Iterator[RunsBatch]:
        if self._parts:
            yield RunsBatch(tuple(self._runs), UsageRecords.frame(self._parts))
        self._runs, self._parts, self.rows = [], [], 0


class FetchOrgs(PooledDoFn):
    pool_name = "fetch"

    def __init__(self, fetcher: OrgFetcher, step_id: str, ps_type: str, ctx, max_concurrency: int):
        self._fetcher = fetcher
        self._step_id = step_id
        self._ps_type = ps_type
        self._metastore_spec = ctx.metastore
        self._cipher_spec = ctx.cipher
        self._integration = ctx.integration(fetcher.provider)
        self._max = max_concurrency
        self._gathers = getattr(fetcher, "fleet_batches", False)

    def pool_size(self) -> int:
        return self._max

    def in_flight(self) -> int:
        return self._max * AHEAD

    def setup(self):
        self._metastore = self._metastore_spec.open()
        self._cipher = self._cipher_spec.open()
        self._loop = None
        if inspect.iscoroutinefunction(self._fetcher.fetch):
            self._loop = EventLoop(f"{self.pool_name}-loop", blocking_threads=self._max)  # admission: one org per slot
            self._slots = asyncio.Semaphore(self._max)  # orgs fetched at once on the loop; the rest wait their turn
        self._hook("setup")  # a fetcher with per-worker resources (a shared HTTP session)
        super().setup()

    def teardown(self):
        super().teardown()  # the fetches in flight finish first
        if not hasattr(self, "_loop"):  # set-up failed before the fetcher was set up
            return
        self._hook("teardown")
        if self._loop is not None:
            self._loop.close()

    def _hook(self, name: str) -> None:
        hook = getattr(self._fetcher, name, None)
        if hook is None:
            return
        if self._loop is not None:
            self._loop.run(hook())
        else:
            hook()

    def submit(self, item: WorkItem) -> None:
        if self._loop is None:
            return super().submit(item)
        self._work.track(self._loop.submit(self.awork(item)))

    def start_bundle(self):
        super().start_bundle()
        self._gatherer = _RunsGatherer() if self._gathers else None

    def flush(self):
        return self._gatherer.flush() if self._gatherer is not None else ()

    def idle(self):
        """Rather than wait for the next org, price and stage the orgs gathered so far (if enough): the
        bundle's thread worked through a backlog after the last fetch instead of alongside them."""
        if self._gatherer is not None and self._gatherer.rows >= IDLE_GATHER_ROWS:
            return self._gatherer.flush()
        return ()

    def emit(self, fetched: tuple[list[OrgBatch], StepEvent]):
        batches, event = fetched
        yield from batches if self._gatherer is None else self._gatherer.add(batches)
        yield beam.pvalue.TaggedOutput(EVENTS, event)

    def work(self, item: WorkItem) -> tuple[list[OrgBatch], StepEvent]:
        """One org admitted, decrypted and fetched, on a pool thread."""
        started = datetime.now(timezone.utc)
        try:
            parts = self._fetcher.fetch(item, self._credential(item, started))
        except Exception as exc:  # one org's failure must never stop the others
            return self._outcome(item, started, error=exc)
        return self._outcome(item, started, parts)

    async def awork(self, item: WorkItem) -> tuple[list[OrgBatch], StepEvent]:
        """One org admitted and decrypted (on a thread: the metastore may be a network away) and fetched,
        on the step's event loop."""
        async with self._slots:
            started = datetime.now(timezone.utc)
            try:
                credential = await asyncio.to_thread(self._credential, item, started)
                parts = await self._fetcher.fetch(item, credential)
            except Exception as exc:  # one org's failure must never stop the others
                return self._outcome(item, started, error=exc)
            return self._outcome(item, started, parts)

    def _credential(self, item: WorkItem, started: datetime) -> Credential:
        provider = self._fetcher.provider
        row = admit(self._metastore, item.org_slug, self._integration, started.date())
        return open_credential(row, self._cipher, self._cipher_spec.aad(item.org_slug, provider), item.org_slug, provider)

    def _outcome(self, item: WorkItem, started: datetime, parts: list = (),
                 error: Exception | None = None) -> tuple[list[OrgBatch], StepEvent]:
        """The org's batches once its answer passed the checks, or none and the error; its event either way."""
        provider = self._fetcher.provider
        batches: list[OrgBatch] = []
        if error is None:
            try:
                parts = [p for p in parts if len(p)]
                check_days(parts, item, provider)
                check_unique_keys(parts, provider)
                if not self._gathers:  # records become frames here, on the worker; gathered ones in emit
                    parts = coalesce(parts)
                batches = [OrgBatch(item.org_slug, item.run_id, part) for part in parts]
            except Exception as exc:
                error = exc
        if error is not None and not isinstance(error, ConvergenceError):
            log.error("org %s: %s failed: %s", item.org_slug, self._step_id,
                      redact("".join(traceback.format_exception(error))))
        progress.org_done(self._step_id)
        event = StepEvent(run_id=item.run_id, org_slug=item.org_slug, step_id=self._step_id, ps_type=self._ps_type,
                          kind="extract", rows=sum(len(b.rows) for b in batches),
                          error=None if error is None else one_line_error(error),
                          started_at=started, ended_at=datetime.now(timezone.utc))
        return batches, event
