"""``convergence prices missing``: the models seen in usage that the price book cannot price.

Read from the cost tables themselves (rows flagged UNPRICED), so the answer is what the pipelines
actually met, per org, model and tier, with the token volumes waiting for a price: the figures a
person needs to decide which rows to add first. After adding them, ``convergence reprice`` prices
those days from the stored raw usage.
"""
from __future__ import annotations

from datetime import date

# provider: (cost table, input token column, output token column)
COST_TABLES = {
    "openai": ("openai_cost_daily", "input_tokens", "output_tokens"),
    "anthropic": ("anthropic_cost_daily", "total_input_tokens", "output_tokens"),
}
COLUMNS = ["org", "provider", "model", "tier", "first_day", "last_day", "days", "rows", "input_tokens", "output_tokens"]


def unpriced_usage(warehouse, datasets: dict[str, str], start: date, end: date,
                   providers: tuple[str, ...] = tuple(COST_TABLES)) -> list[tuple]:
    """One row per org × provider × model × tier with UNPRICED usage in ``start..end``, largest first.

    The SQL is the dialect DuckDB and BigQuery share; the dates are ``date`` objects, never user text.
    """
    found = []
    for org, dataset in sorted(datasets.items()):
        for provider in providers:
            table, input_column, output_column = COST_TABLES[provider]
            if not warehouse.has_table(dataset, table):
                continue
            _, rows = warehouse.query(
                f"SELECT model, pricing_tier, MIN(usage_date), MAX(usage_date), COUNT(DISTINCT usage_date), COUNT(*),"
                f" SUM({input_column}), SUM({output_column}) FROM {dataset}.{table}"
                f" WHERE pricing_status = 'UNPRICED' AND usage_date BETWEEN DATE '{start.isoformat()}'"
                f" AND DATE '{end.isoformat()}' GROUP BY model, pricing_tier")
            found.extend((org, provider, *row) for row in rows)
    return sorted(found, key=lambda r: (-(r[8] or 0) - (r[9] or 0), r[0], r[2]))
