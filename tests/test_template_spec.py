"""Flex Template spec files written as Dataflow's ContainerSpec to Cloud Storage (the storage emulator),
and staged files removed by prefix there."""
from __future__ import annotations

import json

import pytest
from google.cloud import dataflow_v1beta3 as df
from google.cloud import storage

from beam_pipelines.cli.main import main
from beam_pipelines.config.loader import discover_pipelines
from beam_pipelines.errors import ConfigError
from beam_pipelines.pipeline.template_metadata import template_metadata
from beam_pipelines.pipeline.template_spec import SpecEnvironment, publish
from beam_pipelines.staging import remove_run
from beam_pipelines.testing.emulators.storage import StorageEmulator
from tests.conftest import CONFIGS

IMAGE = "europe-west1-docker.pkg.dev/proj/convergence/convergence:3f2a9c1d0b7e"
WORKER = "convergence-worker@proj.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def gcs_emulator():
    with StorageEmulator() as emulator:
        yield emulator


@pytest.fixture
def gcs(gcs_emulator, monkeypatch, request):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    client = storage.Client()
    bucket = client.create_bucket(f"b-{abs(hash(request.node.nodeid)) % 10**10}")
    return client, bucket


def test_every_pipeline_gets_a_container_spec_the_api_reads_back(gcs, capsys):
    client, bucket = gcs
    assert main(["templates", "publish", "--path", f"gs://{bucket.name}/templates", "--image", IMAGE,
                 "--service-account", WORKER, "--temp-location", f"gs://{bucket.name}/tmp", "--max-workers", "8"]) == 0
    pipelines = discover_pipelines(CONFIGS)
    names = sorted(b.name for b in client.list_blobs(bucket.name))
    assert names == sorted(f"templates/{p.template_name}.json" for p in pipelines.values())
    for loaded in pipelines.values():
        blob = bucket.blob(f"templates/{loaded.template_name}.json")
        text = blob.download_as_text()
        spec = df.ContainerSpec.from_json(text)  # unknown or misspelt fields would raise here
        raw = json.loads(text)
        assert set(raw) == {"image", "sdkInfo", "metadata", "defaultEnvironment"}
        assert raw["sdkInfo"] == {"language": "PYTHON"} and spec.image == IMAGE
        env = spec.default_environment
        assert (env.sdk_container_image, env.service_account_email, env.temp_location, env.staging_location,
                env.max_workers) == (IMAGE, WORKER, f"gs://{bucket.name}/tmp", f"gs://{bucket.name}/tmp/staging", 8)
        expected = template_metadata(loaded)
        assert spec.metadata.name == expected["name"]
        assert [(p.name, p.is_optional, list(p.regexes)) for p in spec.metadata.parameters] == \
               [(p["name"], p["isOptional"], p["regexes"]) for p in expected["parameters"]]
    assert f"wrote gs://{bucket.name}/templates/openai_cost_usage_cost.json" in capsys.readouterr().out


def test_publishing_again_overwrites_and_bad_input_is_refused(gcs):
    client, bucket = gcs
    one = {k: v for k, v in discover_pipelines(CONFIGS).items() if k == "openai/cost/usage_cost"}
    path = f"gs://{bucket.name}/t"
    publish(one, SpecEnvironment(IMAGE), path)
    publish(one, SpecEnvironment(IMAGE.replace("3f2a9c1d0b7e", "4e4e4e4e4e4e")), path)
    [blob] = list(client.list_blobs(bucket.name))
    assert df.ContainerSpec.from_json(blob.download_as_text()).image.endswith(":4e4e4e4e4e4e")
    for image in ("repo/convergence:latest", "repo/convergence", ""):
        with pytest.raises(ConfigError, match="immutable tag"):
            publish(one, SpecEnvironment(image), path)
    with pytest.raises(ConfigError, match="gs://BUCKET"):
        publish(one, SpecEnvironment(IMAGE), "/local/templates")


def test_staged_files_are_removed_by_prefix_and_only_the_runs_own(gcs, tmp_path):
    client, bucket = gcs
    for name in ("staging/run1/2026-03-02/part-000000.parquet", "staging/run1/2026-03-03/part-000001.parquet",
                 "staging/run10/2026-03-02/part-000000.parquet", "staging/run1.parquet"):
        bucket.blob(name).upload_from_string(b"x")
    assert remove_run(f"gs://{bucket.name}/staging", "run1") is True
    assert sorted(b.name for b in client.list_blobs(bucket.name)) == [
        "staging/run1.parquet", "staging/run10/2026-03-02/part-000000.parquet"]
    assert remove_run(f"gs://{bucket.name}/staging/", "run1") is False
    local = tmp_path / "staging" / "run2" / "2026-03-02"
    local.mkdir(parents=True)
    (local / "part.parquet").write_bytes(b"x")
    assert remove_run(str(tmp_path / "staging"), "run2") is True and not (tmp_path / "staging" / "run2").exists()
