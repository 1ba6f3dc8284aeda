"""Org metadata and run records: SQLite locally, BigQuery's `organizations` dataset in production."""
from beam_pipelines.metastore.base import (
    ELIGIBLE_SUBSCRIPTIONS,
    RUN_STATUSES,
    Metastore,
    MetastoreSpec,
)

__all__ = ["ELIGIBLE_SUBSCRIPTIONS", "RUN_STATUSES", "Metastore", "MetastoreSpec"]
