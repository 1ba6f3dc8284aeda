"""OpenAI's own bill: ``GET /organization/costs`` (admin key), one row per daily bucket result.

The usage API says what was used; this endpoint says what OpenAI charged, including what usage
cannot show (long-prompt surcharges, tools, storage). It pages like the usage API (``limit`` daily
buckets, ``page``/``next_page`` until ``has_more`` is false) and is retried by the same policy.
Array parameters go by the OpenAPI's own names, repeated (``group_by=project_id&group_by=line_item``).

``amount.value`` is a JSON number. It is read as the decimal its JSON text spells (a float's
shortest round-trip ``repr`` is that text) and stored at NUMERIC's scale, so a bill that adds up
in the provider's ledger adds up here too. Any currency but ``usd`` fails the run: converting is
not this client's call to make.
"""
from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, field_validator

from beam_pipelines.errors import MalformedResponseError, ProviderError
from beam_pipelines.pricing.money import SCALE
from beam_pipelines.providers.http import PageQuery
from beam_pipelines.providers.openai import OpenAIAdminClient, unix
from beam_pipelines.rows import row_key

COSTS_PATH = "/organization/costs"
GROUP_FIELDS = ("project_id", "api_key_id", "line_item")
MAX_LIMIT = 180  # buckets per page for bucket_width=1d
CURRENCY = "usd"
DAY_SECONDS = 86400


def _number(value: Any) -> int | float:
    """A JSON number and nothing else: not a string, not a boolean, not NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("must be a finite JSON number")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class CostAmount(_Model):
    value: Any
    currency: StrictStr

    @field_validator("value")
    @classmethod
    def _value(cls, value):
        return _number(value)


class CostsResult(_Model):
    object: Literal["organization.costs.result"]
    amount: CostAmount
    line_item: str | None = None
    project_id: str | None = None
    api_key_id: str | None = None
    quantity: Any = None
    quantity_unit: str | None = None

    @field_validator("quantity")
    @classmethod
    def _quantity(cls, value):
        return None if value is None else _number(value)


class CostsBucket(_Model):
    object: Literal["bucket"]
    start_time: StrictInt
    end_time: StrictInt
    results: list[CostsResult]


class CostsPage(_Model):
    object: Literal["page"]
    data: list[CostsBucket]
    has_more: StrictBool
    next_page: str | None


def bucket_day(bucket: CostsBucket) -> date:
    """The UTC day a bucket covers; a bucket that does not start at UTC midnight cannot be filed under one."""
    if bucket.start_time % DAY_SECONDS:
        raise MalformedResponseError("openai", f"{COSTS_PATH}: bucket start_time {bucket.start_time} is not a UTC midnight")
    return datetime.fromtimestamp(bucket.start_time, timezone.utc).date()


def amount_usd(amount: CostAmount, day: date) -> Decimal:
    """The amount as exact Decimal dollars at NUMERIC's scale (half-to-even below a nano-dollar)."""
    if amount.currency != CURRENCY:
        raise ProviderError("openai", f"{COSTS_PATH}: amount.currency {amount.currency!r} on {day} is not {CURRENCY!r}:"
                                      " nothing written")
    return Decimal(repr(amount.value)).quantize(SCALE, rounding=ROUND_HALF_EVEN)


class OpenAICostsClient(OpenAIAdminClient):
    def cost_query(self, start: date, end_inclusive: date, group_by: tuple[str, ...] = ("project_id", "line_item"),
                   page_limit: int = 31, project_ids: tuple[str, ...] = (), now: datetime | None = None) -> PageQuery | None:
        """Daily cost buckets for the UTC days ``start``..``end_inclusive``; None while nothing of the
        window has happened (``end_time`` never passes ``now``, as for usage).

        Each page fails closed on a bucket outside the requested days, and on a result without a line
        item when grouped by line item: the server ignored the grouping, and the rows would be
        unattributable.
        """
        unknown = [g for g in group_by if g not in GROUP_FIELDS]
        if unknown or not 1 <= page_limit <= MAX_LIMIT:
            raise ValueError(f"group_by must be among {GROUP_FIELDS} and page_limit in 1..{MAX_LIMIT}")
        end_time = min(unix(end_inclusive + timedelta(days=1)), int((now or datetime.now(timezone.utc)).timestamp()))
        if end_time <= unix(start):
            return None
        params = [("start_time", str(unix(start))), ("end_time", str(end_time)), ("bucket_width", "1d"),
                  ("limit", str(page_limit))]
        params += [("group_by", g) for g in group_by] + [("project_ids", p) for p in project_ids]

        def check(page: CostsPage) -> None:
            for bucket in page.data:
                day = bucket_day(bucket)
                if not start <= day <= end_inclusive:
                    raise ProviderError("openai", f"answer carries costs for {day}, outside the requested"
                                                  f" {start}..{end_inclusive}: nothing written")
                if "line_item" in group_by and any(r.line_item is None for r in bucket.results):
                    raise MalformedResponseError("openai", f"{COSTS_PATH}: a result on {day} has no line_item"
                                                           " although grouped by line_item")

        return PageQuery(COSTS_PATH, params, CostsPage, check)

    def cost_pages(self, *args, **kwargs) -> list[CostsPage]:
        return self.pages(self.cost_query(*args, **kwargs))


def line_item_model(line_item: str | None) -> str | None:
    """The model part of a line item (``"gpt-5.5, cached input"`` → ``"gpt-5.5"``); None when it names none."""
    if not line_item or ", " not in line_item:
        return None
    return line_item.split(", ", 1)[0]


def billed_rows(page: CostsPage, org_slug: str, run_id: str, loaded_at: datetime) -> list[dict]:
    """Flatten a page into rows of ``openai_billed_cost_daily`` (one per bucket result)."""
    rows = []
    for bucket in page.data:
        day = bucket_day(bucket)
        for r in bucket.results:
            rows.append({
                "usage_date": day,
                "org_slug": org_slug,
                "row_key": row_key(org_slug, day, *(getattr(r, f) for f in GROUP_FIELDS)),
                "run_id": run_id,
                "project_id": r.project_id,
                "api_key_id": r.api_key_id,
                "line_item": r.line_item,
                "model": line_item_model(r.line_item),
                "amount_usd": amount_usd(r.amount, day),
                "quantity": None if r.quantity is None else float(r.quantity),
                "quantity_unit": r.quantity_unit,
                "loaded_at": loaded_at,
            })
    return rows
