"""The local warehouse: Parquet files under a commit manifest, queried through DuckDB with BigQuery names.

Layout under the warehouse root::

    {dataset}/_manifest.json                     what readers see: every table's partition files
    {dataset}/{table}/{key}/part-{uuid}.parquet  committed files (key: usage_date=2026-11-01,
                                                 or x_Provider=openai/x_ChargeDate=2026-11-01)
    {dataset}/_staging/{run_id}/{table}@{key}@part-{uuid}.parquet
                                                 staged by a run, invisible until its commit (one flat
                                                 folder per run: a fleet made and removed eight
                                                 folders per org, which cost more than its writes)

A commit moves a run's staged files into place and then swaps the manifest (write a temp file,
fsync, ``os.replace``) under the dataset's lock, so every table of an org changes at once: a reader
sees the previous manifest or the next one, never half a run. Files no longer named by the manifest
are deleted after the swap; files left by a writer that died before its swap (never named by any
manifest) are deleted by the next commit of that partition. A dataset written before manifests existed
(``{table}/{field}=DAY/data.parquet``) is read as it is and adopted by its first commit.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, unquote

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_pipelines.errors import WarehouseError
from beam_pipelines.warehouse.arrow_schema import arrow_schema
from beam_pipelines.warehouse.base import CommitError, DayStats, Staged, TableSpec, Warehouse
from beam_pipelines.warehouse.parquet_options import write_options

NAME = re.compile(r"^[a-z0-9_]+$")
MANIFEST = "_manifest.json"
STAGING = "_staging"
LEGACY_FILE = "data.parquet"
WRITE_BUFFER = 1 << 20  # bytes a staged file's writes gather before each system call
FORMAT = 1


def _key(spec: TableSpec, day: date | None, scope: str | None) -> str:
    if spec.partition_field is None:
        return ""
    key = f"{spec.partition_field}={day.isoformat()}"
    return f"{spec.scope_field}={scope}/{key}" if spec.scope_field else key


def _staged_name(table: str, key: str) -> str:
    """A staged file's name says its table and partition (quoted: no ``/`` or ``@`` left in it)."""
    return f"{table}@{quote(key, safe='=')}@part-{uuid.uuid4().hex}.parquet"


