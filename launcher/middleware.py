"""ASGI middleware: request ids (header + every log line) and the request body size limit."""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

from launcher.logs import request_id

log = logging.getLogger("launcher.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


async def _send_json(send, status: int, body: dict, rid: str) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"x-request-id", rid.encode())]})
    await send({"type": "http.response.body", "body": payload})


class RequestContext:
    """Accept a well-formed ``X-Request-ID`` or make one; echo it; log one JSON access line."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = {"code": 500}
        try:
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                status["code"] = 413
                return await _send_json(send, 413, {"error": "payload_too_large", "request_id": rid,
                                                    "message": f"body larger than {self.max_body} bytes"}, rid)
            body, too_big = b"", False
            if scope["method"] in ("POST", "PUT", "PATCH"):
                more = True
                while more:
                    message = await receive()
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_body:
                        too_big = True
                        break
            if too_big:
                status["code"] = 413
                return await _send_json(send, 413, {"error": "payload_too_large", "request_id": rid,
                                                    "message": f"body larger than {self.max_body} bytes"}, rid)
            replayed = False

            async def replay():
                nonlocal replayed
                if scope["method"] in ("POST", "PUT", "PATCH") and not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]
                await send(message)

            await self.app(scope, replay, send_with_id)
        finally:
            log.info("%s %s %s", scope["method"], scope["path"], status["code"],
                     extra={"method": scope["method"], "path": scope["path"], "status_code": status["code"],
                            "duration_ms": round((time.perf_counter() - started) * 1000, 2)})
            request_id.reset(token)
