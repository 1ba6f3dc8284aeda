"""Flatten Cloud Billing standard-export rows into ``gcp_billing_daily_raw``, one row per export row.

The SQL runs in DuckDB over an Arrow batch and is built from the fields the batch actually has:
fields added by newer exports are ignored, fields missing from older ones become NULL, so neither
breaks the load. Only ``usage_start_time`` and ``cost`` are indispensable.

    credits_total = sum(credits.amount)         (credits are negative)
    net_cost      = cost + credits_total
    *_usd         = value / currency_conversion_rate   (the export's rate: cost ÷ rate = USD)

Money is converted once, here, from the export's FLOAT64 to DECIMAL(38, 9) (BigQuery NUMERIC):
each amount (cost, each credit, cost_at_list) is rounded to the nearest nano-unit, then sums are
exact decimal sums. A USD figure is the amount divided by the export's rate, rounded to the nearest
nano-dollar; ``net_cost_usd`` is ``cost_usd + credits_total_usd``, so the parts always add up.
"""
from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from beam_pipelines.errors import ProviderError
from beam_pipelines.gcp.config import FlattenOptions

MONEY = "DECIMAL(38, 9)"
SIMPLE = (  # (output column, source path, DuckDB type)
    ("billing_account_id", "billing_account_id", "VARCHAR"),
    ("service_id", "service.id", "VARCHAR"),
    ("service_description", "service.description", "VARCHAR"),
    ("sku_id", "sku.id", "VARCHAR"),
    ("sku_description", "sku.description", "VARCHAR"),
    ("usage_end_time", "usage_end_time", "TIMESTAMPTZ"),
    ("project_id", "project.id", "VARCHAR"),
    ("project_number", "project.number", "VARCHAR"),
    ("project_name", "project.name", "VARCHAR"),
    ("location", "location.location", "VARCHAR"),
    ("country", "location.country", "VARCHAR"),
    ("region", "location.region", "VARCHAR"),
    ("zone", "location.zone", "VARCHAR"),
    ("usage_amount", "usage.amount", "DOUBLE"),
    ("usage_unit", "usage.unit", "VARCHAR"),
    ("usage_amount_in_pricing_units", "usage.amount_in_pricing_units", "DOUBLE"),
    ("usage_pricing_unit", "usage.pricing_unit", "VARCHAR"),
    ("cost_at_list", "cost_at_list", "DECIMAL(38, 9)"),
    ("currency", "currency", "VARCHAR"),
    ("currency_conversion_rate", "currency_conversion_rate", "DOUBLE"),
    ("cost_type", "cost_type", "VARCHAR"),
    ("invoice_month", "invoice.month", "VARCHAR"),
    ("transaction_type", "transaction_type", "VARCHAR"),
    ("export_time", "export_time", "TIMESTAMPTZ"),
)


def _has(schema: pa.Schema, path: str) -> bool:
    fields = schema
    for part in path.split("."):
        index = fields.get_field_index(part) if isinstance(fields, pa.Schema) else fields.get_field_index(part)
        if index < 0:
            return False
        field_type = fields.field(index).type
        fields = field_type if pa.types.is_struct(field_type) else None
        if fields is None and part != path.split(".")[-1]:
            return False
    return True


def _ref(path: str) -> str:
    return ".".join(f'"{p}"' for p in path.split("."))


def _json(schema: pa.Schema, path: str) -> str:
    return f"CAST(to_json(COALESCE({_ref(path)}, [])) AS VARCHAR)" if _has(schema, path) else "'[]'"


def flatten_sql(schema: pa.Schema, options: FlattenOptions | None = None) -> str:
    options = options or FlattenOptions()
    missing = [f for f in options.required_fields if not _has(schema, f)]
    if missing:
        raise ProviderError("gcp", f"billing export lacks required field(s) {missing}")
    credits = (f"COALESCE(list_sum(list_transform(credits, lambda c: CAST(c.amount AS {MONEY}))), 0)"
               if _has(schema, "credits") else "0")
    columns = {
        "usage_date": "CAST(usage_start_time AS DATE)",
        "org_slug": "$org_slug",
        "run_id": "$run_id",
        "row_key": "printf('%016x', hash($org_slug, export))",
        "usage_start_time": "CAST(usage_start_time AS TIMESTAMPTZ)",
        **{column: _json(schema, path) for column, path in options.json_fields.items()},
        "cost": f"CAST(cost AS {MONEY})",
        "credits_total": f"CAST({credits} AS {MONEY})",
        "loaded_at": "$loaded_at",
    }
    for name, path, kind in SIMPLE:
        columns[name] = f"CAST({_ref(path)} AS {kind})" if _has(schema, path) else f"CAST(NULL AS {kind})"
    rate = "NULLIF(currency_conversion_rate, 0)" if _has(schema, "currency_conversion_rate") else "NULL"
    inner = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
    usd = (f"SELECT *, CAST(cost + credits_total AS {MONEY}) AS net_cost,"
           f" CAST(CAST(cost AS DOUBLE) / {rate} AS {MONEY}) AS cost_usd,"
           f" CAST(CAST(credits_total AS DOUBLE) / {rate} AS {MONEY}) AS credits_total_usd"
           f" FROM (SELECT {inner} FROM export)")
    return f"SELECT *, CAST(cost_usd + credits_total_usd AS {MONEY}) AS net_cost_usd FROM ({usd})"


class Flattener:
    """One DuckDB connection reused across batches (DuckDB releases the GIL while it works)."""

    def __init__(self, options: FlattenOptions | None = None):
        self._options = options or FlattenOptions()
        self._conn = duckdb.connect(":memory:")
        self._conn.execute("SET TimeZone = 'UTC'").fetchall()
        self._conn.execute("SET enable_progress_bar = false").fetchall()
        self._conn.execute("SET threads = 2").fetchall()
        self._conn.execute("SET memory_limit = '256MB'").fetchall()

    def __call__(self, batch: pa.Table, org_slug: str, run_id: str, loaded_at: datetime) -> pa.Table:
        try:
            self._conn.register("export", batch)
            try:
                result = self._conn.sql(
                    flatten_sql(batch.schema, self._options), params={"org_slug": org_slug, "run_id": run_id, "loaded_at": loaded_at}
                ).to_arrow_table()
            finally:
                self._conn.unregister("export")
        except duckdb.Error as exc:
            raise ProviderError("gcp", f"malformed billing export: {str(exc).splitlines()[0]}") from None
        return result
