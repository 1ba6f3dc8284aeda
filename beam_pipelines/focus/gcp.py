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

Computation. A batch is mapped as Arrow arrays, never row by row (a billing day has millions of
rows): money in NUMERIC (decimal128(38, 9)) with exact decimal sums; a FLOAT becomes NUMERIC through
its shortest text, as ``Decimal(repr(v))`` does; text mappings (units, services, regions, tags,
invoice months) run once per distinct value of the batch. The values are exactly those of the
per-row mapping this replaced (``tests/test_billing_focus_vectorised.py`` keeps it as an oracle).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from beam_pipelines.focus.columns import focus_schema
from beam_pipelines.warehouse.arrow_schema import arrow_schema

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

MONEY = pa.decimal128(38, 9)  # BigQuery NUMERIC
TEXT = pa.string()
_SUM = pa.decimal256(60, 9)  # room for sums of NUMERIC values; the result is cast back to MONEY, checked
_TEXT = pa.decimal256(76, 38)  # a float's shortest repr (at most 17 significant digits) fits exactly
_QUOTIENT = (pa.decimal256(38, 9), pa.decimal256(37, 9))  # cost ÷ quantity → decimal256(76, 38), truncated
_QUOTIENT_EXACT = pa.decimal256(60, 38)
NANO = Decimal("1e-9")
_LIMIT = 1e19  # 28 significant digits with nine decimals (Decimal's context): a quantity of 1e19 or more is an error
_EXACT_BELOW = 1e9  # unit prices at or above this go through Decimal (see _unit_prices)
_TIE_BAND = 1e-9  # a quotient this close to a rounding tie (in nano-units) goes through Decimal
_FAST_BELOW = 2.0 ** 46  # nano-units: a double within 2^-52 of an exact value is within 2^-6 of it below this
_TIE_MARGIN = 0.05  # nano-units from a half beyond which a double rounds as its exact value does
_DOUBLE_EXACT = 2 ** 53  # integers a double holds exactly
HOUR = pa.scalar(3_600_000_000, pa.duration("us"))
CREDIT = pa.struct([("name", pa.string()), ("amount", pa.float64()), ("full_name", pa.string()), ("id", pa.string()),
                    ("type", pa.string())])
NO_BREAKDOWN = "Credits (type not in the flattened export)"
SOURCE_COLUMNS = frozenset({  # every column of gcp_billing_daily_raw the mapping reads (a reader need read no other)
    "usage_date", "org_slug", "run_id", "row_key", "billing_account_id", "service_id", "service_description", "sku_id",
    "sku_description", "usage_start_time", "usage_end_time", "project_id", "project_name", "labels", "project_labels",
    "system_labels", "tags", "location", "zone", "usage_amount", "usage_unit", "usage_amount_in_pricing_units",
    "usage_pricing_unit", "cost", "credits", "credits_total", "cost_at_list", "currency", "cost_type", "invoice_month",
    "loaded_at", "resource_global_name", "resource_name",
})
CREDIT_KEEP = ("BillingAccountId", "BillingAccountType", "BillingCurrency", "PricingCurrency", "BillingPeriodStart",
               "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd", "ProviderName", "PublisherName", "InvoiceIssuerName",
               "ServiceName", "ServiceCategory", "ServiceSubcategory", "SubAccountId", "SubAccountName", "SubAccountType",
               "RegionId", "RegionName", "AvailabilityZone", "ResourceId", "ResourceName", "Tags", "x_Provider", "x_ChargeDate",
               "x_RunId", "x_SourceRowKey", "x_LoadedAt", "x_CostType")


def focus_rows_gcp(flat: pa.Table | pd.DataFrame, *, run_id: str | None = None) -> pa.Table:
    """FOCUS rows (``focus_cost_daily`` columns, in order) of a batch of ``gcp_billing_daily_raw`` rows.

    Each source row gives one row, followed by one Credit row per after-the-fact credit, in the
    order of its credits. Raises :class:`ValueError` naming the column when a value cannot be
    represented (a quantity beyond NUMERIC, credits that are not a JSON list of credits).
    """
    table = flat if isinstance(flat, pa.Table) else pa.Table.from_pandas(flat, preserve_index=False)
    schema = _schema()
    if table.num_rows == 0:
        return schema.empty_table()
    source = _Source(table)
    credits = _Credits(source)
    return _interleave(_base_rows(source, credits, run_id), credits, source.n, schema)


