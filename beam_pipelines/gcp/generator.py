"""A realistic Cloud Billing standard export, generated as Arrow/Parquet (the embedded twin's data).

Deterministic per (org, seed). It has what readers of real exports must cope with: services and
SKUs, projects with labels, resource labels, credits of several types (negative), cost types
(regular, tax, adjustment, rounding_error), a second billing account invoiced in EUR with its
conversion rate, cost_at_list, a month-end day billed across two invoice months, and late rows
exported one to three days after their usage day.
"""
from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SERVICES = [  # (id, description, [(sku id, sku description, unit, pricing unit, unit price)])
    ("6F81-5844-456A", "Compute Engine", [("CP-E2-STD", "E2 Instance Core running in Americas", "seconds", "hour", 0.0218),
                                          ("CP-PD-SSD", "SSD backed PD Capacity", "byte-seconds", "gibibyte month", 0.17)]),
    ("95FF-2EF5-5EA1", "Cloud Storage", [("GCS-STD", "Standard Storage US Multi-region", "byte-seconds", "gibibyte month", 0.026),
                                         ("GCS-EGR", "Network Internet Egress", "bytes", "gibibyte", 0.12)]),
    ("24E6-581D-38E5", "BigQuery", [("BQ-ANA", "Analysis", "bytes", "tebibyte", 6.25),
                                    ("BQ-STO", "Active Logical Storage", "byte-seconds", "gibibyte month", 0.02)]),
    ("9662-B51E-5089", "Cloud SQL", [("SQL-PG-VCPU", "Cloud SQL for PostgreSQL: vCPU", "seconds", "hour", 0.0413)]),
    ("CCD8-9BF1-090E", "Kubernetes Engine", [("GKE-AUTO", "Autopilot Pod mCPU Requests", "seconds", "hour", 0.0445)]),
    ("C7E2-9256-1C43", "Vertex AI", [("VAI-GEM-IN", "Gemini 2.5 Pro Input Tokens", "count", "count", 1.25e-6),
                                     ("VAI-GEM-OUT", "Gemini 2.5 Pro Output Tokens", "count", "count", 1e-5)]),
    ("152E-C115-5142", "Cloud Run", [("RUN-CPU", "CPU Allocation Time", "seconds", "vCPU-second", 0.000024)]),
]
SCALE = {"BQ-ANA": 0.005, "VAI-GEM-IN": 20000.0, "VAI-GEM-OUT": 5000.0, "RUN-CPU": 300.0}  # typical hourly amounts
REGIONS = [("us-central1", "US", "us-central1-a"), ("europe-west1", "BE", "europe-west1-b"), ("asia-east1", "TW", None)]
CREDIT_TYPES = [("SUSTAINED_USAGE_DISCOUNT", "Sustained Usage Discount"), ("COMMITTED_USAGE_DISCOUNT", "Committed use discount"),
                ("PROMOTION", "Free trial credit"), ("FREE_TIER", "Free tier"), ("DISCOUNT", "Spending based discount")]
COST_TYPES = np.array(["regular", "tax", "adjustment", "rounding_error"], dtype=object)
LABELS = [("env", "prod"), ("env", "staging"), ("team", "data"), ("team", "web"), ("app", "checkout"), ("app", "search")]

