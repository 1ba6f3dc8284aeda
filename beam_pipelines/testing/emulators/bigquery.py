"""The BigQuery emulator (PyPI ``bqemulator`` 1.4.0) as a child process on loopback.

It lives in its own virtualenv (``.venv-bqemulator``, made by ``make`` from
``bqemulator-requirements.txt``) because its DuckDB pin conflicts with ours. Point every BigQuery
client of the project at it with ``BIGQUERY_EMULATOR_HOST=<url>``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.testing.emulators.process import ServerProcess, free_port

HERE = Path(__file__).resolve().parent
REPO_VENV = HERE.parents[2] / ".venv-bqemulator"
DEFAULT_PROJECT = "convergence-local"


def emulator_python() -> str:
    """``CONVERGENCE_BQEMULATOR_PYTHON``, else the repository's ``.venv-bqemulator``."""
    configured = os.environ.get("CONVERGENCE_BQEMULATOR_PYTHON", "").strip()
    python = Path(configured) if configured else REPO_VENV / "bin" / "python"
    if not python.exists():
        raise ConvergenceError(f"BigQuery emulator not installed ({python} missing): run `make emulator-install`"
                               " or set CONVERGENCE_BQEMULATOR_PYTHON")
    return str(python)


class BigQueryEmulator(ServerProcess):
    name = "BigQuery emulator"

    def __init__(self, port: int | None = None, project: str = DEFAULT_PROJECT, log_path: Path | None = None):
        self.project = project
        port = port or free_port()
        super().__init__([emulator_python(), str(HERE / "bqemulator_main.py"), str(port), project], port,
                         f"/bigquery/v2/projects/{project}/datasets", log_path)


def main() -> None:  # python -m beam_pipelines.testing.emulators.bigquery [PORT]
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9050
    with BigQueryEmulator(port) as emulator:
        print(f"BigQuery emulator on {emulator.url}: export BIGQUERY_EMULATOR_HOST={emulator.url}", flush=True)
        emulator.wait()


if __name__ == "__main__":
    main()
