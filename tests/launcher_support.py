"""Helpers for launcher tests: app factory with a recording backend, and a real uvicorn server."""
from __future__ import annotations

import contextlib
import threading
import time

import uvicorn

from beam_pipelines.settings import load_settings
from beam_pipelines.testing.emulators.process import free_port
from launcher.app import create_app
from launcher.settings import LauncherSettings

ROOT_KEY = "r" * 40


class RecordingBackend:
    """Stands in for a launch target where a test is about the API, not about running jobs."""

    name = "recording"
    owner_id = "launcher:test"

    def __init__(self):
        self.launched = []
        self.lock = threading.Lock()

    def start(self):
        pass

    def stop(self):
        pass

    def lease_until(self, now=None):
        from beam_pipelines.metastore.base import lease_until

        return lease_until(now)

    def reconcile(self):
        return []

    def launch(self, spec):
        with self.lock:
            self.launched.append(spec)
            return f"rec-{len(self.launched)}"


def launcher_settings(**over) -> LauncherSettings:
    base = LauncherSettings.from_env(load_settings())
    values = {"root_key": ROOT_KEY, "rate_limit_per_key": "1000/minute", "rate_limit_per_ip": "1000/minute", **over}
    return LauncherSettings(**{**base.__dict__, **values})


def make_app(backend=None, oidc_verifier=None, **over):
    backend = backend or RecordingBackend()
    return create_app(launcher_settings(**over), backend=backend, oidc_verifier=oidc_verifier), backend


@contextlib.contextmanager
def running_server(app, **options):
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, access_log=False, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
