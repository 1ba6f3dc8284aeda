"""FOCUS 1.2 rows from ``openai_cost_daily`` / ``anthropic_cost_daily``: one row per token class.

A cost row carries one day × model × project/workspace × API key × tier with a cost per token
class. FOCUS prices one SKU per row (ListUnitPrice × PricingQuantity must match ListCost), so each
class with a nonzero quantity becomes its own row: SkuId ``<price_model>/<class>``, SkuPriceId
``<price_version>/<class>``. Rows that are not PRICED are left out, never written as $0, and
counted by model so the caller can report them.

Units. The providers publish token prices per million tokens, and a per-token price does not fit
NUMERIC's nine decimals ($0.0625/MTok is 6.25E-8 per token). So PricingUnit is ``1000000 Tokens``
(UnitFormat: "<quantity> <plural-units>", a whole-number quantity, its example "1000 Tokens";
PricingUnit "MUST be semantically equal to the ... unit provided in provider-published price
list"), PricingQuantity is tokens / 10^6 and ListUnitPrice is the rate per MTok: all exact. The
consumed side stays in plain ``Tokens``. Web search is priced per request: ``Requests``.
``round_half_even(ListUnitPrice × PricingQuantity, 9) == ListCost`` holds exactly, because that is
how the pricer computed the cost (integer pico-dollars, one rounding at the nano-dollar).

Prices. List and contracted prices are equal (ContractedUnitPrice "defaults to the List Unit Price"
without negotiated discounts) unless the row's price_version names an org override (``:org=``):
then the row's cost is the contracted cost and the list side is re-priced from the default list via
``list_rate`` (a model only on the org's list keeps list = contracted). Anthropic's US inference
multiplier (1.1× every token category) is part of both unit prices, and of the SkuPriceId, since
it is a different price. BilledCost = EffectiveCost = ContractedCost: our estimate of the bill;
there are no commitments to amortize. Rates are looked up again here (the cost table keeps costs,
not rates): a PRICED row whose rate the list no longer has gets a null unit price, and a rate
changed since pricing gives a unit price that no longer matches the cost; the validator reports
both rather than this module hiding them.

Accounts. Neither provider's org id is in our tables, so BillingAccountId is ``convergence:<org
slug>`` (unique per provider, as required). SubAccount is the OpenAI project or the Anthropic
workspace; Anthropic reports its Default Workspace as a null workspace_id, which is a real sub
account, so it becomes SubAccountId ``default``. Sub-account display names are not in our data:
SubAccountName repeats the id (it MUST NOT be null when the id is not). An OpenAI row without a
project (usage not grouped by project) has no sub account. RegionId is Anthropic's inference_geo
when it names a geography (``us``): the service ran in a distinct region; ``global`` is not one.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from beam_pipelines.focus.columns import build_frame, build_table, month_bounds
from beam_pipelines.pricing import anthropic_cost, openai_cost
from beam_pipelines.pricing.money import cost_nano, pico_per_token, usd

ListRate = Callable[[str, str, date, str], Decimal | None]  # (model, tier, day, rate column) → default list rate
ContractedRate = Callable[[str, str, str, date, str], Decimal | None]  # (org_slug, model, tier, day, rate column)
Unpriced = dict[str, dict[str, int]]  # model → {"rows": n, "tokens": t}

PRICED = "PRICED"
MTOK_UNIT, TOKEN_UNIT, REQUEST_UNIT = "1000000 Tokens", "Tokens", "Requests"
ORG_OVERRIDE = ":org="
GEO_NAMES = {"us": "United States", "eu": "European Union"}
NOT_A_REGION = {None, "", "global", "not_available"}
METERS = {
    "input": "Input Tokens", "cached_input": "Cached Input Tokens", "cache_write_30m": "Cache Write Tokens (30-minute)",
    "audio_input": "Audio Input Tokens", "cached_audio_input": "Cached Audio Input Tokens",
    "image_input": "Image Input Tokens", "cached_image_input": "Cached Image Input Tokens", "output": "Output Tokens",
    "audio_output": "Audio Output Tokens", "image_output": "Image Output Tokens", "cache_read": "Cache Read Tokens",
    "cache_write_5m": "Cache Write Tokens (5-minute)", "cache_write_1h": "Cache Write Tokens (1-hour)",
    "web_search": "Web Search Requests",
}


@dataclass(frozen=True)
class ChargeClass:
    """One priced class of a cost row: where its quantity, cost and rate(s) live."""
    quantity: str  # token or request column
    cost: str  # cost column
    rates: tuple[str, ...]  # rate column, then the fallbacks the pricer tries, in order
    per_request: bool = False

    @property
    def name(self) -> str:
        return self.rates[0].removesuffix("_usd_per_mtok").removesuffix("_usd_per_request")


@dataclass(frozen=True)
class Source:
    key: str  # x_Provider
    provider: str  # ProviderName = PublisherName = InvoiceIssuerName
    service: str
    sub_account: str  # source column
    sub_account_type: str
    classes: tuple[ChargeClass, ...]
    default_sub_account: str | None = None  # what a null sub-account column means


OPENAI = Source("openai", "OpenAI", "OpenAI API", "project_id", "Project", tuple(
    ChargeClass(tokens, cost, (rate, *fallbacks)) for cost, tokens, rate, fallbacks in openai_cost.CLASSES))
ANTHROPIC = Source("anthropic", "Anthropic", "Claude API", "workspace_id", "Workspace", (
    *(ChargeClass(tokens, cost, (rate,)) for tokens, rate, cost in anthropic_cost.TOKEN_CLASSES),
    *(ChargeClass(n, cost, (rate,), per_request=True) for n, rate, cost in anthropic_cost.REQUEST_CLASSES),
), default_sub_account="default")


def focus_rows_openai(cost_df: pd.DataFrame, list_rate: ListRate, contracted_rate: ContractedRate | None = None, *,
                      run_id: str | None = None, loaded_at: datetime | None = None) -> tuple[pd.DataFrame, Unpriced]:
    """FOCUS rows (``focus_cost_daily`` column order) of an ``openai_cost_daily`` batch, and its unpriced rows."""
    return focus_rows(OPENAI, cost_df, list_rate, contracted_rate, run_id=run_id, loaded_at=loaded_at)


def focus_rows_anthropic(cost_df: pd.DataFrame, list_rate: ListRate, contracted_rate: ContractedRate | None = None, *,
                         run_id: str | None = None, loaded_at: datetime | None = None) -> tuple[pd.DataFrame, Unpriced]:
    """FOCUS rows of an ``anthropic_cost_daily`` batch, and its unpriced (incl. PRIORITY_TIER) rows."""
    return focus_rows(ANTHROPIC, cost_df, list_rate, contracted_rate, run_id=run_id, loaded_at=loaded_at)


def price_list_rates(prices) -> tuple[ListRate, ContractedRate]:
    """``list_rate`` / ``contracted_rate`` over a ``PriceList`` (with the org's overrides, if any): the list
    side never sees an org's rows, the contracted side prefers them, exactly as the pricer looked them up."""
    def list_rate(model, tier, day, column):
        price = prices.lookup(model, tier, day)
        return None if price is None else price.rate(column)

    def contracted_rate(org, model, tier, day, column):
        price = prices.lookup(model, tier, day, org_slug=org)
        return None if price is None else price.rate(column)

    return list_rate, contracted_rate


def focus_rows(source: Source, cost_df: pd.DataFrame, list_rate: ListRate, contracted_rate: ContractedRate | None = None, *,
               run_id: str | None = None, loaded_at: datetime | None = None,
               as_arrow: bool = False) -> tuple[pd.DataFrame | pa.Table, Unpriced]:
    """FOCUS rows of a cost batch and what it could not price; ``as_arrow``: as a table in
    ``focus_cost_daily``'s Arrow schema (rows on their way to be staged) instead of a DataFrame."""
    cost_df = cost_df.reset_index(drop=True)
    priced = (cost_df["pricing_status"].astype(object) == PRICED).to_numpy(dtype=bool)
    unpriced = _unpriced(source, cost_df[~priced])
    rows = cost_df[priced].reset_index(drop=True)
    overrides = rows["price_version"].fillna("").astype(str).str.contains(ORG_OVERRIDE, regex=False).to_numpy(dtype=bool)
    if overrides.any() and contracted_rate is None:
        raise ValueError(f"{source.key}: rows priced at an org's override need contracted_rate to state the contracted price")
    build = build_table if as_arrow else build_frame
    return _long_rows(source, rows, overrides, list_rate, contracted_rate, run_id, loaded_at, build), unpriced


def unpriced_by_run(source: Source, cost_df: pd.DataFrame) -> dict[str, Unpriced]:
    """What each run of a many-run batch left out of FOCUS because it could not be priced (one grouping
    for the whole batch: a pass per run cost more than building the FOCUS rows)."""
    rows = cost_df[(cost_df["pricing_status"].astype(object) != PRICED).to_numpy(dtype=bool)]
    out: dict[str, Unpriced] = {}
    for (run_id, model), size, tokens in _unpriced_groups(source, rows, rows["run_id"].astype(object).to_numpy()):
        out.setdefault(str(run_id), {})[str(model)] = {"rows": size, "tokens": tokens}
    return out


def _unpriced(source: Source, rows: pd.DataFrame) -> Unpriced:
    return {str(model): {"rows": size, "tokens": tokens}
            for (_, model), size, tokens in _unpriced_groups(source, rows, np.zeros(len(rows), dtype=np.int64))}


def _unpriced_groups(source: Source, rows: pd.DataFrame, runs: np.ndarray):
    """((run, model), rows, tokens) of unpriced rows, models sorted within each run."""
    if rows.empty:
        return []
    token_columns = [c.quantity for c in source.classes if not c.per_request and c.quantity in rows]
    tokens = rows[token_columns].fillna(0).astype("int64").sum(axis=1).to_numpy() if token_columns else np.zeros(len(rows), dtype=np.int64)
    models = rows["model"].astype(object).where(rows["model"].notna(), "(none)").to_numpy()
    frame = pd.DataFrame({"run": runs, "model": models, "tokens": tokens})
    grouped = frame.groupby(["run", "model"], sort=True)["tokens"].agg(["size", "sum"])
    return [(key, int(size), int(total)) for key, size, total in zip(grouped.index, grouped["size"], grouped["sum"])]


class _UnitPrices:
    """Memoised unit prices: a batch has few distinct (model, tier, day, class) keys and many rows."""

    def __init__(self, lookup: Callable[..., Decimal | None]):
        self._lookup, self._memo = lookup, {}

    def __call__(self, key: tuple, charge) -> Decimal | None:
        """The first of the class's rate columns with a rate, in the pricer's fallback order, as the
        pricer applies it (None: no rate at all)."""
        memo_key = (key, charge.rates, charge.per_request)
        if memo_key not in self._memo:
            rate = next((r for c in charge.rates if (r := self._lookup(*key, c)) is not None), None)
            self._memo[memo_key] = _unit_price(rate, charge.per_request)
        return self._memo[memo_key]


def _unit_price(rate: Decimal | None, per_request: bool) -> Decimal | None:
    """The rate exactly as the pricer applies it: integer pico-dollars per token (or per request)."""
    if rate is None:
        return None
    if per_request:
        return Decimal(int(rate.scaleb(12))).scaleb(-12)
    return Decimal(pico_per_token(rate)).scaleb(-6)


def _long_rows(source: Source, rows: pd.DataFrame, overrides: np.ndarray, list_rate: ListRate,
               contracted_rate: ContractedRate | None, run_id: str | None, loaded_at: datetime | None,
               build=build_frame) -> pd.DataFrame | pa.Table:
    """Every (cost row, class) with a nonzero quantity, in source-row then class order, built as one frame:
    a page of usage becomes a few hundred FOCUS rows, and pandas' cost is per frame, not per row."""
    picks = []
    for order, charge in enumerate(source.classes):
        if charge.quantity in rows:
            quantity = rows[charge.quantity].fillna(0).to_numpy(dtype=np.int64)
            nonzero = np.nonzero(quantity)[0]
            picks.append((nonzero, np.full(len(nonzero), order), quantity[nonzero]))
    if not picks or not sum(len(p[0]) for p in picks):
        return build({}, 0)
    src = np.concatenate([p[0] for p in picks])
    cls = np.concatenate([p[1] for p in picks])
    quantity = np.concatenate([p[2] for p in picks])
    ordering = np.lexsort((cls, src))
    src, cls, quantity = src[ordering], cls[ordering], quantity[ordering]
    n = len(src)
    charges = [source.classes[c] for c in cls]
    per_request = np.array([c.per_request for c in charges], dtype=bool)

    def column(name: str) -> np.ndarray:
        return rows[name].astype(object).to_numpy()[src] if name in rows else np.full(n, None, dtype=object)

    days = pd.Series(column("usage_date"), dtype=object)
    models, tiers, orgs, price_version = column("price_model"), column("pricing_tier"), column("org_slug"), column("price_version")
    override = overrides[src]
    raw_multiplier = column("price_multiplier")
    decimal = functools.lru_cache(maxsize=None)(Decimal)  # a batch has a handful of distinct multipliers
    multiplier = np.array([Decimal(1) if pr or m is None or m != m else decimal(m) for m, pr in zip(raw_multiplier, per_request)],
                          dtype=object)
    costs = {order: rows[c.cost].to_numpy(dtype=object) for order, c in enumerate(source.classes) if c.cost in rows}
    contracted_cost = np.array([v if type(v) is Decimal else Decimal(str(v)) for v in (costs[c][i] for c, i in zip(cls, src))],
                               dtype=object)

    listed, contracted = _UnitPrices(list_rate), _UnitPrices(contracted_rate or (lambda *a: None))
    list_base, own_base = np.empty(n, dtype=object), np.empty(n, dtype=object)  # per MTok or per request, before the multiplier
    day_values = days.to_numpy()
    for i, charge in enumerate(charges):
        key = (models[i], tiers[i], day_values[i])
        list_base[i] = listed(key, charge)
        own_base[i] = contracted((orgs[i], *key), charge) if override[i] else list_base[i]
    list_unit = np.array([None if b is None else b * m for b, m in zip(list_base, multiplier)], dtype=object)
    contracted_unit = np.array([None if b is None else b * m for b, m in zip(own_base, multiplier)], dtype=object)
    list_cost = contracted_cost
    if override.any():  # the list side of an override: re-priced at the default list, the pricer's way
        pico = np.array([None if b is None else int(b.scaleb(12 if pr else 6)) for b, pr in zip(list_base, per_request)],
                        dtype=object)
        at_list = usd(cost_nano(quantity, pico, multiplier))
        unlisted = np.equal(list_base, None)  # the model is only on the org's list: its list price is the contracted one
        list_cost = np.where(override & ~unlisted, at_list, contracted_cost)
        list_unit = np.where(override & unlisted, contracted_unit, list_unit)

    names = [c.name for c in charges]
    plain = functools.lru_cache(maxsize=None)(_plain)  # few distinct unit prices in a batch
    units = np.where(per_request, REQUEST_UNIT, MTOK_UNIT)
    meters = [METERS.get(name, name) for name in names]
    pricing_quantity = [Decimal(int(q)) if pr else Decimal(int(q)).scaleb(-6) for q, pr in zip(quantity, per_request)]
    day_start = pd.to_datetime(days).dt.tz_localize("UTC")
    period_start, period_end = month_bounds(days)
    sub_account = column(source.sub_account)
    sub_account = np.array([source.default_sub_account if v is None or v != v else v for v in sub_account], dtype=object)
    geo = column("inference_geo")
    region = np.array([None if g in NOT_A_REGION or g != g else g for g in geo], dtype=object)
    geo_tag = ["" if m == 1 else f"/inference_geo={g}" for m, g in zip(multiplier, geo)]
    model = column("model")
    row_key = column("row_key")
    values = {
        "BilledCost": contracted_cost, "EffectiveCost": contracted_cost, "ContractedCost": contracted_cost,
        "ListCost": list_cost, "ListUnitPrice": list_unit, "ContractedUnitPrice": contracted_unit,
        "PricingCurrencyListUnitPrice": list_unit, "PricingCurrencyContractedUnitPrice": contracted_unit,
        "PricingCurrencyEffectiveCost": contracted_cost, "PricingCurrency": "USD", "BillingCurrency": "USD",
        "PricingQuantity": np.array(pricing_quantity, dtype=object), "PricingUnit": units.astype(object),
        "ConsumedQuantity": np.array([Decimal(int(q)) for q in quantity], dtype=object),
        "ConsumedUnit": np.where(per_request, REQUEST_UNIT, TOKEN_UNIT).astype(object),
        "BillingAccountId": np.array([f"convergence:{o}" for o in orgs], dtype=object), "BillingAccountType": "Organization",
        "BillingPeriodStart": period_start, "BillingPeriodEnd": period_end,
        "ChargePeriodStart": day_start, "ChargePeriodEnd": day_start + pd.Timedelta(days=1),
        "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based", "PricingCategory": "Standard",
        "ChargeDescription": np.array([
            f"{source.service} {m}: {meter}, {tier} tier"
            f"{'' if mult == 1 else f', inference_geo {g} x{mult}'}, {plain(unit_price)} USD per {unit}"
            for m, meter, tier, mult, g, unit_price, unit in zip(model, meters, tiers, multiplier, geo, contracted_unit, units)],
            dtype=object),
        "ProviderName": source.provider, "PublisherName": source.provider, "InvoiceIssuerName": source.provider,
        "ServiceName": source.service, "ServiceCategory": "AI and Machine Learning", "ServiceSubcategory": "Generative AI",
        "SkuId": np.array([f"{m}/{name}" for m, name in zip(models, names)], dtype=object),
        "SkuPriceId": np.array([f"{v}/{name}{g}" for v, name, g in zip(price_version, names, geo_tag)], dtype=object),
        "SkuMeter": np.array(meters, dtype=object),
        "SubAccountId": sub_account, "SubAccountName": sub_account,
        "SubAccountType": np.array([None if v is None else source.sub_account_type for v in sub_account], dtype=object),
        "RegionId": region, "RegionName": np.array([None if r is None else GEO_NAMES.get(r, r) for r in region], dtype=object),
        "x_Provider": source.key, "x_ChargeDate": days.to_numpy(),
        "x_RunId": run_id if run_id is not None else column("run_id"),
        "x_RowKey": np.array([f"{k}/{name}" for k, name in zip(row_key, names)], dtype=object),
        "x_SourceRowKey": row_key,
        "x_LoadedAt": pd.Series(pd.Timestamp(loaded_at), index=range(n)) if loaded_at is not None
        else pd.to_datetime(pd.Series(column("loaded_at")), utc=True),
        "x_PriceVersion": price_version, "x_PricingStatus": PRICED, "x_TokenClass": np.array(names, dtype=object),
        "x_Model": model, "x_ApiKeyId": column("api_key_id"),
    }
    return build(values, n)


def _plain(value: Decimal | None) -> str:
    return "unknown" if value is None else format(value.normalize(), "f")
