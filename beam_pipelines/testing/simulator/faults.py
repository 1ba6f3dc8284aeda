"""Fault injection for the simulator: a queue of faults per admin key, or one per request.

Fault specs: ``429`` or ``429:SECONDS`` (with Retry-After), ``429-no-retry-after``, ``500``,
``503``, ``529``, ``slow:SECONDS`` (then answer normally), ``malformed`` (invalid JSON),
``bad-schema`` (valid JSON that breaks the spec), ``repeat-cursor`` (answer with the cursor just
used), ``spend-limit`` (a 429 that must not be retried). Hostile answers: ``empty`` (a valid,
complete answer with no usage), ``stray-bucket:YYYY-MM-DD`` (a valid page that also carries a
bucket for that day, whatever was asked), ``429-echo-key`` (a 429 whose message echoes the caller's
key, whole and masked, as some proxies do). Set them per key with
``POST /_simulator/faults {"key": ..., "faults": [...]}`` or the Python API, or per request with the
``X-Simulator-Fault`` header.
"""
from __future__ import annotations

import threading
from collections import defaultdict, deque

KNOWN = {"429", "429-no-retry-after", "500", "503", "529", "malformed", "bad-schema",
         "repeat-cursor", "spend-limit", "empty", "429-echo-key"}


def validate(spec: str) -> str:
    name, _, arg = spec.partition(":")
    if name in ("slow", "429") and arg:
        float(arg)
        return spec
    if name == "stray-bucket":
        from datetime import date

        date.fromisoformat(arg)
        return spec
    if spec not in KNOWN:
        raise ValueError(f"unknown fault {spec!r}")
    return spec


class FaultPlan:
    def __init__(self):
        self._lock = threading.Lock()
        self._queues: dict[str, deque[str]] = defaultdict(deque)

    def add(self, key: str, faults: list[str]) -> None:
        checked = [validate(f) for f in faults]
        with self._lock:
            self._queues[key].extend(checked)

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()

    def next(self, key: str) -> str | None:
        with self._lock:
            queue = self._queues.get(key)
            return queue.popleft() if queue else None

    def pending(self, key: str) -> int:
        with self._lock:
            return len(self._queues.get(key, ()))