# ---- the source batch ---------------------------------------------------------------------------------------
class _Source:
    """The batch's columns as single arrays; a column the export did not have reads as NULLs."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.n = table.num_rows

    def has(self, name: str) -> bool:
        if name not in SOURCE_COLUMNS:  # readers select SOURCE_COLUMNS: a column missing there would read as NULL
            raise KeyError(f"{name} is not in SOURCE_COLUMNS")
        return name in self.table.column_names

    def array(self, name: str, kind: pa.DataType = TEXT) -> pa.Array:
        if not self.has(name):
            return pa.nulls(self.n, kind)
        column = self.table.column(name)
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def text(self, name: str) -> pa.Array:
        values = self.array(name)
        return values if pa.types.is_string(values.type) else values.cast(pa.string())

    def money(self, name: str) -> pa.Array:
        return _money(self.array(name, MONEY), name)

    def quantity(self, name: str) -> pa.Array:
        values = self.array(name, pa.float64())
        return _from_float(values.cast(pa.float64()), name) if not pa.types.is_decimal(values.type) else _money(values, name)

    def timestamps(self, name: str) -> pa.Array:
        values = self.array(name, pa.timestamp("us", tz="UTC"))
        if getattr(values.type, "tz", None) is None:
            values = pc.assume_timezone(values, "UTC") if pa.types.is_timestamp(values.type) else values
        return values.cast(pa.timestamp("us", tz="UTC"))


# ---- exact numbers --------------------------------------------------------------------------------------------
def _money(values: pa.Array, name: str) -> pa.Array:
    """NUMERIC: decimals rounded half-even to nine places; floats through their shortest repr, as ``Decimal(str(v))``."""
    kind = values.type
    if pa.types.is_decimal(kind):
        if kind.scale > 9:
            values = pc.round(values, ndigits=9, round_mode="half_to_even")
        return _fit(values, name)
    if pa.types.is_floating(kind):
        return _from_float(values.cast(pa.float64()), name)
    if pa.types.is_null(kind) or pa.types.is_integer(kind):
        return values.cast(MONEY)
    return _from_text(values.cast(pa.string()), name)


def _fit(values: pa.Array, name: str) -> pa.Array:
    try:
        return values.cast(MONEY)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ValueError(f"{name}: a value does not fit NUMERIC (38 digits, 9 after the point)") from None


def _from_float(values: pa.Array, name: str) -> pa.Array:
    """``Decimal(repr(v)).quantize(1e-9, ROUND_HALF_EVEN)`` for a whole array; NaN is NULL.

    Most values are rounded in doubles (:func:`_rounded_nanos`); the rest go through their shortest text.
    """
    numbers = values.to_numpy(zero_copy_only=False)
    finite = np.isfinite(numbers)
    missing = np.isnan(numbers)
    if (~finite & ~missing).any() or (np.abs(numbers[finite]) >= _LIMIT).any():
        raise ValueError(f"{name}: a value is infinite or too large for NUMERIC (below 1e19)")
    numbers = np.where(np.abs(numbers) < 1e-12, 0.0, numbers)  # rounds to 0 anyway; keeps the repr short
    mask = missing | np.asarray(values.is_null(), dtype=bool) if values.null_count else missing
    # repr(v) is within half an ulp of v, and v * 1e9 is rounded once more: off by at most 2^-52 of it
    nanos, decided = _rounded_nanos(numbers * 1e9, ~mask)
    slow = ~decided & ~mask
    fast = _from_nanos(nanos, decided)
    if not slow.any():
        return fast
    index = pa.array(np.flatnonzero(slow))
    exact = _from_text(pc.cast(pa.array(numbers, pa.float64()).take(index), pa.string()), name)
    return pc.replace_with_mask(fast, pa.array(slow), exact)


def _from_text(text: pa.Array, name: str) -> pa.Array:
    try:
        exact = pc.cast(text, _TEXT)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise ValueError(f"{name}: a value is not a decimal number NUMERIC can hold") from None
    return _fit(pc.round(exact, ndigits=9, round_mode="half_to_even"), name)


def _rounded_nanos(scaled: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-even integers of doubles that stand for exact values within 2^-52 of themselves, and where
    that rounding is certainly the exact value's: below 2^46 the error is under 2^-6, so a double more
    than ``_TIE_MARGIN`` from a half rounds as the exact value does. Elsewhere (near a tie, too large,
    not valid) the caller computes exactly."""
    with np.errstate(invalid="ignore"):
        small = valid & (np.abs(np.nan_to_num(scaled, nan=np.inf)) < _FAST_BELOW)
        values = np.where(small, scaled, 0.0)
        rounded = np.rint(values)
        decided = small & (np.abs(np.abs(values - np.trunc(values)) - 0.5) > _TIE_MARGIN)
    return rounded.astype(np.int64), decided


