"""Start PyPI ``bqemulator`` on loopback, offline. Runs inside the emulator's own virtualenv.

Standalone on purpose (it imports nothing of this project): ``.venv-bqemulator`` holds only the
emulator. Four facts of bqemulator 1.4.0 are handled here, at start-up, and nowhere else:

- its engine runs DuckDB ``INSTALL spatial`` at start, which downloads and fails offline: a failure
  now only disables GEOGRAPHY;
- google-cloud-bigquery sends small multipart uploads (``load_table_from_file`` under 5 MiB) with
  media type ``*/*``, which its upload route rejects with 400: it is allowed;
- BYTES query parameters arrive base64-encoded, as the REST API defines them, and it stored the
  base64 text itself: they are decoded to their bytes;
- its DuckDB pin is 1.5.6 (see bqemulator-requirements.txt).

Usage: python bqemulator_main.py PORT [PROJECT]
"""
from __future__ import annotations

import logging
import sys


def _patch() -> None:
    import base64

    from bqemulator.api.routes import upload
    from bqemulator.sql import parameters
    from bqemulator.storage import engine

    parameters._SCALAR_CONVERTERS["BYTES"] = lambda raw: base64.b64decode(str(raw))

    def load_spatial_if_present(self) -> None:
        try:
            self._connection.execute("LOAD spatial")
        except Exception:  # noqa: BLE001 - offline: GEOGRAPHY is simply unavailable
            logging.getLogger("bqemulator_main").info("spatial extension unavailable: GEOGRAPHY disabled")

    engine.DuckDBEngine._load_spatial = load_spatial_if_present
    if "*/*" not in upload._PERMITTED_MEDIA_CONTENT_TYPES:
        upload._PERMITTED_MEDIA_CONTENT_TYPES = (*upload._PERMITTED_MEDIA_CONTENT_TYPES, "*/*")


def main(argv: list[str]) -> None:
    port = int(argv[1])
    project = argv[2] if len(argv) > 2 else "convergence-local"
    _patch()
    from bqemulator.config import LogLevel, PersistenceMode, Settings
    from bqemulator.server import run_forever

    run_forever(Settings(rest_host="127.0.0.1", rest_port=port, grpc_host="127.0.0.1", grpc_port=0,
                         persistence_mode=PersistenceMode.EPHEMERAL, default_project_id=project,
                         log_level=LogLevel.WARNING))


if __name__ == "__main__":
    main(sys.argv)
