"""Where a launcher request's time goes: requests of each case through the real app, in this process.

The Locust figures say how fast the server is, not why. Here the same app (settings, checks,
middleware, metastore, the benchmark's queue-only backend) is called as ASGI, one request at a time
and without sockets, and each phase is timed by wrapping the function that does it, in the order
the service checks (numbers as in :mod:`launcher.service`), each exclusive of the others. Logs are
written as ``convergence serve`` writes them (JSON lines at INFO, here to /dev/null). ``framework``
is the rest of the request: middleware (request id, body limit), routing, FastAPI's parameters,
errors and responses. ``service, rest`` is the org check (2) and building the run. Sockets and HTTP
parsing (uvicorn) are not in here: they are in the server's CPU per request of the Locust run. Each
wrapper adds well under a microsecond.
"""
from __future__ import annotations

import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta

import launcher.service as service_module
from launcher.logs import JsonFormatter
from launcher.ratelimits import FixedWindows, MovingWindow
from launcher.workers import ServiceCalls

CASES = ("health", "reject_401", "accept_202")
PHASES = ("limits and failed-auth guard", "1 key", "3 subscription", "4 pipeline", "5 body and dates", "6 credential",
          "7-8 quota and reservation", "launch and job id", "service, rest", "JSON log lines", "framework")


FIRST_DAY_BACK = 2001  # after the Locust run's days (1..2000 back), before 2020-01-01: every run is new


