"""Options of each step type, validated when a config is loaded (before any Beam code runs).

Each model rejects unknown keys, so a typo in a config is an error that names the key rather than
a silently ignored setting.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TABLE_NAME = r"^[a-z][a-z0-9_]*$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpFetchOptions(StrictModel):
    """Common to every step that pages through a provider's HTTP API."""

    page_limit: int = Field(31, ge=1, le=31, description="buckets per page (1d buckets: max 31)")
    max_concurrency: int = Field(8, ge=1, le=64, description="orgs fetched at once per worker")
    max_retries: int = Field(6, ge=0, le=20)
    backoff_seconds: float = Field(1.0, gt=0, le=60, description="first retry delay")
    backoff_max_seconds: float = Field(60.0, gt=0, le=600)
    timeout_seconds: float = Field(60.0, gt=0, le=600)


class OpenAIUsageOptions(HttpFetchOptions):
    bucket_width: Literal["1d"] = "1d"
    group_by: tuple[
        Literal["model", "project_id", "api_key_id", "batch", "service_tier", "user_id"], ...
    ] = ("model", "project_id", "api_key_id", "batch", "service_tier")


class CostOptions(StrictModel):
    pricing_file: str = Field(description="price list CSV, relative to the configs folder")


class FocusOptions(StrictModel):
    pricing_file: str = Field(description="price list CSV (the list and contracted unit prices), relative to configs")
    validate_rows: bool = Field(False, description="check every row against the FOCUS 1.2 rules before staging (costs"
                                                   " ~1 ms per row; `convergence focus check` checks stored rows)")


class GcpFocusOptions(StrictModel):
    validate_rows: bool = Field(False, description="check every row against the FOCUS 1.2 rules before staging")


class ReconcileOptions(StrictModel):
    provider: Literal["openai", "anthropic"]
    computed_table: str = Field(pattern=TABLE_NAME, description="the org's priced usage for the same days")
    schema_file: str = Field(description="its schema file, relative to the configs folder")
    partition_field: str = "usage_date"
    scope_column: str = Field(description="project_id (OpenAI) or workspace_id (Anthropic), on both sides")
    tolerance_usd: float = Field(0.01, ge=0, description="variance always MATCHED under this many dollars")
    tolerance_pct: float = Field(1.0, ge=0, le=100, description="else MATCHED within this % of the bill")
    restatement_days: int = Field(3, ge=0, le=31, description="days a provider may still restate its bill")


class LoadOptions(StrictModel):
    table: str = Field(pattern=TABLE_NAME)
    schema_file: str = Field(description="BigQuery JSON schema, relative to the configs folder")
    partition_field: str = "usage_date"
    cluster_by: tuple[str, ...] = Field(default=(), max_length=4)
    scope_field: str | None = Field(None, description="shared table: a run replaces only rows whose column has its value")
    scope_value: str | None = Field(None, description="that value (every staged row must carry it)")
    days_like: str | None = Field(None, pattern=TABLE_NAME,
                                  description="replace the days this other table of the run replaces, even with no rows")
    total_column: str | None = Field(None, description="cost column reported when a populated day is kept")


class OpenAIBilledOptions(HttpFetchOptions):
    group_by: tuple[Literal["project_id", "line_item", "api_key_id"], ...] = ("project_id", "line_item")


class AnthropicBilledOptions(HttpFetchOptions):
    group_by: tuple[Literal["workspace_id", "description"], ...] = ("workspace_id", "description")


class StoredRowsOptions(StrictModel):
    table: str = Field(pattern=TABLE_NAME, description="the org's table to read, e.g. the raw usage a fetch stored")
    schema_file: str = Field(description="BigQuery JSON schema, relative to the configs folder")
    partition_field: str = "usage_date"


class AnthropicUsageOptions(HttpFetchOptions):
    bucket_width: Literal["1d"] = "1d"
    group_by: tuple[Literal["model", "workspace_id", "api_key_id", "service_tier", "context_window", "inference_geo",
                            "speed"], ...] = (
        "model", "workspace_id", "api_key_id", "service_tier", "context_window", "inference_geo", "speed",
    )


class GcpBillingOptions(StrictModel):
    etl_config: str = Field("gcp/bq_etl/config.yml", description="export naming, trailing window, flatten options")
    staged_schema_file: str = Field("gcp/bq_etl/schema_template.json",
                             description="the flattened rows' table schema: parts are staged in it, ready to load as they are")
    page_rows: int = Field(100_000, ge=1_000, le=1_000_000, description="rows per batch read from the export")
    max_concurrency: int = Field(4, ge=1, le=64)


class ValidateOptions(StrictModel):
    suite: str = Field(description="expectation suite JSON, relative to the configs folder")
    table: str = Field(pattern=TABLE_NAME, description="table the checked rows are bound for")


class NotifyOptions(StrictModel):
    trigger: Literal["on_failure", "on_success", "on_completion", "always"] = "on_failure"
    config: str = Field(description="channel config under notify_systems/, relative to the configs folder")


class SeedTable(StrictModel):
    table: str = Field(pattern=TABLE_NAME)
    csv: str = Field(description="default rows, relative to the configs folder")
    schema_file: str
    key: tuple[str, ...] = Field(min_length=1, description="columns that identify a row (custom rows win)")


class SeedOptions(StrictModel):
    tables: tuple[SeedTable, ...] = Field(min_length=1)


class SubscriptionsOptions(StrictModel):
    source_table: str = Field("openai_subscriptions", pattern=TABLE_NAME)
