"""FOCUS 1.2 rows from the flattened Google Cloud billing export (``gcp_billing_daily_raw``).

Money (the resolutions of ``gcp_mapping.md``, FOCUS ``specification/attributes/discount_handling.md``):

* Credits that are row-level discounts are netted into the row they belong to: committed use
  discounts (with the CommitmentDiscount* columns, PricingCategory "Committed", status "Used"),
  contractual ``DISCOUNT`` (also in ContractedCost), ``FREE_TIER`` and ``RESELLER_MARGIN``.
* Credits awarded after the fact ("MUST use a ChargeCategory of 'Credit'"): sustained use
  discounts, promotions, subscription benefits and any type we do not know, each become their own
  Credit row (negative BilledCost; List = Contracted = Effective = BilledCost; no SKU, no quantity),
  so credits stay visible.
* The netted part is ``credits_total`` minus the Credit rows, so per source row the FOCUS rows add up
  to ``net_cost`` (cost + every credit) exactly, in DECIMAL(38, 9).
* ListCost is ``cost_at_list`` (``cost`` before 2023-06-29 or when missing); ContractedCost is
  ``cost`` plus contractual discounts (``cost`` is already at the negotiated price);
  EffectiveCost = BilledCost: nothing prepaid is amortized in this export.

The breakdown of credits needs the ``credits`` array: flatten with
``FlattenOptions.json_fields`` including ``"credits": "credits"`` (and ``"system_labels":
"system_labels"`` for the provider's labels). Without it, a row's ``credits_total`` becomes one
Credit row of unknown type: visible, and the sums still hold, but CUDs are not recognised.

Classification. ChargeCategory from ``cost_type``: regular → Usage, tax → Tax, adjustment and
rounding_error → Adjustment; commitment fee SKUs ("Commitment v1: ...") are Purchase, "Recurring".
ChargeClass is "Correction" only on an adjustment whose usage month precedes its invoice month (it
corrects a previously invoiced period); late usage billed in the next month is not a correction.

Billing period. ``invoice_month`` YYYYMM → [first of the month, first of the next month) at UTC
midnight. Google's invoice months are Pacific-time months; we use UTC midnight, the same convention
as every other provider in ``focus_cost_daily``, so billing periods of all providers line up and a
month is one value of BillingPeriodStart. Reconciling to Google's invoice to the hour would need
Pacific bounds; the month membership (which rows are on which invoice) is unaffected.

Unit prices. The standard export has no unit prices (they are in the separate pricing export), yet
ListUnitPrice / ContractedUnitPrice MUST NOT be null on Usage and Purchase rows: they are derived
as cost ÷ PricingQuantity, rounded half-even to nine decimals, so their product matches the cost
to the rounding of the stored columns. Quantities arrive as FLOAT and are rounded to nine decimals.
SkuPriceId is the SKU id (the tier start that would tell tiers apart is not exported).

Tags: one JSON object (KeyValueFormat): resource labels unprefixed, project labels inherited under
the same keys (the resource's own value wins), system labels with their provider-namespaced keys
kept as they are; an empty label value means a key without value, which FOCUS writes as ``true``.
"""
from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from beam_pipelines.focus.columns import build_frame

