"""Everything a step needs to build its transform, fixed when the graph is built.

It carries specs (paths, key *names*, URLs, Secret Manager resource names), never connections or
secrets, because it is pickled into the job graph. Which metastore, warehouse and cipher a job
uses is decided here, once, from the settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.secrets import CipherSpec
from beam_pipelines.settings import NotifySettings, Settings
from beam_pipelines.warehouse.base import WarehouseSpec


@dataclass(frozen=True)
class RunContext:
    pipeline: LoadedPipeline
    configs_dir: Path
    environment: str
    org_dataset_pattern: str
    env_suffix: str
    metastore: MetastoreSpec
    warehouse: WarehouseSpec
    cipher: CipherSpec
    staging_root: str  # local folder, or gs:// on Dataflow
    provider_base_urls: dict
    integrations: dict  # provider → org_integration_credentials.provider (configs/system/providers.yml)
    loaded_at: datetime
    org_slugs: tuple[str, ...] = ()
    gcp_project: str = ""
    notify: NotifySettings = field(default_factory=NotifySettings)

    def org_dataset(self, org_slug: str) -> str:
        return self.org_dataset_pattern.format(org_slug=org_slug, env=self.env_suffix)

    def integration(self, provider: str) -> str:
        return self.integrations[provider]

    @classmethod
    def from_settings(cls, settings: Settings, pipeline: LoadedPipeline, loaded_at: datetime,
                      org_slugs: tuple[str, ...] = ()) -> RunContext:
        system = settings.system
        return cls(
            pipeline=pipeline,
            configs_dir=Path(settings.configs_dir),
            environment=settings.environment,
            org_dataset_pattern=system.org_dataset_pattern,
            env_suffix=settings.env_suffix,
            metastore=MetastoreSpec.from_settings(settings),
            warehouse=WarehouseSpec.from_settings(settings),
            cipher=CipherSpec.from_settings(settings),
            staging_root=settings.staging_root,
            provider_base_urls={"openai": settings.openai_base_url, "anthropic": settings.anthropic_base_url,
                                "gcp_bigquery": settings.bigquery_api_endpoint or None},
            integrations={name: p.integration for name, p in system.providers.items()},
            loaded_at=loaded_at,
            org_slugs=tuple(org_slugs),
            gcp_project=settings.gcp_project,
            notify=settings.notify,
        )
