"""Org-specific prices, read from the org's own ``{provider}_model_pricing`` table.

An org may negotiate prices; rows in its table (same columns as the default CSV) take precedence
over the default list for that org only. The table is read through the job's warehouse (local or
BigQuery alike), once per org and worker.
"""
from __future__ import annotations

import logging

from beam_pipelines.pricing.price_list import PriceList, TokenPrice, parse_price_rows

log = logging.getLogger(__name__)


def org_overrides(warehouse, dataset: str, org_slug: str, provider: str) -> list[TokenPrice]:
    """The org's own price rows (same columns as the default CSV), or none."""
    table = warehouse.read_table(dataset, f"{provider}_model_pricing")
    if table is None:
        return []
    rows = [{k: ("" if v is None else str(v)) for k, v in row.items()} for row in table.to_pylist()]
    return [p for p in parse_price_rows(rows, f"{dataset}.{provider}_model_pricing", org_slug=org_slug)]


class OrgPriceLists:
    """The default list plus each org's overrides; built lazily, one warehouse read per org."""

    def __init__(self, defaults: PriceList, provider: str, warehouse, org_dataset):
        self._defaults, self._provider = defaults, provider
        self._warehouse, self._org_dataset = warehouse, org_dataset
        self._cache: dict[str, list[TokenPrice]] = {}
        self._merged: dict[tuple[str, ...], PriceList] = {}

    def _overrides(self, org_slug: str) -> list[TokenPrice]:
        overrides = self._cache.get(org_slug)
        if overrides is None:
            overrides = self._cache[org_slug] = org_overrides(self._warehouse, self._org_dataset(org_slug), org_slug,
                                                              self._provider)
        return overrides

    def for_org(self, org_slug: str) -> PriceList:
        return self.for_orgs([org_slug])

    def for_orgs(self, org_slugs: list[str]) -> PriceList:
        """One list for several orgs: their override rows are keyed by org, so each org sees only its own."""
        overrides = [p for org in org_slugs for p in self._overrides(org)]
        if not overrides:
            return self._defaults
        key = tuple(org_slugs)
        if key not in self._merged:
            self._merged = {key: self._defaults.with_overrides(overrides)}  # the last merge only: batches rarely repeat
        return self._merged[key]
