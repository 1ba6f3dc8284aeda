"""API errors as one JSON shape: ``{"error": code, "message": text, "request_id": id}``."""
from __future__ import annotations


class ApiProblem(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self, request_id: str) -> dict:
        return {"error": self.code, "message": self.message, **self.extra, "request_id": request_id}


def unauthorized() -> ApiProblem:
    # Same answer for a missing, unknown, revoked or expired key: no hint whether the org exists.
    return ApiProblem(401, "unauthorized", "missing or invalid API key", {"WWW-Authenticate": "ApiKey"})
