"""The simulator's Anthropic routes: the Admin usage report and cost report.

``/v1/organizations/usage_report/messages`` pages buckets (``limit``) and caps results per page,
so busy days span several pages. ``/v1/organizations/cost_report`` pages ``limit`` buckets and
reports ``amount`` as a decimal string in cents. Errors use Anthropic's body:
``{"type": "error", "error": {...}}``.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

from beam_pipelines.testing.simulator import anthropic_data, cursors
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


def _decode_cursor(cursor: str, fingerprint: str) -> dict:
    """A cursor is only good for the query it came from (same filters, same grouping)."""
    state = cursors.decode(cursor)
    if state is None or state.get("q") != fingerprint:
        raise error(400, "invalid_request_error", "page: invalid cursor for this query")
    return state


def usage_page(query: dict, key: str, now: datetime):
    limit = _limit(query)
    days = _days(query, now)
    fingerprint, cursor = cursors.fingerprint(query), query.get("page", [None])[0]
    state = _decode_cursor(cursor, fingerprint) if cursor else {"d": 0, "r": 0}
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
    next_page = cursors.encode({"d": d, "r": r, "q": fingerprint}) if has_more else None
    return {"data": buckets, "has_more": has_more, "next_page": next_page}, cursor


TOKEN_PHRASES = {
    "uncached_input_tokens": "Input Tokens",
    "output_tokens": "Output Tokens",
    "cache_read_input_tokens": "Cache Read Input Tokens",
    "cache_creation.ephemeral_5m_input_tokens": "5m Cache Write Input Tokens",
    "cache_creation.ephemeral_1h_input_tokens": "1h Cache Write Input Tokens",
}
COST_GROUPS = ("workspace_id", "description")


def display_name(model_id: str) -> str:
    """``claude-opus-5-5`` → ``Claude Opus 5.5``; ``claude-3-opus`` → ``Claude Opus 3`` (the pricing page's names)."""
    family = next(m.family for m in anthropic_data.MODELS if m.id == model_id)
    parts = family.removeprefix("claude-").split("-")
    if parts[0].isdigit():
        parts = parts[1:] + parts[:1]
    return f"Claude {parts[0].title()} {'.'.join(parts[1:])}"


def describe(result: dict, cost_type: str, token_type: str | None) -> str:
    """The line's description, in the form of the fact sheet's example ("Claude Sonnet 4.5 Usage - Input Tokens").

    Only that form is documented; the qualifiers for batch, the 1M window, fast mode and US-only
    inference are the simulator's own wording, so lines billed at different rates stay apart.
    """
    batch = "Batch " if result["service_tier"] == "batch" else ""
    fast = "Fast Mode " if result["speed"] == "fast" else ""
    what = TOKEN_PHRASES[token_type] if cost_type == "tokens" else cost_type.replace("_", " ").title()
    window = ", Long Context" if result["context_window"] == "200k-1M" else ""
    geo = ", US-only Inference" if result["inference_geo"] == "us" else ""
    return f"{display_name(result['model'])} {batch}{fast}Usage - {what}{window}{geo}"


def cost_ledger(key: str, day) -> list[tuple[str | None, tuple, int]]:
    """The day's bill at its finest grain: (workspace_id, description fields, nano-dollars).

    Every answer of the cost route is a sum of these integer entries (1 nano-dollar = 1e-7 cent), so
    any grouping (or none) adds up to the same total exactly. Amounts come from
    :func:`anthropic_data.billed_cents`.
    """
    entries = []
    for result in anthropic_data.day_results(key, day):
        for (cost_type, token_type), cents in (anthropic_data.billed_cents(result, day) or {}).items():
            fields = (cost_type, token_type, result["model"], result["service_tier"], result["context_window"],
                      describe(result, cost_type, token_type))
            entries.append((result["workspace_id"], fields, round(Fraction(cents) * 10**7)))
    return entries


def cents_text(nano: int) -> str:
    """Integer nano-dollars as the report's decimal string in cents (``12345000000`` → ``"123.45"``)."""
    text = format(Decimal(nano).scaleb(-7), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _cost_results(key: str, day, group_by: list[str]) -> list[dict]:
    totals: dict[tuple, int] = {}
    for workspace, fields, nano in cost_ledger(key, day):
        group = (workspace if "workspace_id" in group_by else None,
                 fields if "description" in group_by else (None,) * len(fields))
        totals[group] = totals.get(group, 0) + nano
    results = []
    for (workspace, fields), nano in sorted(totals.items(), key=lambda kv: [str(kv[0][0]), *map(str, kv[0][1])]):
        cost_type, token_type, model, tier, window, description = fields
        results.append({"currency": "USD", "amount": cents_text(nano), "workspace_id": workspace,
                        "description": description, "cost_type": cost_type, "context_window": window,
                        "model": model, "service_tier": tier, "token_type": token_type})
    return results


def cost_page(query: dict, key: str, now: datetime) -> tuple[dict, str | None]:
    """One page of the cost report: ``limit`` daily buckets (1-31, default 7), ``group_by[]`` of
    ``workspace_id`` and ``description``; descriptive fields are null unless grouped by description,
    ``workspace_id`` is null when not grouped (and for the default workspace)."""
    limit = _limit(query)
    days = _days(query, now)
    group_by = query.get("group_by[]", [])
    for field in group_by:
        if field not in COST_GROUPS:
            raise error(400, "invalid_request_error", f"group_by[]: {field!r} is not one of {list(COST_GROUPS)}")
    fingerprint, cursor = cursors.fingerprint(query), query.get("page", [None])[0]
    d = _decode_cursor(cursor, fingerprint)["d"] if cursor else 0
    buckets = [{"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ending_at": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "results": _cost_results(key, start.date(), group_by)} for start in days[d : d + limit]]
    d += len(buckets)
    has_more = d < len(days)
    next_page = cursors.encode({"d": d, "q": fingerprint}) if has_more else None
    return {"data": buckets, "has_more": has_more, "next_page": next_page}, cursor


def stray_bucket(key: str, day) -> dict:
    """A well-formed bucket for ``day``, whatever the query asked (a hostile answer)."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return {"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": anthropic_data.day_results(key, day)[:1]}
