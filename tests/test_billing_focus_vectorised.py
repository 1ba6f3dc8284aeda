"""The vectorised Google Cloud FOCUS mapping gives exactly the rows of the per-row one it replaced.

``reference_focus_rows`` below is the per-row implementation of ``beam_pipelines/focus/gcp.py`` as it
stood before the mapping was vectorised, kept verbatim as this test's oracle (only its lookup tables
and the per-value helpers the module still applies unchanged, once per distinct value, are imported
from it, so a table or helper edited there is edited for both). The two are compared
value for value, after the load's cast to ``focus_cost_daily``, on generated export days (credits of
every generated type including committed use discounts, EUR and USD accounts, negative and zero
costs, a month-end day billed across two invoice months, late rows) and on hand-made rows for what a
generator does not make: unknown and NULL credit types, zero amounts, commitment fees, Spot SKUs,
malformed invoice months, zero, NaN and tiny quantities, unit prices at a rounding tie or too large
for NUMERIC, repeated row keys, labels without values, resource names and tags.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from beam_pipelines.config.schema import load_schema
from beam_pipelines.focus.columns import build_frame, focus_schema
from beam_pipelines.focus.gcp import (
    CHARGE_CATEGORY,
    CUD_CATEGORY,
    INVOICE_ISSUER,
    MONEY,
    NETTED,
    OTHER,
    PROVIDER,
    REGIONS,
    SERVICES,
    SOURCE_COLUMNS,
    _from_float,
    _resource_type,
    _tags,
    _unit,
    _unit_price,
    _unit_prices,
    focus_rows_gcp,
)
from beam_pipelines.gcp.config import FlattenOptions, load_bq_etl_config
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.generator import generate_export
from beam_pipelines.settings import REPO_CONFIGS
from beam_pipelines.warehouse.arrow_schema import to_arrow

NANO = Decimal("1e-9")
NOW = datetime(2026, 2, 3, 7, tzinfo=timezone.utc)
WITH_CREDITS = load_bq_etl_config(REPO_CONFIGS / "gcp/bq_etl/config.yml", "gcp/bq_etl/config.yml").flatten


def assert_same_rows(flat: pa.Table, run_id: str | None = "run-v") -> pa.Table:
    expected = to_arrow(reference_focus_rows(flat, run_id=run_id), focus_schema(), "focus_cost_daily")
    got = to_arrow(focus_rows_gcp(flat, run_id=run_id), focus_schema(), "focus_cost_daily")
    assert got.num_rows == expected.num_rows
    for name in expected.column_names:
        want, have = expected.column(name).to_pylist(), got.column(name).to_pylist()
        wrong = [i for i, (w, h) in enumerate(zip(want, have)) if w != h or type(w) is not type(h)]
        assert not wrong, f"{name}: row {wrong[0]} is {have[wrong[0]]!r}, the per-row mapping gave {want[wrong[0]]!r}"
    assert got.equals(expected)
    return got


@pytest.mark.parametrize(("end_day", "days", "rows", "seed"), [
    (date(2026, 1, 31), 3, 3000, 0),  # Jan 29-31: a month-end day billed across two invoice months
    (date(2026, 3, 2), 1, 4000, 7),
    (date(2025, 12, 31), 2, 2500, 3),  # the year turns
])
def test_generated_days_with_the_credit_breakdown(end_day, days, rows, seed):
    flat = Flattener(WITH_CREDITS)(generate_export("acme", end_day, days, rows, seed), "acme", "run-v", NOW)
    got = assert_same_rows(flat)
    kinds = set(got.column("x_CreditType").to_pylist()) | set(got.column("CommitmentDiscountCategory").to_pylist())
    assert {"SUSTAINED_USAGE_DISCOUNT", "PROMOTION", "Usage"} <= kinds
    assert set(got.column("BillingCurrency").to_pylist()) == {"EUR", "USD"}
    assert min(got.column("BilledCost").to_pylist()) < 0


def test_generated_day_without_the_credit_breakdown():
    flat = Flattener(FlattenOptions())(generate_export("globex", date(2026, 1, 31), 2, 2000, 5), "globex", "run-v", NOW)
    assert "credits" not in flat.column_names
    assert_same_rows(flat)


def test_run_id_from_the_rows_when_not_given():
    flat = Flattener(WITH_CREDITS)(generate_export("acme", date(2026, 3, 2), 1, 300), "acme", "run-rows", NOW)
    got = assert_same_rows(flat, run_id=None)
    assert set(got.column("x_RunId").to_pylist()) == {"run-rows"}


def test_hand_made_rows_for_what_the_generator_does_not_make():
    assert_same_rows(adversarial_rows())


def test_resource_names_and_tags_of_the_detailed_export():
    rows = adversarial_rows()
    n = rows.num_rows
    names = ["//compute.googleapis.com/projects/p/zones/z/instances/vm", None, "", "storage.googleapis.com"]
    tags = [json.dumps([{"namespace": "123", "key": "cost-center", "value": ""}]), None]
    rows = rows.append_column("resource_global_name", pa.array([names[i % 4] for i in range(n)]))
    rows = rows.append_column("resource_name", pa.array([f"vm-{i}" if i % 2 else None for i in range(n)]))
    rows = rows.append_column("tags", pa.array([tags[i % 2] for i in range(n)]))
    got = assert_same_rows(rows)
    assert "compute.googleapis.com/instances" in got.column("ResourceType").to_pylist()


def test_the_source_columns_are_all_the_mapping_reads():
    rows = adversarial_rows()
    rows = rows.append_column("resource_global_name", pa.array(["//run.googleapis.com/projects/p/services/s"] * rows.num_rows))
    needed = rows.select([c for c in rows.column_names if c in SOURCE_COLUMNS])
    assert len(needed.column_names) < len(rows.column_names)
    assert focus_rows_gcp(needed, run_id="r").equals(focus_rows_gcp(rows, run_id="r"))


def test_roundings_in_doubles_give_the_decimal_values_ties_and_extremes_included():
    """Most amounts and unit prices are rounded in doubles, the undecidable ones in decimals: every value
    must be the one ``Decimal`` gives, across magnitudes, at ties of the ninth place and beyond 2^53."""
    rng = np.random.default_rng(11)
    n = 20_000
    floats = np.concatenate([
        rng.normal(0, 1, n) * 10.0 ** rng.integers(-12, 12, n),
        (rng.integers(-10**9, 10**9, 5_000) + 0.5) / 1e9,  # ties at the ninth place
        [0.0, -0.0, 1e-13, 5e-10, -5e-10, 1.5e-9, 2.5e-9, 123456.0000000005, 70368.7441776645, 9.99e18, -9.99e18],
    ])
    want = [Decimal(repr(float(v))).quantize(NANO, ROUND_HALF_EVEN) for v in floats]
    assert _from_float(pa.array(floats), "usage_amount").to_pylist() == want

    def decimals(units):
        return [None if u is None else Decimal(int(u)).scaleb(-9) for u in units]

    large = [int(v) * 10**12 for v in rng.integers(-10**15, 10**15, 200)]  # beyond 2^53 nano-units
    costs = decimals([*rng.integers(-10**13, 10**13, n), *large, 1, 3, 5, 0, 0, 7, None, 1])
    quantities = decimals([*rng.integers(1, 10**12, n), *rng.integers(1, 10**6, 200), 2, 2, 2, 0, 5, 0, 1, None])
    expected = [_unit_price(c, q) for c, q in zip(costs, quantities)]
    assert _unit_prices(pa.array(costs, MONEY), pa.array(quantities, MONEY)).to_pylist() == expected


def test_a_pandas_batch_gives_the_same_rows():
    flat = Flattener(WITH_CREDITS)(generate_export("acme", date(2026, 3, 2), 1, 500), "acme", "run-v", NOW)
    assert focus_rows_gcp(flat.to_pandas(), run_id="r").equals(focus_rows_gcp(flat, run_id="r"))


def test_an_empty_batch_is_an_empty_table_of_the_focus_columns():
    empty = focus_rows_gcp(adversarial_rows().slice(0, 0))
    assert empty.num_rows == 0 and empty.column_names == focus_schema().names


def test_values_that_cannot_be_represented_are_errors_naming_the_column():
    rows = adversarial_rows()
    broken = rows.set_column(rows.schema.get_field_index("credits"), "credits", pa.array(["[{\"amount\": }"] * rows.num_rows))
    with pytest.raises(ValueError, match="^credits: not a JSON list of credits"):
        focus_rows_gcp(broken)
    index = rows.schema.get_field_index("usage_amount_in_pricing_units")
    huge = rows.set_column(index, "usage_amount_in_pricing_units", pa.array([1e20] * rows.num_rows))
    with pytest.raises(ValueError, match="^usage_amount_in_pricing_units: .*too large for NUMERIC"):
        focus_rows_gcp(huge)


# ---- hand-made rows -----------------------------------------------------------------------------------------
RAW = load_schema(REPO_CONFIGS / "gcp/bq_etl/schema_template.json", "raw")
D = Decimal

def credit(kind, amount, name="n", full_name="full", id_="cid"):
    return {"name": name, "amount": amount, "full_name": full_name, "id": id_, "type": kind}

def adversarial_rows() -> pa.Table:
    """One row per case; credits_total is the sum of the row's credit amounts, as the flattener makes it."""
    t0 = datetime(2026, 1, 31, 5, tzinfo=timezone.utc)
    cases = [  # (cost, credits list or None-text, overrides)
        (D("10.5"), [credit("COMMITTED_USAGE_DISCOUNT", -2.5), credit("SUSTAINED_USAGE_DISCOUNT", -1.25)], {}),
        (D("3"), [credit("COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE", -0.3, id_="", name="cud-name"), credit("PROMOTION", -0.1),
                  credit("PROMOTION", -0.2, full_name=None), credit(None, -0.05, full_name="", name="")], {}),
        (D("0"), [credit("DISCOUNT", -0.0), credit("FREE_TIER", -1e-12), credit("RESELLER_MARGIN", -0.4),
                  credit("SUBSCRIPTION_BENEFIT", 1e-12), credit("X_UNKNOWN", 0.0)], {}),
        (D("-4.2"), [], {"cost_type": "adjustment", "invoice_month": "202602"}),
        (D("-0.000001"), None, {"cost_type": "rounding_error"}),
        (D("7.123456789"), [credit("DISCOUNT", -1.123456789), credit("DISCOUNT", -0.000000001)], {"cost_type": None}),
        (D("1.1"), [], {"cost_type": "weird", "sku_description": "Commitment v1: A2 cores"}),
        (D("2.2"), [credit("COMMITTED_USAGE_DISCOUNT", -2.2)], {"sku_description": "Commitment v1: Memory"}),
        (D("5"), [], {"sku_description": "Spot Preemptible E2 core", "usage_end_time": None}),
        (D("5"), [], {"sku_description": "", "invoice_month": None, "location": "global", "billing_account_id": ""}),
        (D("5"), [], {"sku_description": None, "invoice_month": "2026-01", "location": "", "billing_account_id": None}),
        (D("5"), [], {"invoice_month": "202613", "location": None, "project_name": "", "zone": None}),
        (D("5"), [], {"invoice_month": "abc", "location": "xx-nowhere1", "project_name": None, "project_id": None}),
        (D("0"), [], {"usage_amount_in_pricing_units": 0.0, "usage_amount": 0.0}),
        (D("1"), [], {"usage_amount_in_pricing_units": 0.0}),
        (D("1"), [], {"usage_amount_in_pricing_units": float("nan"), "usage_amount": float("nan")}),
        (D("1"), [], {"usage_amount_in_pricing_units": None, "usage_amount": None}),
        (D("10000000000"), [], {"usage_amount_in_pricing_units": 1e-9}),  # unit price 1e19: NULL
        (D("99999999"), [], {"usage_amount_in_pricing_units": 0.1}),  # unit price ~1e9: through Decimal
        (D("1.000000001"), [], {"usage_amount_in_pricing_units": 2.0}),  # an exact tie, half-even
        (D("0.000000003"), [], {"usage_amount_in_pricing_units": 2.0}),
        (D("0.000000001"), [], {"usage_amount_in_pricing_units": 3.0}),
        (D("2"), [], {"usage_amount_in_pricing_units": 3.0, "usage_amount": 1.2345678905}),
        (D("123456789.123456789"), [], {"usage_amount_in_pricing_units": 1.2345678915e15, "usage_amount": 1.5e-9}),
        (D("-3"), [], {"usage_amount_in_pricing_units": -7.0, "cost_type": "tax"}),
        (D("1"), [], {"labels": json.dumps([{"key": "env", "value": ""}, {"key": "team", "value": "web"}]),
                      "project_labels": json.dumps([{"key": "env", "value": "prod"}, {"key": "cc", "value": "42"}]),
                      "system_labels": json.dumps([{"key": "goog-k8s-cluster-name", "value": "c1"}])}),
        (D("1"), [], {"labels": "[]", "project_labels": "[]", "system_labels": None, "currency": "JPY"}),
        (D("1"), [], {"labels": json.dumps({"a": "b"}), "currency": "EUR", "currency_conversion_rate": 0.92}),
        (D("1"), [], {"row_key": "dup"}), (D("2"), [credit("PROMOTION", -0.5)], {"row_key": "dup"}),
        (D("3"), [], {"row_key": "dup"}),
        (D("1"), [], {"service_description": None, "service_id": "SVC-1"}),
        (D("1"), [], {"service_description": "", "service_id": ""}),
        (D("1"), [], {"service_description": "Unknown Service", "usage_unit": "gibibyte month", "usage_pricing_unit": "byte-seconds"}),
        (D("1"), [], {"usage_unit": None, "usage_pricing_unit": ""}),
        (D("8"), [credit("COMMITTED_USAGE_DISCOUNT", -1.0, id_=None, name=None, full_name=None)], {"usage_amount_in_pricing_units": None}),
        (D("8"), [credit("PROMOTION", -1.0), credit("COMMITTED_USAGE_DISCOUNT", -1.0, id_="a"),
                  credit("COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE", -1.0, id_="b")], {"cost_type": "tax"}),
    ]
    rows = []
    for i, (cost, credits, overrides) in enumerate(cases):
        amounts = [c["amount"] for c in credits or []]
        row = {
            "usage_date": date(2026, 1, 31), "org_slug": "acme", "run_id": "run-x", "row_key": f"key{i:03d}",
            "billing_account_id": "01AB-CD", "service_id": "6F81", "service_description": "Compute Engine",
            "sku_id": f"SKU-{i % 5}", "sku_description": "E2 Instance Core", "usage_start_time": t0,
            "usage_end_time": datetime(2026, 1, 31, 6, tzinfo=timezone.utc), "project_id": "acme-prod",
            "project_number": "1", "project_name": "Acme Prod", "project_labels": None, "labels": None, "system_labels": None,
            "location": "us-central1", "country": "US", "region": "us-central1", "zone": "us-central1-a",
            "usage_amount": 3600.0, "usage_unit": "seconds", "usage_amount_in_pricing_units": 1.0, "usage_pricing_unit": "hour",
            "cost": cost, "credits": None if credits is None else json.dumps(credits, separators=(",", ":")),
            "credits_total": sum((D(repr(a)).quantize(D("1e-9")) for a in amounts), D(0)).quantize(D("1e-9")),
            "cost_at_list": cost * 2 if i % 3 else None, "currency": "USD", "currency_conversion_rate": 1.0,
            "cost_type": "regular", "invoice_month": "202601", "transaction_type": "GOOGLE",
            "export_time": t0, "loaded_at": datetime(2026, 2, 3, tzinfo=timezone.utc),
        }
        row.update(overrides)
        row["net_cost"] = row["cost"] + row["credits_total"]
        row["cost_usd"] = row["credits_total_usd"] = row["net_cost_usd"] = None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in ("cost", "credits_total", "net_cost", "cost_at_list"):
        frame[name] = frame[name].astype(object)
    return to_arrow(frame, RAW, "gcp_billing_daily_raw")


