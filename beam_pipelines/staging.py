"""A run's staged files (billing parts) under the staging root: local, or ``gs://`` on Dataflow.

:class:`DayParts` writes them: each day's rows as Parquet parts of at most ``part_rows`` rows, so
what a later step holds at a time (the load reads a part whole) is bounded whatever the size of the
day, while rows arrive in batches of any size.

Deleted once the run's commit is done or abandoned; the bucket's lifecycle rule is the safety net.
On Cloud Storage a "folder" is only a name prefix: an existence check on ``gs://b/staging/run`` asks
for one object of that name, which never exists, so the files would stay forever. The run's files
are therefore listed under the prefix *with* its trailing ``/`` (never ``run1`` matching ``run10``)
and deleted with google-cloud-storage, which also honours ``STORAGE_EMULATOR_HOST`` in tests.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipelines.warehouse.parquet_options import write_options

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


@dataclass
class _OpenPart:
    path: str
    handle: object
    writer: pq.ParquetWriter
    rows: int = 0


class DayParts:
    """Appends batches to the open part of each of their days; a full part is closed and another begun.

    Each batch becomes one row group of the part (readers can stream it), through Beam's FileSystems
    so the folder can be local or ``gs://``. ``close`` returns the parts as :class:`StagedRows`;
    ``abort`` closes what is open without returning anything (the caller removes the run's files).
    """

    def __init__(self, folder: str, part_rows: int, day_column: str = "usage_date"):
        if part_rows < 1:
            raise ValueError(f"part_rows must be at least 1, got {part_rows}")
        self.folder = folder
        self.part_rows = part_rows
        self.day_column = day_column
        self._open: dict[date, _OpenPart] = {}
        self._done: list = []
        self._count = 0

    def write(self, table: pa.Table) -> None:
        column = table.column(self.day_column)
        days = pc.unique(column).to_pylist()
        for day in days:
            if day is None:
                raise ValueError(f"rows without {self.day_column}")
            self._append(day, table if len(days) == 1 else table.filter(pc.equal(column, day)))

    def _append(self, day: date, rows: pa.Table) -> None:
        offset = 0
        while offset < rows.num_rows:
            part = self._open.get(day)
            if part is not None and part.writer.schema != rows.schema:  # a batch of another shape starts a part
                self._finish(day)
                part = None
            part = part or self._begin(day, rows.schema)
            take = min(rows.num_rows - offset, self.part_rows - part.rows)
            part.writer.write_table(rows.slice(offset, take))
            part.rows += take
            offset += take
            if part.rows >= self.part_rows:
                self._finish(day)

    def _begin(self, day: date, schema: pa.Schema) -> _OpenPart:
        from apache_beam.io.filesystems import FileSystems

        path = FileSystems.join(self.folder, day.isoformat(), f"part-{self._count:06d}.parquet")
        self._count += 1
        handle = FileSystems.create(path)  # local folders are created as needed
        # statistics of the day prove the part adoptable as a warehouse file (see parquet_options)
        writer = pq.ParquetWriter(handle, schema, **write_options(schema, self.part_rows, (self.day_column,)))
        part = self._open[day] = _OpenPart(path, handle, writer)
        return part

    def _finish(self, day: date) -> None:
        from beam_pipelines.transforms.elements import StagedRows

        part = self._open.pop(day)
        part.writer.close()
        part.handle.close()
        self._done.append(StagedRows(part.path, day, part.rows))

    def close(self) -> list:
        for day in list(self._open):
            self._finish(day)
        return self._done

    def abort(self) -> None:
        for part in self._open.values():
            for closing in (part.writer.close, part.handle.close):
                with contextlib.suppress(Exception):  # the caller removes the files; a close error adds nothing
                    closing()
        self._open.clear()
