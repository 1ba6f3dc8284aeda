"""The launcher's in-memory limits: fixed windows per route and client, a moving window of failed logins."""
from __future__ import annotations

import pytest

from launcher.ratelimits import FixedWindows, MovingWindow, RateExceeded, parse_rates


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rates_are_written_as_before():
    assert [(r.amount, r.seconds) for r in parse_rates("120/minute")] == [(120, 60.0)]
    assert [(r.amount, r.seconds) for r in parse_rates("10 per second; 1000 per 2 hours")] == [(10, 1.0), (1000, 7200.0)]
    assert str(parse_rates("60/minute")[0]) == "60 per 1 minute"
    for bad in ("", "ten/minute", "5/fortnight", "0/minute", "5"):
        with pytest.raises(ValueError):
            parse_rates(bad)


def test_fixed_window_counts_refused_requests_and_resets_after_its_period():
    clock = Clock()
    limits = FixedWindows("3/minute", clock=clock)
    for _ in range(3):
        limits.hit("a")
    with pytest.raises(RateExceeded) as exc:
        limits.hit("a")
    assert exc.value.retry_after == 61 and str(exc.value.rate) == "3 per 1 minute"
    limits.hit("b")  # another client has its own window
    clock.now += 30
    with pytest.raises(RateExceeded) as exc:
        limits.hit("a")
    assert exc.value.retry_after == 31
    clock.now += 30
    limits.hit("a")  # a new window


def test_every_rate_of_a_limit_applies():
    clock = Clock()
    limits = FixedWindows("2/second;3/minute", clock=clock)
    limits.hit("a")
    limits.hit("a")
    with pytest.raises(RateExceeded, match="2 per 1 second"):
        limits.hit("a")
    clock.now += 1
    limits.hit("a")  # the refused hit stopped at the first rate: the minute has seen two
    with pytest.raises(RateExceeded, match="3 per 1 minute"):
        limits.hit("a")


def test_fixed_windows_forget_clients_once_their_window_is_over():
    clock = Clock()
    limits = FixedWindows("5/minute", clock=clock)
    for i in range(100):
        limits.hit(("route", f"10.0.0.{i}"))
    clock.now += 61
    limits.hit("late")
    assert list(limits._windows) == [(0, "late")]


def test_moving_window_blocks_after_n_failures_until_the_oldest_leaves():
    clock = Clock()
    guard = MovingWindow("3/minute", clock=clock)
    for _ in range(3):
        assert not guard.blocked("ip")
        guard.add("ip")
        clock.now += 10
    assert guard.blocked("ip") and not guard.blocked("other")
    assert guard.retry_after("ip") == 31  # the first failure, at +0, leaves the window at +60; now is +30
    guard.add("ip")  # refused attempts are not recorded: they do not push the window further
    clock.now += 30
    assert not guard.blocked("ip")
    guard.add("ip")
    assert guard.blocked("ip")


def test_moving_window_forgets_quiet_addresses():
    clock = Clock()
    guard = MovingWindow("3/minute", clock=clock)
    for i in range(50):
        guard.add(f"10.0.0.{i}")
    clock.now += 61
    assert not guard.blocked("10.0.0.1")
    assert guard._events == {}


def test_a_malformed_limit_stops_the_launcher_at_start_up(home):
    import dataclasses

    from beam_pipelines.errors import ConfigError
    from tests.launcher_support import launcher_settings

    with pytest.raises(ConfigError, match="RATE_LIMIT_PER_KEY: rate limit '60 a minute'"):
        dataclasses.replace(launcher_settings(), rate_limit_per_key="60 a minute").check()
