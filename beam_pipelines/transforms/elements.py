"""What flows through the graph. None of these ever holds a secret.

- ``WorkItem``: one org's share of a run (org, run id, UTC date range): the ``Create`` input.
- ``UsageRecords``: an org's usage rows as the provider client gave them (one dict per bucket
  result), before they become a frame: a frame costs ~1.5 ms to build whatever its size, and a
  fleet's orgs have a few dozen rows each, so the rows of many orgs become one frame together.
- ``OrgBatch``: a page-sized batch of one org's rows as a DataFrame. Rows move in batches because
  per-element overhead dominates Beam Python.
- ``RunsBatch``: the rows of many orgs' runs in one frame, from fetch through pricing and FOCUS.
  A fleet's orgs have a few dozen rows each, and pandas costs per frame, not per row: a thousand
  one-org frames cost a thousand times the fixed overhead. Split per run before anything groups by
  run (:mod:`beam_pipelines.transforms.runs`).
- ``StepEvent``: what a step did for an org (rows, timing, or the error that failed the org);
  the run-log stage folds them into the org's run record and step logs.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import NamedTuple

import apache_beam as beam
import pandas as pd
import pyarrow as pa


class WorkItem(NamedTuple):
    org_slug: str
    run_id: str
    start_date: date
    end_date: date

    def days(self) -> list[date]:
        return [self.start_date + timedelta(days=i) for i in range((self.end_date - self.start_date).days + 1)]


class UsageRecords(list):
    """Rows (dicts with the same keys) of one org, at most ``BATCH_ROWS`` of them; :meth:`frame` makes
    them a DataFrame. Only the fetch step holds them: nothing downstream sees a record."""

    @staticmethod
    def frame(parts: list) -> pd.DataFrame:
        """One DataFrame of the rows of ``parts`` (records and frames alike), in order."""
        if all(isinstance(p, UsageRecords) for p in parts):
            return pd.DataFrame.from_records([row for part in parts for row in part])
        frames = [pd.DataFrame.from_records(p) if isinstance(p, UsageRecords) else p for p in parts]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


@dataclass(frozen=True)
class StagedRows:
    """Rows of one day already flattened to a Parquet file in the run's staging folder.

    Used where a day can be larger than memory (billing exports): the graph moves this small
    reference, and the load step streams the files into the partition.
    """

    path: str
    day: date
    num_rows: int

    def __len__(self) -> int:
        return self.num_rows

    def read(self) -> pa.Table:
        """Through Beam's FileSystems, so a staging root can be local or ``gs://`` (Dataflow)."""
        import pyarrow.parquet as pq
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(self.path) as fh:
            return pq.read_table(fh)


class OrgBatch(NamedTuple):
    org_slug: str
    run_id: str
    rows: pd.DataFrame | pa.Table | StagedRows  # pandas for priced usage, staged Parquet for billing exports


class RunsBatch(NamedTuple):
    runs: tuple[tuple[str, str], ...]  # (org_slug, run_id) of every run with rows in ``rows``
    rows: pd.DataFrame | pa.Table  # carries org_slug and run_id columns (x_RunId: FOCUS rows, in Arrow)


class RunsBatchCoder(beam.coders.Coder):
    """Pickles a RunsBatch like the default coder, but estimates its size from the frame's memory.

    The runner samples the size of elements on every edge; the default coder estimates by encoding,
    and a fleet's batch (thousands of rows of exact Decimal money) costs ~0.2 s to pickle. Used where
    a step declares ``with_output_types(RunsBatch)``.
    """

    def encode(self, value: RunsBatch) -> bytes:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> RunsBatch:
        return pickle.loads(encoded)  # noqa: S301 - the job's own elements, as Beam's default coder does

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: RunsBatch) -> int:
        rows = value.rows
        size = rows.nbytes if isinstance(rows, pa.Table) else rows.memory_usage(index=False, deep=False).sum()
        return int(size) + 64 * len(value.runs)

    def to_type_hint(self):
        return RunsBatch


beam.coders.registry.register_coder(RunsBatch, RunsBatchCoder)


@dataclass(frozen=True)
class StepEvent:
    run_id: str
    org_slug: str
    step_id: str
    ps_type: str
    kind: str  # extract | transform | load
    rows: int = 0
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    detail: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None


EVENTS = "events"
