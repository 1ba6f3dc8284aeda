"""Shared fixtures: an isolated $CONVERGENCE_HOME per test and a loopback provider simulator."""
from __future__ import annotations

import itertools
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from beam_pipelines.settings import REPO_CONFIGS, load_settings
from beam_pipelines.testing.simulator import ProviderSimulator
from beam_pipelines.transforms.step import pcollections

_FLATTENS = itertools.count()


def flattened(outputs):
    """A step's ``events`` or ``staged`` (one PCollection or several) as one PCollection, for assertions."""
    import apache_beam as beam

    return pcollections(outputs) | f"Flattened{next(_FLATTENS)}" >> beam.Flatten()

CONFIGS = REPO_CONFIGS


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("CONVERGENCE_HOME", str(path))
    monkeypatch.delenv("CONVERGENCE_CONFIGS", raising=False)
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    return path


@pytest.fixture
def simulator():
    with ProviderSimulator() as sim:
        yield sim


@pytest.fixture
def settings(home, simulator, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", simulator.anthropic_base_url)
    return load_settings()


@pytest.fixture
def configs_copy(tmp_path) -> Path:
    """A writable copy of the repo's configs folder, for tests that break a config."""
    target = tmp_path / "configs"
    shutil.copytree(CONFIGS, target)
    return target


@pytest.fixture
def past_days():
    """A fixed past week, so simulator data is stable whatever today is."""
    start = date(2026, 3, 2)
    return start, start + timedelta(days=6)


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory):
    """One BigQuery emulator (PyPI bqemulator, its own virtualenv) for the session, on a free port."""
    from beam_pipelines.testing.emulators.bigquery import BigQueryEmulator

    with BigQueryEmulator(log_path=tmp_path_factory.mktemp("bqemulator") / "emulator.log") as emulator:
        yield emulator


@pytest.fixture
def bq_project(request) -> str:
    """A project of its own per test: datasets and tables of one test never meet another's."""
    import hashlib

    return "t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


@pytest.fixture
def bq_env(monkeypatch, bigquery_emulator, bq_project):
    """Every BigQuery client of the project on the emulator, with short retry deadlines."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.url)
    monkeypatch.setenv("GCP_PROJECT_ID", bq_project)
    monkeypatch.setenv("BIGQUERY_RETRY_DEADLINE_SECONDS", "20")
    monkeypatch.setenv("BIGQUERY_DML_ATTEMPTS", "8")
    return bigquery_emulator


@pytest.fixture
def bq_settings(home, simulator, bq_env, monkeypatch):
    """Settings of the BigQuery twin (metastore and warehouse on the emulator), simulator providers."""
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", simulator.anthropic_base_url)
    monkeypatch.setenv("CONVERGENCE_SINK", "bigquery")
    monkeypatch.setenv("CONVERGENCE_METASTORE", "bigquery")
    settings = load_settings()
    from beam_pipelines.provision import provision_metadata

    provision_metadata(settings)
    return settings


@pytest.fixture
def simulator_env(simulator, monkeypatch):
    """The simulator's URLs in the environment, for tests that load settings themselves."""
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", simulator.anthropic_base_url)
    return simulator
