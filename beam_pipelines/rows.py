"""Deterministic row keys: the same natural key gives the same ``row_key`` on every re-run."""
from __future__ import annotations

import hashlib
import json


def row_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]
