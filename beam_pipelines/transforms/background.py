"""Work a DoFn hands to a thread pool while its thread goes on with the next element.

The fetch step (:class:`beam_pipelines.transforms.fetch.FetchOrgs`) mostly waits on providers, so
it keeps a bounded number of orgs in flight on a pool; the billing FOCUS step keeps a few staged
parts in flight (Arrow releases the GIL). :class:`BackgroundWork` is that queue: results come back
in submission order, so the DoFn's outputs keep the order of its inputs, and whatever a bundle
started is finished by its ``finish_bundle`` (:meth:`BackgroundWork.drain`), so nothing outlives the
bundle that produced it: a retried bundle redoes all of its work. :class:`PooledDoFn` is a DoFn
built on it. :func:`mapped` is the same within one element: the batches of a billing day flattened,
or its parts checked, a few at a time, in order. (Parquet writes and commits on such threads were
tried for a fleet and dropped: no faster, the work was GIL- or journal-bound.)
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

T = TypeVar("T")
R = TypeVar("R")


class BackgroundWork:
    """A thread pool and the bundle's tasks in flight, at most ``limit`` of them."""

    def __init__(self, threads: int, limit: int, name: str):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._limit = limit
        self._inflight: collections.deque[Future] = collections.deque()

    def submit(self, fn: Callable, *args) -> Iterator:
        """Start ``fn(*args)``; yields the results of earlier tasks that are done (in order), waiting
        for the oldest while ``limit`` tasks are in flight."""
        self._inflight.append(self._pool.submit(fn, *args))
        while self._inflight and (len(self._inflight) >= self._limit or self._inflight[0].done()):
            yield self._inflight.popleft().result()

    def drain(self) -> Iterator:
        """The results of every task still in flight, in order (for ``finish_bundle``)."""
        while self._inflight:
            yield self._inflight.popleft().result()

    def discard(self) -> None:
        """Wait for the tasks in flight and drop their results (a bundle that failed)."""
        while self._inflight:
            self._inflight.popleft().exception()

    def shutdown(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)


class PooledDoFn(beam.DoFn):
    """A DoFn whose per-element ``work`` runs on a pool, ``pool_size()`` elements in flight.

    ``work(element)`` runs on a pool thread and returns a result; ``emit(result)`` turns it into
    outputs on the bundle's thread, in the order of the elements; ``flush()`` adds outputs at the end
    of a bundle. Subclasses that open more in ``setup`` or ``start_bundle`` call these too.
    """

    pool_name = "work"

    def pool_size(self) -> int:
        raise NotImplementedError

    def in_flight(self) -> int:
        """Elements submitted and not yet emitted, at most (the pool works through the queued ones
        while the bundle's thread is busy downstream)."""
        return self.pool_size()

    def work(self, element):
        raise NotImplementedError

    def emit(self, result) -> Iterable:
        return result

    def flush(self) -> Iterable:
        return ()

    def setup(self):
        self._work = BackgroundWork(self.pool_size(), self.in_flight(), self.pool_name)

    def teardown(self):
        work = getattr(self, "_work", None)
        if work is not None:
            work.shutdown()

    def start_bundle(self):
        self._work.discard()  # anything a failed bundle left in flight

    def process(self, element):
        for result in self._work.submit(self.work, element):
            yield from self.emit(result)

    def finish_bundle(self):
        def outputs():
            for result in self._work.drain():
                yield from self.emit(result)
            yield from self.flush()

        yield from windowed(outputs())


def mapped(function: Callable[[T], R], items: Iterable[T], pool: Executor, depth: int) -> Iterator[R]:
    """``function(item)`` for each item, in order, computed on ``pool`` with at most ``depth`` in flight.

    Memory holds ``depth`` items and their results, never the whole iterable. An error in ``function``
    is raised here when its turn comes; leaving early (an error, or the consumer stopping) cancels what
    has not started and waits for what has, so no thread still works on an abandoned item.
    """
    pending: collections.deque[Future] = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # waits; its error was not asked for


def windowed(outputs: Iterable) -> Iterator:
    """Outputs emitted from ``finish_bundle``, which must name their window (every element of these
    pipelines is in the global window); tagged outputs keep their tag."""
    for output in outputs:
        if isinstance(output, beam.pvalue.TaggedOutput):
            yield beam.pvalue.TaggedOutput(output.tag, WindowedValue(output.value, MIN_TIMESTAMP, [GlobalWindow()]))
        else:
            yield WindowedValue(output, MIN_TIMESTAMP, [GlobalWindow()])
