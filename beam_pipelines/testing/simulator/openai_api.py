"""The simulator's OpenAI routes: ``/v1/organization/usage/completions`` and ``/v1/organization/costs``.

Responses follow OpenAI's published schemas (``UsageResponse`` of ``UsageTimeBucket`` holding
``UsageCompletionsResult`` or ``CostsResult``). Pages hold at most ``limit`` buckets and at most
``RESULTS_PER_PAGE`` results, so a busy day spans several pages; ``next_page`` is an opaque cursor.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from beam_pipelines.testing.simulator import openai_data

RESULTS_PER_PAGE = 20
DAY = 86400


class ApiError(Exception):
    def __init__(self, status: int, body: dict, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
    return ApiError(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})


def authenticate(headers) -> str:
    auth = headers.get("Authorization", "")
    key = auth[7:].strip() if auth.startswith("Bearer ") else ""
    if not key.startswith("sk-admin-"):
        raise error(401, "Incorrect API key provided. You must use an Admin API key for this endpoint.",
                    code="invalid_api_key")
    return key


def _int(query: dict, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int:
    values = query.get(name)
    if not values:
        if default is None:
            raise error(400, f"Missing required parameter: '{name}'.", code="missing_required_parameter")
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise error(400, f"Invalid value for '{name}': expected an integer.") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(400, f"Invalid value for '{name}': must be between {lo} and {hi}.")
    return value


def _encode_cursor(state: dict) -> str:
    return "page_" + base64.urlsafe_b64encode(json.dumps(state, sort_keys=True).encode()).decode()


def _decode_cursor(cursor: str, fingerprint: str) -> dict:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.removeprefix("page_").encode()))
    except ValueError:
        raise error(400, "Invalid 'page' cursor.") from None
    if not isinstance(state, dict) or state.get("q") != fingerprint:
        raise error(400, "The 'page' cursor does not belong to this query.")
    return state


def _days(query: dict, now: datetime) -> list[int]:
    start = _int(query, "start_time", lo=0)
    end = _int(query, "end_time", default=start + 7 * DAY, lo=0)
    if query.get("bucket_width", ["1d"])[0] != "1d":
        raise error(400, "The simulator serves bucket_width=1d only.")
    if end <= start:
        raise error(400, "'end_time' must be after 'start_time'.")
    first = start - start % DAY
    end = min(end, int(now.timestamp()))
    return list(range(first, end, DAY))


def usage_page(query: dict, key: str, now: datetime) -> tuple[dict, str | None]:
    """One page of completions usage; returns the body and the cursor used (if any)."""
    limit = _int(query, "limit", default=7, lo=1, hi=31)
    days = _days(query, now)
    fingerprint = json.dumps({k: v for k, v in sorted(query.items()) if k != "page"})
    cursor = query.get("page", [None])[0]
    state = _decode_cursor(cursor, fingerprint) if cursor else {"d": 0, "r": 0}
    buckets, emitted = [], 0
    d, r = state["d"], state["r"]
    while d < len(days) and len(buckets) < limit and emitted < RESULTS_PER_PAGE:
        start = days[d]
        day = datetime.fromtimestamp(start, timezone.utc).date()
        results = openai_data.day_results(key, day)
        take = results[r : r + (RESULTS_PER_PAGE - emitted)]
        buckets.append({"object": "bucket", "start_time": start, "end_time": start + DAY, "results": take})
        emitted += len(take)
        r += len(take)
        if r >= len(results):
            d, r = d + 1, 0
    has_more = d < len(days)
    next_page = _encode_cursor({"d": d, "r": r, "q": fingerprint}) if has_more else None
    return {"object": "page", "data": buckets, "has_more": has_more, "next_page": next_page}, cursor


def costs_page(query: dict, key: str, now: datetime) -> dict:
    """Daily costs grouped by line item (``{model}, [tier ]{token class}[, long context]``); one page."""
    days = _days(query, now)
    buckets = []
    for start in days:
        day = datetime.fromtimestamp(start, timezone.utc).date()
        totals: dict[str, float] = {}
        for result in openai_data.day_results(key, day):
            billed = openai_data.billed_cost(result, day)
            for item, amount in (billed or {}).items():
                line = f"{result['model']}, {item}"
                totals[line] = totals.get(line, 0.0) + amount
        buckets.append({
            "object": "bucket", "start_time": start, "end_time": start + DAY,
            "results": [
                {"object": "organization.costs.result", "amount": {"value": round(v, 6), "currency": "usd"},
                 "line_item": line, "project_id": None, "api_key_id": None, "quantity": None,
                 "quantity_unit": None}
                for line, v in sorted(totals.items())
            ],
        })
    return {"object": "page", "data": buckets, "has_more": False, "next_page": None}



def stray_bucket(key: str, day) -> dict:
    """A well-formed bucket for ``day``, whatever the query asked (a hostile answer)."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    return {"object": "bucket", "start_time": start, "end_time": start + DAY,
            "results": openai_data.day_results(key, day)[:1]}
