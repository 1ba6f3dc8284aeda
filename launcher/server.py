"""`convergence serve` / `make serve`: run the launcher with uvicorn and JSON logs."""
from __future__ import annotations

import gc

import uvicorn

from launcher.app import create_app
from launcher.logs import setup_json_logging
from launcher.settings import LauncherSettings


def uvicorn_options(settings: LauncherSettings) -> dict:
    """Forwarding headers are trusted only from the proxies ``FORWARDED_ALLOW_IPS`` names (none by
    default: uvicorn's own default trusts them from 127.0.0.1, which a local attacker could use)."""
    if settings.forwarded_allow_ips:
        return {"proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}
    return {"proxy_headers": False}


def freeze_startup_heap() -> None:
    """Keep what start-up built (the app, its models, the pipeline configs: ~115k objects) out of the
    garbage collector's full passes. They live as long as the process, yet each full collection
    walked them all: 35-45 ms on the launcher benchmark, waited out by every request in flight;
    after this, about 7 ms."""
    gc.collect()
    gc.freeze()


def serve(core_settings, host: str, port: int, backend=None) -> int:
    """``backend``: where jobs go, if not the one the settings choose (the benchmark only queues them)."""
    settings = LauncherSettings.from_env(core_settings)
    setup_json_logging()
    app = create_app(settings, backend=backend)
    freeze_startup_heap()
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False,
                **uvicorn_options(settings))
    return 0
