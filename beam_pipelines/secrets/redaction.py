"""One redaction for every line this process writes: log records, errors, run records.

Every secret the process decrypts or resolves is registered here from that moment on
(:func:`remember`). Each log record is redacted when it is created (a log-record factory), so no
handler of any kind (the CLI's file and stderr, the launcher's JSON lines, Beam's worker logging)
ever formats the secret; errors recorded in run records pass through :func:`redact` too.

What counts as a leak: the secret itself, and any masked form that keeps part of it (a provider
echoing ``sk-admin****f3a9`` reveals a prefix and a suffix). So besides the registered values,
key-shaped tokens (``sk-...``, OAuth access tokens, PEM private keys) are replaced whole, masked or
not, wherever they appear.
"""
from __future__ import annotations

import logging
import re
import threading

REDACTED = "[REDACTED]"
MIN_SECRET = 8
KEY_SHAPES = re.compile(
    r"(?:\bsk-[A-Za-z0-9_\-\*\.•…]{4,}"  # OpenAI / Anthropic keys, also masked (sk-admin****f3a9)
    r"|\bya29\.[A-Za-z0-9_\-\.]{10,}"  # Google OAuth access tokens
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    r"|\bcvg_[A-Za-z0-9_\-]{16,}"  # this service's own org API keys
    r"|https://hooks\.slack\.com/[^\s\"']+)",
    re.S,
)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern | None = None


def _pieces(secret: str) -> set[str]:
    """The secret, and the long lines of a multi-line one (a PEM key's base64 body)."""
    found = {secret.strip()}
    found |= {line.strip() for line in secret.splitlines() if len(line.strip()) >= 16}
    if '"private_key"' in secret:  # a service-account JSON key: its key text as JSON escapes it
        import json

        try:
            info = json.loads(secret)
            found |= _pieces(str(info.get("private_key", ""))) | {str(info.get("private_key_id", ""))}
        except ValueError:
            pass
    return {p for p in found if len(p) >= MIN_SECRET}


def remember(secret: str | bytes | None) -> None:
    """Redact ``secret`` (and its masked forms) from everything this process writes from now on.

    The pattern is rebuilt lazily, at the next redaction: a fleet job decrypts a thousand keys and
    writes few lines, and rebuilding per key made decryption quadratic in the number of orgs.
    """
    global _pattern
    if not secret:
        return
    text = secret.decode(errors="replace") if isinstance(secret, bytes) else str(secret)
    new = _pieces(text) - _secrets
    if not new:
        return
    with _lock:
        _secrets.update(new)
        _pattern = None


def _current_pattern() -> re.Pattern | None:
    global _pattern
    pattern = _pattern
    if pattern is None and _secrets:
        with _lock:
            if _pattern is None:
                alternatives = []
                for value in sorted(_secrets, key=len, reverse=True):
                    alternatives.append(re.escape(value))
                    # a masked echo: a prefix of it, a mask, a suffix of it
                    alternatives.append(re.escape(value[:4]) + r"[^\s\"']{0,24}?[\*•…]{3,}[^\s\"']{0,24}?"
                                        + re.escape(value[-3:]))
                _pattern = re.compile("|".join(alternatives))
            pattern = _pattern
    return pattern


def forget_all() -> None:
    """Tests only: start from an empty registry."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def redact(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        remember(secret)
    if not text:
        return text
    pattern = _current_pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return KEY_SHAPES.sub(REDACTED, text)


_installed = False


def install() -> None:
    """Redact every log record of this process when it is created (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        base = logging.getLogRecordFactory()

        def factory(*args, **kwargs) -> logging.LogRecord:
            record = base(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string: keep the raw template
                message = str(record.msg)
            record.msg, record.args = redact(message), ()
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


install()
