"""The local warehouse: Parquet partitions queried through DuckDB with BigQuery-style names.

Layout: ``warehouse/{dataset}/{table}/{partition_field}={YYYY-MM-DD}/data.parquet``. A partition
is replaced atomically (write a temp file in the same folder, fsync, ``os.replace``), so a
re-run never duplicates rows and a crash never leaves half a partition. An empty partition is
removed. ``query`` exposes every table as ``{dataset}.{table}`` exactly as in BigQuery.
"""
from __future__ import annotations

import os
import re
import tempfile
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.errors import WarehouseError

NAME = re.compile(r"^[a-z0-9_]+$")
DATA_FILE = "data.parquet"


class LocalWarehouse:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _table_dir(self, dataset: str, table: str) -> Path:
        for name in (dataset, table):
            if not NAME.match(name):
                raise WarehouseError(f"invalid dataset/table name {name!r}")
        return self.root / dataset / table

    def partition_path(self, dataset: str, table: str, field: str, day: date) -> Path:
        return self._table_dir(dataset, table) / f"{field}={day.isoformat()}" / DATA_FILE

    def replace_partition(self, dataset: str, table: str, field: str, day: date, rows: pa.Table) -> int:
        """Make the partition hold exactly ``rows``; returns the row count written."""
        return self.replace_partition_from(dataset, table, field, day, [rows], rows.schema)

    def replace_partition_from(self, dataset: str, table: str, field: str, day: date, parts, schema: pa.Schema) -> int:
        """Like :meth:`replace_partition`, streaming ``parts`` (Arrow tables) one at a time."""
        return _atomic_write(self.partition_path(dataset, table, field, day), parts, schema)

    def write_table(self, dataset: str, table: str, rows: pa.Table) -> int:
        """Replace a whole unpartitioned table (e.g. a per-org price list)."""
        return _atomic_write(self._table_dir(dataset, table) / DATA_FILE, [rows], rows.schema)

    def tables(self) -> list[tuple[str, str]]:
        found = []
        if not self.root.is_dir():
            return found
        for dataset in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for table in sorted(p for p in dataset.iterdir() if p.is_dir()):
                if NAME.match(dataset.name) and NAME.match(table.name) and self._files(table):
                    found.append((dataset.name, table.name))
        return found

    @staticmethod
    def _files(table_dir: Path) -> list[Path]:
        return sorted(table_dir.glob(f"*/{DATA_FILE}")) + sorted(table_dir.glob(DATA_FILE))

    def read_table(self, dataset: str, table: str) -> pa.Table | None:
        files = self._files(self._table_dir(dataset, table))
        if not files:
            return None
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with one view per table, named ``{dataset}.{table}``."""
        conn = duckdb.connect(":memory:")
        for dataset, table in self.tables():
            files = [str(f) for f in self._files(self.root / dataset / table)]
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            conn.execute(
                f'CREATE VIEW "{dataset}"."{table}" AS SELECT * FROM read_parquet([{listing}],'
                " union_by_name = true, hive_partitioning = false)"
            )
        return conn

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        conn = self.connect()
        try:
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchall()
        except duckdb.Error as exc:
            raise WarehouseError(f"query failed: {str(exc).splitlines()[0]}") from None
        finally:
            conn.close()


def _atomic_write(path: Path, parts, schema: pa.Schema) -> int:
    """Write ``parts`` to a temp file beside ``path``, fsync, then rename over it; no rows removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    written = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for part in parts:
                writer.write_table(part)
                written += part.num_rows
        if written == 0:
            os.unlink(tmp)
            if path.exists():
                path.unlink()
            return 0
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return written
