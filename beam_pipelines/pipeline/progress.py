"""How many orgs a local job has fetched so far, for the CLI's progress bar.

Local jobs run the graph in this process (the FnApiRunner), so a counter in memory is enough and
costs no metastore write per org; on Dataflow nobody reads it. A local job spread over worker
processes (:mod:`beam_pipelines.pipeline.local_workers`) has each worker count into a shared value
its parent adds to its own.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_done: dict[str, int] = {}
_shared: tuple[str, object] | None = None  # (step id, multiprocessing.Value) in a worker process


def share(step_id: str, counter) -> None:
    """In a worker process: also count ``step_id``'s orgs into ``counter``, which the parent reads."""
    global _shared
    _shared = (step_id, counter)


def org_done(step_id: str) -> None:
    with _lock:
        _done[step_id] = _done.get(step_id, 0) + 1
    if _shared is not None and _shared[0] == step_id:
        with _shared[1].get_lock():
            _shared[1].value += 1


def done(step_id: str) -> int:
    with _lock:
        return _done.get(step_id, 0)


def reset() -> None:
    with _lock:
        _done.clear()
