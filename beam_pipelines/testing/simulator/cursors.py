"""Page cursors of the simulated usage APIs: opaque, about as short as the providers' own, and good
only for the query they came from.

A cursor carries where the next page starts and a short hash of the query. It once carried the whole
query as JSON: a URL of 600 characters, which the client's URL handling walked character by
character on every page (a fifth of a fleet's client CPU), where a real cursor is a few dozen.
"""
from __future__ import annotations

import base64
import hashlib
import json


def fingerprint(query: dict) -> str:
    """The query without its cursor, hashed: a cursor used with other filters or grouping is refused."""
    canonical = json.dumps({k: v for k, v in sorted(query.items()) if k != "page"})
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(state: dict, prefix: str = "") -> str:
    return prefix + base64.urlsafe_b64encode(json.dumps(state, sort_keys=True, separators=(",", ":")).encode()).decode()


def decode(cursor: str, prefix: str = "") -> dict | None:
    """The cursor's state, or None when it is not one of ours."""
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.removeprefix(prefix).encode()))
    except ValueError:
        return None
    return state if isinstance(state, dict) else None
