"""The one place for provider HTTP concerns: session, retries with backoff, pagination, validation.

Provider clients subclass :class:`ProviderClient` and declare only what differs: auth headers,
how to read an error body, which answers are transient, and each report's :class:`PageQuery`.
Requests go out on ``aiohttp``: a worker fetches hundreds of orgs, each a few pages of waiting, and
one event loop waits for all of them on a fraction of the CPU a thread per org costs (threads and
``requests`` spent ~3 ms per org, mostly parsing HTTP in Python and handing the GIL around; the loop
~1.4 ms, measured on the 1,000-org fleet). Callers without a loop (a script, a test) iterate
:meth:`ProviderClient.pages`, which runs the same code on a loop of its own.

Retries use ``tenacity``: transient answers (429, 5xx, provider-specific overload codes, connection
errors and timeouts) are retried with exponential backoff and full jitter, honouring ``Retry-After``
when the provider sends one, up to ``max_retries``; anything else fails at once with the provider's
message.
"""
from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlencode

import aiohttp
import requests.utils
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
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


@dataclass(frozen=True)
class PageQuery:
    """One paginated report: where, what, the page model, and a check each page must pass."""

    path: str
    params: list[tuple[str, str]]
    page_model: type[BaseModel]
    check: Callable[[BaseModel], None] | None = None
    cursor_param: str = "page"


@dataclass(frozen=True)
class Answer:
    """A provider's answer, read whole: what error handling needs, whatever the transport."""

    status_code: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


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
def _environment_settings(base_url: str) -> tuple[str | None, str | None]:
    """The proxy and CA bundle the environment sets for ``base_url`` (read once per process), as
    ``requests`` reads them: ``*_PROXY`` with ``NO_PROXY``, ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``."""
    proxy = requests.utils.select_proxy(base_url, requests.utils.get_environ_proxies(base_url))
    return proxy, os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")


def provider_session(base_url: str, connections: int) -> aiohttp.ClientSession:
    """A session keeping up to ``connections`` connections alive, for every org a worker fetches (a
    connection per org cost the client and the provider a handshake each). Call it on the loop that
    will use it. Nothing of one org rides on it: each request carries its own org's key
    (``auth_headers``), the cookie jar keeps nothing, and the environment's ``~/.netrc`` is never read
    (``trust_env`` off): a provider's credential is only ever the org's own."""
    _, bundle = _environment_settings(base_url)
    context = ssl.create_default_context(cafile=bundle) if bundle else True
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(1, connections), ssl=context),
        cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
    )


