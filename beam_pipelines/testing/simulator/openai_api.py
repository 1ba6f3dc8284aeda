"""The simulator's OpenAI routes: ``/v1/organization/usage/completions`` and ``/v1/organization/costs``.

Responses follow OpenAI's published schemas (``UsageResponse`` of ``UsageTimeBucket`` holding
``UsageCompletionsResult`` or ``CostsResult``). Usage pages hold at most ``limit`` buckets and at
most ``RESULTS_PER_PAGE`` results, so a busy day spans several pages; cost pages hold ``limit``
buckets, as documented. ``next_page`` is an opaque cursor bound to the query it came from.
"""
from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction

from beam_pipelines.testing.simulator import cursors, openai_data

RESULTS_PER_PAGE = 20
DAY = 86400
COST_GROUPS = ("project_id", "line_item", "api_key_id")


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


def _decode_cursor(cursor: str, fingerprint: str) -> dict:
    state = cursors.decode(cursor, "page_")
    if state is None:
        raise error(400, "Invalid 'page' cursor.")
    if state.get("q") != fingerprint:
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
    fingerprint = cursors.fingerprint(query)
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
    next_page = cursors.encode({"d": d, "r": r, "q": fingerprint}, "page_") if has_more else None
    return {"object": "page", "data": buckets, "has_more": has_more, "next_page": next_page}, cursor


def _choices(query: dict, name: str, allowed: tuple[str, ...]) -> list[str]:
    values = query.get(name, [])
    for value in values:
        if value not in allowed:
            raise error(400, f"Invalid value for '{name}': {value!r} is not one of {list(allowed)}.")
    return values


def _nano(usd: float) -> int:
    """A float bill in integer nano-dollars, rounded half-to-even from the float's exact binary value."""
    return round(Fraction(usd) * 10**9)


def cost_ledger(key: str, day) -> list[tuple[str, str, str, int, int]]:
    """The day's bill at its finest grain: (project_id, api_key_id, line item, tokens, nano-dollars).

    Every answer of the costs route is a sum of these integer entries, so any grouping (or none) adds
    up to the same total exactly, as a ledger does. Amounts come from :func:`openai_data.billed_lines`.
    """
    entries = []
    for result in openai_data.day_results(key, day):
        for item, (tokens, usd) in (openai_data.billed_lines(result, day) or {}).items():
            entries.append((result["project_id"], result["api_key_id"], f"{result['model']}, {item}", tokens, _nano(usd)))
    return entries


def _cost_results(key: str, start: int, group_by: list[str], projects: set, api_keys: set) -> list[dict]:
    day = datetime.fromtimestamp(start, timezone.utc).date()
    totals: dict[tuple, list[int]] = {}
    for project, api_key, line, tokens, nano in cost_ledger(key, day):
        if (projects and project not in projects) or (api_keys and api_key not in api_keys):
            continue
        group = (project if "project_id" in group_by else None, api_key if "api_key_id" in group_by else None,
                 line if "line_item" in group_by else None)
        total = totals.setdefault(group, [0, 0])
        total[0] += tokens
        total[1] += nano
    by_line = "line_item" in group_by
    return [
        {"object": "organization.costs.result",
         # a JSON number, as the API sends it; nano-dollars survive the double exactly below $10^6
         "amount": {"value": float(Fraction(nano, 10**9)), "currency": "usd"},
         "line_item": line, "project_id": project, "api_key_id": api_key,
         "quantity": tokens if by_line else None, "quantity_unit": "tokens" if by_line else None}
        for (project, api_key, line), (tokens, nano) in sorted(totals.items(), key=lambda kv: [g or "" for g in kv[0]])
    ]


def costs_page(query: dict, key: str, now: datetime) -> tuple[dict, str | None]:
    """One page of daily costs (``limit`` buckets, 1-180, default 7), as ``GET /organization/costs`` documents.

    ``group_by`` takes ``project_id``, ``line_item`` and ``api_key_id`` in any combination; a field not
    grouped by is null and its costs are summed. ``project_ids`` and ``api_key_ids`` filter. Array
    parameters are read by the spec's own names (repeated ``group_by=``); ``group_by[]`` is not a
    parameter of this operation and is ignored like any unknown one. Line items read
    ``{model}, [tier ]{token class}[, long context]``; ``quantity`` is in tokens when grouped by line item.
    """
    limit = _int(query, "limit", default=7, lo=1, hi=180)
    days = _days(query, now)
    group_by = _choices(query, "group_by", COST_GROUPS)
    projects, api_keys = set(query.get("project_ids", [])), set(query.get("api_key_ids", []))
    fingerprint = cursors.fingerprint(query)
    cursor = query.get("page", [None])[0]
    d = _decode_cursor(cursor, fingerprint)["d"] if cursor else 0
    buckets = [{"object": "bucket", "start_time": start, "end_time": start + DAY,
                "results": _cost_results(key, start, group_by, projects, api_keys)} for start in days[d : d + limit]]
    d += len(buckets)
    has_more = d < len(days)
    next_page = cursors.encode({"d": d, "q": fingerprint}, "page_") if has_more else None
    return {"object": "page", "data": buckets, "has_more": has_more, "next_page": next_page}, cursor


def stray_bucket(key: str, day) -> dict:
    """A well-formed bucket for ``day``, whatever the query asked (a hostile answer)."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())
    return {"object": "bucket", "start_time": start, "end_time": start + DAY,
            "results": openai_data.day_results(key, day)[:1]}
