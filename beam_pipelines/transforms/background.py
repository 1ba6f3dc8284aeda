"""Work a DoFn hands to a thread pool while its thread goes on with the next element.

The fetch step (:class:`beam_pipelines.transforms.fetch.FetchOrgs`) mostly waits on providers, so
it keeps a bounded number of orgs in flight on a pool; the billing FOCUS step keeps a few staged
parts in flight (Arrow releases the GIL). :class:`BackgroundWork` is that queue and
:class:`PooledDoFn` a DoFn built on it: results come back in submission order, so the DoFn's outputs
keep the order of its inputs, and whatever a bundle started is finished by its ``finish_bundle``, so
nothing outlives the bundle that produced it: a retried bundle redoes all of its work. Where the
bundle's thread would wait for a result, it first does what it can (``idle``). :func:`mapped` is the
same within one element: the batches of a billing day flattened, or its parts checked, a few at a
time, in order. (Parquet writes and commits on such threads were tried for a fleet and dropped: no
faster, the work was GIL- or journal-bound.)
"""
from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

try:  # libuv's event loop where it is installed (setup.py: every platform but Windows)
    import uvloop
except ImportError:  # pragma: no cover - asyncio's own loop does the same, a little slower
    uvloop = None

T = TypeVar("T")
R = TypeVar("R")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """libuv's loop where installed, asyncio's own otherwise."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


class BackgroundWork:
    """A thread pool and the bundle's tasks in flight, oldest first."""

    def __init__(self, threads: int, name: str):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._inflight: collections.deque[Future] = collections.deque()

    def add(self, fn: Callable, *args) -> None:
        self.track(self._pool.submit(fn, *args))

    def track(self, future: Future) -> None:
        """Work started elsewhere (a coroutine on an :class:`EventLoop`), queued behind the rest."""
        self._inflight.append(future)

    @property
    def pending(self) -> int:
        return len(self._inflight)

    def oldest_done(self) -> bool:
        return bool(self._inflight) and self._inflight[0].done()

    def pop(self):
        """The oldest task's result (waiting for it), or its exception raised."""
        return self._inflight.popleft().result()

    def discard(self) -> None:
        """Wait for the tasks in flight and drop their results (a bundle that failed)."""
        while self._inflight:
            self._inflight.popleft().exception()

    def shutdown(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)


class PooledDoFn(beam.DoFn):
    """A DoFn whose per-element ``work`` runs on a pool, ``pool_size()`` threads, at most ``in_flight()``
    elements submitted and not yet emitted.

    ``work(element)`` runs on a pool thread and returns a result; ``emit(result)`` turns it into
    outputs on the bundle's thread, in the order of the elements; ``idle()`` gives outputs the bundle's
    thread can make instead of waiting for the oldest result (work gathered so far, say); ``flush()``
    adds outputs at the end of a bundle. Subclasses that open more in ``setup`` or ``start_bundle``
    call these too.
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

    def idle(self) -> Iterable:
        return ()

    def flush(self) -> Iterable:
        return ()

    def setup(self):
        self._work = BackgroundWork(self.pool_size(), self.pool_name)
        self._limit = max(1, self.in_flight())

    def teardown(self):
        work = getattr(self, "_work", None)
        if work is not None:
            work.shutdown()

    def start_bundle(self):
        self._work.discard()  # anything a failed bundle left in flight

    def submit(self, element) -> None:
        """Start ``work(element)``; a subclass may start it elsewhere and ``track`` its future."""
        self._work.add(self.work, element)

    def process(self, element):
        self.submit(element)
        yield from self._results(keep=self._limit - 1)

    def finish_bundle(self):
        def outputs():
            yield from self._results(keep=0)
            yield from self.flush()

        yield from windowed(outputs())

    def _results(self, keep: int) -> Iterator:
        """Outputs of the results in order while more than ``keep`` are in flight, and of any already
        done; before waiting for the oldest, whatever ``idle()`` has."""
        work = self._work
        while work.pending > keep or work.oldest_done():
            if not work.oldest_done():
                yield from self.idle()
            yield from self.emit(work.pop())


class EventLoop:
    """An asyncio loop on a thread of its own, for coroutines a DoFn's thread waits on (provider
    fetches: hundreds of orgs waiting at once on one thread, rather than a thread each)."""

    def __init__(self, name: str, blocking_threads: int = 4):
        """``blocking_threads``: how many ``asyncio.to_thread`` calls run at once (a metastore read a
        network away would otherwise queue behind the default executor's handful of threads)."""
        self._loop = new_event_loop()
        self._loop.set_default_executor(ThreadPoolExecutor(max_workers=blocking_threads, thread_name_prefix=f"{name}-blocking"))
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine):
        """Run a coroutine on the loop and wait for its result."""
        return self.submit(coroutine).result()

    def close(self) -> None:
        """Stop the loop (after the work on it is done) and release its thread and executor."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()


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
