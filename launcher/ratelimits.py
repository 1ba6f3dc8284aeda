"""Request limits and the failed-authentication guard, counted in this process's memory.

Limits are written as before (``RATE_LIMIT_PER_IP=120/minute``, ``60 per minute``, ``10/second;100/minute``)
and mean what they meant with slowapi's default strategy: a fixed window per route and client
address, and per route and key bucket, that starts at the first request and lasts the limit's
period; every request in the window counts, the ones refused too. Failed authentications are a
moving window per address: past ``n`` failures in the last period the address is refused until
the oldest of them leaves the window.

Why not slowapi and ``limits``' memory storage any more: on the launcher benchmark they cost more
than every check of an accepted run together. That storage starts a timer thread (about 0.5 ms,
on the event loop) whenever its previous one has fired, 100 times a second under load; its moving
window inserts each hit at the head of a list and its expiry thread copies every list each 10 ms,
both holding the GIL; and slowapi inspects the key function's signature on every request. Here
each check is a dict lookup and a counter (a deque for the moving window) and a sweep, once per
period, drops what has expired, so memory stays bounded by the clients seen in one period.
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass

_ITEM = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    amount: int
    seconds: float
    text: str

    def __str__(self) -> str:
        return self.text


def parse_rates(text: str) -> tuple[Rate, ...]:
    """``"120/minute"`` or ``"10 per second; 1000 per 2 hours"``; a malformed limit is an error at start-up."""
    rates = []
    for part in re.split(r"[;,|]", text):
        match = _ITEM.match(part)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"rate limit {part.strip()!r}: expected N/unit or N per [M] unit (second, minute, hour, day)")
        multiple = int(match.group(2) or 1)
        unit = match.group(3).lower()
        rates.append(Rate(int(match.group(1)), float(multiple * _SECONDS[unit]),
                          f"{match.group(1)} per {multiple} {unit}"))
    return tuple(rates)


class RateExceeded(Exception):
    def __init__(self, rate: Rate, retry_after: int):
        super().__init__(str(rate))
        self.rate = rate
        self.retry_after = retry_after


class _Sweeping:
    """Entries are dropped once per (longest) period, so a key seen once does not stay forever."""

    def __init__(self, rates: tuple[Rate, ...], clock):
        self.rates = rates
        self._clock = clock
        self._lock = threading.Lock()  # uncontended on the event loop; guards use from worker threads
        self._period = max(r.seconds for r in rates)
        self._next_sweep = clock() + self._period

    def _maybe_sweep(self, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + self._period
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        raise NotImplementedError


class FixedWindows(_Sweeping):
    """Hits per key in fixed windows (slowapi's default strategy, without its storage)."""

    def __init__(self, text: str, clock=time.monotonic):
        super().__init__(parse_rates(text), clock)
        self._windows: dict[tuple, list] = {}  # (rate index, key) -> [window end, hits]

    def hit(self, key: str) -> None:
        """Count one request for ``key``; :class:`RateExceeded` if it is over any of the rates."""
        now = self._clock()
        with self._lock:
            self._maybe_sweep(now)
            for i, rate in enumerate(self.rates):
                window = self._windows.get((i, key))
                if window is None or window[0] <= now:
                    window = self._windows[(i, key)] = [now + rate.seconds, 0]
                window[1] += 1
                if window[1] > rate.amount:
                    raise RateExceeded(rate, max(1, int(window[0] - now) + 1))

    def _sweep(self, now: float) -> None:
        for k in [k for k, (end, _) in self._windows.items() if end <= now]:
            del self._windows[k]


class MovingWindow(_Sweeping):
    """Events per key in a moving window: at most ``amount`` in any ``seconds``."""

    def __init__(self, text: str, clock=time.monotonic):
        super().__init__(parse_rates(text), clock)
        self._events: dict[str, deque] = {}

    def _expire(self, events: deque, now: float) -> None:
        while events and events[0] <= now - self._period:
            events.popleft()

    def _full(self, events, now: float) -> Rate | None:
        for rate in self.rates:
            if len(events) >= rate.amount and events[-rate.amount] > now - rate.seconds:
                return rate
        return None

    def blocked(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            self._maybe_sweep(now)
            events = self._events.get(key)
            if not events:
                return False
            self._expire(events, now)
            return self._full(events, now) is not None

    def add(self, key: str) -> None:
        """Record one event, unless the window is already full (a refused attempt is not recorded)."""
        now = self._clock()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = deque(maxlen=max(r.amount for r in self.rates))
            self._expire(events, now)
            if self._full(events, now) is None:
                events.append(now)

    def retry_after(self, key: str) -> int:
        """Whole seconds until the address may try again (at least 1)."""
        now = self._clock()
        with self._lock:
            events = self._events.get(key) or ()
            waits = [events[-r.amount] + r.seconds - now for r in self.rates if len(events) >= r.amount]
        return max(1, int(max(waits, default=0)) + 1)

    def _sweep(self, now: float) -> None:
        for key in list(self._events):
            events = self._events[key]
            self._expire(events, now)
            if not events:
                del self._events[key]
