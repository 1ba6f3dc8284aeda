"""Anthropic Admin usage report: ``GET /v1/organizations/usage_report/messages``.

Anthropic answers 429 often without ``Retry-After`` and 529 when overloaded; both are retried with
jittered exponential backoff by the shared client. A 429 that says the spend limit is reached is
final (waiting will not lift it). A null ``workspace_id`` is the default workspace and a null
``api_key_id`` is Console usage: such rows are kept, with the nulls.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from pydantic import AwareDatetime, BaseModel, ConfigDict, NonNegativeInt, StrictBool

from beam_pipelines.providers.http import Answer, PageQuery, ProviderClient, RetryPolicy
from beam_pipelines.rows import row_key

USAGE_PATH = "/v1/organizations/usage_report/messages"
API_VERSION = "2023-06-01"
GROUP_FIELDS = ("model", "workspace_id", "api_key_id", "service_tier", "context_window", "inference_geo", "speed")
FAST_MODE_BETA = "fast-mode-2026-02-01"  # grouping by speed needs it
SPEND_LIMIT_MARKERS = ("spend limit", "spending limit", "usage limit", "credit balance")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class CacheCreation(_Model):
    ephemeral_5m_input_tokens: NonNegativeInt = 0
    ephemeral_1h_input_tokens: NonNegativeInt = 0


class ServerToolUse(_Model):
    web_search_requests: NonNegativeInt = 0


class MessagesUsageResult(_Model):
    uncached_input_tokens: NonNegativeInt
    cache_read_input_tokens: NonNegativeInt
    output_tokens: NonNegativeInt
    cache_creation: CacheCreation | None = None
    server_tool_use: ServerToolUse | None = None
    model: str | None = None
    workspace_id: str | None = None
    api_key_id: str | None = None
    service_tier: str | None = None
    context_window: str | None = None
    inference_geo: str | None = None
    speed: str | None = None


class UsageBucket(_Model):
    starting_at: AwareDatetime
    ending_at: AwareDatetime
    results: list[MessagesUsageResult]


class UsagePage(_Model):
    data: list[UsageBucket]
    has_more: StrictBool
    next_page: str | None = None


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


class AnthropicAdminClient(ProviderClient):
    """The Admin API reports (usage, cost): auth, and 529 overloads retried but a spend limit not."""

    provider = "anthropic"
    retry_statuses = frozenset({408, 429, 500, 502, 503, 504, 529})
    beta: str | None = None

    def __init__(self, admin_key: str, base_url: str, policy: RetryPolicy | None = None, **kwargs):
        super().__init__(base_url, policy, **kwargs)
        self._admin_key = admin_key

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def auth_headers(self) -> dict[str, str]:
        headers = {"x-api-key": self._admin_key, "anthropic-version": API_VERSION}
        return {**headers, "anthropic-beta": self.beta} if self.beta else headers

    def is_transient(self, response: Answer, message: str) -> bool:
        # A reached spend limit answers 429 too, but waiting will not lift it.
        if response.status_code == 429 and any(m in message.lower() for m in SPEND_LIMIT_MARKERS):
            return False
        return super().is_transient(response, message)


class AnthropicUsageClient(AnthropicAdminClient):
    beta = FAST_MODE_BETA  # the usage report's speed field

    def messages_query(self, start: date, end_inclusive: date, page_limit: int = 31,
                       group_by: tuple[str, ...] = GROUP_FIELDS, now: datetime | None = None) -> PageQuery:
        """Daily buckets for the UTC days ``start``..``end_inclusive`` (ending never in the future)."""
        now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
        ending = min(day_start(end_inclusive + timedelta(days=1)), now)
        window = [("starting_at", rfc3339(day_start(start))), ("ending_at", rfc3339(ending))]
        return self.daily_query(USAGE_PATH, window, page_limit, group_by, UsagePage)

    def messages_pages(self, *args, **kwargs) -> list[UsagePage]:
        return self.pages(self.messages_query(*args, **kwargs))


def usage_rows(page: UsagePage, org_slug: str, run_id: str, loaded_at: datetime) -> list[dict]:
    """Flatten a page into rows of ``anthropic_usage_daily_raw`` (one per bucket result)."""
    rows = []
    for bucket in page.data:
        start = bucket.starting_at.astimezone(timezone.utc)
        day = start.date()
        for r in bucket.results:
            cache = r.cache_creation or CacheCreation()
            tools = r.server_tool_use or ServerToolUse()
            rows.append({
                "usage_date": day,
                "org_slug": org_slug,
                "row_key": row_key(org_slug, day, *(getattr(r, f) for f in GROUP_FIELDS)),
                "run_id": run_id,
                "bucket_start_time": start,
                "bucket_end_time": bucket.ending_at.astimezone(timezone.utc),
                "model": r.model,
                "workspace_id": r.workspace_id,
                "api_key_id": r.api_key_id,
                "service_tier": r.service_tier,
                "context_window": r.context_window,
                "inference_geo": r.inference_geo,
                "speed": r.speed,
                "uncached_input_tokens": r.uncached_input_tokens,
                "cache_read_input_tokens": r.cache_read_input_tokens,
                "cache_creation_5m_input_tokens": cache.ephemeral_5m_input_tokens,
                "cache_creation_1h_input_tokens": cache.ephemeral_1h_input_tokens,
                "output_tokens": r.output_tokens,
                "web_search_requests": tools.web_search_requests,
                "loaded_at": loaded_at,
            })
    return rows
