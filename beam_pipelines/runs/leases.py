"""Who owns a run, and the heartbeat that proves the owner is alive.

The process that creates or runs a run holds its lease (``owner_id``) and renews it every quarter
of the lease while it lives (:class:`LeaseKeeper`, a daemon thread). If the process dies (kill -9,
OOM, a lost VM) nobody renews, the lease passes within ``CONVERGENCE_LEASE_SECONDS`` and the next
process that looks closes the run (:mod:`beam_pipelines.runs.reaper`). A live owner is never
failed by anyone else.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from beam_pipelines.metastore.base import lease_seconds, lease_until

log = logging.getLogger(__name__)
_PROCESS_TOKEN = uuid.uuid4().hex[:12]


def process_owner_id(kind: str = "process") -> str:
    """This process, unmistakably (a pid can be reused; the token cannot)."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


class LeaseKeeper:
    """Renews the leases of ``run_ids`` for ``owner_id`` until :meth:`stop` (or the process dies)."""

    def __init__(self, metastore_spec, owner_id: str, run_ids: list[str], interval: float | None = None):
        self._spec, self.owner_id = metastore_spec, owner_id
        self._lock = threading.Lock()
        self._run_ids = list(run_ids)
        self._interval = interval or max(0.5, lease_seconds() / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def add(self, run_ids: list[str]) -> None:
        with self._lock:
            self._run_ids += [r for r in run_ids if r not in self._run_ids]

    def remove(self, run_ids: list[str]) -> None:
        with self._lock:
            self._run_ids = [r for r in self._run_ids if r not in set(run_ids)]

    def renew_now(self, metastore=None) -> None:
        with self._lock:
            run_ids = list(self._run_ids)
        if run_ids:
            store = metastore or self._store
            store.renew_leases(run_ids, self.owner_id, lease_until())

    def start(self) -> LeaseKeeper:
        self._store = self._spec.open()
        self.renew_now()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.renew_now()
            except Exception as exc:  # the next beat tries again; the lease has slack for a few misses
                log.warning("lease renewal failed: %s", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
