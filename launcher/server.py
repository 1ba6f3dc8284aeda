"""`convergence serve` / `make serve`: run the launcher with uvicorn and JSON logs."""
from __future__ import annotations

import uvicorn

from launcher.app import create_app
from launcher.logs import setup_json_logging
from launcher.settings import LauncherSettings


def serve(core_settings, host: str, port: int) -> int:
    settings = LauncherSettings.from_env(core_settings)
    setup_json_logging()
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False)
    return 0