# ---- the oracle: the per-row mapping as it was ---------------------------------------------------------------
def reference_focus_rows(flat: pa.Table | pd.DataFrame, *, run_id: str | None = None) -> pd.DataFrame:
    """The per-row mapping as it was: FOCUS rows (``focus_cost_daily`` column order) of a batch."""
    df = flat.to_pandas() if isinstance(flat, pa.Table) else flat
    df = df.reset_index(drop=True)
    n = len(df)
    if n == 0:
        return build_frame({}, 0)
    credits = [_credits(text) for text in df["credits"].tolist()] if "credits" in df else [None] * n
    total = _money(df["credits_total"])
    after = [_after_the_fact(c, t) for c, t in zip(credits, total)]
    base = _base_rows(df, credits, after, total, run_id)
    owners = [i for i, rows in enumerate(after) for _ in rows]
    if owners:
        index = [j for rows in after for j in range(len(rows))]
        extra = _credit_rows(base.iloc[owners].reset_index(drop=True), [c for rows in after for c in rows], index)
        base = pd.concat([base.assign(_order=np.arange(n), _sub=0), extra.assign(_order=owners, _sub=np.array(index) + 1)],
                         ignore_index=True).sort_values(["_order", "_sub"], kind="stable").drop(columns=["_order", "_sub"])
    return base.reset_index(drop=True)


