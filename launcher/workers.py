"""Where the routes' blocking service calls run: on the event loop when they cannot wait, else in a few threads.

Every check of a request reads the metastore, which blocks, so starlette's answer is a worker
thread per call (``run_in_threadpool``, up to forty at once). With the embedded SQLite metastore a
call is tens of microseconds of CPU, not a wait, and the hop costs more than the call: measured on
the launcher benchmark, the handover alone took longer than every check of a 401, and forty
runnable threads took the GIL from each other and from the event loop (the interpreter hands it
over only every 5 ms), so a run's reservation, a few SQLite statements that each give the GIL
up, waited up to that long per statement: most of the p99 of an accepted run.

So on the embedded default a call that touches only the metastore (and a launch that does not wait,
which the local backend's queue does not) runs on the loop itself. Reads never wait in WAL mode.
Writes are asked to wait only briefly (:meth:`SQLiteMetastore.wait_briefly_until_first_write`):
if another process holds SQLite's write lock before the call has written anything, the call is
redone from the start in a worker thread, where waiting stalls nobody else; the checks it re-runs
only read. Other calls (a run's ledger view, OIDC verification), BigQuery and backends whose launch
waits on the network keep worker threads, only a few of them for the embedded store and forty for
BigQuery, whose calls are waits on the network.
"""
from __future__ import annotations

import functools

import anyio.to_thread

from beam_pipelines.metastore.sqlite import WouldWait

SQLITE_THREADS = 4
NETWORK_THREADS = 40


class ServiceCalls:
    """``await calls(fn, *args, store_only=True)``: ``fn(*args)`` where it costs least and stalls nobody."""

    def __init__(self, metastore, backend):
        self._store = metastore
        brief = getattr(metastore, "wait_briefly_until_first_write", None)
        self.inline = brief is not None and not getattr(backend, "launch_waits", False)
        self._brief = brief
        self.threads = SQLITE_THREADS if brief is not None else NETWORK_THREADS
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop that uses it

    def start(self) -> None:
        """When the store is called on the loop, its WAL checkpoints (5-15 ms each) move off the loop too."""
        if self.inline:
            self._store.checkpoint_in_background()

    def stop(self) -> None:
        if self.inline:
            self._store.close()

    async def __call__(self, fn, *args, store_only: bool = False):
        """``store_only``: the call touches nothing but the metastore and the backend's ``launch``."""
        if store_only and self.inline:
            try:
                with self._brief():
                    return fn(*args)
            except WouldWait:
                pass  # nothing was written: redo the whole call where waiting is harmless
        return await self.in_thread(fn, *args)

    async def in_thread(self, fn, *args):
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)
