"""UTC day ranges: parsing and the rules every entry point applies."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from beam_pipelines.errors import ConvergenceError


class DateRangeError(ConvergenceError):
    pass


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise DateRangeError(f"{name}: not a YYYY-MM-DD date: {value!r}") from None


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
    if end > today:
        raise DateRangeError(f"end date {end} is in the future (today is {today} UTC)")
    days = (end - start).days + 1
    if days > max_days:
        raise DateRangeError(f"range of {days} days is longer than this pipeline allows ({max_days})")
    return start - timedelta(days=trailing_days - 1), end