NANO = Decimal("1e-9")
PROVIDER, INVOICE_ISSUER = "Google Cloud", "Google"
CUD_CATEGORY = {"COMMITTED_USAGE_DISCOUNT": "Usage", "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE": "Spend"}
NETTED = {*CUD_CATEGORY, "DISCOUNT", "FREE_TIER", "RESELLER_MARGIN"}  # row-level discounts; the rest are Credit rows
CHARGE_CATEGORY = {"regular": "Usage", "tax": "Tax", "adjustment": "Adjustment", "rounding_error": "Adjustment"}
SERVICES = {  # service.description → (ServiceCategory, ServiceSubcategory), per FOCUS supporting content
    "Vertex AI": ("AI and Machine Learning", "Generative AI"), "Gemini API": ("AI and Machine Learning", "Generative AI"),
    "Cloud Natural Language API": ("AI and Machine Learning", "Natural Language Processing"),
    "Cloud Text-to-Speech API": ("AI and Machine Learning", "Natural Language Processing"),
    "Cloud Speech API": ("AI and Machine Learning", "Natural Language Processing"),
    "Document AI": ("AI and Machine Learning", "Natural Language Processing"),
    "Looker": ("Analytics", "Business Intelligence"), "Cloud Composer": ("Analytics", "Data Processing"),
    "Cloud Dataflow": ("Analytics", "Data Processing"), "Dataflow": ("Analytics", "Data Processing"),
    "Cloud Dataproc": ("Analytics", "Data Processing"), "Vertex AI Search": ("Analytics", "Search"),
    "Kubernetes Engine": ("Compute", "Containers"), "Cloud Run": ("Compute", "Serverless Compute"),
    "Cloud Run Functions": ("Compute", "Serverless Compute"), "Cloud Functions": ("Compute", "Serverless Compute"),
    "Compute Engine": ("Compute", "Virtual Machines"),
    "Cloud Memorystore for Redis": ("Databases", "Caching"), "BigQuery": ("Databases", "Data Warehouses"),
    "Cloud Bigtable": ("Databases", "NoSQL Databases"), "Cloud Firestore": ("Databases", "NoSQL Databases"),
    "Cloud Datastore": ("Databases", "NoSQL Databases"), "Cloud SQL": ("Databases", "Relational Databases"),
    "AlloyDB": ("Databases", "Relational Databases"), "Cloud Spanner": ("Databases", "Relational Databases"),
    "Cloud Build": ("Developer Tools", "Continuous Integration and Deployment"),
    "Cloud Deploy": ("Developer Tools", "Continuous Integration and Deployment"),
    "Identity and Access Management": ("Identity", "Identity and Access Management"),
    "Cloud Pub/Sub": ("Integration", "Messaging"), "Invoice": ("Management and Governance", "Cost Management"),
    "Cloud Monitoring": ("Management and Governance", "Observability"),
    "Cloud Logging": ("Management and Governance", "Observability"), "Cloud Trace": ("Management and Governance", "Observability"),
    "Support": ("Management and Governance", "Support"), "Networking": ("Networking", "Other (Networking)"),
    "Cloud VPN": ("Networking", "Network Connectivity"), "Cloud Interconnect": ("Networking", "Network Connectivity"),
    "Cloud CDN": ("Networking", "Content Delivery"), "Secret Manager": ("Security", "Secret Management"),
    "Cloud Key Management Service (KMS)": ("Security", "Secret Management"),
    "Cloud Storage": ("Storage", "Object Storage"), "App Engine": ("Web", "Application Platforms"),
}
OTHER = ("Other", "Other (Other)")
REGIONS = {
    "us-central1": "Iowa", "us-east1": "South Carolina", "us-east4": "Northern Virginia", "us-east5": "Columbus",
    "us-south1": "Dallas", "us-west1": "Oregon", "us-west2": "Los Angeles", "us-west3": "Salt Lake City",
    "us-west4": "Las Vegas", "northamerica-northeast1": "Montréal", "northamerica-northeast2": "Toronto",
    "southamerica-east1": "São Paulo", "europe-west1": "Belgium", "europe-west2": "London", "europe-west3": "Frankfurt",
    "europe-west4": "Netherlands", "europe-west6": "Zurich", "europe-west8": "Milan", "europe-west9": "Paris",
    "europe-west10": "Berlin", "europe-west12": "Turin", "europe-north1": "Finland", "europe-central2": "Warsaw",
    "europe-southwest1": "Madrid", "asia-east1": "Taiwan", "asia-east2": "Hong Kong", "asia-northeast1": "Tokyo",
    "asia-northeast2": "Osaka", "asia-northeast3": "Seoul", "asia-south1": "Mumbai", "asia-south2": "Delhi",
    "asia-southeast1": "Singapore", "asia-southeast2": "Jakarta", "australia-southeast1": "Sydney",
    "australia-southeast2": "Melbourne", "me-west1": "Tel Aviv", "me-central1": "Doha", "africa-south1": "Johannesburg",
    "us": "United States (multi-region)", "eu": "European Union (multi-region)", "asia": "Asia (multi-region)",
}
UNIT_WORDS = {  # Google's unit words → FOCUS UnitFormat terms
    "byte": "B", "bytes": "B", "kibibyte": "KiB", "mebibyte": "MiB", "gibibyte": "GiB", "tebibyte": "TiB",
    "pebibyte": "PiB", "kilobyte": "KB", "megabyte": "MB", "gigabyte": "GB", "terabyte": "TB",
    "second": "Seconds", "seconds": "Seconds", "minute": "Minutes", "minutes": "Minutes", "hour": "Hours",
    "hours": "Hours", "day": "Days", "days": "Days", "month": "Months", "months": "Months", "year": "Years",
    "count": "Count", "request": "Requests", "requests": "Requests", "token": "Tokens", "tokens": "Tokens",
}
TIME_UNITS = {"Seconds", "Minutes", "Hours", "Days", "Months", "Years"}


