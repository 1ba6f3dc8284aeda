"""A run's staged files (billing parts) under the staging root: local, or ``gs://`` on Dataflow.

Deleted once the run's commit is done or abandoned; the bucket's lifecycle rule is the safety net.
On Cloud Storage a "folder" is only a name prefix: an existence check on ``gs://b/staging/run`` asks
for one object of that name, which never exists, so the files would stay forever. The run's files
are therefore listed under the prefix *with* its trailing ``/`` (never ``run1`` matching ``run10``)
and deleted with google-cloud-storage, which also honours ``STORAGE_EMULATOR_HOST`` in tests.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

GS = "gs://"


def run_folder(staging_root: str, run_id: str) -> str:
    """The run's folder, always with a trailing ``/`` (a prefix that matches this run only)."""
    return f"{str(staging_root).rstrip('/')}/{run_id}/"


def _remove_gcs(folder: str, client=None) -> bool:
    from google.cloud import storage

    bucket_name, _, prefix = folder[len(GS):].partition("/")
    client = client or storage.Client()
    blobs = list(client.list_blobs(bucket_name, prefix=prefix))
    if not blobs:
        return False
    with client.batch(raise_exception=False):
        for blob in blobs:
            blob.delete()
    return True


def remove_run(staging_root: str, run_id: str, client=None) -> bool:
    """Best effort; returns whether anything was there."""
    folder = run_folder(staging_root, run_id)
    try:
        if folder.startswith(GS):
            return _remove_gcs(folder, client)
        path = Path(folder)
        if path.is_dir():
            shutil.rmtree(path)
            return True
    except Exception as exc:  # leftovers are harmless: names are per run, and the lifecycle rule expires them
        log.warning("could not remove staged files of run %s: %s", run_id, type(exc).__name__)
    return False
