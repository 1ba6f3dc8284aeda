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

from beam_pipelines.focus.columns import Coded, build_frame, build_table, month_bounds
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


def _codes(columns: list[np.ndarray]) -> np.ndarray:
    """Each row's index among the distinct tuples of ``columns`` (equal values, equal index)."""
    seen: dict[tuple, int] = {}
    return np.fromiter((seen.setdefault(k, len(seen)) for k in zip(*columns)), dtype=np.int64, count=len(columns[0]))


class _Prices:
    """What a FOCUS row says about its price, worked out once per (pricing key, class) and spread to the
    rows by index: a fleet's batch has tens of thousands of rows behind a few hundred such keys.

    The pricing key of a cost row is everything its price and its SKU text depend on: the model and
    tier it was priced as, the day, the multiplier and inference geography, the price version, the
    model reported and (for an org's override) the org."""

    def __init__(self, source: Source, picked: tuple[np.ndarray, np.ndarray], column, overrides: np.ndarray,
                 list_rate: ListRate, contracted_rate: ContractedRate | None):
        src, cls = picked
        self._source, self._orgs, self._overrides = source, column("org_slug"), overrides
        self._key = [column("price_model"), column("pricing_tier"), column("usage_date"), column("price_multiplier"),
                     column("inference_geo"), column("price_version"), column("model"),
                     np.where(overrides, self._orgs, None)]
        _, first, self.codes = np.unique(_codes(self._key)[src] * len(source.classes) + cls, return_index=True,
                                         return_inverse=True)
        self._listed, self._contracted = _UnitPrices(list_rate), _UnitPrices(contracted_rate or (lambda *a: None))
        described = [self._describe(src[row], source.classes[cls[row]]) for row in first]
        self._found = {name: [d[name] for d in described] for name in described[0]} if described else {}

    def _describe(self, i: int, charge: ChargeClass) -> dict:
        """Cost row ``i``'s class ``charge``: unit prices (with any multiplier), units and SKU text."""
        price_model, tier, day, raw_multiplier, geo, version, model, _ = (k[i] for k in self._key)
        per_request = charge.per_request
        multiplier = (Decimal(1) if per_request or raw_multiplier is None or raw_multiplier != raw_multiplier
                      else Decimal(raw_multiplier))
        list_base = self._listed((price_model, tier, day), charge)
        own_base = self._contracted((self._orgs[i], price_model, tier, day), charge) if self._overrides[i] else list_base
        contracted_unit = None if own_base is None else own_base * multiplier
        unit, meter = REQUEST_UNIT if per_request else MTOK_UNIT, METERS.get(charge.name, charge.name)
        geo_note = "" if multiplier == 1 else f", inference_geo {geo} x{multiplier}"
        return {
            "list_base": list_base, "list_unit": None if list_base is None else list_base * multiplier,
            "contracted_unit": contracted_unit, "multiplier": multiplier, "per_request": per_request,
            "name": charge.name, "unit": unit, "consumed_unit": REQUEST_UNIT if per_request else TOKEN_UNIT, "meter": meter,
            "description": f"{self._source.service} {model}: {meter}, {tier} tier{geo_note}, "
                           f"{_plain(contracted_unit)} USD per {unit}",
            "sku": f"{price_model}/{charge.name}",
            "sku_price": f"{version}/{charge.name}{'' if multiplier == 1 else f'/inference_geo={geo}'}",
            "pico": None if list_base is None else int(list_base.scaleb(12 if per_request else 6)),
        }

    def coded(self, name: str) -> Coded:
        """The value of every row (in row order), as the distinct values and each row's index."""
        values = np.empty(len(self._found[name]), dtype=bool if name == "per_request" else object)
        values[:] = self._found[name]
        return Coded(values, self.codes)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.coded(name).expand()


