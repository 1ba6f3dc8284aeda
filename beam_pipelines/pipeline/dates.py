"""UTC day ranges: parsing and the rules every entry point applies."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from beam_pipelines.errors import ConvergenceError

# No provider this service reads has usage before 2020 (OpenAI's and Anthropic's usage APIs, and
# Cloud Billing's standard export, all start later): an earlier day is a mistake, not a backfill.
EARLIEST_DAY = date(2020, 1, 1)


class DateRangeError(ConvergenceError):
    pass


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def parse_day(value: str, name: str) -> date:
    """Exactly ``YYYY-MM-DD``: a timestamp, or another ISO form, where a day is asked is an error."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise DateRangeError(f"{name}: not a YYYY-MM-DD date: {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DateRangeError(f"{name}: not a valid date: {value!r}") from None


def resolve_range(start: date | None, end: date | None, max_days: int, today: date | None = None,
                  trailing_days: int = 1) -> tuple[date, date]:
    """Inclusive UTC day range; default is yesterday. Rejects reversed, future or too-long ranges.

    ``trailing_days`` widens the start so late data of the previous days is re-read.
    """
    today = today or utc_today()
    yesterday = today - timedelta(days=1)
    end = end or (start if start and start > yesterday else yesterday)
    start = start or end
    if end < start:
        raise DateRangeError(f"end date {end} is before start date {start}")
    if start < EARLIEST_DAY:
        raise DateRangeError(f"start date {start} is before {EARLIEST_DAY}, the earliest day any provider reports")
    if end > today:
        raise DateRangeError(f"end date {end} is in the future (today is {today} UTC)")
    days = (end - start).days + 1
    if days > max_days:
        raise DateRangeError(f"range of {days} days is longer than this pipeline allows ({max_days})")
    return start - timedelta(days=trailing_days - 1), end
