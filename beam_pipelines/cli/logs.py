"""Logging for CLI commands: detail to a file under $CONVERGENCE_HOME/logs, one line to the user.

State under $CONVERGENCE_HOME is private to its user: the process creates files 0600 and folders
0700 (umask 077), the log file included. Every record is redacted when it is created
(:mod:`beam_pipelines.secrets.redaction`), whichever handler writes it.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from beam_pipelines.secrets import redaction


def secure_home(home: Path) -> None:
    os.umask(0o077)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)


def setup_logging(home: Path, log_dir: Path, verbose: bool = False) -> Path:
    secure_home(home)
    redaction.install()
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = log_dir / "convergence.log"
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.ERROR + 10)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    return path
