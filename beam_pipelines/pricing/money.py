"""Exact money: prices and costs without binary floating point.

A price list rate is US dollars per million tokens with at most six decimals, so it is an exact
integer number of pico-dollars per token (``rate × 10^6``). A cost is tokens × that integer, exact
whatever the size (Python integers do not overflow), then rounded half-to-even to the nano-dollar,
BigQuery ``NUMERIC``'s scale (9 decimals). A row's total is the sum of its rounded components, so a
total always equals its parts and any sum of rows is the same in any order and on every re-run.
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import numpy as np

PICO_PER_NANO = 1000
SCALE = Decimal("1e-9")
RATE_DECIMALS = 6


class RateError(ValueError):
    pass


def parse_rate(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise RateError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise RateError(f"must be a number >= 0, got {text!r}")
    if value != value.quantize(Decimal(1).scaleb(-RATE_DECIMALS)):
        raise RateError(f"has more than {RATE_DECIMALS} decimals: {text!r}")
    return value


def pico_per_token(rate_usd_per_mtok: Decimal | None) -> int | None:
    """$ per million tokens → integer pico-dollars per token (exact for a published rate; a rate derived
    by a discount rule, e.g. half of $0.000001, rounds half-to-even at the pico-dollar)."""
    if rate_usd_per_mtok is None:
        return None
    return int(rate_usd_per_mtok.scaleb(RATE_DECIMALS).to_integral_value(rounding=ROUND_HALF_EVEN))


def _round_half_even(numerator: int, denominator: int = PICO_PER_NANO) -> int:
    q, r = divmod(numerator, denominator)
    return q + (2 * r > denominator or (2 * r == denominator and q % 2 == 1))


_ZERO_USD = Decimal(0).scaleb(-9)  # most of a cost row's classes are unused: one shared (immutable) zero
_to_decimal = np.frompyfunc(lambda nano: None if nano is None else _ZERO_USD if nano == 0 else Decimal(nano).scaleb(-9), 1, 1)


INT64_MAX = np.iinfo(np.int64).max


def _cost_nano_int64(tokens: np.ndarray, rate_pico: np.ndarray) -> np.ndarray | None:
    """``cost_nano`` without a multiplier, in int64 arithmetic, when every product provably fits (a day
    of one row's tokens at any listed rate does); None otherwise, and Python's integers do it."""
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu" or not len(tokens):
        return None
    known = np.not_equal(rate_pico, None)
    try:
        rates = np.zeros(len(tokens), dtype=np.int64)
        rates[known] = np.asarray(rate_pico)[known].astype(np.int64)
    except (OverflowError, TypeError, ValueError):
        return None
    if tokens.min() < 0 or rates.min() < 0 or int(tokens.max()) * int(rates.max()) > INT64_MAX:
        return None
    product = tokens.astype(np.int64) * rates
    nano, rest = np.divmod(product, PICO_PER_NANO)
    nano += (2 * rest > PICO_PER_NANO) | ((2 * rest == PICO_PER_NANO) & (nano % 2 == 1))
    out = nano.astype(object)  # Python ints, as the exact path gives
    out[(tokens != 0) & ~known] = None
    return out


def cost_nano(tokens: np.ndarray, rate_pico: np.ndarray, multipliers: np.ndarray | None = None) -> np.ndarray:
    """Object array of integer nano-dollars: tokens × rate (× an exact Decimal multiplier, e.g. 1.1), rounded
    once, half-to-even. None where a row has tokens but no rate; 0 where it has no tokens."""
    if multipliers is None and (fast := _cost_nano_int64(tokens, rate_pico)) is not None:
        return fast
    out = np.empty(len(tokens), dtype=object)
    factors = [(1, 1)] * len(tokens) if multipliers is None else [Decimal(m).as_integer_ratio() for m in multipliers]
    for i, (n, rate, (num, den)) in enumerate(zip(tokens.tolist(), rate_pico.tolist(), factors)):
        if n == 0:
            out[i] = 0
        elif rate is None:
            out[i] = None
        else:
            out[i] = _round_half_even(int(n) * rate * num, PICO_PER_NANO * den)
    return out


def usd(nano: np.ndarray) -> np.ndarray:
    """Integer nano-dollars → ``Decimal`` US dollars with 9 decimals (None stays None)."""
    return _to_decimal(nano) if len(nano) else np.empty(0, dtype=object)


def as_decimal(value) -> Decimal | None:
    """A value read back from a table (Decimal, float or str) as an exact Decimal at NUMERIC's scale."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return Decimal(str(value)).quantize(SCALE)