def _money(series: pd.Series) -> np.ndarray:
    return np.array([None if v is None or v != v else Decimal(str(v)).quantize(NANO) for v in series], dtype=object)


def _quantity(series: pd.Series | None, n: int) -> np.ndarray:
    """FLOAT quantities → Decimal, rounded half-even to nine decimals (NUMERIC's scale)."""
    if series is None:
        return np.full(n, None, dtype=object)
    return np.array([None if v is None or v != v else Decimal(repr(float(v))).quantize(NANO, ROUND_HALF_EVEN)
                     for v in series], dtype=object)


def _credits(text) -> list[dict]:
    """The row's credits, amounts as exact Decimals of the numbers the export wrote."""
    if text is None or text != text:
        return []
    parsed = json.loads(text, parse_float=Decimal, parse_int=Decimal) if isinstance(text, str) else text
    return [dict(c) for c in parsed or []]


def _after_the_fact(credits: list[dict] | None, total: Decimal) -> list[dict]:
    """The credits that become Credit rows; None (no breakdown) → the whole total, type unknown."""
    if credits is None:
        return [] if not total else [{"amount": total, "type": None, "full_name": "Credits (type not in the flattened export)"}]
    return [{**c, "amount": Decimal(c["amount"]).quantize(NANO)} for c in credits
            if c.get("type") not in NETTED and c.get("amount")]


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df:
        return np.full(len(df), None, dtype=object)
    return np.array([None if v is None or v != v else v for v in df[name].astype(object)], dtype=object)