KV = pa.struct([("key", pa.string()), ("value", pa.string())])
CREDIT = pa.struct([("name", pa.string()), ("amount", pa.float64()), ("full_name", pa.string()), ("id", pa.string()),
                    ("type", pa.string())])


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _list(values: pa.Array, counts: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each row's run of list elements."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _kv(indexes: np.ndarray) -> pa.StructArray:
    keys = np.array([k for k, _ in LABELS], dtype=object)
    values = np.array([v for _, v in LABELS], dtype=object)
    return _struct(key=pa.array(keys[indexes], pa.string()), value=pa.array(values[indexes], pa.string()))


def _struct(**fields) -> pa.StructArray:
    return pa.StructArray.from_arrays(list(fields.values()), names=list(fields))


def generate_day(org: str, day: date, rows: int, seed: int | str = 0) -> pa.Table:
    rng = np.random.default_rng(_seed(org, day.isoformat(), seed))
    n = rows
    accounts = np.array([f"01{_seed(org, 'usd') % 10**4:04X}-A1B2C3-D4E5F6", f"02{_seed(org, 'eur') % 10**4:04X}-F6E5D4-C3B2A1"],
                        dtype=object)
    eur = rng.random(n) < 0.2
    rate = np.where(eur, 0.92, 1.0)

    skus = [(s_id, s_desc, k) for s_id, s_desc, ks in SERVICES for k in ks]
    pick = rng.integers(0, len(skus), n)
    service_id = np.array([skus[i][0] for i in range(len(skus))], dtype=object)[pick]
    service_desc = np.array([skus[i][1] for i in range(len(skus))], dtype=object)[pick]
    sku_id = np.array([s[2][0] for s in skus], dtype=object)[pick]
    sku_desc = np.array([s[2][1] for s in skus], dtype=object)[pick]
    unit = np.array([s[2][2] for s in skus], dtype=object)[pick]
    pricing_unit = np.array([s[2][3] for s in skus], dtype=object)[pick]
    unit_price = np.array([s[2][4] for s in skus])[pick]

    projects = [f"{org.replace('_', '-')}-{name}" for name in ("prod", "staging", "data", "sandbox")]
    p = rng.integers(0, len(projects), n)
    project_labels_per = [[0], [1], [2, 0], []]  # indexes into LABELS
    pl_counts = np.array([len(x) for x in project_labels_per])[p]
    pl_flat = np.concatenate([np.array(project_labels_per[i], dtype=np.int64) for i in range(4)])
    pl_start = np.concatenate([[0], np.cumsum([len(x) for x in project_labels_per])])[:-1]
    pl_idx = pl_flat[np.repeat(pl_start[p], pl_counts) + _ranks(pl_counts)]
    project = _struct(
        id=pa.array(np.array(projects, dtype=object)[p], pa.string()),
        number=pa.array(np.array([str(100000000000 + _seed(x) % 10**11) for x in projects], dtype=object)[p], pa.string()),
        name=pa.array(np.array([x.replace("-", " ").title() for x in projects], dtype=object)[p], pa.string()),
        labels=_list(_kv(pl_idx), pl_counts),
        ancestry_numbers=pa.array(np.full(n, "/123456789/", dtype=object), pa.string()),
    )
    label_counts = rng.integers(0, 3, n)
    label_pick = rng.integers(0, len(LABELS), int(label_counts.sum()))
    labels = _list(_kv(label_pick), label_counts)

    hour = rng.integers(0, 24, n)
    day_start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    start_us = int(day_start.timestamp() * 1e6) + hour.astype(np.int64) * 3_600_000_000
    end_us = start_us + 3_600_000_000
    late = rng.random(n) < 0.06
    delay_h = np.where(late, rng.integers(24, 72, n) + (24 - hour), rng.integers(1, 20, n))
    export_us = end_us + delay_h.astype(np.int64) * 3_600_000_000 + rng.integers(0, 3_600_000_000, n)

    scale = np.array([SCALE.get(s[2][0], 1.0) for s in skus])[pick]
    amount = rng.lognormal(3, 1.5, n) * scale
    usd_cost = np.round(amount * unit_price, 6)
    cost_type = COST_TYPES[rng.choice(4, n, p=[0.9, 0.04, 0.03, 0.03])]
    usd_cost = np.where(cost_type == "rounding_error", np.round(rng.uniform(-0.01, 0.01, n), 6), usd_cost)
    usd_cost = np.where(cost_type == "adjustment", -np.round(usd_cost * 0.3, 6), usd_cost)
    cost = np.round(usd_cost * rate, 6)
    cost_at_list = np.round(np.where(cost_type == "regular", cost * rng.uniform(1.0, 1.3, n), cost), 6)

    credit_counts = np.where(cost_type == "regular", rng.choice(3, n, p=[0.6, 0.3, 0.1]), 0)
    owners = np.repeat(np.arange(n), credit_counts)
    kinds = rng.integers(0, len(CREDIT_TYPES), len(owners))
    credit_amounts = -np.round(cost[owners] * rng.uniform(0.05, 0.3, len(owners)), 6)
    names = np.array([c[1] for c in CREDIT_TYPES], dtype=object)[kinds]
    credits = _list(_struct(
        name=pa.array(names, pa.string()),
        amount=pa.array(credit_amounts, pa.float64()),
        full_name=pa.array(names, pa.string()),
        id=pa.array(np.array([f"credit-{k}" for k in range(len(CREDIT_TYPES))], dtype=object)[kinds], pa.string()),
        type=pa.array(np.array([c[0] for c in CREDIT_TYPES], dtype=object)[kinds], pa.string()),
    ), credit_counts)

    month = day.strftime("%Y%m")
    next_month = (day.replace(day=28) + timedelta(days=4)).strftime("%Y%m")
    month_end = (day + timedelta(days=1)).month != day.month
    invoice_month = np.where(month_end & late, next_month, month)  # a month-end day billed across two months
    r = rng.integers(0, len(REGIONS), n)

    return pa.table({
        "billing_account_id": pa.array(accounts[eur.astype(int)], pa.string()),
        "service": _struct(id=pa.array(service_id, pa.string()), description=pa.array(service_desc, pa.string())),
        "sku": _struct(id=pa.array(sku_id, pa.string()), description=pa.array(sku_desc, pa.string())),
        "usage_start_time": pa.array(start_us, pa.timestamp("us", tz="UTC")),
        "usage_end_time": pa.array(end_us, pa.timestamp("us", tz="UTC")),
        "project": project,
        "labels": labels,
        "system_labels": _list(_kv(np.zeros(0, dtype=np.int64)), np.zeros(n, dtype=np.int64)),
        "location": _struct(
            location=pa.array(np.array([x[0] for x in REGIONS], dtype=object)[r], pa.string()),
            country=pa.array(np.array([x[1] for x in REGIONS], dtype=object)[r], pa.string()),
            region=pa.array(np.array([x[0] for x in REGIONS], dtype=object)[r], pa.string()),
            zone=pa.array(np.array([x[2] for x in REGIONS], dtype=object)[r], pa.string()),
        ),
        "transaction_type": pa.array(np.full(n, "GOOGLE", dtype=object), pa.string()),
        "seller_name": pa.nulls(n, pa.string()),
        "export_time": pa.array(export_us, pa.timestamp("us", tz="UTC")),
        "cost": pa.array(cost, pa.float64()),
        "currency": pa.array(np.where(eur, "EUR", "USD").astype(object), pa.string()),
        "currency_conversion_rate": pa.array(rate, pa.float64()),
        "usage": _struct(amount=pa.array(amount, pa.float64()), unit=pa.array(unit, pa.string()),
                         amount_in_pricing_units=pa.array(amount, pa.float64()),
                         pricing_unit=pa.array(pricing_unit, pa.string())),
        "credits": credits,
        "invoice": _struct(month=pa.array(invoice_month.astype(object), pa.string()),
                           publisher_type=pa.array(np.full(n, "GOOGLE", dtype=object), pa.string())),
        "cost_type": pa.array(cost_type, pa.string()),
        "cost_at_list": pa.array(cost_at_list, pa.float64()),
    })


def generate_export(org: str, end_day: date, days: int, rows_per_day: int, seed: int = 0) -> pa.Table:
    """``days`` consecutive days ending on ``end_day``."""
    tables = [generate_day(org, end_day - timedelta(days=i), rows_per_day, seed) for i in reversed(range(days))]
    return pa.concat_tables(tables)


def write_export(path: str | Path, org: str, end_day: date, days: int, rows_per_day: int, seed: int = 0,
                 chunk_rows: int = 200_000, row_group_size: int = 100_000) -> int:
    """Write an export of ``days`` days to one Parquet file, ``chunk_rows`` rows generated at a time.

    A day of ten million rows does not fit in the memory of the process writing it when generated
    whole; in chunks, memory holds one chunk. Each chunk of a day is generated with its own seed, so
    the file differs from :func:`generate_export` of the same arguments but is as deterministic.
    Returns the number of rows written.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    written = 0
    writer = None
    try:
        for i in reversed(range(days)):
            day = end_day - timedelta(days=i)
            for number, start in enumerate(range(0, rows_per_day, chunk_rows)):
                chunk = generate_day(org, day, min(chunk_rows, rows_per_day - start), f"{seed}/{number}" if number else seed)
                if writer is None:
                    writer = pq.ParquetWriter(str(path), chunk.schema)
                writer.write_table(chunk, row_group_size=row_group_size)
                written += chunk.num_rows
    finally:
        if writer is not None:
            writer.close()
    return written
