"""OpenAI steps: ``openai.usage`` (extract) and ``openai.cost`` (price)."""
from __future__ import annotations

from beam_pipelines.pricing.openai_cost import TIER_ALIASES, price_openai_usage
from beam_pipelines.providers.openai import OpenAIUsageClient, usage_rows
from beam_pipelines.transforms.usage import ExtractUsage, PagedUsageFetcher, PriceTokenUsage


class OpenAIUsageFetcher(PagedUsageFetcher):
    provider = "openai"
    fleet_batches = True
    client_cls = OpenAIUsageClient
    rows_fn = staticmethod(usage_rows)

    def query(self, client, item):
        return client.completions_query(item.start_date, item.end_date, self.options.page_limit, self.options.group_by)


class ExtractOpenAIUsage(ExtractUsage):
    fetcher_cls = OpenAIUsageFetcher


class PriceOpenAIUsage(PriceTokenUsage):
    provider = "openai"
    tier_aliases = TIER_ALIASES
    price_fn = staticmethod(price_openai_usage)