def _base_rows(df: pd.DataFrame, credits, after, credits_total, run_id) -> pd.DataFrame:
    n = len(df)
    cost = _money(df["cost"])
    at_list = _money(df["cost_at_list"]) if "cost_at_list" in df else np.full(n, None, dtype=object)
    list_cost = np.array([c if a is None else a for a, c in zip(at_list, cost)], dtype=object)
    billed = np.array([c + t - sum((a["amount"] for a in rows), Decimal(0)) for c, t, rows in zip(cost, credits_total, after)],
                      dtype=object)
    discount = np.array([sum((Decimal(c["amount"]).quantize(NANO) for c in cs or () if c.get("type") == "DISCOUNT"), Decimal(0))
                         for cs in credits], dtype=object)
    contracted = (cost + discount).astype(object)
    sku_id, sku_desc = _column(df, "sku_id"), _column(df, "sku_description")
    commitment_fee = np.array([bool(d) and str(d).startswith("Commitment") for d in sku_desc])
    category = np.array(["Usage" if t is None else CHARGE_CATEGORY.get(t, "Adjustment") for t in _column(df, "cost_type")],
                        dtype=object)
    category = np.where(commitment_fee & (category == "Usage"), "Purchase", category)
    priced = np.isin(category, ["Usage", "Purchase"])
    usage = category == "Usage"

    start = pd.to_datetime(df["usage_start_time"], utc=True)
    end = pd.to_datetime(df["usage_end_time"], utc=True) if "usage_end_time" in df else start + pd.Timedelta(hours=1)
    end = end.where(end.notna(), start + pd.Timedelta(hours=1))
    period_start = _invoice_month(_column(df, "invoice_month"), start)
    usage_month = start.dt.tz_localize(None).dt.to_period("M").dt.to_timestamp().dt.tz_localize("UTC")
    correction = (df["cost_type"].astype(object) == "adjustment").to_numpy(dtype=bool) & (usage_month < period_start).to_numpy()

    pricing_qty = _quantity(df.get("usage_amount_in_pricing_units"), n)
    pricing_qty = np.where(priced, pricing_qty, None)
    pricing_unit = np.array([_unit(u) if q is not None else None for u, q in zip(_column(df, "usage_pricing_unit"), pricing_qty)],
                            dtype=object)
    consumed = np.where(usage, _quantity(df.get("usage_amount"), n), None)
    consumed_unit = np.array([_unit(u) if q is not None else None for u, q in zip(_column(df, "usage_unit"), consumed)],
                             dtype=object)
    list_unit = np.array([_unit_price(c, q) for c, q in zip(list_cost, pricing_qty)], dtype=object)
    contracted_unit = np.array([_unit_price(c, q) for c, q in zip(contracted, pricing_qty)], dtype=object)

    currency = _column(df, "currency")
    commitments = _commitments(credits, usage, pricing_qty, pricing_unit, contracted, currency)
    has_cud = commitments["CommitmentDiscountStatus"] == "Used"
    spot = np.array([bool(d) and ("Spot" in d or "Preemptible" in d) for d in sku_desc])
    pricing_category = np.where(~priced, None, np.where(has_cud, "Committed", np.where(spot, "Dynamic", "Standard")))

    services = [SERVICES.get(s, OTHER) for s in _column(df, "service_description")]
    location = _column(df, "location")
    region = np.array([None if loc in (None, "", "global") else loc for loc in location], dtype=object)
    project = _column(df, "project_id")
    project_name = _column(df, "project_name")
    account = _column(df, "billing_account_id")
    org = _column(df, "org_slug")
    resource = _column(df, "resource_global_name")  # detailed export only
    keys = df["row_key"].astype(object)
    occurrence = keys.groupby(keys).cumcount().to_numpy()
    not_tax = category != "Tax"
    values = {
        "BilledCost": billed, "EffectiveCost": billed, "ListCost": list_cost, "ContractedCost": contracted,
        "PricingCurrencyEffectiveCost": billed, "ListUnitPrice": list_unit, "ContractedUnitPrice": contracted_unit,
        "PricingCurrencyListUnitPrice": list_unit, "PricingCurrencyContractedUnitPrice": contracted_unit,
        "BillingCurrency": currency, "PricingCurrency": currency,
        "PricingQuantity": pricing_qty, "PricingUnit": pricing_unit, "ConsumedQuantity": consumed, "ConsumedUnit": consumed_unit,
        "BillingAccountId": np.array([a if a else f"convergence:{o}" for a, o in zip(account, org)], dtype=object),
        "BillingAccountType": "Billing Account",
        "BillingPeriodStart": period_start, "BillingPeriodEnd": period_start + pd.offsets.MonthBegin(1),
        "ChargePeriodStart": start, "ChargePeriodEnd": end,
        "ChargeCategory": category, "ChargeClass": np.where(correction, "Correction", None),
        "ChargeFrequency": np.where(category == "Purchase", "Recurring", np.where(category == "Adjustment", "One-Time", "Usage-Based")),
        "ChargeDescription": sku_desc, "PricingCategory": pricing_category,
        **commitments,
        "ProviderName": PROVIDER, "PublisherName": PROVIDER, "InvoiceIssuerName": INVOICE_ISSUER,
        "ServiceName": np.array([s or i or PROVIDER for s, i in zip(_column(df, "service_description"), _column(df, "service_id"))],
                                dtype=object),
        "ServiceCategory": np.array([s[0] for s in services], dtype=object),
        "ServiceSubcategory": np.array([s[1] for s in services], dtype=object),
        "SkuId": np.where(not_tax, sku_id, None), "SkuMeter": np.where(not_tax, sku_desc, None),
        "SkuPriceId": np.where(priced, sku_id, None),
        "SubAccountId": project, "SubAccountName": np.array([nm or p for nm, p in zip(project_name, project)], dtype=object),
        "SubAccountType": np.where(pd.isna(project), None, "Project"),
        "RegionId": region, "RegionName": np.array([None if r is None else REGIONS.get(r, r) for r in region], dtype=object),
        "AvailabilityZone": _column(df, "zone"),
        "ResourceId": resource, "ResourceName": _column(df, "resource_name"),
        "ResourceType": np.array([_resource_type(r) for r in resource], dtype=object),
        "Tags": np.array([_tags(*t) for t in zip(*(_column(df, c) for c in ("labels", "project_labels", "system_labels", "tags")))],
                         dtype=object),
        "x_Provider": "gcp", "x_ChargeDate": df["usage_date"].astype(object).to_numpy(),
        "x_RunId": run_id if run_id is not None else df["run_id"].astype(object).to_numpy(),
        "x_RowKey": np.array([k if o == 0 else f"{k}#{o}" for k, o in zip(keys, occurrence)], dtype=object),
        "x_SourceRowKey": keys.to_numpy(), "x_LoadedAt": pd.to_datetime(df["loaded_at"], utc=True),
        "x_CostType": _column(df, "cost_type"),
    }
    return build_frame(values, n)


