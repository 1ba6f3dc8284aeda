"""Decrypt + fetch inside the worker, for many orgs at once.

:class:`FetchOrgs` is the ParDo between ``Reshuffle`` and the cost step. For each work item it
reads the org's ciphertext from the metastore, decrypts it *here* (the only place a secret ever
exists), and lets a provider fetcher page through the API. Fetching is I/O-bound, so up to
``max_concurrency`` orgs are fetched at once on a thread pool; pages of one org stay in cursor
order because one thread walks them.

An org's batches are emitted only once its whole fetch succeeded, so a failure half-way through
leaves nothing behind: the org gets one failed :class:`StepEvent` on the ``events`` output and
the other orgs carry on.
"""
from __future__ import annotations

import collections
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Protocol

import apache_beam as beam
import pandas as pd
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipelines.errors import ConvergenceError, CredentialError, ProviderError, redact
from beam_pipelines.secrets import credential_aad
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, StepEvent, WorkItem

log = logging.getLogger(__name__)


class OrgFetcher(Protocol):
    provider: str

    def fetch(self, item: WorkItem, secret: str, metadata: dict) -> list[pd.DataFrame]:
        """All pages of one org's data for the item's dates, as DataFrames, in cursor order."""


def one_line_error(exc: BaseException, *secrets: str | None) -> str:
    if isinstance(exc, ConvergenceError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()), *secrets)[:1000]


class FetchOrgs(beam.DoFn):
    def __init__(self, fetcher: OrgFetcher, step_id: str, ps_type: str, metastore_spec, cipher_spec,
                 max_concurrency: int):
        self._fetcher = fetcher
        self._step_id = step_id
        self._ps_type = ps_type
        self._metastore_spec = metastore_spec
        self._cipher_spec = cipher_spec
        self._max = max_concurrency

    def setup(self):
        self._metastore = self._metastore_spec.open()
        self._cipher = self._cipher_spec.open()
        self._pool = ThreadPoolExecutor(max_workers=self._max, thread_name_prefix="fetch")

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)

    def start_bundle(self):
        self._inflight = collections.deque()

    def process(self, item: WorkItem):
        self._inflight.append(self._pool.submit(self._fetch_one, item))
        while self._inflight and (len(self._inflight) >= self._max or self._inflight[0].done()):
            yield from self._outputs(*self._inflight.popleft().result())

    def finish_bundle(self):
        while self._inflight:
            for output in self._outputs(*self._inflight.popleft().result()):
                if isinstance(output, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(output.tag, self._windowed(output.value))
                else:
                    yield self._windowed(output)

    @staticmethod
    def _windowed(value):
        return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])

    @staticmethod
    def _outputs(batches: list[OrgBatch], event: StepEvent):
        yield from batches
        yield beam.pvalue.TaggedOutput(EVENTS, event)

    def _fetch_one(self, item: WorkItem) -> tuple[list[OrgBatch], StepEvent]:
        started = datetime.now(timezone.utc)
        provider = self._fetcher.provider
        secret = None
        batches: list[OrgBatch] = []
        error = None
        try:
            credential = self._metastore.get_credential(item.org_slug, provider)
            if credential is None:
                raise CredentialError(f"org {item.org_slug!r} has no active {provider} credential")
            secret = self._cipher.decrypt(
                bytes(credential["encrypted_credential"]), credential_aad(item.org_slug, provider)
            ).decode()
            frames = self._fetcher.fetch(item, secret, credential.get("metadata") or {})
            frames = [f for f in frames if len(f)]
            check_unique_keys(frames, provider)
            batches = [OrgBatch(item.org_slug, item.run_id, frame) for frame in frames]
        except Exception as exc:  # one org's failure must never stop the others
            error = one_line_error(exc, secret)
            if not isinstance(exc, ConvergenceError):
                log.error("org %s: %s failed: %s", item.org_slug, self._step_id,
                          redact(traceback.format_exc(), secret))
            batches = []
        finally:
            del secret
        ended = datetime.now(timezone.utc)
        event = StepEvent(
            run_id=item.run_id, org_slug=item.org_slug, step_id=self._step_id, ps_type=self._ps_type,
            kind="extract", rows=sum(len(b.rows) for b in batches), error=error,
            started_at=started, ended_at=ended,
        )
        self._record_progress(event)
        return batches, event

    def _record_progress(self, event: StepEvent) -> None:
        """Write the extract step's log now, so a watcher sees orgs finish while the job runs."""
        try:
            self._metastore.upsert_step_log(step_log_row(event))
        except Exception as exc:  # progress is best effort; the run log stage writes it again
            log.warning("could not record progress for %s: %s", event.org_slug, one_line_error(exc))


def check_unique_keys(frames: list[pd.DataFrame], provider: str) -> None:
    """A provider answering the same group twice would double its cost: fail closed instead.

    Applies to aggregated usage (DataFrames keyed by group); billing-export rows (Arrow) carry a
    content hash that two legitimately identical export rows share.
    """
    if not frames or not isinstance(frames[0], pd.DataFrame) or "row_key" not in frames[0]:
        return
    keys = pd.concat([f["row_key"] for f in frames], ignore_index=True)
    duplicated = keys[keys.duplicated()]
    if len(duplicated):
        raise ProviderError(provider, f"response repeats {len(duplicated)} usage group(s) across pages")


def step_log_row(event: StepEvent) -> dict:
    duration = None
    if event.started_at and event.ended_at:
        duration = int((event.ended_at - event.started_at).total_seconds() * 1000)
    return {
        "step_log_id": f"{event.run_id}:{event.step_id}",
        "pipeline_logging_id": event.run_id,
        "org_slug": event.org_slug,
        "step_id": event.step_id,
        "ps_type": event.ps_type,
        "status": "FAILED" if event.failed else "COMPLETED",
        "rows_processed": event.rows,
        "error_message": event.error,
        "started_at": event.started_at,
        "ended_at": event.ended_at,
        "duration_ms": duration,
    }