def _from_nanos(nanos: np.ndarray, valid: np.ndarray) -> pa.Array:
    """NUMERIC values from their counts of nano-units: the decimal128 words written directly (little-endian
    two's complement, the high word the sign of the low one), NULL where not ``valid``."""
    words = np.empty((len(nanos), 2), dtype=np.int64)
    words[:, 0] = np.where(valid, nanos, 0)
    words[:, 1] = words[:, 0] >> 63
    bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(MONEY, len(nanos), [bitmap, pa.py_buffer(words)])


def _nanos(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """NUMERIC values as counts of nano-units, and where that count is exact in a double (valid, below 2^53)."""
    if values.type != MONEY:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    words = np.frombuffer(values.buffers()[1], dtype=np.int64)[2 * values.offset:2 * (values.offset + len(values))]
    low, high = words[0::2], words[1::2]
    valid = np.asarray(values.is_valid(), dtype=bool)
    return low, valid & (high == (low >> 63)) & (low > -_DOUBLE_EXACT) & (low < _DOUBLE_EXACT)


def _add(*terms: pa.Array, minus: tuple[pa.Array, ...] = ()) -> pa.Array:
    """Exact sum of NUMERIC arrays (NULL if a term is NULL), back in NUMERIC."""
    total = terms[0].cast(_SUM)
    for term in terms[1:]:
        total = pc.add(total, term.cast(_SUM)).cast(_SUM)
    for term in minus:
        total = pc.subtract(total, term.cast(_SUM)).cast(_SUM)
    return _fit(total, "a sum of costs")


def _per_row(n: int, rows: np.ndarray, amounts: pa.Array) -> pa.Array:
    """Per source row, the exact sum of ``amounts`` whose owner is ``rows`` (0 where it has none)."""
    if not len(rows):
        return pa.array(np.zeros(n, dtype=np.int64)).cast(MONEY)
    grouped = pa.table({"row": rows, "amount": amounts.cast(_SUM)}).group_by("row").aggregate([("amount", "sum")])
    where = np.full(n, -1, dtype=np.int64)
    where[grouped.column("row").to_numpy()] = np.arange(grouped.num_rows)
    sums = grouped.column("amount_sum").combine_chunks().take(pa.array(where, mask=where < 0))
    return _fit(pc.fill_null(sums, pa.scalar(0, sums.type)), "a sum of credits")


def _unit_prices(cost: pa.Array, quantity: pa.Array) -> pa.Array:
    """cost ÷ quantity rounded half-even to nine places; 0 for 0 ÷ 0, NULL for another ÷ 0.

    Most rows divide in doubles: their counts of nano-units are exact below 2^53, and the quotient
    (rounded twice) is within 2^-52 of itself, so :func:`_rounded_nanos` decides them. The others
    (near a tie, large, zero quantities) go through :func:`_unit_prices_exact`.
    """
    costs, cost_ok = _nanos(cost)
    quantities, quantity_ok = _nanos(quantity)
    usable = cost_ok & quantity_ok & (quantities != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = costs.astype(np.float64) / np.where(usable, quantities, 1).astype(np.float64) * 1e9
    nanos, decided = _rounded_nanos(scaled, usable)
    both = np.asarray(pc.and_(cost.is_valid(), quantity.is_valid()), dtype=bool)
    slow = both & ~decided
    fast = _from_nanos(nanos, decided)
    if not slow.any():
        return fast
    index = pa.array(np.flatnonzero(slow))
    return pc.replace_with_mask(fast, pa.array(slow), _unit_prices_exact(cost.take(index), quantity.take(index)))


def _unit_prices_exact(cost: pa.Array, quantity: pa.Array) -> pa.Array:
    """:func:`_unit_prices` in decimals.

    Arrow divides exactly and truncates at 38 places; rounding that half-even is the exact rounding
    of the quotient (a quotient of two nine-place numbers below 1e19 is never within 1e-38 of a tie
    without being one). The reference rounded a 28-digit quotient first, which can differ when the
    quotient lies within 1e-19 of a tie: those rows, and unit prices of 1e9 or more, are computed
    with ``Decimal`` exactly as the reference did, so every value is the reference's.
    """
    zero = pc.fill_null(pc.equal(quantity, pa.scalar(0, MONEY)), False)
    divisor = pc.if_else(zero, pa.scalar(1, MONEY), quantity)
    quotient = pc.divide(cost.cast(_QUOTIENT[0]), divisor.cast(_QUOTIENT[1]))
    estimate = np.abs(quotient.cast(pa.float64()).to_numpy(zero_copy_only=False))
    large = np.nan_to_num(estimate, nan=0.0) >= _EXACT_BELOW
    quotient = pc.if_else(pa.array(large), pa.scalar(0, quotient.type), quotient)
    price = pc.round(quotient, ndigits=9, round_mode="half_to_even")
    below = pc.round(quotient, ndigits=9, round_mode="towards_zero").cast(_QUOTIENT_EXACT)
    rest = pc.subtract(quotient.cast(_QUOTIENT_EXACT), below).cast(pa.float64()).to_numpy(zero_copy_only=False)
    near_tie = np.abs(np.abs(np.nan_to_num(rest, nan=0.0)) * 1e9 - 0.5) <= _TIE_BAND
    price = _fit(price, "unit price")
    price = pc.if_else(zero, pc.if_else(pc.equal(cost, pa.scalar(0, MONEY)), pa.scalar(0, MONEY), pa.scalar(None, MONEY)), price)
    redo = np.flatnonzero((large | near_tie) & ~np.asarray(zero.to_numpy(zero_copy_only=False), dtype=bool))
    if len(redo):
        index = pa.array(redo)
        exact = [_unit_price(c, q) for c, q in zip(cost.take(index).to_pylist(), quantity.take(index).to_pylist())]
        mask = np.zeros(len(cost), dtype=bool)
        mask[redo] = True
        price = pc.replace_with_mask(price, pa.array(mask), pa.array(exact, MONEY))
    return price


def _unit_price(cost: Decimal | None, quantity: Decimal | None) -> Decimal | None:
    if cost is None or quantity is None:
        return None
    if quantity == 0:
        return Decimal(0).quantize(NANO) if cost == 0 else None
    try:
        return (cost / quantity).quantize(NANO, ROUND_HALF_EVEN)
    except InvalidOperation:
        return None


# ---- values through small Python functions, once per distinct value --------------------------------------
def _mapped(values: pa.Array, fn, kind: pa.DataType = TEXT) -> pa.Array:
    """``fn`` of each row's value, calling it once per distinct value (a batch has few)."""
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    return pa.array([fn(v) for v in encoded.dictionary.to_pylist()], kind).take(encoded.indices)


def _mapped_rows(arrays: list[pa.Array], fn, kind: pa.DataType = TEXT) -> pa.Array:
    """``fn(*values)`` of each row's values of several columns, once per distinct combination."""
    code = None
    for values in arrays:
        encoded = pc.dictionary_encode(values, null_encoding="encode")
        indices = encoded.indices.to_numpy().astype(np.int64)
        code = indices if code is None else code * len(encoded.dictionary) + indices
        code = np.unique(code, return_inverse=True)[1].astype(np.int64)
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    picked = [a.take(pa.array(first)).to_pylist() for a in arrays]
    return pa.array([fn(*values) for values in zip(*picked)], kind).take(pa.array(inverse.astype(np.int64)))


def _truthy(values: pa.Array) -> pa.Array:
    """Python truthiness of text: neither NULL nor empty."""
    return pc.fill_null(pc.not_equal(values, ""), False)


def _first_truthy(*arrays: pa.Array) -> pa.Array:
    """``a or b or ...``: the first value that is neither NULL nor empty (the last one otherwise)."""
    result = arrays[-1]
    for values in reversed(arrays[:-1]):
        result = pc.if_else(_truthy(values), values, result)
    return result


def _where(mask: pa.Array | np.ndarray, values, kind: pa.DataType = TEXT) -> pa.Array:
    """``values`` where ``mask``, NULL elsewhere."""
    mask = mask if isinstance(mask, pa.Array) else pa.array(mask)
    values = values if isinstance(values, pa.Array) else pa.scalar(values, kind)
    return pc.if_else(mask, values, pa.scalar(None, values.type))


def _occurrences(keys: pa.Array) -> np.ndarray:
    """0, 1, 2 ... for the repeats of each key in the batch (identical export rows share a key)."""
    encoded = pc.dictionary_encode(keys, null_encoding="encode")
    indices = encoded.indices.to_numpy().astype(np.int64)
    if len(encoded.dictionary) == len(indices):
        return np.zeros(len(indices), dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ranks = np.arange(len(ordered)) - np.repeat(starts, np.diff(np.r_[starts, len(ordered)]))
    occurrence = np.empty(len(indices), dtype=np.int64)
    occurrence[order] = ranks
    return occurrence


# ---- the rows of the source batch ---------------------------------------------------------------------------
def _base_rows(source: _Source, credits: _Credits, run_id: str | None) -> dict[str, object]:
    cost = source.money("cost")
    credits_total = source.money("credits_total")
    at_list = source.money("cost_at_list")
    list_cost = pc.coalesce(at_list, cost)
    billed = _add(cost, credits_total, minus=(credits.after_sum,))
    contracted = _add(cost, credits.discount_sum)

    sku_id, sku_desc = source.text("sku_id"), source.text("sku_description")
    cost_type = source.text("cost_type")
    category = _mapped(cost_type, lambda t: "Usage" if t is None else CHARGE_CATEGORY.get(t, "Adjustment"))
    commitment_fee = pc.fill_null(pc.starts_with(sku_desc, "Commitment"), False)
    category = pc.if_else(pc.and_(commitment_fee, pc.equal(category, "Usage")), "Purchase", category)
    priced = pc.is_in(category, pa.array(["Usage", "Purchase"]))
    usage = pc.equal(category, "Usage")

    start = source.timestamps("usage_start_time")
    end = pc.coalesce(source.timestamps("usage_end_time"), pc.add(start, HOUR))
    usage_month = pc.floor_temporal(start, unit="month")
    period_start = pc.coalesce(_mapped(source.text("invoice_month"), _invoice_month, start.type), usage_month)
    period_end = _mapped(period_start, _next_month, start.type)
    correction = pc.and_(pc.fill_null(pc.equal(cost_type, "adjustment"), False), pc.less(usage_month, period_start))

    pricing_qty = _where(priced, source.quantity("usage_amount_in_pricing_units"))
    pricing_unit = _where(pc.is_valid(pricing_qty), _mapped(source.text("usage_pricing_unit"), _unit))
    consumed = _where(usage, source.quantity("usage_amount"))
    consumed_unit = _where(pc.is_valid(consumed), _mapped(source.text("usage_unit"), _unit))
    list_unit = _unit_prices(list_cost, pricing_qty)
    contracted_unit = _unit_prices(contracted, pricing_qty)

    currency = source.text("currency")
    commitments = credits.commitments(usage, pricing_qty, pricing_unit, contracted, currency)
    has_cud = pc.is_valid(commitments["CommitmentDiscountStatus"])
    spot = pc.fill_null(pc.or_(pc.match_substring(sku_desc, "Spot"), pc.match_substring(sku_desc, "Preemptible")), False)
    pricing_category = _where(priced, pc.if_else(has_cud, "Committed", pc.if_else(spot, "Dynamic", "Standard")))

    service_desc, service_id = source.text("service_description"), source.text("service_id")
    location = source.text("location")
    region = _where(pc.invert(pc.fill_null(pc.is_in(location, pa.array(["", "global"])), True)), location)
    project, project_name = source.text("project_id"), source.text("project_name")
    account, org = source.text("billing_account_id"), source.text("org_slug")
    resource = source.text("resource_global_name")  # detailed export only
    keys = source.text("row_key")
    occurrence = _occurrences(keys)
    repeated = occurrence > 0
    row_key = keys
    if repeated.any():
        suffix = pa.array(np.char.add("#", occurrence.astype(str)))
        row_key = pc.if_else(pa.array(repeated), pc.binary_join_element_wise(keys, suffix, ""), keys)
    not_tax = pc.not_equal(category, "Tax")
    run = run_id if run_id is not None else source.text("run_id")
    return {
        "BilledCost": billed, "EffectiveCost": billed, "ListCost": list_cost, "ContractedCost": contracted,
        "PricingCurrencyEffectiveCost": billed, "ListUnitPrice": list_unit, "ContractedUnitPrice": contracted_unit,
        "PricingCurrencyListUnitPrice": list_unit, "PricingCurrencyContractedUnitPrice": contracted_unit,
        "BillingCurrency": currency, "PricingCurrency": currency,
        "PricingQuantity": pricing_qty, "PricingUnit": pricing_unit, "ConsumedQuantity": consumed, "ConsumedUnit": consumed_unit,
        "BillingAccountId": pc.if_else(_truthy(account), account,
                                       pc.binary_join_element_wise("convergence:", pc.fill_null(org, "None"), "")),
        "BillingAccountType": "Billing Account",
        "BillingPeriodStart": period_start, "BillingPeriodEnd": period_end,
        "ChargePeriodStart": start, "ChargePeriodEnd": end,
        "ChargeCategory": category, "ChargeClass": _where(correction, "Correction"),
        "ChargeFrequency": pc.if_else(pc.equal(category, "Purchase"), "Recurring",
                                      pc.if_else(pc.equal(category, "Adjustment"), "One-Time", "Usage-Based")),
        "ChargeDescription": sku_desc, "PricingCategory": pricing_category,
        **commitments,
        "ProviderName": PROVIDER, "PublisherName": PROVIDER, "InvoiceIssuerName": INVOICE_ISSUER,
        "ServiceName": _first_truthy(service_desc, service_id, pa.scalar(PROVIDER)),
        "ServiceCategory": _mapped(service_desc, lambda s: SERVICES.get(s, OTHER)[0]),
        "ServiceSubcategory": _mapped(service_desc, lambda s: SERVICES.get(s, OTHER)[1]),
        "SkuId": _where(not_tax, sku_id), "SkuMeter": _where(not_tax, sku_desc),
        "SkuPriceId": _where(priced, sku_id),
        "SubAccountId": project, "SubAccountName": _first_truthy(project_name, project),
        "SubAccountType": _where(pc.is_valid(project), "Project"),
        "RegionId": region, "RegionName": _mapped(region, lambda r: None if r is None else REGIONS.get(r, r)),
        "AvailabilityZone": source.text("zone"),
        "ResourceId": resource, "ResourceName": source.text("resource_name"),
        "ResourceType": _mapped(resource, _resource_type),
        "Tags": _mapped_rows([source.text(c) for c in ("labels", "project_labels", "system_labels", "tags")], _tags),
        "x_Provider": "gcp", "x_ChargeDate": source.array("usage_date", pa.date32()).cast(pa.date32()),
        "x_RunId": run, "x_RowKey": row_key, "x_SourceRowKey": keys, "x_LoadedAt": source.timestamps("loaded_at"),
        "x_CostType": cost_type,
    }


# ---- credits --------------------------------------------------------------------------------------------------
class _Credits:
    """A batch's credits: the sums netted into each row, the Credit rows, the CUD that covered a row."""

    def __init__(self, source: _Source):
        self.n = n = source.n
        self.breakdown = source.has("credits")
        if not self.breakdown:  # one Credit row of unknown type per row with credits
            total = source.money("credits_total")
            rows = np.flatnonzero(np.asarray(pc.fill_null(pc.not_equal(total, pa.scalar(0, MONEY)), False), dtype=bool))
            self._after(n, rows, total.take(pa.array(rows, pa.int64())), pa.nulls(len(rows), pa.string()),
                        pa.array([NO_BREAKDOWN] * len(rows), pa.string()))
            self.discount_sum = _per_row(n, np.zeros(0, dtype=np.int64), pa.nulls(0, MONEY))
            return
        items = _parse_credits(source.array("credits"))
        self._parent = pc.list_parent_indices(items).to_numpy().astype(np.int64)
        elements = pc.list_flatten(items)
        self._kind, self._id = _field(elements, "type"), _field(elements, "id")
        self._name, self._full_name = _field(elements, "name"), _field(elements, "full_name")
        number = _field(elements, "amount", pa.float64())
        amount = _from_float(number, "credits.amount")
        netted = np.asarray(pc.fill_null(pc.is_in(self._kind, pa.array(sorted(NETTED))), False), dtype=bool)
        nonzero = np.asarray(pc.fill_null(pc.not_equal(number, 0.0), False), dtype=bool)
        after = np.flatnonzero(~netted & nonzero)
        index = pa.array(after, pa.int64())
        description = _first_truthy(self._full_name.take(index), self._name.take(index), self._kind.take(index))
        self._after(n, self._parent[after], amount.take(index), self._kind.take(index), description)
        discount = np.flatnonzero(np.asarray(pc.fill_null(pc.equal(self._kind, "DISCOUNT"), False), dtype=bool))
        self.discount_sum = _per_row(n, self._parent[discount], amount.take(pa.array(discount, pa.int64())))

    def _after(self, n: int, rows: np.ndarray, amount: pa.Array, kind: pa.Array, description: pa.Array) -> None:
        """After-the-fact credits, in row order: their owner row, rank within it, amount, type, description."""
        self.rows, self.amount, self.kind, self.description = rows, amount, kind, description
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, dtype=np.int64)
        self.rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        self.after_sum = _per_row(n, rows, amount)

    def commitments(self, usage: pa.Array, pricing_qty: pa.Array, pricing_unit: pa.Array, contracted: pa.Array,
                    currency: pa.Array) -> dict[str, pa.Array]:
        """CommitmentDiscount* of Usage rows a committed use discount covered (its credit is netted into the row).

        The export says which CUD covered a row, not how much of the commitment it drew: the quantity is the
        row's own metered quantity for a resource-based CUD ("Usage") and its spend before the discount for a
        spend-based one ("Spend"), i.e. the row is taken as fully covered. The row's first CUD credit names it.
        """
        pick = np.full(self.n, -1, dtype=np.int64)
        if self.breakdown:
            cud = np.flatnonzero(np.asarray(pc.fill_null(pc.is_in(self._kind, pa.array(sorted(CUD_CATEGORY))), False),
                                            dtype=bool))
            owners, first = np.unique(self._parent[cud], return_index=True)
            pick[owners] = cud[first]
            pick[~np.asarray(usage, dtype=bool)] = -1
        index = pa.array(pick, mask=pick < 0)
        has = pa.array(pick >= 0)
        if not self.breakdown or not (pick >= 0).any():
            empty = pa.nulls(self.n, pa.string())
            return {"CommitmentDiscountId": empty, "CommitmentDiscountName": empty, "CommitmentDiscountCategory": empty,
                    "CommitmentDiscountType": empty, "CommitmentDiscountStatus": empty,
                    "CommitmentDiscountQuantity": pa.nulls(self.n, MONEY), "CommitmentDiscountUnit": empty}
        category = _mapped(self._kind.take(index), lambda t: None if t is None else CUD_CATEGORY[t])
        by_usage = pc.equal(category, "Usage")
        quantity = _where(has, pc.if_else(by_usage, pricing_qty, contracted))
        return {
            "CommitmentDiscountId": _first_truthy(self._id.take(index), self._name.take(index)),
            "CommitmentDiscountName": _first_truthy(self._full_name.take(index), self._name.take(index)),
            "CommitmentDiscountCategory": category,
            "CommitmentDiscountType": _where(has, "Committed Use Discount"),
            "CommitmentDiscountStatus": _where(has, "Used"),
            "CommitmentDiscountQuantity": quantity,
            "CommitmentDiscountUnit": _where(pc.is_valid(quantity), pc.if_else(by_usage, pricing_unit, currency)),
        }


def _field(elements: pa.StructArray, name: str, kind: pa.DataType = TEXT) -> pa.Array:
    if elements.type.get_field_index(name) < 0:
        return pa.nulls(len(elements), kind)
    values = pc.struct_field(elements, name)
    return values if values.type == kind else values.cast(kind)


def _parse_credits(values: pa.Array) -> pa.ListArray:
    """The ``credits`` column: JSON text as the flattener writes it (a list of {name, amount, full_name, id,
    type}), or already a list of structs. Parsed by Arrow's JSON reader in one pass: amounts are read as
    doubles, which is exact here, since the flattener wrote each as the shortest text of a double."""
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        return values
    text = values.cast(pa.string())
    lines = pc.binary_join_element_wise('{"c":', pc.fill_null(text, "null"), "}\n", "")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + len(lines) + 1]
    data = lines.buffers()[2][int(offsets[0]):int(offsets[-1])] if len(lines) else pa.py_buffer(b"")
    multiline = bool(pc.any(pc.match_substring(text, "\n")).as_py())
    options = pj.ParseOptions(explicit_schema=pa.schema([("c", pa.list_(CREDIT))]), unexpected_field_behavior="ignore",
                              newlines_in_values=multiline)
    try:
        parsed = pj.read_json(pa.BufferReader(data), parse_options=options).column("c").combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"credits: not a JSON list of credits: {str(exc).splitlines()[0]}") from None
    if len(parsed) != len(text):
        raise ValueError("credits: not a JSON list of credits (one per row)")
    return parsed


