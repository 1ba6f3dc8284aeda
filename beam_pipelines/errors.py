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


class ValidationFailed(ConvergenceError):
    """Rows broke a rule they must keep (a FOCUS column, a data-quality expectation): nothing is written."""


class NotFoundError(ConvergenceError):
    """A named thing (org, run, pipeline) does not exist."""


def redact(text: str, *secrets: str | None) -> str:
    """Replace every secret this process knows (and ``secrets``), masked forms included, with ``[REDACTED]``.

    Defence in depth: our own messages never include secrets, but a provider's or a library's
    error text might echo a header or a key, and error strings end up in run records.
    """
    from beam_pipelines.secrets.redaction import redact as _redact

    return _redact(text, *secrets)


def one_line_error(exc: BaseException, *secrets: str | None) -> str:
    """An exception as one redacted line of at most 1,000 characters, for run records and the CLI."""
    text = str(exc) if isinstance(exc, ConvergenceError) else f"{type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()), *secrets)[:1000]
