"""Where a launched job runs: a local subprocess pool, or Dataflow Flex Templates.

A backend whose ``launch`` waits on the network says so (``launch_waits = True``); the launcher then
never calls it on its event loop (see :mod:`launcher.workers`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class LaunchSpec:
    """One job: a pipeline over one or more orgs' pre-recorded runs. Never a secret."""

    pipeline_id: str
    runs: tuple[tuple[str, str], ...]  # (org_slug, run_id)
    start_date: date
    end_date: date
    trigger: str = "api"

    @property
    def run_ids(self) -> list[str]:
        return [run_id for _, run_id in self.runs]


def make_backend(settings):
    if settings.backend == "dataflow":
        from launcher.backends.dataflow import DataflowBackend

        return DataflowBackend(settings)
    from launcher.backends.local import LocalBackend

    return LocalBackend(settings)
