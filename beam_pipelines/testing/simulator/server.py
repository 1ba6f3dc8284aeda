"""The provider simulator: a loopback HTTP server speaking the providers' usage APIs.

``ProviderSimulator`` runs in a background thread (tests, ``make demo``) or in the foreground
(``convergence simulate``). It listens on 127.0.0.1 by default, picks a free port when given 0,
and stops when the context exits or after ``idle_timeout`` seconds without a request.

It answers on one event loop (aiohttp): a fleet benchmark keeps a hundred connections open, each
waiting out the simulated answer time, and a thread per connection spent more of the machine's two
cores switching between them than answering (0.4-0.6 ms of CPU per page, against the pipeline's few
milliseconds per org), CPU that a real provider's servers never take from ours.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from datetime import date, datetime, timezone
from urllib.parse import parse_qs

from aiohttp import web

from beam_pipelines.testing.simulator import anthropic_api, openai_api
from beam_pipelines.testing.simulator.faults import FaultPlan
from beam_pipelines.testing.simulator.openai_api import ApiError
from beam_pipelines.transforms.background import new_event_loop

log = logging.getLogger(__name__)

BACKLOG = 1024  # a fleet of orgs fetched at once opens hundreds of connections


class _OpenAI:
    authenticate = staticmethod(openai_api.authenticate)
    stray_bucket = staticmethod(openai_api.stray_bucket)

    @staticmethod
    def fault_response(name: str, arg: str):
        if name == "429":
            return 429, openai_api.error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded").body, \
                {"Retry-After": arg or "1"}
        if name == "429-no-retry-after":
            return 429, openai_api.error(429, "Rate limit reached", "requests", "rate_limit_exceeded").body, {}
        if name == "spend-limit":
            return 429, openai_api.error(429, "You exceeded your current quota", "insufficient_quota",
                                         "insufficient_quota").body, {}
        status = int(name)
        return status, openai_api.error(status, "The server had an error while processing your request.",
                                        "server_error").body, {}


ROUTES = {
    "/v1/organization/usage/completions": (_OpenAI, openai_api.usage_page),
    "/v1/organization/costs": (_OpenAI, openai_api.costs_page),
    "/v1/organizations/usage_report/messages": (anthropic_api, anthropic_api.usage_page),
    "/v1/organizations/cost_report": (anthropic_api, anthropic_api.cost_page),
}


def _json(status: int, body, headers: dict | None = None, raw: bytes | None = None) -> web.Response:
    payload = raw if raw is not None else json.dumps(body).encode()
    return web.Response(status=status, body=payload, headers={"Content-Type": "application/json", **(headers or {})})


class ProviderSimulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, idle_timeout: float | None = None,
                 latency: float = 0.0):
        self.faults = FaultPlan()
        self.idle_timeout = idle_timeout
        self.latency = latency  # a provider's answer time (benchmarks run with 50 ms)
        self.requests = 0
        self.last_request = time.monotonic()
        self._socket = socket.create_server((host, port), backlog=BACKLOG)  # bound now: the URL is known at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._socket.getsockname()[0]

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # serving ------------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Answer until :meth:`stop` or ``idle_timeout`` seconds without a request."""
        self._loop = new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()
            self._socket.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._answer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)  # never log request lines or headers
        await runner.setup()
        await web.SockSite(runner, self._socket, shutdown_timeout=1.0).start()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            while self.idle_timeout is None or time.monotonic() - self.last_request < self.idle_timeout:
                with contextlib.suppress(TimeoutError):  # wait_for cancels the wait it gives up on
                    await asyncio.wait_for(self._stop.wait(), timeout=0.5)
                if self._stop.is_set():
                    break
        finally:
            await runner.cleanup()

    def start(self) -> ProviderSimulator:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="simulator")
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # answering ----------------------------------------------------------------------------------
    async def _answer(self, request: web.Request) -> web.Response:
        self.last_request = arrived = time.monotonic()
        if request.method == "POST":
            return self._set_faults(request.path, await request.read())
        if request.method != "GET":
            return _json(405, {"error": {"message": f"{request.method} not allowed", "type": "invalid_request_error"}})
        self.requests += 1
        answer = await self._page(request)
        if self.latency:  # the answer leaves ``latency`` after the request came, however long it took to make
            await asyncio.sleep(max(0.0, self.latency - (time.monotonic() - arrived)))
        return answer

    async def _page(self, request: web.Request) -> web.Response:
        route = ROUTES.get(request.path)
        if route is None:
            return _json(404, {"error": {"message": f"Unknown path {request.path}", "type": "not_found_error"}})
        provider, page = route
        try:
            key = provider.authenticate(request.headers)
            fault = request.headers.get("X-Simulator-Fault") or self.faults.next(key)
            name, _, arg = (fault or "").partition(":")
            if name == "slow":
                await asyncio.sleep(float(arg or 1))
            elif fault and name not in ("repeat-cursor", "bad-schema", "empty", "stray-bucket"):
                return self._fault(provider, key, name, arg)
            body = page(parse_qs(request.query_string), key, datetime.now(timezone.utc))
            if isinstance(body, tuple):
                body, used_cursor = body
                if fault == "repeat-cursor" and body.get("has_more") and used_cursor:
                    body["next_page"] = used_cursor
            if fault == "bad-schema":
                body["data"] = "not-a-list"
            if fault == "empty":
                body.update(data=[], has_more=False, next_page=None)
            if name == "stray-bucket":
                body["data"].append(provider.stray_bucket(key, date.fromisoformat(arg)))
            return _json(200, body)
        except ApiError as exc:
            return _json(exc.status, exc.body, exc.headers)

    @staticmethod
    def _fault(provider, key: str, name: str, arg: str) -> web.Response:
        if name == "malformed":
            return _json(200, None, raw=b'{"object": "page", "data": [')
        if name == "429-echo-key":
            status, body, headers = provider.fault_response("429", "0")
            body["error"]["message"] = (f"Rate limit reached for key {key} (shown as {key[:8]}****{key[-4:]});"
                                        " slow down")
            return _json(status, body, headers)
        return _json(*provider.fault_response(name, arg))

    def _set_faults(self, path: str, raw: bytes) -> web.Response:
        if path != "/_simulator/faults":
            return _json(404, {"error": {"message": "Not found", "type": "invalid_request_error"}})
        try:
            body = json.loads(raw or b"{}")
            self.faults.add(str(body["key"]), list(body["faults"]))
        except (ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": {"message": f"bad fault request: {exc}"}})
        return _json(200, {"ok": True})
