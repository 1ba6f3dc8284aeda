"""The transforms registry: each ``ps_type`` names the PTransform that implements it.

Entries hold the options model (validated at config load, without Beam) and the dotted path of
the transform class, imported only when a graph is built, so the launcher can validate configs
without importing apache_beam. To add a step type: write the transform, add one entry here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

import beam_pipelines.config.step_options as step_options

StepKind = Literal["extract", "transform", "load", "notify"]


@dataclass(frozen=True)
class RegistryEntry:
    kind: StepKind
    options: type[BaseModel]
    transform: str  # "module:ClassName"

    def load_transform(self) -> type:
        module_name, _, class_name = self.transform.partition(":")
        return getattr(importlib.import_module(module_name), class_name)


REGISTRY: dict[str, RegistryEntry] = {
    "openai.usage": RegistryEntry(
        "extract", step_options.OpenAIUsageOptions, "beam_pipelines.transforms.openai:ExtractOpenAIUsage"
    ),
    "openai.cost": RegistryEntry(
        "transform", step_options.CostOptions, "beam_pipelines.transforms.openai:PriceOpenAIUsage"
    ),
    "anthropic.usage": RegistryEntry(
        "extract", step_options.AnthropicUsageOptions, "beam_pipelines.transforms.anthropic:ExtractAnthropicUsage"
    ),
    "anthropic.cost": RegistryEntry(
        "transform", step_options.CostOptions, "beam_pipelines.transforms.anthropic:PriceAnthropicUsage"
    ),
    "gcp.bq_etl": RegistryEntry(
        "extract", step_options.GcpBillingOptions, "beam_pipelines.transforms.gcp:ExtractGcpBilling"
    ),
    "data_quality.validate": RegistryEntry(
        "transform", step_options.ValidateOptions, "beam_pipelines.transforms.quality:ValidateRows"
    ),
    "notify_systems.email_notification": RegistryEntry(
        "notify", step_options.NotifyOptions, "beam_pipelines.transforms.notify:EmailNotification"
    ),
    "notify_systems.slack_notification": RegistryEntry(
        "notify", step_options.NotifyOptions, "beam_pipelines.transforms.notify:SlackNotification"
    ),
    "openai.seed_csv": RegistryEntry("extract", step_options.SeedOptions, "beam_pipelines.transforms.seed:SeedCsv"),
    "anthropic.seed_csv": RegistryEntry("extract", step_options.SeedOptions, "beam_pipelines.transforms.seed:SeedCsv"),
    "openai.subscriptions": RegistryEntry(
        "extract", step_options.SubscriptionsOptions, "beam_pipelines.transforms.seed:ExtractSubscriptions"
    ),
    "openai.focus": RegistryEntry("transform", step_options.FocusOptions, "beam_pipelines.transforms.focus:OpenAIFocus"),
    "anthropic.focus": RegistryEntry(
        "transform", step_options.FocusOptions, "beam_pipelines.transforms.focus:AnthropicFocus"
    ),
    "gcp.focus": RegistryEntry("transform", step_options.GcpFocusOptions, "beam_pipelines.transforms.focus:GcpFocus"),
    "openai.billed_cost": RegistryEntry(
        "extract", step_options.OpenAIBilledOptions, "beam_pipelines.transforms.billed:ExtractOpenAIBill"
    ),
    "anthropic.billed_cost": RegistryEntry(
        "extract", step_options.AnthropicBilledOptions, "beam_pipelines.transforms.billed:ExtractAnthropicBill"
    ),
    "ledger.reconcile": RegistryEntry(
        "transform", step_options.ReconcileOptions, "beam_pipelines.transforms.ledger:Reconcile"
    ),
    "warehouse.read": RegistryEntry(
        "extract", step_options.StoredRowsOptions, "beam_pipelines.transforms.stored:ReadStoredRows"
    ),
    "warehouse.load": RegistryEntry(
        "load", step_options.LoadOptions, "beam_pipelines.transforms.load:StageTable"
    ),
}


def lookup(ps_type: str) -> RegistryEntry | None:
    return REGISTRY.get(ps_type)
