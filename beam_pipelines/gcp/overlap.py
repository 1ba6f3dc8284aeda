"""Overlap reading, flattening and writing a billing export on the worker's cores.

Arrow's Parquet reader and writer and DuckDB release the GIL, so a thread reading the next batch and
one writing the previous part run while batches are flattened (several at once, with
:func:`beam_pipelines.transforms.background.mapped`). Each hand-over is a queue of
one item: memory holds at most a batch ahead and a batch behind, never a day. An error in a thread
is raised in the caller, with its traceback; a caller that stops early stops the thread.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
READ_ROWS = 25_000  # rows per batch read from an export: the Parquet reader's buffers grow with the batch
_DONE = object()
_POLL = 0.1  # seconds between checks whether the other side gave up


def _put(handoff: queue.Queue, value, give_up: Callable[[], bool]) -> bool:
    """Put ``value``, waiting while the queue is full; False if ``give_up()`` became true meanwhile."""
    while not give_up():
        try:
            handoff.put(value, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """``items``, produced in a thread up to ``depth`` items ahead of the consumer."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not _put(handoff, (True, item), stopped.is_set):
                    return
            _put(handoff, (True, _DONE), stopped.is_set)
        except BaseException as exc:  # raised again in the consumer
            _put(handoff, (False, exc), stopped.is_set)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="export-read", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = handoff.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stopped.set()
        thread.join()


class Writer:
    """``with Writer(write) as put: put(item)``: ``write`` runs in a thread, one item behind the caller.

    Leaving the block normally waits for the last write and raises its error if there was one;
    leaving it by an exception abandons the items not yet written.
    """

    def __init__(self, write: Callable[[T], None], depth: int = 1):
        self._write = write
        self._handoff: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, name="export-write", daemon=True)

    def _consume(self) -> None:
        while not self._stopped.is_set():
            try:
                item = self._handoff.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            try:
                self._write(item)
            except BaseException as exc:  # raised again in the caller
                self._error = exc
                return

    def _failed(self) -> bool:
        return self._error is not None or self._stopped.is_set()

    def put(self, item: T) -> None:
        if self._error is None:
            _put(self._handoff, item, self._failed)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Callable[[T], None]:
        self._thread.start()
        return self.put

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            _put(self._handoff, _DONE, self._failed)
            self._thread.join()
            if self._error is not None:
                raise self._error
            return
        self._stopped.set()
        self._thread.join()
