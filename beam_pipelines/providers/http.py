"""The one place for provider HTTP concerns: session, retries with backoff, pagination, validation.

Provider clients subclass :class:`ProviderClient` and declare only what differs: auth headers,
how to read an error body, which answers are transient, and the page model. Retries use
``tenacity``: transient answers (429, 5xx, provider-specific overload codes, connection errors and
timeouts) are retried with exponential backoff and full jitter, honouring ``Retry-After`` when the
provider sends one, up to ``max_retries``; anything else fails at once with the provider's message.
"""
from __future__ import annotations

import email.utils
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

import requests
import requests.adapters
from pydantic import BaseModel, ValidationError
from requests.structures import CaseInsensitiveDict
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from beam_pipelines.errors import MalformedResponseError, ProviderError, redact

log = logging.getLogger(__name__)
MAX_ERROR_TEXT = 300


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    timeout_seconds: float = 60.0

    @classmethod
    def from_options(cls, options) -> RetryPolicy:
        return cls(options.max_retries, options.backoff_seconds, options.backoff_max_seconds,
                   options.timeout_seconds)


class TransientError(Exception):
    """An answer worth retrying; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@functools.lru_cache(maxsize=64)
def _environment_settings(base_url: str) -> tuple[tuple[tuple[str, str], ...], str | bool]:
    """The proxies and CA bundle the environment sets for ``base_url`` (read once per process)."""
    proxies = tuple(sorted(requests.utils.get_environ_proxies(base_url).items()))
    return proxies, os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def provider_session(base_url: str) -> requests.Session:
    """A session that honours the environment's proxies and CA bundle as requests would, read once:
    requests otherwise scans the whole environment twice on every request (a third of a fleet's
    client CPU). It never reads ~/.netrc: a provider's credential is only ever the org's own."""
    session = requests.Session()
    session.trust_env = False
    proxies, verify = _environment_settings(base_url)
    session.proxies.update(dict(proxies))
    session.verify = verify
    return session


def shared_session(base_url: str, connections: int) -> requests.Session:
    """One session for every org a worker fetches, keeping up to ``connections`` connections alive from
    org to org (a connection per org cost the client and the provider a handshake each, and the
    simulator a thread). Nothing of one org rides on it: each request carries its own org's key
    (``auth_headers``) and no cookie (:meth:`ProviderClient._get` never reads the session's jar)."""
    session = provider_session(base_url)
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(1, connections))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ProviderClient:
    provider = "provider"
    retry_statuses: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, base_url: str, policy: RetryPolicy | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.session = session or provider_session(self.base_url)
        self._sleep = sleep
        self.requests_made = 0

    # provider hooks ---------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def error_message(self, response: requests.Response) -> str:
        """The provider's own message from an error body, truncated and redacted before anyone logs it.

        OpenAI and Anthropic both answer ``{"error": {"type" (or "code"), "message"}}``. A provider (or
        a proxy) may echo the request's key in it: every secret this process knows is redacted.
        """
        text = None
        try:
            error = response.json().get("error") or {}
            if error.get("message"):
                text = f"{error.get('type') or error.get('code') or 'error'}: {error['message']}"
        except (ValueError, AttributeError):
            pass
        text = text or (response.text or "").strip() or response.reason or "no error message"
        return redact(" ".join(text.split())[:MAX_ERROR_TEXT])

    def is_transient(self, response: requests.Response, message: str) -> bool:
        return response.status_code in self.retry_statuses

    # machinery --------------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(exc.retry_after, self.policy.backoff_max_seconds)
        jitter = wait_exponential_jitter(
            initial=self.policy.backoff_seconds, max=self.policy.backoff_max_seconds,
            jitter=self.policy.backoff_seconds,
        )
        return jitter(state)

    def _get(self, url: str, params: list[tuple[str, str]]) -> requests.Response:
        """GET through the session's adapter: what ``Session.get`` sends (the session's headers, the
        org's key, the proxies and CA bundle read once) without what a provider API does not need, and
        which was a third of a fleet's client CPU: no cookies (a session shared by many orgs must never
        send one org's cookie with another's request), no hooks, no redirects followed."""
        prepared = requests.PreparedRequest()
        prepared.prepare_method("GET")
        prepared.url = f"{url}?{urlencode(params)}" if params else url
        prepared.headers = CaseInsensitiveDict({**self.session.headers, **self.auth_headers()})
        prepared.body = None
        prepared.hooks = {"response": []}
        adapter = self.session.get_adapter(prepared.url)
        return adapter.send(prepared, stream=False, timeout=self.policy.timeout_seconds, verify=self.session.verify,
                            cert=self.session.cert, proxies=self.session.proxies)

    def _attempt(self, url: str, params: list[tuple[str, str]]) -> requests.Response:
        self.requests_made += 1
        try:
            response = self._get(url, params)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"{type(exc).__name__} calling {url}") from None
        if 300 <= response.status_code < 400:  # never re-sent elsewhere with the org's key
            location = redact(str(response.headers.get("Location") or "(no location)"))[:MAX_ERROR_TEXT]
            raise ProviderError(self.provider, f"answered a redirect to {location}: not followed",
                                response.status_code)
        if response.status_code < 400:
            return response
        message = self.error_message(response)
        if self.is_transient(response, message):
            raise TransientError(
                message, response.status_code, parse_retry_after(response.headers.get("Retry-After"))
            )
        raise ProviderError(self.provider, message, response.status_code)

    def get_json(self, path: str, params: list[tuple[str, str]]) -> dict:
        url = f"{self.base_url}{path}"
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
            before_sleep=lambda s: log.warning(
                "%s: retrying %s after %s (attempt %d)", self.provider, path,
                s.outcome.exception(), s.attempt_number,
            ),
        )
        try:
            response = retrying(self._attempt, url, params)
        except TransientError as exc:
            raise ProviderError(
                self.provider, f"gave up after {self.policy.max_retries + 1} attempts: {exc}", exc.status
            ) from None
        try:
            return response.json()
        except ValueError:
            raise MalformedResponseError(
                self.provider, f"{path}: response is not valid JSON", response.status_code
            ) from None

    def daily_pages(self, path: str, window: list[tuple[str, str]], page_limit: int, group_by: tuple[str, ...],
                    page_model: type[BaseModel]) -> Iterator[BaseModel]:
        """The usage-report query both providers share: a time window, 1d buckets, ``group_by[]``."""
        params = list(window) + [("bucket_width", "1d"), ("limit", str(page_limit))]
        params += [("group_by[]", g) for g in group_by]
        yield from self.paginate(path, params, page_model)

    def paginate(self, path: str, params: list[tuple[str, str]], page_model: type[BaseModel],
                 cursor_param: str = "page") -> Iterator[BaseModel]:
        """Yield validated pages in cursor order until ``has_more`` is false.

        Fails closed on a page that does not match ``page_model``, on ``has_more`` without a
        cursor, and on a cursor seen before (a server loop would otherwise never end).
        """
        seen: set[str] = set()
        cursor: str | None = None
        number = 0
        while True:
            number += 1
            query = list(params) + ([(cursor_param, cursor)] if cursor else [])
            body = self.get_json(path, query)
            try:
                page = page_model.model_validate(body)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(root)"
                raise MalformedResponseError(
                    self.provider,
                    f"{path}: malformed page {number}: {where}: {first['msg']}"
                    + (f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""),
                ) from None
            yield page
            if not page.has_more:
                return
            cursor = page.next_page
            if not cursor:
                raise MalformedResponseError(self.provider, f"{path}: page {number} has_more without next_page")
            if cursor in seen:
                raise MalformedResponseError(self.provider, f"{path}: page {number} repeats cursor {cursor!r}")
            seen.add(cursor)
