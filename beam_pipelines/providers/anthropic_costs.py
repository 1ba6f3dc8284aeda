"""Anthropic's own bill: ``GET /v1/organizations/cost_report`` (Admin key), one row per bucket result.

The cost report is what Anthropic charged (code execution appears only here; Priority Tier does
not appear at all). It pages like the usage report (``limit`` 1-31 daily buckets, ``page`` /
``next_page``) and is retried by the same policy: 429 and 529 with backoff, a spend-limit 429 never.

``amount`` is a decimal *string in cents* ("123.45" = $1.2345). It is divided by 100 exactly
(a decimal shift) and stored at NUMERIC's scale; a number where a string is documented fails the
page, since it would mean the format (and perhaps the unit) changed. Any currency but ``USD`` fails.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, StrictBool, StrictStr, field_validator

from beam_pipelines.errors import MalformedResponseError, ProviderError
from beam_pipelines.pricing.money import SCALE
from beam_pipelines.providers.anthropic import AnthropicAdminClient, day_start, rfc3339
from beam_pipelines.providers.http import PageQuery
from beam_pipelines.rows import row_key

COST_PATH = "/v1/organizations/cost_report"
GROUP_FIELDS = ("workspace_id", "description")
KEY_FIELDS = ("workspace_id", "description", "cost_type", "token_type", "model", "service_tier", "context_window")
MAX_LIMIT = 31  # buckets per page for bucket_width=1d
CURRENCY = "USD"
CENTS = re.compile(r"-?[0-9]+(\.[0-9]+)?")  # a plain decimal: no exponent, no NaN, no separators


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class CostResult(_Model):
    amount: StrictStr
    currency: StrictStr
    workspace_id: str | None = None
    description: str | None = None
    cost_type: str | None = None
    token_type: str | None = None
    model: str | None = None
    service_tier: str | None = None
    context_window: str | None = None

    @field_validator("amount")
    @classmethod
    def _cents(cls, value: str) -> str:
        if not CENTS.fullmatch(value):
            raise ValueError(f"must be a decimal string in cents, got {value[:40]!r}")
        return value


class CostBucket(_Model):
    starting_at: AwareDatetime
    ending_at: AwareDatetime
    results: list[CostResult]


class CostReportPage(_Model):
    data: list[CostBucket]
    has_more: StrictBool
    next_page: str | None = None


def bucket_day(bucket: CostBucket) -> date:
    """The UTC day a bucket covers; a bucket that does not start at UTC midnight cannot be filed under one."""
    start = bucket.starting_at.astimezone(timezone.utc)
    if start != day_start(start.date()):
        raise MalformedResponseError("anthropic", f"{COST_PATH}: bucket starting_at {rfc3339(start)} is not a UTC midnight")
    return start.date()


def amount_usd(result: CostResult, day: date) -> Decimal:
    """Cents text → exact Decimal dollars at NUMERIC's scale ("123.45" → 1.2345)."""
    if result.currency != CURRENCY:
        raise ProviderError("anthropic", f"{COST_PATH}: currency {result.currency!r} on {day} is not {CURRENCY!r}:"
                                         " nothing written")
    return Decimal(result.amount).scaleb(-2).quantize(SCALE, rounding=ROUND_HALF_EVEN)


class AnthropicCostClient(AnthropicAdminClient):
    def cost_query(self, start: date, end_inclusive: date, group_by: tuple[str, ...] = GROUP_FIELDS,
                   page_limit: int = MAX_LIMIT, now: datetime | None = None) -> PageQuery | None:
        """Daily cost buckets for the UTC days ``start``..``end_inclusive``; None while nothing of the
        window has happened.

        ``ending_at`` is never in the future (Anthropic has answered 400 to that): it stops at the
        current minute. Each page fails closed on a bucket outside the requested days, and on a result
        without a description when grouped by description (the server ignored the grouping).
        """
        unknown = [g for g in group_by if g not in GROUP_FIELDS]
        if unknown or not 1 <= page_limit <= MAX_LIMIT:
            raise ValueError(f"group_by must be among {GROUP_FIELDS} and page_limit in 1..{MAX_LIMIT}")
        now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
        ending = min(day_start(end_inclusive + timedelta(days=1)), now)
        if ending <= day_start(start):
            return None
        params = [("starting_at", rfc3339(day_start(start))), ("ending_at", rfc3339(ending)), ("bucket_width", "1d"),
                  ("limit", str(page_limit))] + [("group_by[]", g) for g in group_by]

        def check(page: CostReportPage) -> None:
            for bucket in page.data:
                day = bucket_day(bucket)
                if not start <= day <= end_inclusive:
                    raise ProviderError("anthropic", f"answer carries costs for {day}, outside the requested"
                                                     f" {start}..{end_inclusive}: nothing written")
                if "description" in group_by and any(r.description is None for r in bucket.results):
                    raise MalformedResponseError("anthropic", f"{COST_PATH}: a result on {day} has no description"
                                                              " although grouped by description")

        return PageQuery(COST_PATH, params, CostReportPage, check)

    def cost_pages(self, *args, **kwargs) -> list[CostReportPage]:
        return self.pages(self.cost_query(*args, **kwargs))


def billed_rows(page: CostReportPage, org_slug: str, run_id: str, loaded_at: datetime) -> list[dict]:
    """Flatten a page into rows of ``anthropic_billed_cost_daily`` (one per bucket result)."""
    rows = []
    for bucket in page.data:
        day = bucket_day(bucket)
        for r in bucket.results:
            rows.append({
                "usage_date": day,
                "org_slug": org_slug,
                "row_key": row_key(org_slug, day, *(getattr(r, f) for f in KEY_FIELDS)),
                "run_id": run_id,
                "workspace_id": r.workspace_id,
                "description": r.description,
                "cost_type": r.cost_type,
                "token_type": r.token_type,
                "model": r.model,
                "service_tier": r.service_tier,
                "context_window": r.context_window,
                "amount_usd": amount_usd(r, day),
                "currency": r.currency,
                "loaded_at": loaded_at,
            })
    return rows
