"""Exception types shared across the package.

Every error a user can cause carries a message that names what was wrong, so the CLI can print
it as one line. None of them ever carries a secret: provider errors are built from status codes
and the provider's own error message, and pass through :func:`redact` before they are recorded.
"""
from __future__ import annotations


class ConvergenceError(Exception):
    """Base class: an error with a one-line, user-facing message."""


class ConfigError(ConvergenceError):
    """A pipeline config, schema file or system config is invalid (message: ``file: field: problem``)."""


class CredentialError(ConvergenceError):
    """A credential is missing, cannot be decrypted, or belongs to another org/provider."""


class ProviderError(ConvergenceError):
    """A provider API call failed for good (after retries, or not retryable)."""

    def __init__(self, provider: str, message: str, status: int | None = None):
        self.provider = provider
        self.status = status
        prefix = f"{provider} API" + (f" HTTP {status}" if status else "")
        super().__init__(f"{prefix}: {message}")


class MalformedResponseError(ProviderError):
    """A provider answered 2xx with a body that does not follow its published schema."""


class WarehouseError(ConvergenceError):
    """Rows do not fit the table's schema, or a partition could not be written."""


class NotFoundError(ConvergenceError):
    """A named thing (org, run, pipeline) does not exist."""


def redact(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``[REDACTED]``.

    Defence in depth: our own messages never include secrets, but a library's exception text
    might echo a header or URL, and error strings end up in run records.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[REDACTED]")
    return text
