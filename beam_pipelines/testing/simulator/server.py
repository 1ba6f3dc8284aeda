"""The provider simulator: a loopback HTTP server speaking the providers' usage APIs.

``ProviderSimulator`` runs in a background thread (tests, ``make demo``) or in the foreground
(``convergence simulate``). It listens on 127.0.0.1 by default, picks a free port when given 0,
and stops when the context exits or after ``idle_timeout`` seconds without a request.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from beam_pipelines.testing.simulator import anthropic_api, openai_api
from beam_pipelines.testing.simulator.faults import FaultPlan
from beam_pipelines.testing.simulator.openai_api import ApiError

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle's algorithm the body waited for the client's
    # delayed ACK of the headers (~40 ms on Linux), which no provider's front end adds to an answer.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # keep request lines out of stderr; never log headers
        log.debug("simulator: " + fmt, *args)

    def _send(self, status: int, body, headers: dict | None = None, raw: bytes | None = None):
        payload = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        self.server.touch()
        path = urlsplit(self.path).path
        if path != "/_simulator/faults":
            return self._send(404, {"error": {"message": "Not found", "type": "invalid_request_error"}})
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            self.server.faults.add(str(body["key"]), list(body["faults"]))
        except (ValueError, KeyError, TypeError) as exc:
            return self._send(400, {"error": {"message": f"bad fault request: {exc}"}})
        return self._send(200, {"ok": True})

    def do_GET(self):
        self.server.touch()
        self.server.count_request()
        if self.server.latency:
            time.sleep(self.server.latency)  # a provider's answer time (benchmarks run with 50 ms)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        route = self.server.routes.get(parts.path)
        if route is None:
            return self._send(404, {"error": {"message": f"Unknown path {parts.path}", "type": "not_found_error"}})
        provider, handler = route
        try:
            key = provider.authenticate(self.headers)
            fault = self.headers.get("X-Simulator-Fault") or self.server.faults.next(key)
            if fault and self._apply_fault(provider, fault):
                return
            body = handler(query, key, datetime.now(timezone.utc))
            if isinstance(body, tuple):
                body, used_cursor = body
                if fault == "repeat-cursor" and body.get("has_more") and used_cursor:
                    body["next_page"] = used_cursor
            if fault == "bad-schema":
                body["data"] = "not-a-list"
            if fault == "empty":
                body.update(data=[], has_more=False, next_page=None)
            if fault and fault.startswith("stray-bucket:"):
                body["data"].append(provider.stray_bucket(key, date.fromisoformat(fault.split(":", 1)[1])))
            return self._send(200, body)
        except ApiError as exc:
            return self._send(exc.status, exc.body, exc.headers)

    def _apply_fault(self, provider, fault: str) -> bool:
        """Answer with the fault and return True, or return False to answer normally."""
        name, _, arg = fault.partition(":")
        if name == "slow":
            time.sleep(float(arg or 1))
            return False
        if name == "malformed":
            self._send(200, None, raw=b'{"object": "page", "data": [')
            return True
        if name in ("repeat-cursor", "bad-schema", "empty", "stray-bucket"):
            return False
        if name == "429-echo-key":
            key = provider.authenticate(self.headers)
            status, body, headers = provider.fault_response("429", "0")
            body["error"]["message"] = (f"Rate limit reached for key {key} (shown as {key[:8]}****{key[-4:]});"
                                        " slow down")
            self._send(status, body, headers)
            return True
        status, body, headers = provider.fault_response(name, arg)
        self._send(status, body, headers)
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    request_queue_size = 1024  # a fleet of orgs fetched at once opens hundreds of connections

    def __init__(self, address, faults: FaultPlan, routes: dict, latency: float = 0.0):
        super().__init__(address, _Handler)
        self.latency = latency
        self.faults = faults
        self.routes = routes
        self.last_request = time.monotonic()
        self.requests = 0
        self._lock = threading.Lock()

    def touch(self):
        self.last_request = time.monotonic()

    def count_request(self):
        with self._lock:
            self.requests += 1


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


class ProviderSimulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, idle_timeout: float | None = None,
                 latency: float = 0.0):
        self.faults = FaultPlan()
        routes = {
            "/v1/organization/usage/completions": (_OpenAI, openai_api.usage_page),
            "/v1/organization/costs": (_OpenAI, openai_api.costs_page),
            "/v1/organizations/usage_report/messages": (anthropic_api, anthropic_api.usage_page),
            "/v1/organizations/cost_report": (anthropic_api, anthropic_api.cost_page),
        }
        self._server = _Server((host, port), self.faults, routes, latency)
        self._thread: threading.Thread | None = None
        self.idle_timeout = idle_timeout

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def requests(self) -> int:
        return self._server.requests

    def serve_forever(self) -> None:
        if self.idle_timeout:
            threading.Thread(target=self._idle_watch, daemon=True).start()
        self._server.serve_forever(poll_interval=0.2)

    def _idle_watch(self) -> None:
        while time.monotonic() - self._server.last_request < self.idle_timeout:
            time.sleep(0.5)
        self._server.shutdown()

    def start(self) -> ProviderSimulator:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="simulator")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
