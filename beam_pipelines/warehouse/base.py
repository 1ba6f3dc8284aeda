"""The warehouse interface: where data rows land, locally (Parquet + DuckDB) or in BigQuery.

Every write is two-phase, so an org's days change together or not at all:

1. ``stage``: the run's rows for one table go somewhere invisible to readers (a staging folder,
   or a BigQuery staging table);
2. ``commit``: the staged rows replace exactly the days they cover (and, for a shared table, only
   the rows of their ``scope``). Locally every table of the org is committed by one manifest swap;
   on BigQuery one ``MERGE`` per table is atomic.

A :class:`WarehouseSpec` (a path, or a project and location) is what travels into the job graph;
workers open the warehouse from it. Implementations are chosen once, in :meth:`WarehouseSpec.open`.
"""
from __future__ import annotations

import abc
import functools
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from beam_pipelines.config.schema import TableSchema
from beam_pipelines.errors import WarehouseError


@dataclass(frozen=True)
class TableSpec:
    """A table as its config names it: schema file, day partitioning, clustering, replacement scope."""

    table: str
    schema: TableSchema
    partition_field: str | None = "usage_date"  # None: an unpartitioned table, replaced whole
    cluster_by: tuple[str, ...] = ()
    scope_field: str | None = None  # shared tables (FOCUS): a run replaces only rows of its own scope
    description: str = ""

    @property
    def run_field(self) -> str:
        """The column naming the run that wrote a row (FOCUS prefixes its own columns with ``x_``)."""
        return "x_RunId" if "x_RunId" in self.schema.names else "run_id"

    def __reduce__(self):
        """Pickled once per spec, unpickled once per process: a spec rides on every staged table of a
        fleet (thousands of elements crossing the runner's shuffles), and a 70-column schema cost ~50 us
        to pickle each time. The bytes still carry the whole spec, so any worker can read them."""
        blob = self.__dict__.get("_pickled")
        if blob is None:
            blob = pickle.dumps(tuple(getattr(self, f) for f in self.__dataclass_fields__), pickle.HIGHEST_PROTOCOL)
            object.__setattr__(self, "_pickled", blob)
        return _spec_from_pickle, (blob,)


@functools.lru_cache(maxsize=256)
def _spec_from_pickle(blob: bytes) -> TableSpec:
    return TableSpec(*pickle.loads(blob))  # noqa: S301 - bytes from __reduce__, inside an element the runner already unpickled


@dataclass(frozen=True)
class Staged:
    """Rows of one run for one table, staged and not yet visible."""

    dataset: str
    table: str
    run_id: str
    days: tuple[date, ...]  # the days the staged rows cover: exactly these are replaced
    rows: int
    scope: str | None = None
    location: str = ""  # staging folder or staging table id
    spec: TableSpec | None = None  # the table's definition, so a commit needs nothing else


@dataclass
class CommitError(Exception):
    """A commit failed part-way: ``committed`` tables were replaced, the others were not."""

    message: str
    committed: list[str] = field(default_factory=list)
    not_committed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class DayStats:
    rows: int
    total: Decimal | float | None = None


class Warehouse(abc.ABC):
    """Datasets are ``{org}_{env}``; tables keep BigQuery's names in both implementations."""

    kind = ""

    @abc.abstractmethod
    def ensure_table(self, dataset: str, spec: TableSpec) -> None:
        """Create the dataset and the table (schema, partitioning, clustering) if missing."""

    @abc.abstractmethod
    def stage(self, dataset: str, spec: TableSpec, run_id: str, parts: Iterable[pa.Table],
              scope: str | None = None, ordered: bool = False) -> Staged | None:
        """Stage rows (already cast to the table's Arrow schema); None when there are none. ``ordered``:
        each part is already sorted by the table's clustering columns."""

    def adopt_parts(self, dataset: str, spec: TableSpec, run_id: str, paths: list[str], day: date | None,
                    scope: str | None = None) -> Staged | None:
        """Stage Parquet files written earlier in the run (a billing day's parts) as they are, when they
        provably hold the table's rows for ``day`` and ``scope``; None when this warehouse cannot (the
        caller then reads and stages the rows). Files adopted are moved: the caller no longer owns them."""
        return None

    @abc.abstractmethod
    def stage_empty(self, dataset: str, spec: TableSpec, run_id: str, scope: str | None = None) -> Staged:
        """A staged table with no rows, whose commit clears the days it is given (see ``Staged.days``)."""

    @staticmethod
    def commit_dataset(staged: list[Staged]) -> str:
        """The one dataset a commit covers (an org's tables live in its own dataset)."""
        datasets = {s.dataset for s in staged}
        if len(datasets) != 1:
            raise WarehouseError(f"one commit covers one dataset, got {sorted(datasets)}")
        return datasets.pop()

    @abc.abstractmethod
    def commit(self, staged: list[Staged]) -> list[str]:
        """Replace the staged days of each table; returns the tables committed (raises CommitError)."""

    @abc.abstractmethod
    def discard(self, dataset: str, run_id: str) -> list[str]:
        """Remove whatever a run staged in a dataset and did not commit; returns the tables."""

    @abc.abstractmethod
    def pending(self, dataset: str, run_id: str) -> list[str]:
        """Tables a run staged in a dataset and has not committed."""

    @abc.abstractmethod
    def day_stats(self, dataset: str, spec: TableSpec, days: list[date], total_column: str | None,
                  scope: str | None = None) -> dict[date, DayStats]:
        """Rows (and the sum of ``total_column``) held today in each of ``days``; absent days are empty."""

    @abc.abstractmethod
    def days_written_by(self, dataset: str, spec: TableSpec, run_id: str, start: date, end: date) -> list[date]:
        """Days in ``start..end`` whose rows carry ``run_id``: what a run really replaced."""

    @abc.abstractmethod
    def read_days(self, dataset: str, spec: TableSpec, start: date, end: date) -> Iterator[pa.Table]:
        """The rows of a partitioned table for days ``start..end``, in parts of bounded size (re-pricing
        and FOCUS read the stored tables this way instead of fetching again)."""

    @abc.abstractmethod
    def has_table(self, dataset: str, table: str) -> bool:
        """Whether the table exists (an org that never ran a pipeline has none of its tables)."""

    @abc.abstractmethod
    def read_table(self, dataset: str, table: str) -> pa.Table | None:
        """A whole (small) table, or None when it does not exist or is empty."""

    @abc.abstractmethod
    def replace_table(self, dataset: str, spec: TableSpec, rows: pa.Table) -> int:
        """Replace a whole unpartitioned table atomically (seed tables, price lists)."""

    @abc.abstractmethod
    def query(self, sql: str, params: dict | None = None) -> tuple[list[str], list[tuple]]:
        """Read-only SQL over ``{dataset}.{table}`` names."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


@dataclass(frozen=True)
class WarehouseSpec:
    kind: str  # "local" | "bigquery"
    root: str = ""
    project: str = ""
    location: str = "US"

    @classmethod
    def from_settings(cls, settings) -> WarehouseSpec:
        if settings.sink == "bigquery":
            return cls(kind="bigquery", project=settings.gcp_project, location=settings.bigquery_location)
        return cls(kind="local", root=str(settings.warehouse_dir))

    def open(self) -> Warehouse:
        if self.kind == "bigquery":
            from beam_pipelines.warehouse.bigquery import BigQueryWarehouse

            return BigQueryWarehouse(self.project, self.location)
        from beam_pipelines.warehouse.local import LocalWarehouse

        return LocalWarehouse(Path(self.root))
