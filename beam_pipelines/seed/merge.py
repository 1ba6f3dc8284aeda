"""Plain logic for seeding an org's tables and for prorating subscriptions by month."""
from __future__ import annotations

import calendar
import csv
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa

from beam_pipelines.config.schema import TableSchema
from beam_pipelines.errors import ConfigError
from beam_pipelines.pricing.money import SCALE as NANO
from beam_pipelines.pricing.money import as_decimal
from beam_pipelines.rows import row_key
from beam_pipelines.warehouse.arrow_schema import arrow_schema


def read_seed_csv(path: Path, display: str, schema: TableSchema, updated_at: datetime) -> pd.DataFrame:
    """The default rows, typed by the table's schema (a bad cell is a config error naming it)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    target = arrow_schema(schema)
    columns = {}
    for field in target:
        if field.name in ("is_custom", "updated_at"):
            continue
        raw = [(r.get(field.name) or "").strip() or None for r in rows]
        try:
            if pa.types.is_date(field.type):
                columns[field.name] = [None if v is None else date.fromisoformat(v) for v in raw]
            elif pa.types.is_integer(field.type):
                columns[field.name] = [None if v is None else int(v) for v in raw]
            elif pa.types.is_floating(field.type):
                columns[field.name] = [None if v is None else float(v) for v in raw]
            elif pa.types.is_decimal(field.type):
                columns[field.name] = [None if v is None else Decimal(v) for v in raw]
            else:
                columns[field.name] = raw
        except (ValueError, ArithmeticError) as exc:
            raise ConfigError(f"{display}: column {field.name}: {exc}") from None
    frame = pd.DataFrame(columns)
    frame["is_custom"] = False
    frame["updated_at"] = updated_at
    return frame


def merge_seed(defaults: pd.DataFrame, existing: pd.DataFrame | None, key: list[str]) -> pd.DataFrame:
    """Defaults plus the org's customised rows; a customised row wins over the default with its key."""
    if existing is None or existing.empty:
        return defaults.reset_index(drop=True)
    custom = existing[existing["is_custom"].fillna(False).astype(bool)]
    if custom.empty:
        return defaults.reset_index(drop=True)
    taken = set(map(tuple, custom[key].astype(str).to_numpy()))
    keep = [tuple(row) not in taken for row in defaults[key].astype(str).to_numpy()]
    return pd.concat([defaults[keep], custom[defaults.columns]], ignore_index=True)


def month_starts(start: date, end: date) -> list[date]:
    months, current = [], start.replace(day=1)
    while current <= end:
        months.append(current)
        current = (current.replace(day=28) + pd.Timedelta(days=4)).replace(day=1)
    return months


def monthly_subscription_rows(subscriptions: pd.DataFrame, org_slug: str, run_id: str, start: date, end: date,
                              loaded_at: datetime) -> pd.DataFrame:
    """One row per (month overlapping start..end, subscription active that month), prorated by active days."""
    rows = []
    for month in month_starts(start, end):
        days_in_month = calendar.monthrange(month.year, month.month)[1]
        month_end = month.replace(day=days_in_month)
        for sub in subscriptions.to_dict("records"):
            first = max(sub["start_date"], month)
            last = min(sub["end_date"] if pd.notna(sub.get("end_date")) and sub.get("end_date") else month_end, month_end)
            active = (last - first).days + 1
            if active <= 0 or not sub["seats"]:
                continue
            price = as_decimal(sub["unit_price_usd"])
            rows.append({
                "month_start": month, "org_slug": org_slug, "run_id": run_id,
                "row_key": row_key(org_slug, month, sub["subscription_id"]), "subscription_id": sub["subscription_id"],
                "product": sub["product"], "plan_name": sub["plan_name"], "seats": int(sub["seats"]),
                "unit_price_usd": price, "billing_period": sub["billing_period"],
                "active_days": active, "days_in_month": days_in_month,
                "prorated_cost_usd": (int(sub["seats"]) * price * active / days_in_month).quantize(NANO, ROUND_HALF_EVEN),
                "loaded_at": loaded_at,
            })
    return pd.DataFrame(rows)