def _long_rows(source: Source, rows: pd.DataFrame, overrides: np.ndarray, list_rate: ListRate,
               contracted_rate: ContractedRate | None, run_id: str | None, loaded_at: datetime | None,
               build=build_frame) -> pd.DataFrame | pa.Table:
    """Every (cost row, class) with a nonzero quantity, in source-row then class order, built as one frame:
    a page of usage becomes a few hundred FOCUS rows, and pandas' cost is per frame, not per row. What
    depends only on the cost row is worked out per cost row, what depends on its price per pricing key
    (:class:`_Prices`), and only quantities, costs and row keys per FOCUS row."""
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

    @functools.cache  # pricing keys and FOCUS columns read the same cost-row columns
    def column(name: str) -> np.ndarray:
        """A cost-row column (one value per cost row; ``[src]`` spreads it to the FOCUS rows)."""
        return rows[name].astype(object).to_numpy() if name in rows else np.full(len(rows), None, dtype=object)

    prices = _Prices(source, (src, cls), column, overrides, list_rate, contracted_rate)
    override = overrides[src]
    per_request, names = prices["per_request"], prices.coded("name")
    contracted_cost = np.empty(n, dtype=object)
    for order, charge in enumerate(source.classes):
        chosen = cls == order
        if chosen.any():
            contracted_cost[chosen] = rows[charge.cost].to_numpy(dtype=object)[src[chosen]]
    contracted_cost[:] = [v if type(v) is Decimal else Decimal(str(v)) for v in contracted_cost]
    contracted_unit = prices.coded("contracted_unit")
    list_unit, list_cost = contracted_unit, contracted_cost  # the same unless an org's override priced a row
    if override.any():  # the list side of an override: re-priced at the default list, the pricer's way
        unlisted = np.equal(prices["list_base"], None)  # the model is only on the org's list: its list price is the contracted one
        repriced = np.nonzero(override & ~unlisted)[0]
        list_cost = contracted_cost.copy()
        list_cost[repriced] = usd(cost_nano(quantity[repriced], prices["pico"][repriced], prices["multiplier"][repriced]))
        list_unit = np.where(override & unlisted, contracted_unit.expand(), prices["list_unit"])

    consumed = np.empty(n, dtype=object)
    consumed[:] = [Decimal(q) for q in quantity.tolist()]
    pricing_quantity = np.where(per_request, consumed, [q.scaleb(-6) for q in consumed])
    days = column("usage_date")
    day_index = pd.DatetimeIndex(pd.to_datetime(pd.Series(days, dtype=object))).tz_localize("UTC")
    period_start, period_end = (pd.DatetimeIndex(b) for b in month_bounds(pd.Series(days, dtype=object)))
    sub_account = np.array([source.default_sub_account if v is None or v != v else v for v in column(source.sub_account)],
                           dtype=object)
    region = np.array([None if g in NOT_A_REGION or g != g else g for g in column("inference_geo")], dtype=object)
    orgs = column("org_slug")
    row_key, sub_account = column("row_key")[src], sub_account[src]
    values = {
        "BilledCost": contracted_cost, "EffectiveCost": contracted_cost, "ContractedCost": contracted_cost,
        "ListCost": list_cost, "ListUnitPrice": list_unit, "ContractedUnitPrice": contracted_unit,
        "PricingCurrencyListUnitPrice": list_unit, "PricingCurrencyContractedUnitPrice": contracted_unit,
        "PricingCurrencyEffectiveCost": contracted_cost, "PricingCurrency": "USD", "BillingCurrency": "USD",
        "PricingQuantity": pricing_quantity, "PricingUnit": prices.coded("unit"),
        "ConsumedQuantity": consumed, "ConsumedUnit": prices.coded("consumed_unit"),
        "BillingAccountId": np.array([f"convergence:{o}" for o in orgs], dtype=object)[src],
        "BillingAccountType": "Organization",
        "BillingPeriodStart": period_start.take(src), "BillingPeriodEnd": period_end.take(src),
        "ChargePeriodStart": day_index.take(src), "ChargePeriodEnd": (day_index + pd.Timedelta(days=1)).take(src),
        "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based", "PricingCategory": "Standard",
        "ChargeDescription": prices.coded("description"),
        "ProviderName": source.provider, "PublisherName": source.provider, "InvoiceIssuerName": source.provider,
        "ServiceName": source.service, "ServiceCategory": "AI and Machine Learning", "ServiceSubcategory": "Generative AI",
        "SkuId": prices.coded("sku"), "SkuPriceId": prices.coded("sku_price"), "SkuMeter": prices.coded("meter"),
        "SubAccountId": sub_account, "SubAccountName": sub_account,
        "SubAccountType": np.where(np.equal(sub_account, None), None, source.sub_account_type).astype(object),
        "RegionId": region[src], "RegionName": np.array([None if r is None else GEO_NAMES.get(r, r) for r in region], dtype=object)[src],
        "x_Provider": source.key, "x_ChargeDate": days[src],
        "x_RunId": run_id if run_id is not None else column("run_id")[src],
        "x_RowKey": np.array([f"{k}/{name}" for k, name in zip(row_key, names.expand())], dtype=object),
        "x_SourceRowKey": row_key,
        "x_LoadedAt": pd.Series(pd.Timestamp(loaded_at), index=range(n)) if loaded_at is not None
        else pd.to_datetime(pd.Series(column("loaded_at")[src]), utc=True),
        "x_PriceVersion": column("price_version")[src], "x_PricingStatus": PRICED, "x_TokenClass": names,
        "x_Model": column("model")[src], "x_ApiKeyId": column("api_key_id")[src],
    }
    return build(values, n)


def _plain(value: Decimal | None) -> str:
    return "unknown" if value is None else format(value.normalize(), "f")