def focus_rows_gcp(flat: pa.Table | pd.DataFrame, *, run_id: str | None = None) -> pd.DataFrame:
    """FOCUS rows (``focus_cost_daily`` column order) of a batch of ``gcp_billing_daily_raw`` rows."""
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


def _resource_type(global_name: str | None) -> str | None:
    """``//compute.googleapis.com/projects/p/zones/z/instances/vm`` → ``compute.googleapis.com/instances``."""
    if not global_name:
        return None
    parts = global_name.lstrip("/").split("/")
    return f"{parts[0]}/{parts[-2]}" if len(parts) >= 3 else parts[0]


def _invoice_month(months: np.ndarray, start: pd.Series) -> pd.Series:
    usage_month = start.dt.tz_localize(None).dt.to_period("M").dt.to_timestamp()
    parsed = pd.to_datetime(pd.Series(months, dtype=object), format="%Y%m", errors="coerce")
    return parsed.where(parsed.notna(), usage_month).dt.tz_localize("UTC")


def _unit_price(cost: Decimal | None, quantity: Decimal | None) -> Decimal | None:
    if cost is None or quantity is None:
        return None
    if quantity == 0:
        return Decimal(0).quantize(NANO) if cost == 0 else None
    try:
        return (cost / quantity).quantize(NANO, ROUND_HALF_EVEN)
    except InvalidOperation:
        return None


@lru_cache(maxsize=1024)
def _unit(unit: str | None) -> str | None:
    """Google's unit ("gibibyte month", "byte-seconds", "hour") → UnitFormat ("GiB-Months", "B-Seconds", "Hours")."""
    if not unit:
        return None
    words = [UNIT_WORDS.get(w.lower(), w[:1].upper() + w[1:]) for w in unit.replace("-", " ").split()]
    if len(words) == 2 and words[1] in TIME_UNITS:
        return f"{words[0]}-{words[1]}"
    return " ".join(words)


@lru_cache(maxsize=4096)
def _tags(labels, project_labels, system_labels, tags) -> str | None:
    finalized: dict[str, object] = {}
    for source in (project_labels, labels, system_labels):  # later wins: a resource label overrides the project's
        for key, value in _pairs(source):
            finalized[key] = True if value in (None, "") else value
    for tag in _parsed(tags):
        key = f"{tag['namespace']}/{tag['key']}" if tag.get("namespace") else tag["key"]
        finalized[key] = True if tag.get("value") in (None, "") else tag["value"]
    return json.dumps(finalized, sort_keys=True, ensure_ascii=False) if finalized else None


def _parsed(text):
    if text is None or text == "":
        return []
    return json.loads(text) if isinstance(text, str) else text


def _pairs(text) -> list[tuple[str, object]]:
    """Labels as the flattener writes them (a JSON array of {key, value}) or as a JSON object."""
    parsed = _parsed(text)
    if isinstance(parsed, dict):
        return list(parsed.items())
    return [(p["key"], p.get("value")) for p in parsed]
