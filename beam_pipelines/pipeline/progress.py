"""How many orgs a local job has fetched so far, for the CLI's progress bar.

Local jobs run the graph in this process (the FnApiRunner), so a counter in memory is enough and
costs no metastore write per org; on Dataflow nobody reads it.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_done: dict[str, int] = {}


def org_done(step_id: str) -> None:
    with _lock:
        _done[step_id] = _done.get(step_id, 0) + 1


def done(step_id: str) -> int:
    with _lock:
        return _done.get(step_id, 0)


def reset() -> None:
    with _lock:
        _done.clear()
