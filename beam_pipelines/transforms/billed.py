"""``openai.billed_cost`` / ``anthropic.billed_cost``: each provider's own bill, per org and day.

The same decrypt-and-fetch as usage (the org's admin key; admission asked again in the worker),
reading OpenAI's ``/organization/costs`` and Anthropic's ``/v1/organizations/cost_report``. The rows
feed ``{provider}_billed_cost_daily`` and the ledger (:mod:`beam_pipelines.transforms.ledger`).
"""
from __future__ import annotations

from beam_pipelines.providers import anthropic_costs, openai_costs
from beam_pipelines.transforms.usage import ExtractUsage, PagedUsageFetcher


class OpenAIBillFetcher(PagedUsageFetcher):
    provider = "openai"
    client_cls = openai_costs.OpenAICostsClient
    rows_fn = staticmethod(openai_costs.billed_rows)

    def query(self, client, item):
        return client.cost_query(item.start_date, item.end_date, self.options.group_by, self.options.page_limit)


class AnthropicBillFetcher(PagedUsageFetcher):
    provider = "anthropic"
    client_cls = anthropic_costs.AnthropicCostClient
    rows_fn = staticmethod(anthropic_costs.billed_rows)

    def query(self, client, item):
        return client.cost_query(item.start_date, item.end_date, self.options.group_by, self.options.page_limit)


class ExtractOpenAIBill(ExtractUsage):
    fetcher_cls = OpenAIBillFetcher


class ExtractAnthropicBill(ExtractUsage):
    fetcher_cls = AnthropicBillFetcher