class _Requests:
    """The Locust cases' requests, as ASGI scopes; every accepted run is a new (org, pipeline, day)."""

    def __init__(self, keys: dict[str, str]):
        self.keys, self.orgs, self.n = keys, sorted(keys), 0

    def __call__(self, case: str) -> tuple[dict, bytes]:
        headers, body = [(b"host", b"127.0.0.1")], b""
        if case == "health":
            method, path = "GET", "/health"
        elif case == "reject_401":
            method, path = "POST", "/api/v1/pipelines/run/acme/openai/cost/usage_cost"
            headers.append((b"x-api-key", b"cvg_forged_key_value"))
        else:
            self.n += 1
            org, rest = self.orgs[self.n % len(self.orgs)], self.n // len(self.orgs)
            pipeline = ("openai/cost/usage_cost", "anthropic/cost/usage_cost")[rest % 2]
            day = date.today() - timedelta(days=FIRST_DAY_BACK + (rest // 2) % 300)
            method, path = "POST", f"/api/v1/pipelines/run/{org}/{pipeline}"
            body = json.dumps({"date": day.isoformat()}).encode()
            headers += [(b"x-api-key", self.keys[org].encode()), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8001)}
        return scope, body


async def _call(app, scope: dict, body: bytes) -> int:
    delivered, status = False, []

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


@contextmanager
def _timed(spent: Counter):
    """Wrap each phase's functions (module, class or instance attributes) with a timer; undo after.

    Times are exclusive: a timed call inside another (a log line written by the service) counts for
    its own phase only, so the phases and the framework add up to the total.
    """
    active: list[str] = []

    def patch(stack: ExitStack, owner, name: str, phase: str, instance: bool = False):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            active.append(phase)
            try:
                return original(*args, **kwargs)
            finally:
                active.pop()
                elapsed = time.perf_counter() - started
                spent[phase] += elapsed
                if active:
                    spent[active[-1]] -= elapsed

        setattr(owner, name, timed)
        stack.callback(delattr, owner, name) if instance else stack.callback(setattr, owner, name, original)

    yield patch


@contextmanager
def _logging_as_served():
    """JSON lines at INFO, as ``convergence serve`` writes them (here to /dev/null), and only those: a
    handler an earlier case left on the root logger would print every request; undone after."""
    root = logging.getLogger()
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - closed below
    handler.setFormatter(JsonFormatter())
    level, handlers = root.level, root.handlers[:]
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers = handlers
        root.setLevel(level)
        handler.stream.close()


async def _phases(app, make, case: str, n: int, spent: Counter) -> dict[str, float]:
    for _ in range(50):  # warm up: connections, caches, first-call imports
        await _call(app, *make(case))
    spent.clear()
    started = time.perf_counter()
    for _ in range(n):
        await _call(app, *make(case))
    total = time.perf_counter() - started
    spent["service, rest"] = spent.pop("service", 0.0)
    spent["framework"] = total - sum(spent.values())
    spent["total"] = total
    return {phase: round(spent[phase] / n * 1e6, 1) for phase in (*PHASES, "total")}


def breakdown(app, keys: dict[str, str], n: int = 2000) -> dict:
    """Microseconds per request of each phase, for each case, and a profile of the accepted run's hot spots."""

    async def served():
        with _logging_as_served():
            async with app.router.lifespan_context(app):  # started and stopped as uvicorn does
                return await _breakdown(app, keys, n)

    return asyncio.run(served())


async def _breakdown(app, keys: dict[str, str], n: int) -> dict:
    service = app.state.service
    store = service.metastore
    spent: Counter = Counter()
    make = _Requests(keys)
    handed = Counter()
    in_thread = ServiceCalls.in_thread

    async def counted(self, fn, *args):
        handed["to a worker thread"] += 1
        return await in_thread(self, fn, *args)

    with ExitStack() as stack, _timed(spent) as patch:
        for owner, name in ((FixedWindows, "hit"), (MovingWindow, "blocked"), (MovingWindow, "add")):
            patch(stack, owner, name, "limits and failed-auth guard")
        for name, phase in (("authenticate_org_key", "1 key"), ("subscription_refusal", "3 subscription"),
                            ("check_json", "5 body and dates"), ("parse_body", "5 body and dates"),
                            ("resolve_range", "5 body and dates")):
            patch(stack, service_module, name, phase)
        for name, phase in (("get_subscription", "3 subscription"), ("get_credential", "6 credential"),
                            ("get_daily_quota", "7-8 quota and reservation"), ("reserve_run", "7-8 quota and reservation")):
            patch(stack, store, name, phase, instance=True)
        for name, phase in (("_pipeline", "4 pipeline"), ("_launch", "launch and job id"), ("run_pipeline", "service")):
            patch(stack, service, name, phase, instance=True)
        patch(stack, logging.Logger, "_log", "JSON log lines")
        ServiceCalls.in_thread = counted
        stack.callback(setattr, ServiceCalls, "in_thread", in_thread)
        per_case = {case: await _phases(app, make, case, n, spent) for case in CASES}
    profiler = cProfile.Profile()
    profiler.enable()
    await _phases(app, make, "accept_202", n // 4, Counter())
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    hot = [" ".join(line.split()) for line in text.getvalue().splitlines() if line.strip()[:1].isdigit()][:12]
    return {"per_request_us": per_case, "handed_to_worker_threads": handed["to a worker thread"],
            "accept_202_profile_tottime": hot}


def table(per_case: dict, server_cpu_us: dict | None = None) -> str:
    """Each phase's microseconds per case, beside /health's total and the ratio to it."""
    base = per_case["health"]["total"]
    rows = [f"{'us per request (ratio to /health ' + str(base) + ' us)':46s}" + "".join(f"{c:>22s}" for c in CASES)]
    for phase in (*PHASES, "total"):
        cells = "".join(f"{per_case[c][phase]:>12.1f} ({per_case[c][phase] / base:5.2f}x)" if base else "" for c in CASES)
        rows.append(f"  {phase:44s}{cells}")
    if server_cpu_us and all(c in server_cpu_us for c in CASES):
        rows.append(f"  {'server CPU per request in the Locust run':44s}" + "".join(
            f"{server_cpu_us[c]:>12.1f} ({server_cpu_us[c] / server_cpu_us['health']:5.2f}x)" for c in CASES)
            + "  (ratio to its own /health)")
    return "\n".join(rows)
