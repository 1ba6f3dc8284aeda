"""Spread a large local job's orgs over worker processes, one Beam job each.

The local runner (the FnApiRunner) runs every step of an element on one thread, so a fleet's Python
work (pricing, FOCUS, staging, the runner's own per-element work, the fetch threads' parsing) is
bound by one interpreter lock: 1,000 orgs kept one core busy while the other idled. Dataflow spreads
orgs over its workers after the graph's Reshuffle; locally a job of at least
``MIN_ORGS_PER_WORKER`` orgs per process is spread the same way by hand: its orgs are dealt
round-robin into shards, this process runs the first one and each other shard runs the same graph
in another process (``CONVERGENCE_LOCAL_WORKERS`` caps the processes; default one per core).

A worker is forked when that is safe (:func:`start_method`): it then has every module imported and
starts fetching when this process does. A spawned worker imports Beam again first: 1.5-2.5 s on a
busy machine, during which this process fetched alone and after which the worker finished last
(1,000 orgs: 13.9 s spawned, 12.0 s forked, both processes ending within 0.1 s of each other).

Nothing crosses processes but the work items going in and a count of fetched orgs coming back for
the progress bar: each worker holds its runs' leases, commits its orgs and closes their run records
exactly as a single job does. A worker that dies leaves its runs open; :meth:`Workers.join` says
which, and the caller closes them as FAILED with the reason, as for a job that crashed.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Sequence

from beam_pipelines.errors import one_line_error
from beam_pipelines.pipeline import progress
from beam_pipelines.transforms.elements import WorkItem

log = logging.getLogger(__name__)
# Below this many orgs per process, a worker's start-up (a fresh interpreter importing Beam, ~2 s of
# CPU) costs more than the orgs it takes over (~20 ms of CPU each).
MIN_ORGS_PER_WORKER = 250
LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner"})


class WorkerDied(RuntimeError):
    """A worker process ended without closing its runs (killed, out of memory, or failed to start)."""


def worker_count(settings, runner: str, orgs: int) -> int:
    """How many processes a job of ``orgs`` orgs runs in: 1 unless it is local and large enough."""
    if runner not in LOCAL_RUNNERS:
        return 1
    limit = settings.local_workers or os.cpu_count() or 1
    return max(1, min(limit, orgs // MIN_ORGS_PER_WORKER))


def start_method(settings) -> str:
    """``fork`` when this process runs no thread but its own and the job's services are the embedded
    ones (SQLite, the Parquet warehouse, the local key); else ``spawn``.

    A fork copies every lock as it was: held by another thread, it stays held in the worker for ever.
    With one thread nothing is held. Cloud clients (BigQuery, KMS) keep threads and connections below
    Python that a fork does not carry over, so a job using them spawns. A worker exits without
    running finalizers (``os._exit``), so nothing it inherited is torn down twice.
    """
    embedded = (settings.metastore, settings.sink, settings.cipher) == ("sqlite", "local", "local")
    if embedded and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def deal(items: Sequence[WorkItem], shards: int) -> list[list[WorkItem]]:
    """Round-robin, so each shard gets a like share of big and small orgs (the list is sorted by org)."""
    return [list(items[i::shards]) for i in range(shards)]


class Workers:
    """The worker processes of one job, one per shard; started on entering, reaped on leaving."""

    def __init__(self, settings, loaded, shards: list[list[WorkItem]], runner: str, owner_id: str, step_id: str):
        self._args = (settings, loaded, runner, owner_id, step_id)
        self._shards = shards
        self._context = multiprocessing.get_context(start_method(settings))
        self._counters = [self._context.Value("i", 0) for _ in self._shards]
        self._processes: list = []

    def __enter__(self) -> Workers:
        settings, loaded, runner, owner_id, step_id = self._args
        if self._shards and self._context.get_start_method() == "fork":
            gc.freeze()  # a forked worker's collections then never write to (and so copy) the pages it shares with us
        for index, (shard, counter) in enumerate(zip(self._shards, self._counters)):
            process = self._context.Process(
                target=_work, name=f"convergence-worker-{index + 1}", daemon=True,
                args=(settings, loaded, shard, runner, owner_id, step_id, counter,
                      _log_setup() if self._context.get_start_method() == "spawn" else None))
            try:
                process.start()
            except Exception as exc:  # noqa: BLE001 - its runs are closed as FAILED by the caller, saying why
                log.exception("worker process %s could not start", process.name)
                process = WorkerDied(f"worker process could not start: {one_line_error(exc)}")
            self._processes.append(process)
        if self._processes:
            log.info("job spread over %d more worker process(es): %s orgs", len(self._processes),
                     ", ".join(str(len(s)) for s in self._shards))
        return self

    def fetched(self) -> int:
        """Orgs the workers have fetched so far (for the progress bar)."""
        return sum(counter.value for counter in self._counters)

    def join(self) -> list[WorkerDied | None]:
        """Wait for every worker; for each (in shard order) what ended it if it did not end cleanly."""
        reasons = []
        for process in self._processes:
            if isinstance(process, WorkerDied):
                reasons.append(process)
                continue
            process.join()
            reason = None
            if process.exitcode != 0:
                how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"exit code {process.exitcode}"
                log.error("worker process %s ended with %s", process.name, how)
                reason = WorkerDied(f"worker process ended with {how}")
            reasons.append(reason)
        return reasons

    def __exit__(self, *exc) -> None:
        for process in self._processes:  # only left alive when this process failed before join()
            if not isinstance(process, WorkerDied) and process.is_alive():
                process.terminate()
                process.join()


def _log_setup() -> list[tuple[str, str | None, int, str | None]]:
    """This process's log handlers, as a worker repeats them: ("file", path, ...) or ("stderr", None, ...)."""
    handlers = []
    for handler in logging.getLogger().handlers:
        fmt = handler.formatter._fmt if handler.formatter else None
        if isinstance(handler, logging.FileHandler):
            handlers.append(("file", handler.baseFilename, handler.level, fmt))
        elif isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handlers.append(("stderr", None, handler.level, fmt))
    return handlers


def _work(settings, loaded, items, runner, owner_id, step_id, counter, handlers) -> None:
    """A worker process: the same logging (and redaction) as its parent, then one job for its shard.
    ``handlers`` is None in a forked worker, which has its parent's already."""
    from beam_pipelines.pipeline.run import run_job
    from beam_pipelines.secrets import redaction

    os.umask(0o077)
    redaction.install()
    root = logging.getLogger()
    if handlers is not None:
        root.setLevel(logging.INFO)
    for kind, path, level, fmt in handlers or ():
        handler = logging.FileHandler(path) if kind == "file" else logging.StreamHandler(sys.stderr)
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    progress.share(step_id, counter)
    run_job(settings, loaded, items, runner, owner_id)