def _commitments(credits, usage, pricing_qty, pricing_unit, contracted, currency) -> dict[str, np.ndarray]:
    """CommitmentDiscount* of Usage rows a committed use discount covered (its credit is netted into the row).

    The export says which CUD covered a row, not how much of the commitment it drew: the quantity is the
    row's own metered quantity for a resource-based CUD ("Usage") and its spend before the discount for a
    spend-based one ("Spend"), i.e. the row is taken as fully covered.
    """
    cud = [next((c for c in cs or () if c.get("type") in CUD_CATEGORY), None) if u else None for cs, u in zip(credits, usage)]
    category = np.array([None if c is None else CUD_CATEGORY[c["type"]] for c in cud], dtype=object)
    quantity = np.array([None if c is None else (q if k == "Usage" else s) for c, k, q, s in
                         zip(cud, category, pricing_qty, contracted)], dtype=object)
    has_cud = np.array([c is not None for c in cud])
    return {
        "CommitmentDiscountId": np.array([None if c is None else c.get("id") or c.get("name") for c in cud], dtype=object),
        "CommitmentDiscountName": np.array([None if c is None else c.get("full_name") or c.get("name") for c in cud], dtype=object),
        "CommitmentDiscountCategory": category,
        "CommitmentDiscountType": np.where(has_cud, "Committed Use Discount", None),
        "CommitmentDiscountStatus": np.where(has_cud, "Used", None),
        "CommitmentDiscountQuantity": quantity,
        "CommitmentDiscountUnit": np.array([None if q is None else (u if k == "Usage" else cur) for q, k, u, cur in
                                            zip(quantity, category, pricing_unit, currency)], dtype=object),
    }