# ---- assembling the batch -------------------------------------------------------------------------------------
def _interleave(base: dict[str, object], credits: _Credits, n: int, schema: pa.Schema) -> pa.Table:
    """Each source row followed by its Credit rows, every column of ``focus_cost_daily`` in order.

    Output row ``i`` is source row ``owner[i]`` or that row's Credit row ``credit[i]``: a column the
    Credit rows copy is one ``take`` of the source rows by owner, a column only source rows have is
    a ``take`` with NULL for Credit rows, and only the few columns both set are concatenated.
    """
    m = len(credits.rows)
    if not m:
        return pa.Table.from_arrays([_broadcast(base.get(f.name), n, f.type) for f in schema], schema=schema)
    counts = np.bincount(credits.rows, minlength=n)
    position = np.arange(n) + np.cumsum(counts) - counts
    credit_position = position[credits.rows] + 1 + credits.rank
    owner = np.empty(n + m, dtype=np.int64)
    owner[position] = np.arange(n)
    owner[credit_position] = credits.rows
    is_credit = np.zeros(n + m, dtype=bool)
    is_credit[credit_position] = True
    by_owner, source_only = pa.array(owner), pa.array(owner, mask=is_credit)
    order = np.empty(n + m, dtype=np.int64)
    order[position] = np.arange(n)
    order[credit_position] = n + np.arange(m)
    credit_values: dict[str, object] = {name: credits.amount for name in
                                        ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "PricingCurrencyEffectiveCost")}
    credit_values.update({
        "ChargeCategory": "Credit", "ChargeFrequency": "Usage-Based", "ChargeDescription": credits.description,
        "x_CreditType": credits.kind,
        "x_RowKey": pc.binary_join_element_wise(_broadcast(base["x_RowKey"], n, TEXT).take(pa.array(credits.rows)), "/credit/",
                                                pa.array(credits.rank.astype(str)), ""),
    })
    columns = []
    for field in schema:
        own = base.get(field.name)
        if field.name in CREDIT_KEEP:
            columns.append(_broadcast(own, n + m, field.type) if not isinstance(own, pa.Array | pa.ChunkedArray)
                           else _broadcast(own, n, field.type).take(by_owner))
        elif field.name in credit_values:
            extra = _broadcast(credit_values[field.name], m, field.type)
            columns.append(pa.concat_arrays([_broadcast(own, n, field.type), extra]).take(pa.array(order)))
        elif own is None:
            columns.append(pa.nulls(n + m, field.type))
        else:
            columns.append(_broadcast(own, n, field.type).take(source_only))
    return pa.Table.from_arrays(columns, schema=schema)


