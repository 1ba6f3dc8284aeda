"""``convergence provision``: create what is missing, from ``configs/``, idempotently.

- the central ``organizations`` dataset and its metadata tables (``configs/system``): in production
  the onboarding service creates them; this fills the gaps (a new project, the emulator, a test);
- ``--org SLUG``: the org's dataset ``{org}_{env}`` (location ``BIGQUERY_LOCATION``) and every table
  any pipeline writes there, with the schema, partitioning and clustering its config names.

Nothing existing is altered. Jobs do the same for each org before its first write, so one org whose
dataset cannot be created fails alone.
"""
from __future__ import annotations

from beam_pipelines.config.loader import discover_pipelines
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.orgs import check_org_slug
from beam_pipelines.warehouse.base import WarehouseSpec
from beam_pipelines.warehouse.tables import org_table_specs


def provision_metadata(settings) -> list[str]:
    """The metadata tables created (SQLite creates them on open; BigQuery creates the missing ones)."""
    metastore = MetastoreSpec.from_settings(settings).open()
    try:
        provision = getattr(metastore, "provision", None)
        return provision() if provision else []
    finally:
        metastore.close()


def provision_org(settings, org_slug: str) -> tuple[str, list[str]]:
    check_org_slug(org_slug)
    dataset = settings.org_dataset(org_slug)
    warehouse = WarehouseSpec.from_settings(settings).open()
    specs = org_table_specs(settings.configs_dir, discover_pipelines(settings.configs_dir))
    for spec in specs.values():
        warehouse.ensure_table(dataset, spec)
    return dataset, list(specs)