class ProviderClient:
    provider = "provider"
    retry_statuses: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, base_url: str, policy: RetryPolicy | None = None,
                 session: aiohttp.ClientSession | None = None, sleep: Callable[[float], object] | None = None):
        """``session``: a worker's shared session (on the loop the client runs on); without one,
        :meth:`pages` opens its own. ``sleep``: how to wait between attempts (a test records it)."""
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.session = session
        self._sleep = sleep
        self.requests_made = 0

    # provider hooks ---------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def error_message(self, response: Answer) -> str:
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
        text = text or response.text.strip() or response.reason or "no error message"
        return redact(" ".join(text.split())[:MAX_ERROR_TEXT])

    def is_transient(self, response: Answer, message: str) -> bool:
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

    async def _pause(self, seconds: float) -> None:
        paused = (backoff_sleep if self._sleep is None else self._sleep)(seconds)
        if inspect.isawaitable(paused):
            await paused

    async def _get(self, url: str) -> Answer:
        """One GET: the org's key, no cookie, no redirect followed, the environment's proxy and CA
        bundle (read once); connect and each read bounded by the policy's timeout."""
        proxy, _ = _environment_settings(self.base_url)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.policy.timeout_seconds,
                                        sock_read=self.policy.timeout_seconds)
        async with self.session.get(url, headers=self.auth_headers(), allow_redirects=False, proxy=proxy,
                                    timeout=timeout) as response:
            return Answer(response.status, response.reason or "", response.headers, await response.read())

    async def _attempt(self, url: str) -> Answer:
        self.requests_made += 1
        try:
            response = await self._get(url)
        except TimeoutError:
            raise TransientError(f"Timeout calling {url}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
            raise TransientError(f"ConnectionError calling {url}") from None
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

    def _url(self, path: str, query: str) -> str:
        return f"{self.base_url}{path}?{query}" if query else f"{self.base_url}{path}"

    async def _get_retried(self, path: str, url: str) -> Answer:
        try:  # nearly every request: one attempt, without the retry machinery's own cost (a third of a page's)
            return await self._attempt(url)
        except TransientError as exc:
            first = [exc]

        async def attempt(url: str) -> Answer:  # the policy's retries, the first failure replayed as attempt 1
            if first:
                raise first.pop()
            return await self._attempt(url)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError),
            sleep=self._pause,
            reraise=True,
            before_sleep=lambda s: log.warning(
                "%s: retrying %s after %s (attempt %d)", self.provider, path,
                s.outcome.exception(), s.attempt_number,
            ),
        )
        try:
            return await retrying(attempt, url)
        except TransientError as exc:
            raise ProviderError(
                self.provider, f"gave up after {self.policy.max_retries + 1} attempts: {exc}", exc.status
            ) from None

    def daily_query(self, path: str, window: list[tuple[str, str]], page_limit: int, group_by: tuple[str, ...],
                    page_model: type[BaseModel]) -> PageQuery:
        """The usage-report query both providers share: a time window, 1d buckets, ``group_by[]``."""
        params = list(window) + [("bucket_width", "1d"), ("limit", str(page_limit))]
        return PageQuery(path, params + [("group_by[]", g) for g in group_by], page_model)

    async def iter_pages(self, query: PageQuery | None) -> AsyncIterator[BaseModel]:
        """Validated pages in cursor order until ``has_more`` is false (none for no query), on the
        client's session.

        Fails closed on a page that does not match the query's model or check, on ``has_more``
        without a cursor, and on a cursor seen before (a server loop would otherwise never end).
        """
        if query is None:
            return
        seen: set[str] = set()
        cursor: str | None = None
        number = 0
        first_page = self._url(query.path, urlencode(query.params))  # encoded once: only the cursor changes
        while True:
            number += 1
            url = f"{first_page}{'&' if query.params else '?'}{urlencode([(query.cursor_param, cursor)])}" if cursor else first_page
            answer = await self._get_retried(query.path, url)
            try:  # parsed and validated in one pass (pydantic's own JSON parser): half the CPU of json.loads first
                page = query.page_model.model_validate_json(answer.content)
            except ValidationError as exc:
                first = exc.errors()[0]
                if first["type"] == "json_invalid":
                    raise MalformedResponseError(
                        self.provider, f"{query.path}: response is not valid JSON", answer.status_code
                    ) from None
                where = ".".join(str(p) for p in first["loc"]) or "(root)"
                raise MalformedResponseError(
                    self.provider,
                    f"{query.path}: malformed page {number}: {where}: {first['msg']}"
                    + (f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""),
                ) from None
            if query.check is not None:
                query.check(page)
            yield page
            if not page.has_more:
                return
            cursor = page.next_page
            if not cursor:
                raise MalformedResponseError(self.provider, f"{query.path}: page {number} has_more without next_page")
            if cursor in seen:
                raise MalformedResponseError(self.provider, f"{query.path}: page {number} repeats cursor {cursor!r}")
            seen.add(cursor)

    def pages(self, query: PageQuery | None) -> list[BaseModel]:
        """Every page of :meth:`iter_pages`, for a caller without an event loop (a script, a test): on a
        loop and a session of its own, both closed before it returns."""
        if self.session is not None:
            raise TypeError("a client on a shared session runs on that session's loop: use iter_pages")

        async def every_page() -> list[BaseModel]:
            self.session = provider_session(self.base_url, 1)
            try:
                return [page async for page in self.iter_pages(query)]
            finally:
                await self.session.close()
                self.session = None

        return asyncio.run(every_page())


async def backoff_sleep(seconds: float) -> None:
    """The wait between attempts (a module attribute, so a test can make a whole pipeline's instant)."""
    await asyncio.sleep(seconds)
