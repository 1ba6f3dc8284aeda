"""The wheel in a fresh virtualenv with no checkout, started the way Dataflow starts the template.

This is what the image runs (templates/Dockerfile installs the same wheel): a package, config or
module missing from it, an environment variable assumed, or a module that only imports inside the
repository fails here. The dependencies come from the project's virtualenv as a plain path (its
``.pth`` hooks, including the editable install of this checkout, are not processed), the working
directory is empty, and nothing sets ``CONVERGENCE_CONFIGS``: the configs must come from the wheel.
The arguments are the template parameters as ``--name=value`` plus the options the Flex Template
launcher passes, with the runner swapped for the local one, the BigQuery twin on the emulator and
Cloud Storage on its emulator. The cipher is the local one: there is no KMS emulator.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from datetime import date
from pathlib import Path

import pytest
import requests

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.metastore.base import new_run
from beam_pipelines.testing.emulators.storage import StorageEmulator, free_port
from beam_pipelines.warehouse.base import WarehouseSpec

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("setup.py", "pyproject.toml", "beam_pipelines", "launcher", "configs")  # the Dockerfile's COPY list
DAY = date(2026, 3, 2)


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean-room")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(root / "dist"), str(src)], check=True, cwd=root, capture_output=True)
    [wheel] = (root / "dist").glob("*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    (site / "zz_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def clean_env(home: Path, **extra) -> dict:
    keep = ("PATH", "LANG", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(CONVERGENCE_HOME=str(home), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def test_the_wheel_carries_code_configs_and_launcher(clean_venv, tmp_path):
    out = subprocess.run([str(clean_venv / "bin" / "python"), "-c",
                          "import beam_pipelines, launcher.app; from beam_pipelines.settings import default_configs;"
                          " print(beam_pipelines.__file__); print(default_configs())"],
                         cwd=tmp_path, env=clean_env(tmp_path / "home"), capture_output=True, text=True, check=True)
    module, configs = out.stdout.split()
    assert module.startswith(str(clean_venv)) and configs.startswith(str(clean_venv))
    assert (Path(configs) / "openai/cost/usage_cost.yml").is_file()


def test_template_entry_point_runs_a_daily_pipeline_on_the_twins(clean_venv, tmp_path, bq_settings, simulator, monkeypatch):
    settings = bq_settings
    seed_org(settings, "acme")
    run_id = uuid.uuid4().hex
    store = MetastoreSpec.from_settings(settings).open()
    store.create_runs([new_run(run_id, "acme", "openai/cost/usage_cost", DAY, DAY, "PENDING", "scheduler",
                               "DataflowRunner", "dataflow-launcher")])
    template = tmp_path / "template"
    template.mkdir()
    shutil.copy(REPO / "templates" / "main.py", template / "main.py")
    with StorageEmulator() as gcs:
        from google.cloud import storage

        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        storage.Client().create_bucket("convergence-tmp")
        env = clean_env(settings.home, CONVERGENCE_SINK="bigquery", CONVERGENCE_METASTORE="bigquery",  # the image's ENV
                        BIGQUERY_EMULATOR_HOST=os.environ["BIGQUERY_EMULATOR_HOST"], STORAGE_EMULATOR_HOST=gcs.url,
                        OPENAI_BASE_URL=simulator.openai_base_url, BIGQUERY_RETRY_DEADLINE_SECONDS="20")
        args = ["--pipeline=openai/cost/usage_cost", "--org_slugs=acme", f"--run_ids={run_id}",
                f"--start_date={DAY}", f"--end_date={DAY}", "--environment=development", "--bigquery_location=US",
                "--runner=FnApiRunner", f"--project={settings.gcp_project}", "--region=europe-west1",
                "--temp_location=gs://convergence-tmp/tmp", "--staging_location=gs://convergence-tmp/staging",
                "--sdk_container_image=europe-west1-docker.pkg.dev/p/r/convergence:abc123",
                "--service_account_email=convergence-worker@p.iam.gserviceaccount.com"]
        done = subprocess.run([str(clean_venv / "bin" / "python"), str(template / "main.py"), *args], cwd=template,
                              env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = store.get_run(run_id)
    assert run["status"] == "COMPLETED", run["error_message"]
    warehouse = WarehouseSpec.from_settings(settings).open()
    _, rows = warehouse.query("SELECT COUNT(*), MIN(usage_date), MAX(usage_date) FROM acme_dev.openai_cost_daily")
    _, focus = warehouse.query("SELECT COUNT(*) FROM acme_dev.focus_cost_daily")
    assert rows[0][1:] == (DAY, DAY) and run["rows_written"] == 2 * rows[0][0] + focus[0][0] > 0


def test_the_same_wheel_serves_the_launcher(clean_venv, tmp_path):
    port = free_port()
    server = subprocess.Popen([str(clean_venv / "bin" / "convergence"), "serve", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, env=clean_env(tmp_path / "home"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "launcher did not start within 60 s"
                time.sleep(0.3)
        assert answer.status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/pipelines/runs", timeout=5).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_dockerfile_copies_exactly_the_wheels_inputs_and_pins_every_base():
    """No Docker engine here: the Dockerfile is read, and the wheel test above stands in for the build."""
    lines = (REPO / "templates" / "Dockerfile").read_text().splitlines()
    copied = [line.split()[1:-1] for line in lines if line.startswith("COPY ") and "--from=" not in line]
    assert sorted(name for names in copied for name in names if not name.startswith("templates/")) == sorted(SOURCES)
    args = dict(line[4:].split("=", 1) for line in lines if line.startswith("ARG "))
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    resolved = [args.get(b[2:-1], b) if b.startswith("${") else b.replace("${BEAM_VERSION}", args["BEAM_VERSION"])
                for b in bases]
    assert resolved and all(":" in b.rsplit("/", 1)[-1] and not b.endswith(":latest") for b in resolved), resolved
    assert f'"apache-beam[gcp]=={args["BEAM_VERSION"]}"' in (REPO / "setup.py").read_text(), "workers run the pinned Beam"
    assert any("pip check" in line for line in lines) and 'ENTRYPOINT ["/opt/apache/beam/boot"]' in lines
