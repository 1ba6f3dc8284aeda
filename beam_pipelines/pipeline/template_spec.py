"""Flex Template spec files: Dataflow's own ``ContainerSpec`` message, written to Cloud Storage.

``gcloud dataflow flex-template build --image`` writes exactly this message as JSON (camelCase
fields, ``sdkInfo.language`` spelled out). Building it here from google-cloud-dataflow-client's
types means a field the API does not know fails at build time, and writing it with
google-cloud-storage makes the deploy step testable on a storage emulator (the client honours
``STORAGE_EMULATOR_HOST``). The metadata is the generated ``templates/metadata`` content; the
default environment carries the worker image, service account and locations, so even a launch
that forgets them runs our code as our worker identity.
"""
from __future__ import annotations

from dataclasses import dataclass

from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.errors import ConfigError
from beam_pipelines.pipeline.template_metadata import template_metadata

GS = "gs://"


@dataclass(frozen=True)
class SpecEnvironment:
    """The defaults every launch of our templates gets unless the request overrides them."""

    image: str
    service_account_email: str = ""
    temp_location: str = ""
    max_workers: int = 0

    def check(self) -> None:
        if not self.image or self.image.endswith(":latest") or ":" not in self.image.rsplit("/", 1)[-1]:
            raise ConfigError(f"template image {self.image!r}: give an immutable tag (e.g. the git SHA), never :latest")
        if self.temp_location and not self.temp_location.startswith(GS):
            raise ConfigError(f"temp location {self.temp_location!r}: must be a gs:// path")


def container_spec(loaded: LoadedPipeline, env: SpecEnvironment):
    from google.cloud import dataflow_v1beta3 as df

    metadata = template_metadata(loaded)
    temp = env.temp_location.rstrip("/")
    return df.ContainerSpec(
        image=env.image,
        sdk_info=df.SDKInfo(language=df.SDKInfo.Language.PYTHON),
        metadata=df.TemplateMetadata(
            name=metadata["name"], description=metadata["description"], streaming=metadata["streaming"],
            parameters=[df.ParameterMetadata(name=p["name"], label=p["label"], help_text=p["helpText"],
                                             is_optional=p["isOptional"], regexes=p["regexes"])
                        for p in metadata["parameters"]],
        ),
        default_environment=df.FlexTemplateRuntimeEnvironment(
            sdk_container_image=env.image, service_account_email=env.service_account_email,
            temp_location=temp, staging_location=f"{temp}/staging" if temp else "", max_workers=env.max_workers,
        ),
    )


def spec_json(spec) -> str:
    """The message as the API reads it: camelCase names, enums by name, empty fields left out."""
    from google.cloud import dataflow_v1beta3 as df

    return df.ContainerSpec.to_json(spec, use_integers_for_enums=False, including_default_value_fields=False,
                                    indent=2, sort_keys=True) + "\n"


def split_gcs_path(path: str) -> tuple[str, str]:
    if not path.startswith(GS) or len(path) <= len(GS):
        raise ConfigError(f"templates path {path!r}: must be gs://BUCKET[/folder]")
    bucket, _, prefix = path[len(GS):].partition("/")
    return bucket, prefix.strip("/")


def publish(pipelines: dict[str, LoadedPipeline], env: SpecEnvironment, templates_path: str, client=None) -> list[str]:
    """Write one spec per pipeline to ``templates_path/<template name>.json``; returns the gs:// paths.

    Idempotent: each run overwrites the files with what the configs and the image say now.
    """
    from google.cloud import storage

    env.check()
    bucket_name, prefix = split_gcs_path(templates_path)
    bucket = (client or storage.Client()).bucket(bucket_name)
    written = []
    for loaded in pipelines.values():
        name = f"{prefix}/{loaded.template_name}.json" if prefix else f"{loaded.template_name}.json"
        bucket.blob(name).upload_from_string(spec_json(container_spec(loaded, env)), content_type="application/json")
        written.append(f"{GS}{bucket_name}/{name}")
    return written
