"""Argument types and groups several commands share."""
from __future__ import annotations

import argparse
from datetime import date, timedelta


def day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {value!r}") from None


def last_days(days: int, today: date) -> tuple[date, date]:
    """The ``days`` UTC days up to yesterday (at least one): what reports over "the last N days" cover."""
    end = today - timedelta(days=1)
    return end - timedelta(days=max(days, 1) - 1), end
