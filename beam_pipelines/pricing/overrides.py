"""Org-specific price overrides, read from the org's own ``{provider}_model_pricing`` table.

An org may negotiate prices; rows in its table (same columns as the default CSV) take precedence
over the default list for that org only.
"""
from __future__ import annotations

import logging
from pathlib import Path

from beam_pipelines.pricing.price_list import PriceList, load_price_list, parse_price_rows
from beam_pipelines.warehouse.local import LocalWarehouse

log = logging.getLogger(__name__)


def org_overrides(warehouse: LocalWarehouse, dataset: str, org_slug: str, provider: str) -> list:
    """The org's own price rows (same columns as the default CSV), or none."""
    table = warehouse.read_table(dataset, f"{provider}_model_pricing")
    if table is None:
        return []
    rows = [{k: ("" if v is None else str(v)) for k, v in row.items()} for row in table.to_pylist()]
    return parse_price_rows(rows, f"{dataset}.{provider}_model_pricing", org_slug=org_slug)


def price_list_for_run(path: Path, display: str, provider: str, ctx,
                       batch_tiers: dict[str, str] | None = None) -> PriceList:
    prices = load_price_list(path, display, batch_tiers)
    if ctx.sink != "local":
        return prices
    warehouse = LocalWarehouse(ctx.warehouse_root)
    overrides = []
    for org in ctx.org_slugs:
        overrides += org_overrides(warehouse, ctx.org_dataset(org), org, provider)
    return prices.with_overrides(overrides) if overrides else prices
