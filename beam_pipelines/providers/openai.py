"""OpenAI organization usage API: ``GET /organization/usage/completions`` (admin key).

Field semantics follow OpenAI's published OpenAPI spec: ``input_tokens`` includes cached and
cache-write tokens; newer count fields are optional; grouping fields are null when not grouped.
Unknown extra fields are tolerated (kept out of the row), missing required ones fail the page.
"""
from __future__ import annotations

import operator
from datetime import date, datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, StrictBool, StrictInt

from beam_pipelines.providers.http import Answer, PageQuery, ProviderClient, RetryPolicy
from beam_pipelines.rows import row_key

USAGE_PATH = "/organization/usage/completions"
COUNT_FIELDS = (
    "input_tokens", "input_cached_tokens", "input_cache_write_tokens", "input_uncached_tokens",
    "output_tokens", "input_text_tokens", "output_text_tokens", "input_cached_text_tokens",
    "input_audio_tokens", "input_cached_audio_tokens", "output_audio_tokens", "input_image_tokens",
    "input_cached_image_tokens", "output_image_tokens", "num_model_requests",
)
GROUP_FIELDS = ("project_id", "api_key_id", "user_id", "model", "batch", "service_tier")
ROW_FIELDS = GROUP_FIELDS + COUNT_FIELDS
_row_values = operator.itemgetter(*ROW_FIELDS)


class CompletionsResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: Literal["organization.usage.completions.result"]
    input_tokens: NonNegativeInt
    output_tokens: NonNegativeInt
    num_model_requests: NonNegativeInt
    input_cached_tokens: NonNegativeInt | None = None
    input_cache_write_tokens: NonNegativeInt | None = None
    input_uncached_tokens: NonNegativeInt | None = None
    input_text_tokens: NonNegativeInt | None = None
    output_text_tokens: NonNegativeInt | None = None
    input_cached_text_tokens: NonNegativeInt | None = None
    input_audio_tokens: NonNegativeInt | None = None
    input_cached_audio_tokens: NonNegativeInt | None = None
    output_audio_tokens: NonNegativeInt | None = None
    input_image_tokens: NonNegativeInt | None = None
    input_cached_image_tokens: NonNegativeInt | None = None
    output_image_tokens: NonNegativeInt | None = None
    project_id: str | None = None
    api_key_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    batch: StrictBool | None = None
    service_tier: str | None = None


class UsageBucket(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: Literal["bucket"]
    start_time: StrictInt
    end_time: StrictInt
    results: list[CompletionsResult]


class UsagePage(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: Literal["page"]
    data: list[UsageBucket]
    has_more: StrictBool
    next_page: str | None


def unix(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


class OpenAIAdminClient(ProviderClient):
    """The organization endpoints an admin key reads (usage, costs): auth and what is worth a retry."""

    provider = "openai"

    def __init__(self, admin_key: str, base_url: str, policy: RetryPolicy | None = None, **kwargs):
        super().__init__(base_url, policy, **kwargs)
        self._admin_key = admin_key

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._admin_key}"}

    def is_transient(self, response: Answer, message: str) -> bool:
        # An exhausted quota answers 429 too, but waiting will not help: fail the org at once.
        if response.status_code == 429 and "insufficient_quota" in message:
            return False
        return super().is_transient(response, message)


class OpenAIUsageClient(OpenAIAdminClient):

    def completions_query(self, start: date, end_inclusive: date, page_limit: int = 31,
                          group_by: tuple[str, ...] = ("model", "project_id", "api_key_id", "batch", "service_tier"),
                          now: datetime | None = None) -> PageQuery:
        """Daily buckets covering the UTC days ``start``..``end_inclusive``."""
        end_time = min(unix(end_inclusive + timedelta(days=1)), int((now or datetime.now(timezone.utc)).timestamp()))
        window = [("start_time", str(unix(start))), ("end_time", str(end_time))]
        return self.daily_query(USAGE_PATH, window, page_limit, group_by, UsagePage)

    def completions_pages(self, *args, **kwargs) -> list[UsagePage]:
        return self.pages(self.completions_query(*args, **kwargs))


def usage_rows(page: UsagePage, org_slug: str, run_id: str, loaded_at: datetime) -> list[dict]:
    """Flatten a page into rows of ``openai_usage_daily_raw`` (one per bucket result)."""
    rows = []
    for bucket in page.data:
        start = datetime.fromtimestamp(bucket.start_time, timezone.utc)
        day = start.date()
        end = datetime.fromtimestamp(bucket.end_time, timezone.utc)
        iso_day = day.isoformat()  # the key's JSON of the day, as row_key would write the date
        for result in bucket.results:
            fields = result.__dict__  # the declared fields' values (extras live apart, in __pydantic_extra__)
            values = _row_values(fields)
            row = {
                "usage_date": day,
                "org_slug": org_slug,
                "row_key": row_key(org_slug, iso_day, *values[:len(GROUP_FIELDS)]),
                "run_id": run_id,
                "bucket_start_time": start,
                "bucket_end_time": end,
                "loaded_at": loaded_at,
            }
            row.update(zip(ROW_FIELDS, values))
            rows.append(row)
    return rows
