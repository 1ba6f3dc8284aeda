"""The simulator's Anthropic routes: the Admin usage report and cost report.

``/v1/organizations/usage_report/messages`` pages buckets (``limit``) and caps results per page,
so busy days span several pages. ``/v1/organizations/cost_report`` reports ``amount`` as a
decimal string in cents. Errors use Anthropic's body: ``{"type": "error", "error": {...}}``.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

from beam_pipelines.testing.simulator import anthropic_data
from beam_pipelines.testing.simulator.openai_api import ApiError

RESULTS_PER_PAGE = 25


def error(status: int, type_: str, message: str, headers: dict | None = None) -> ApiError:
    return ApiError(status, {"type": "error", "error": {"type": type_, "message": message}}, headers)


def authenticate(headers) -> str:
    key = headers.get("x-api-key", "")
    if not key.startswith("sk-ant-admin"):
        raise error(401, "authentication_error", "invalid x-api-key")
    if headers.get("anthropic-version") != "2023-06-01":
        raise error(400, "invalid_request_error", "anthropic-version header is required")
    return key


def fault_response(name: str, arg: str):
    if name == "429":
        return 429, error(429, "rate_limit_error", "Number of requests has exceeded your rate limit").body, \
            ({"Retry-After": arg} if arg else {})
    if name == "429-no-retry-after":
        return 429, error(429, "rate_limit_error", "Number of requests has exceeded your rate limit").body, {}
    if name == "spend-limit":
        return 429, error(429, "rate_limit_error", "You have reached your workspace's monthly spend limit.").body, {}
    if name == "529":
        return 529, error(529, "overloaded_error", "Overloaded").body, {}
    status = int(name)
    return status, error(status, "api_error", "Internal server error").body, {}


def _time(query: dict, name: str, required: bool, now: datetime) -> datetime | None:
    values = query.get(name)
    if not values:
        if required:
            raise error(400, "invalid_request_error", f"{name}: field required")
        return None
    try:
        moment = datetime.fromisoformat(values[0].replace("Z", "+00:00"))
    except ValueError:
        raise error(400, "invalid_request_error", f"{name}: invalid RFC 3339 datetime") from None
    if moment.tzinfo is None:
        raise error(400, "invalid_request_error", f"{name}: timezone required")
    return moment


def _days(query: dict, now: datetime) -> list[datetime]:
    start = _time(query, "starting_at", True, now)
    end = _time(query, "ending_at", False, now)
    if end is not None and end > now:
        raise error(400, "invalid_request_error", "ending_at cannot be in the future")
    if query.get("bucket_width", ["1d"])[0] != "1d":
        raise error(400, "invalid_request_error", "The simulator serves bucket_width=1d only")
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    end = end or min(first + timedelta(days=7), now)
    days, day = [], first
    while day < end:
        days.append(day)
        day += timedelta(days=1)
    return days


def _limit(query: dict) -> int:
    try:
        limit = int(query.get("limit", ["7"])[0])
    except ValueError:
        raise error(400, "invalid_request_error", "limit: must be an integer") from None
    if not 1 <= limit <= 31:
        raise error(400, "invalid_request_error", "limit: must be between 1 and 31 for 1d buckets")
    return limit


def usage_page(query: dict, key: str, now: datetime):
    limit = _limit(query)
    days = _days(query, now)
    fingerprint = json.dumps({k: v for k, v in sorted(query.items()) if k != "page"})
    cursor = query.get("page", [None])[0]
    if cursor:
        try:
            state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            assert state.get("q") == fingerprint
        except (ValueError, AssertionError):
            raise error(400, "invalid_request_error", "page: invalid cursor for this query") from None
    else:
        state = {"d": 0, "r": 0}
    d, r, emitted, buckets = state["d"], state["r"], 0, []
    while d < len(days) and len(buckets) < limit and emitted < RESULTS_PER_PAGE:
        start = days[d]
        results = anthropic_data.day_results(key, start.date())
        take = results[r : r + RESULTS_PER_PAGE - emitted]
        buckets.append({"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "ending_at": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "results": take})
        emitted += len(take)
        r += len(take)
        if r >= len(results):
            d, r = d + 1, 0
    has_more = d < len(days)
    next_page = base64.urlsafe_b64encode(json.dumps({"d": d, "r": r, "q": fingerprint}).encode()).decode() if has_more else None
    return {"data": buckets, "has_more": has_more, "next_page": next_page}, cursor


def cost_page(query: dict, key: str, now: datetime) -> dict:
    days = _days(query, now)
    by_description = "description" in query.get("group_by[]", [])
    buckets = []
    for start in days:
        totals: dict[tuple, float] = {}
        for result in anthropic_data.day_results(key, start.date()):
            for (cost_type, token_type), cents in (anthropic_data.billed_cents(result, start.date()) or {}).items():
                group = (cost_type, token_type, result["model"], result["service_tier"], result["context_window"]) \
                    if by_description else ()
                totals[group] = totals.get(group, 0.0) + cents
        results = []
        for group, cents in sorted(totals.items(), key=lambda kv: str(kv[0])):
            cost_type, token_type, model, tier, window = group if group else (None,) * 5
            results.append({"currency": "USD", "amount": f"{cents:.6f}", "workspace_id": None,
                            "description": f"{model} {token_type or cost_type}" if group else None,
                            "cost_type": cost_type, "context_window": window, "model": model,
                            "service_tier": tier, "token_type": token_type})
        buckets.append({"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "ending_at": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "results": results})
    return {"data": buckets, "has_more": False, "next_page": None}


def stray_bucket(key: str, day) -> dict:
    """A well-formed bucket for ``day``, whatever the query asked (a hostile answer)."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return {"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": anthropic_data.day_results(key, day)[:1]}
