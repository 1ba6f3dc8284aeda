"""Broadcast price-list rates onto a batch of usage rows.

Each distinct (org, model, tier, day) is looked up once; the result is broadcast back to the rows
by group code, so pricing a batch costs a handful of lookups plus array arithmetic. Rates arrive
as exact integers: pico-dollars per token for ``*_usd_per_mtok`` columns, nano-dollars per request
for ``*_usd_per_request`` ones; a missing rate is ``None``, never 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from beam_pipelines.pricing.money import pico_per_token
from beam_pipelines.pricing.price_list import PriceList


def _unit(column: str, value):
    if value is None:
        return None
    if column.endswith("_usd_per_request"):  # $ per request → pico-dollars per request
        return int(value.scaleb(12))
    return pico_per_token(value)


@dataclass
class RowRates:
    rates: dict[str, np.ndarray]  # column → object array of integer pico-dollars per unit, or None
    priced: np.ndarray  # bool
    price_model: np.ndarray  # object
    price_version: np.ndarray  # object

    def rate(self, column: str, fallback: str | None = None) -> np.ndarray:
        values = self.rates[column]
        if fallback is not None:
            values = np.where(np.equal(values, None), self.rate(fallback), values)
        return values


def lookup_rates(prices: PriceList, org: pd.Series, model: pd.Series, tier: np.ndarray, day: pd.Series,
                 columns: tuple[str, ...]) -> RowRates:
    """Rates of every row. Orgs without rows of their own are looked up as the default list (a fleet's
    batch holds hundreds of orgs and a handful of models), and each distinct price converted once."""
    owner = np.full(len(org), None, dtype=object)
    if prices.override_orgs:
        own = pd.Series(org.array).isin(prices.override_orgs).to_numpy(dtype=bool)
        owner[own] = org.to_numpy(dtype=object)[own]
    keys = pd.DataFrame({"org": owner, "model": model.array, "tier": tier, "day": day.array})
    codes = keys.groupby(list(keys.columns), dropna=False, sort=False).ngroup().to_numpy()
    found = [prices.lookup(k.model, k.tier, k.day, org_slug=k.org) for k in keys.drop_duplicates().itertuples(index=False)]
    units: dict[int, dict[str, int | None]] = {}
    for p in found:
        if p is not None and id(p) not in units:
            units[id(p)] = {column: _unit(column, p.rate(column)) for column in columns}
    rates = {}
    for column in columns:
        values = np.empty(len(found), dtype=object)
        values[:] = [None if p is None else units[id(p)][column] for p in found]
        rates[column] = values[codes] if len(codes) else np.empty(0, dtype=object)
    return RowRates(
        rates=rates,
        priced=np.asarray([p is not None for p in found], dtype=bool)[codes],
        price_model=np.asarray([p.model if p else None for p in found], dtype=object)[codes],
        price_version=np.asarray([p.version if p else None for p in found], dtype=object)[codes],
    )


def counts(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.zeros(len(frame), dtype=np.int64)
    return frame[column].fillna(0).to_numpy(dtype=np.int64)


def present(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Whether the provider reported the column (not merely zero) on each row."""
    if column not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[column].notna().to_numpy()
