"""Anthropic steps: ``anthropic.usage`` (extract) and ``anthropic.cost`` (price)."""
from __future__ import annotations

from beam_pipelines.pricing.anthropic_cost import BATCH_TIERS, price_anthropic_usage
from beam_pipelines.providers.anthropic import AnthropicUsageClient, usage_rows
from beam_pipelines.transforms.usage import ExtractUsage, PagedUsageFetcher, PriceTokenUsage


class AnthropicUsageFetcher(PagedUsageFetcher):
    provider = "anthropic"
    fleet_batches = True
    client_cls = AnthropicUsageClient
    rows_fn = staticmethod(usage_rows)

    def query(self, client, item):
        return client.messages_query(item.start_date, item.end_date, self.options.page_limit, self.options.group_by)


class ExtractAnthropicUsage(ExtractUsage):
    fetcher_cls = AnthropicUsageFetcher


class PriceAnthropicUsage(PriceTokenUsage):
    provider = "anthropic"
    batch_tiers = BATCH_TIERS
    price_fn = staticmethod(price_anthropic_usage)
