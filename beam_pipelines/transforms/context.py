"""Everything a step needs to build its transform, fixed when the graph is built.

It carries specs (paths, key *names*, URLs), never connections or secrets, because it is pickled
into the job graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.secrets import CipherSpec


@dataclass(frozen=True)
class RunContext:
    pipeline: LoadedPipeline
    configs_dir: Path
    env_suffix: str
    metastore: MetastoreSpec
    cipher: CipherSpec
    warehouse_root: Path
    staging_root: Path | str  # local folder, or gs:// on Dataflow
    provider_base_urls: dict
    loaded_at: datetime
    org_slugs: tuple[str, ...] = ()
    sink: str = "local"  # local | bigquery
    gcp_project: str = ""
    bigquery_temp_location: str = ""

    def org_dataset(self, org_slug: str) -> str:
        return f"{org_slug}_{self.env_suffix}"

    @classmethod
    def from_settings(cls, settings, pipeline: LoadedPipeline, loaded_at: datetime,
                      org_slugs: tuple[str, ...] = ()) -> RunContext:
        return cls(
            pipeline=pipeline,
            configs_dir=settings.configs_dir,
            env_suffix=settings.env_suffix,
            metastore=MetastoreSpec.from_settings(settings),
            cipher=CipherSpec.from_settings(settings),
            warehouse_root=settings.warehouse_dir,
            staging_root=(settings.bigquery_temp_location.rstrip("/") + "/staging"
                          if settings.sink == "bigquery" and settings.bigquery_temp_location
                          else settings.home / "staging"),
            provider_base_urls={"openai": settings.openai_base_url, "anthropic": settings.anthropic_base_url,
                                "gcp_bigquery": settings.bigquery_api_endpoint or None},
            loaded_at=loaded_at,
            org_slugs=tuple(org_slugs),
            sink=settings.sink,
            gcp_project=settings.gcp_project,
            bigquery_temp_location=settings.bigquery_temp_location,
        )
