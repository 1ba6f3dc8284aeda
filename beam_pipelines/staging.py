"""A run's staged files (billing parts) under the staging root: local, or ``gs://`` on Dataflow.

Deleted once the run's commit is done or abandoned; the bucket's lifecycle rule is the safety net.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)


def run_folder(staging_root: str, run_id: str) -> str:
    """The run's folder, with a trailing ``/``: on Cloud Storage a "folder" is only a prefix, and
    ``FileSystems.exists``/``delete`` treat a path without it as one object (which never exists)."""
    return FileSystems.join(str(staging_root), run_id) + "/"


def remove_run(staging_root: str, run_id: str) -> bool:
    """Best effort; returns whether anything was there."""
    folder = run_folder(staging_root, run_id)
    try:
        if FileSystems.get_scheme(folder) is None:  # a local folder: Beam's local delete globs ``folder/*``
            path = Path(folder)
            if path.is_dir():
                shutil.rmtree(path)
                return True
            return False
        if FileSystems.exists(folder):
            FileSystems.delete([folder])
            return True
    except Exception as exc:  # leftovers are harmless: names are per run, and the lifecycle rule expires them
        log.warning("could not remove staged files of run %s: %s", run_id, type(exc).__name__)
    return False
