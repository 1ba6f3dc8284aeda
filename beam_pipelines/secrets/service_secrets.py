"""The service's own secrets (root key, SMTP password, Slack webhook): Secret Manager or the env.

``NAME_SECRET`` holds a Secret Manager resource name (``projects/P/secrets/S/versions/V``) and
wins; otherwise ``NAME`` itself is read from the environment (the local fallback). Values are
never logged.
"""
from __future__ import annotations

import os

import google_crc32c

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.secrets.redaction import remember


def resolve_secret(name: str, environ: dict | None = None, client=None, resource: str | None = None) -> str | None:
    """The secret's value: from Secret Manager (``resource``, or ``NAME_SECRET``), else ``NAME`` itself.

    Every value returned is registered for redaction first."""
    environ = os.environ if environ is None else environ
    resource = (resource if resource is not None else environ.get(f"{name}_SECRET") or "").strip()
    if resource:
        if not resource.startswith("projects/") or "/secrets/" not in resource:
            raise ConvergenceError(f"{name}_SECRET must be projects/P/secrets/S[/versions/V]")
        if "/versions/" not in resource:
            resource += "/versions/latest"
        if client is None:
            from google.cloud import secretmanager

            client = secretmanager.SecretManagerServiceClient()
        try:
            response = client.access_secret_version(request={"name": resource})
        except Exception as exc:
            raise ConvergenceError(f"{name}: Secret Manager access failed: {type(exc).__name__}") from None
        data = bytes(response.payload.data)
        if response.payload.data_crc32c and int(google_crc32c.value(data)) != int(response.payload.data_crc32c):
            raise ConvergenceError(f"{name}: Secret Manager payload corrupted (CRC32C mismatch)")
        remember(data.decode())
        return data.decode()
    value = (environ.get(name) or "").strip()
    remember(value)
    return value or None
