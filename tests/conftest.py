"""Shared fixtures: an isolated $CONVERGENCE_HOME per test and a loopback provider simulator."""
from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from beam_pipelines.settings import REPO_CONFIGS, load_settings
from beam_pipelines.testing.simulator import ProviderSimulator

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
