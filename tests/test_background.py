"""Work a DoFn hands to a pool: results in the order of the elements, and the bundle's thread doing
what it can (``idle``) instead of waiting for a result that is not there yet."""
from __future__ import annotations

import threading
import time

import pytest

from beam_pipelines.transforms.background import PooledDoFn


class Gated(PooledDoFn):
    """Element ``x`` finishes when its gate opens; ``idle`` says each time it was asked."""

    def __init__(self, elements: int):
        self.gates = [threading.Event() for _ in range(elements)]
        self.idles = 0

    def pool_size(self) -> int:
        return 2

    def work(self, x):
        assert self.gates[x].wait(10)
        return x

    def emit(self, result):
        yield ("out", result)

    def idle(self):
        self.idles += 1
        yield ("idle", self.idles)

    def flush(self):
        yield ("flushed", None)


def _open_later(gate: threading.Event, seconds: float = 0.2) -> None:
    threading.Timer(seconds, gate.set).start()


def _settle(fn: Gated) -> None:
    deadline = time.monotonic() + 10
    while not fn._work.oldest_done() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_results_keep_the_elements_order_and_idle_runs_only_instead_of_waiting():
    fn = Gated(3)
    fn.setup()
    try:
        fn.start_bundle()
        assert list(fn.process(0)) == [], "one in flight, below the limit: nothing to wait for"
        fn.gates[0].set()
        _settle(fn)
        assert list(fn.process(1)) == [("out", 0)], "the oldest was done: emitted, no idle"
        _open_later(fn.gates[1])
        assert list(fn.process(2)) == [("idle", 1), ("out", 1)], "at the limit and the oldest not done: idle first"
        _open_later(fn.gates[2])
        assert [w.value for w in fn.finish_bundle()] == [("idle", 2), ("out", 2), ("flushed", None)]
        assert fn.idles == 2
    finally:
        for gate in fn.gates:
            gate.set()
        fn.teardown()


def test_an_event_loop_runs_coroutines_from_other_threads_and_stops_cleanly():
    import asyncio
    import threading

    from beam_pipelines.transforms.background import EventLoop

    loop = EventLoop("test-loop", blocking_threads=2)
    threads = []

    async def work(n):
        threads.append(threading.current_thread().name)
        await asyncio.sleep(0.05)
        if n == 3:
            raise ValueError("org 3 failed")
        return n * 2

    futures = [loop.submit(work(n)) for n in range(5)]
    assert [f.result(timeout=5) for f in futures if f is not futures[3]] == [0, 2, 4, 8]
    with pytest.raises(ValueError, match="org 3 failed"):
        futures[3].result(timeout=5)
    assert loop.run(asyncio.to_thread(lambda: threading.current_thread().name)).startswith("test-loop-blocking"), \
        "blocking work goes to the loop's own threads"
    assert set(threads) == {"test-loop"}
    loop.close()
    assert not any(t.name == "test-loop" for t in threading.enumerate()), "the loop's thread is gone"
