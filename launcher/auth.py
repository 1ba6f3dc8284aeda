"""Authentication: org API keys (SHA-256 hash lookup, constant-time compare) and the scheduler's
root key or Google-signed OIDC token. There is no switch that turns any of it off.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable

from beam_pipelines.secrets.api_keys import hash_api_key
from launcher.problems import ApiProblem, unauthorized
from launcher.ratelimits import MovingWindow
from launcher.settings import MIN_ROOT_KEY, LauncherSettings

log = logging.getLogger(__name__)
MAX_KEY_LENGTH = 256
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


def authenticate_org_key(api_key: str | None, metastore) -> dict:
    """The active key row for a presented key, or 401."""
    if not api_key or len(api_key) > MAX_KEY_LENGTH:
        raise unauthorized()
    digest = hash_api_key(api_key)
    row = metastore.find_api_key(digest)
    if row is None or not hmac.compare_digest(row["org_api_key_hash"].encode(), digest.encode()):
        raise unauthorized()
    return row


class FailedAuthLimiter:
    """Failed authentications per client IP, counted apart from the request limits.

    Key guessing with a new fake key per request never hits the per-key limit; this one slows it down
    all the same: past ``limit`` failures in the window, that IP gets 429 before any key is looked up.
    """

    def __init__(self, limit: str):
        self._window = MovingWindow(limit)

    def blocked(self, client_ip: str) -> bool:
        return self._window.blocked(client_ip)

    def failed(self, client_ip: str) -> None:
        self._window.add(client_ip)

    def retry_after(self, client_ip: str) -> int:
        return self._window.retry_after(client_ip)


def key_bucket(api_key: str | None) -> str:
    """Rate-limit bucket of a key: a hash, so the limiter never stores the key itself."""
    return "key:" + hashlib.sha256((api_key or "").encode()).hexdigest()[:32] if api_key else "key:none"


OidcVerifier = Callable[[str, str], dict]


def google_oidc_verifier(certs_url: str = GOOGLE_CERTS_URL) -> OidcVerifier:
    def verify(token: str, audience: str) -> dict:
        import google.auth.transport.requests
        from google.oauth2 import id_token

        return dict(id_token.verify_token(token, google.auth.transport.requests.Request(), audience, certs_url))

    return verify


def authenticate_scheduler(headers, settings: LauncherSettings, verify_oidc: OidcVerifier) -> str:
    """'root-key' or 'oidc:<email>' for a caller allowed to trigger schedules; 401 otherwise."""
    root = headers.get("x-ca-root-key")
    if root is not None:
        configured = settings.root_key
        if len(configured) >= MIN_ROOT_KEY and hmac.compare_digest(root.encode(), configured.encode()):
            return "root-key"
        raise ApiProblem(401, "unauthorized", "invalid root key")
    authorization = headers.get("authorization", "")
    if authorization.startswith("Bearer ") and settings.scheduler_service_account and settings.scheduler_audience:
        try:
            claims = verify_oidc(authorization[7:].strip(), settings.scheduler_audience)
        except Exception as exc:  # any verification failure is a 401; the reason goes to the log
            log.warning("scheduler OIDC token rejected: %s", type(exc).__name__)
            raise ApiProblem(401, "unauthorized", "invalid OIDC token") from None
        if claims.get("email") == settings.scheduler_service_account and claims.get("email_verified"):
            return f"oidc:{claims['email']}"
        raise ApiProblem(401, "unauthorized", "OIDC token is not from the scheduler service account")
    raise ApiProblem(401, "unauthorized", "scheduler calls need X-CA-Root-Key or a Google OIDC token")
