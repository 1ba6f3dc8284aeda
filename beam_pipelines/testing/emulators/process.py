"""A loopback server in a child process: started on a free port, ready when it answers, stopped by pid."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from beam_pipelines.errors import ConvergenceError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """Run ``command`` (which must listen on ``port``) until :meth:`stop`; ``ready_path`` answers 2xx when up."""

    name = "server"

    def __init__(self, command: list[str], port: int, ready_path: str, log_path: Path | None = None,
                 env: dict | None = None, start_timeout: float = 60.0):
        self.command, self.port, self.ready_path = command, port, ready_path
        self.log_path, self.env, self.start_timeout = log_path, env, start_timeout
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # An argument list, no shell: the interpreter path and a port number.
        self._proc = subprocess.Popen(self.command, stdout=self._log or subprocess.DEVNULL,  # noqa: S603
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, **(self.env or {})}, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.stop()
                raise ConvergenceError(f"{self.name} exited with code {self._proc.returncode} at start-up"
                                       + (f" (see {self.log_path})" if self.log_path else ""))
            try:
                if requests.get(self.url + self.ready_path, timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise ConvergenceError(f"{self.name} did not answer on {self.url} within {self.start_timeout:.0f} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        return self._proc.wait() if self._proc else 0

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