def _credit_rows(base: pd.DataFrame, credits: list[dict], index: list[int]) -> pd.DataFrame:
    """After-the-fact credits: the source row's who/where/when, the credit's amount, no SKU or quantity."""
    amount = np.array([c["amount"] for c in credits], dtype=object)
    keep = ["BillingAccountId", "BillingAccountType", "BillingCurrency", "PricingCurrency", "BillingPeriodStart",
            "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd", "ProviderName", "PublisherName", "InvoiceIssuerName",
            "ServiceName", "ServiceCategory", "ServiceSubcategory", "SubAccountId", "SubAccountName", "SubAccountType",
            "RegionId", "RegionName", "AvailabilityZone", "ResourceId", "ResourceName", "Tags", "x_Provider", "x_ChargeDate",
            "x_RunId", "x_SourceRowKey", "x_LoadedAt", "x_CostType"]
    values = {name: base[name] for name in keep}
    values.update({
        "BilledCost": amount, "EffectiveCost": amount, "ListCost": amount, "ContractedCost": amount,
        "PricingCurrencyEffectiveCost": amount, "ChargeCategory": "Credit", "ChargeFrequency": "Usage-Based",
        "ChargeDescription": np.array([c.get("full_name") or c.get("name") or c.get("type") for c in credits], dtype=object),
        "x_CreditType": np.array([c.get("type") for c in credits], dtype=object),
        "x_RowKey": np.array([f"{k}/credit/{i}" for i, k in zip(index, base["x_RowKey"])], dtype=object),
    })
    return build_frame(values, len(credits))


def _invoice_month(months: np.ndarray, start: pd.Series) -> pd.Series:
    usage_month = start.dt.tz_localize(None).dt.to_period("M").dt.to_timestamp()
    parsed = pd.to_datetime(pd.Series(months, dtype=object), format="%Y%m", errors="coerce")
    return parsed.where(parsed.notna(), usage_month).dt.tz_localize("UTC")
