"""Deterministic row keys: the same natural key gives the same ``row_key`` on every re-run."""
from __future__ import annotations

import hashlib
import json

_ENCODE = json.JSONEncoder(default=str).encode  # json.dumps(parts, default=str), without a new encoder per row


def row_key(*parts: object) -> str:
    return hashlib.sha256(_ENCODE(parts).encode()).hexdigest()[:32]