def _broadcast(value, length: int, kind: pa.DataType) -> pa.Array:
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if isinstance(value, pa.Array):
        return value if value.type == kind else value.cast(kind)
    if value is None:
        return pa.nulls(length, kind)
    return pa.array([value], kind).take(pa.array(np.zeros(length, dtype=np.int64)))


@cache
def _schema() -> pa.Schema:
    """``focus_cost_daily`` as Arrow, every column nullable: the load's cast checks the REQUIRED ones."""
    return pa.schema([f.with_nullable(True) for f in arrow_schema(focus_schema())])


def _invoice_month(month: str | None) -> datetime | None:
    """``invoice.month`` YYYYMM → the month's first instant (UTC); anything else → NULL (the usage month is used)."""
    parsed = pd.to_datetime(pd.Series([month], dtype=object), format="%Y%m", errors="coerce").iloc[0]
    return None if pd.isna(parsed) else parsed.to_pydatetime().replace(tzinfo=timezone.utc)


def _next_month(start: datetime | None) -> datetime | None:
    if start is None:
        return None
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1, day=1)


def _resource_type(global_name: str | None) -> str | None:
    """``//compute.googleapis.com/projects/p/zones/z/instances/vm`` → ``compute.googleapis.com/instances``."""
    if not global_name:
        return None
    parts = global_name.lstrip("/").split("/")
    return f"{parts[0]}/{parts[-2]}" if len(parts) >= 3 else parts[0]


def _unit(unit: str | None) -> str | None:
    """Google's unit ("gibibyte month", "byte-seconds", "hour") → UnitFormat ("GiB-Months", "B-Seconds", "Hours")."""
    if not unit:
        return None
    words = [UNIT_WORDS.get(w.lower(), w[:1].upper() + w[1:]) for w in unit.replace("-", " ").split()]
    if len(words) == 2 and words[1] in TIME_UNITS:
        return f"{words[0]}-{words[1]}"
    return " ".join(words)


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