def _staged_files(folder: str | Path) -> Iterator[tuple[str, str, str, str]]:
    """(path, table, partition key, name once committed) of each file staged in a run's folder."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            parts = entry.name.split("@")
            if len(parts) == 3 and parts[2].endswith(".parquet") and entry.is_file():
                yield entry.path, parts[0], unquote(parts[1]), parts[2]


def _key_day(key: str) -> date | None:
    if not key:
        return None
    return date.fromisoformat(key.rsplit("=", 1)[1])


def _only(meta: pq.FileMetaData, column: str, value) -> bool:
    """Whether the file's statistics prove every row's ``column`` equals ``value`` (no NULLs)."""
    index = meta.schema.names.index(column) if column in meta.schema.names else -1
    if index < 0:
        return False
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max or stats.null_count or stats.min != value or stats.max != value:
            return False
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _created(path: str) -> pa.NativeFile:
    """A new file, its folder made only when missing: a fleet stages three tables per org into one
    folder, and asking the file system for folders that exist cost a tenth of staging.

    Writes go through a buffer: the Parquet writer writes each column chunk and page header on its
    own, and a small part's hundreds of system calls cost a third of writing it (a one-org FOCUS part:
    1.0 ms to a file, 0.74 ms to memory). Closing the buffer closes the file."""
    try:
        raw = pa.OSFile(path, "wb")
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        raw = pa.OSFile(path, "wb")
    return pa.BufferedOutputStream(raw, buffer_size=WRITE_BUFFER)


class LocalWarehouse(Warehouse):
    kind = "local"

    def __init__(self, root: Path):
        self.root = Path(root)

    # names and locks ----------------------------------------------------------------------------
    def _dataset_dir(self, dataset: str, table: str | None = None) -> Path:
        for name in (dataset, table) if table is not None else (dataset,):
            if not NAME.match(name or ""):
                raise WarehouseError(f"invalid dataset/table name {name!r}")
        return self.root / dataset

    @contextlib.contextmanager
    def _locked(self, dataset: str):
        folder = self._dataset_dir(dataset)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # the manifest -------------------------------------------------------------------------------
    def _manifest(self, dataset: str) -> dict:
        folder = self._dataset_dir(dataset)
        path = folder / MANIFEST
        if path.exists():
            try:
                manifest = json.loads(path.read_text())
            except ValueError as exc:
                raise WarehouseError(f"{path}: corrupt manifest: {exc}") from None
            if manifest.get("format") != FORMAT:
                raise WarehouseError(f"{path}: unknown manifest format {manifest.get('format')!r}")
            return manifest
        return {"format": FORMAT, "version": 0, "tables": self._legacy_tables(folder)}

    @staticmethod
    def _legacy_tables(folder: Path) -> dict:
        tables = {}
        if not folder.is_dir():
            return tables
        for table_dir in sorted(p for p in folder.iterdir() if p.is_dir() and NAME.match(p.name)):
            partitions, field = {}, None
            for path in sorted(table_dir.glob(f"*/{LEGACY_FILE}")):
                field = path.parent.name.split("=", 1)[0]
                partitions[path.parent.name] = [str(path.relative_to(folder))]
            if (table_dir / LEGACY_FILE).exists():
                partitions[""] = [str((table_dir / LEGACY_FILE).relative_to(folder))]
            if partitions:
                tables[table_dir.name] = {"partition_field": field, "scope_field": None, "partitions": partitions}
        return tables

    def _write_manifest(self, folder: Path, manifest: dict) -> None:
        manifest["version"] = manifest.get("version", 0) + 1
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-manifest-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(manifest, sort_keys=True))  # json.dump to a file runs the pure-Python encoder
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, folder / MANIFEST)
            _fsync_dir(folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _files(self, dataset: str, table: str, manifest: dict | None = None) -> dict[str, list[Path]]:
        folder = self._dataset_dir(dataset, table)
        entry = (manifest or self._manifest(dataset))["tables"].get(table) or {}
        return {key: [folder / f for f in files] for key, files in entry.get("partitions", {}).items()}

    # writes -------------------------------------------------------------------------------------
    def ensure_table(self, dataset: str, spec: TableSpec) -> None:
        self._dataset_dir(dataset, spec.table).mkdir(parents=True, exist_ok=True)

    def _run_staging(self, dataset: str, run_id: str, table: str | None = None) -> str:
        """The run's one staging folder (``table`` only has its name checked)."""
        return os.path.join(self._dataset_dir(dataset, table), STAGING, run_id)

    def stage(self, dataset, spec, run_id, parts: Iterable[pa.Table], scope=None, ordered=False) -> Staged | None:
        folder = self._run_staging(dataset, run_id, spec.table)
        writers: dict[str, pq.ParquetWriter] = {}
        sinks: list[pa.NativeFile] = []
        written: list[str] = []
        rows = 0
        try:
            for part in parts:
                if not part.num_rows:
                    continue
                for key, piece in self._split(spec, part, scope, ordered):
                    writer = writers.get(key)
                    if writer is None:  # an OSFile: pyarrow's path resolution cost a fleet more than its writes
                        written.append(os.path.join(folder, _staged_name(spec.table, key)))
                        sinks.append(_created(written[-1]))
                        writer = writers[key] = pq.ParquetWriter(sinks[-1], piece.schema, **write_options(
                            piece.schema, piece.num_rows, (spec.partition_field, spec.scope_field, *spec.cluster_by)))
                    writer.write_table(piece)
                    rows += piece.num_rows
        except BaseException:
            for closable in [*writers.values(), *sinks]:
                with contextlib.suppress(Exception):
                    closable.close()
            for path in written:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            raise
        for closable in [*writers.values(), *sinks]:  # a writer given a stream leaves it open
            closable.close()
        if not rows:
            return None
        days = tuple(sorted(d for d in (_key_day(k) for k in writers) if d is not None))
        return Staged(dataset, spec.table, run_id, days, rows, scope, folder, spec)

    def adopt_parts(self, dataset, spec, run_id, paths, day, scope=None) -> Staged | None:
        """Moves the parts into the run's staging when each is a local Parquet file with exactly the
        table's Arrow schema whose statistics show only ``day`` (and ``scope``) in the partition (and
        scope) column: rewriting a billing day only re-sorted it by the clustering columns, which adopted
        parts are not. Anything else, or statistics missing: None, and nothing is moved."""
        if spec.partition_field is None or day is None or any(str(p).startswith("gs://") for p in paths):
            return None
        target = arrow_schema(spec.schema)
        rows = 0
        for path in paths:
            meta = pq.ParquetFile(path).metadata
            if not meta.schema.to_arrow_schema().equals(target) or not _only(meta, spec.partition_field, day):
                return None
            if spec.scope_field and not _only(meta, spec.scope_field, scope):
                return None
            rows += meta.num_rows
        if not rows:
            return None
        folder = self._run_staging(dataset, run_id, spec.table)
        os.makedirs(folder, exist_ok=True)
        for path in paths:
            shutil.move(path, os.path.join(folder, _staged_name(spec.table, _key(spec, day, scope))))
        return Staged(dataset, spec.table, run_id, (day,), rows, scope, folder, spec)

    def stage_empty(self, dataset, spec, run_id, scope=None) -> Staged:
        return Staged(dataset, spec.table, run_id, (), 0, scope, self._run_staging(dataset, run_id, spec.table), spec)

    @staticmethod
    def _split(spec: TableSpec, part: pa.Table, scope: str | None, ordered: bool = False):
        if spec.partition_field is None:
            yield "", part
            return
        column = part.column(spec.partition_field)
        days = pc.unique(column).to_pylist()
        for day in days:
            if day is None:
                raise WarehouseError(f"{spec.table}: rows without {spec.partition_field}")
            piece = part if len(days) == 1 else part.filter(pc.equal(column, day))  # one day: the usual case
            if spec.cluster_by and not ordered:
                piece = piece.sort_by([(c, "ascending") for c in spec.cluster_by])
            yield _key(spec, day, scope), piece

    def commit(self, staged: list[Staged]) -> list[str]:
        if not staged:
            return []
        dataset = self.commit_dataset(staged)
        tables = [s.table for s in staged]
        with self._locked(dataset) as folder:
            try:
                manifest = self._manifest(dataset)
                replaced: list[Path] = []
                touched: dict[str, set[str]] = {}
                for item in staged:
                    files, keys = self._adopt(folder, manifest, item, item.spec)
                    replaced += files
                    touched.setdefault(item.table, set()).update(keys)
                self._write_manifest(folder, manifest)
            except Exception as exc:
                raise CommitError(f"commit of {', '.join(tables)} failed: {exc}", [], tables) from exc
            for path in replaced:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for table, keys in touched.items():
                self._collect_garbage(folder, manifest, table, keys)
            for tmp in folder.glob(".tmp-*"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            self._remove_empty_staging(folder, staged[0].run_id)  # one removal for all the run's emptied folders
        return tables

    def _adopt(self, folder: Path, manifest: dict, item: Staged, spec: TableSpec) -> tuple[list[Path], set[str]]:
        """Move a staged table's files into place and point the (in-memory) manifest at them; the files
        the manifest no longer names, and the partitions touched."""
        entry = manifest["tables"].setdefault(item.table, {"partition_field": spec.partition_field,
                                                           "scope_field": spec.scope_field, "partitions": {}})
        entry["partition_field"], entry["scope_field"] = spec.partition_field, spec.scope_field
        replaced = []
        staged_keys: dict[str, list[tuple[str, str]]] = {}
        for path, table, key, name in sorted(_staged_files(item.location)):  # a partition's files in a stable order
            if table == item.table:
                staged_keys.setdefault(key, []).append((path, name))
        if spec.partition_field is None:
            stale_keys = list(entry["partitions"])
        else:  # the run's days, even those it staged nothing for (they become empty)
            wanted = set(staged_keys) | {_key(spec, day, item.scope) for day in item.days}
            stale_keys = [k for k in wanted if k in entry["partitions"]]
        for key in stale_keys:
            replaced += [folder / f for f in entry["partitions"].pop(key)]
        for key, paths in staged_keys.items():
            relative = os.path.join(item.table, key) if key else item.table
            os.makedirs(os.path.join(folder, relative), exist_ok=True)
            moved = [os.path.join(relative, name) for _, name in paths]
            for (path, _), target in zip(paths, moved):
                os.replace(path, os.path.join(folder, target))
            entry["partitions"][key] = moved
        return replaced, set(staged_keys) | set(stale_keys)

    @staticmethod
    def _collect_garbage(folder: Path, manifest: dict, table: str, keys: set[str]) -> None:
        """Files in the partitions just committed that no manifest names: a writer died between moving
        them and its swap. Only those partitions are listed: a table's history grows every day, and
        listing all of it made every commit slower than the last."""
        partitions = manifest["tables"].get(table, {}).get("partitions", {})
        for key in keys:
            named = {os.path.basename(f) for f in partitions.get(key, ())}
            with contextlib.suppress(FileNotFoundError), os.scandir(folder / table / key if key else folder / table) as found:
                for entry in found:
                    if entry.is_file() and entry.name.endswith(".parquet") and entry.name not in named:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)

    @staticmethod
    def _remove_empty_staging(folder: Path, run_id: str) -> None:
        """The run's staging folder, once a commit has moved every file out of it (a file of a table
        not committed keeps it)."""
        with contextlib.suppress(OSError):  # not empty, or already gone
            os.rmdir(folder / STAGING / run_id)

    def discard(self, dataset: str, run_id: str) -> list[str]:
        tables = self.pending(dataset, run_id)
        shutil.rmtree(self._run_staging(dataset, run_id), ignore_errors=True)
        return tables

    def pending(self, dataset: str, run_id: str) -> list[str]:
        run_dir = Path(self._run_staging(dataset, run_id))
        if not run_dir.is_dir():
            return []
        tables = {table for _, table, _, _ in _staged_files(run_dir)}
        tables.update(p.name for p in run_dir.iterdir() if p.is_dir() and any(p.rglob("*.parquet")))  # an older layout
        return sorted(tables)

    def replace_table(self, dataset: str, spec: TableSpec, rows: pa.Table) -> int:
        if spec.partition_field is not None:
            raise WarehouseError(f"{spec.table}: replace_table is for unpartitioned tables")
        run_id = f"replace-{uuid.uuid4().hex}"
        staged = self.stage(dataset, spec, run_id, [rows])
        if staged is None:  # an empty table: drop every file
            with self._locked(dataset) as folder:
                manifest = self._manifest(dataset)
                entry = manifest["tables"].pop(spec.table, None)
                self._write_manifest(folder, manifest)
                for files in (entry or {}).get("partitions", {}).values():
                    for f in files:
                        with contextlib.suppress(FileNotFoundError):
                            (folder / f).unlink()
            return 0
        self.commit([staged])
        return staged.rows

    # reads --------------------------------------------------------------------------------------
    def tables(self) -> list[tuple[str, str]]:
        found = []
        if not self.root.is_dir():
            return found
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name)):
            for table, entry in sorted(self._manifest(folder.name)["tables"].items()):
                if any(entry.get("partitions", {}).values()):
                    found.append((folder.name, table))
        return found

    def read_table(self, dataset: str, table: str) -> pa.Table | None:
        files = [f for paths in self._files(dataset, table).values() for f in paths]
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")

    def has_table(self, dataset: str, table: str) -> bool:
        """A table is only queryable here once it holds a partition (DuckDB views are made from files)."""
        entry = self._manifest(dataset)["tables"].get(table) or {}
        return any(entry.get("partitions", {}).values())

    def read_days(self, dataset, spec, start, end, batch_rows: int = 100_000) -> Iterator[pa.Table]:
        for key, paths in sorted(self._files(dataset, spec.table).items()):
            day = _key_day(key)
            if day is None or not start <= day <= end:
                continue
            for path in paths:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                    yield pa.Table.from_batches([batch])

    def _read_keys(self, dataset: str, spec: TableSpec, keys: list[str], columns: list[str]) -> dict[str, pa.Table]:
        files = self._files(dataset, spec.table)
        return {key: pa.concat_tables([pq.read_table(f, columns=columns) for f in files[key]])
                for key in keys if files.get(key)}

    def day_stats(self, dataset, spec, days, total_column, scope=None) -> dict[date, DayStats]:
        keys = {_key(spec, day, scope): day for day in days}
        columns = [spec.partition_field] + ([total_column] if total_column else [])
        stats = {}
        for key, table in self._read_keys(dataset, spec, list(keys), columns).items():
            total = None
            if total_column:
                value = pc.sum(table.column(total_column)).as_py()
                total = value if value is None or isinstance(value, Decimal) else Decimal(str(value))
            stats[keys[key]] = DayStats(table.num_rows, total)
        return stats

    def days_written_by(self, dataset, spec, run_id, start, end) -> list[date]:
        days = set()
        for key, paths in self._files(dataset, spec.table).items():
            day = _key_day(key)
            if day is None or not start <= day <= end:
                continue
            for path in paths:
                run_ids = pq.read_table(path, columns=[spec.run_field]).column(spec.run_field)
                if pc.any(pc.equal(run_ids, run_id)).as_py():
                    days.add(day)
        return sorted(days)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with one view per table, named ``{dataset}.{table}``."""
        conn = duckdb.connect(":memory:")
        conn.execute("SET TimeZone = 'UTC'")
        for dataset, table in self.tables():
            files = [str(f) for paths in self._files(dataset, table).values() for f in paths]
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            conn.execute(f'CREATE VIEW "{dataset}"."{table}" AS SELECT * FROM read_parquet([{listing}],'
                         " union_by_name = true, hive_partitioning = false)")
        return conn

    def query(self, sql: str, params: dict | None = None) -> tuple[list[str], list[tuple]]:
        conn = self.connect()
        try:
            cursor = conn.execute(sql, params or {})
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchall()
        except duckdb.Error as exc:
            raise WarehouseError(f"query failed: {str(exc).splitlines()[0]}") from None
        finally:
            conn.close()
