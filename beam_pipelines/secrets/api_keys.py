"""Org API keys: generated once, shown once, stored and compared only as SHA-256 hashes."""
from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "cvg_"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def hashes_match(expected_hash: str, api_key: str) -> bool:
    """Constant-time comparison of a stored hash with the hash of a presented key."""
    return hmac.compare_digest(expected_hash.encode(), hash_api_key(api_key).encode())
