"""Splitting a :class:`RunsBatch` back into one batch per run, where the graph groups by run.

Loads and data-quality checks work per org (each org is committed, or failed, alone), so a batch
of many orgs' rows is split just before their ``GroupByKey``. For a load the whole batch is cast to
the table's Arrow schema once, sorted once (by run, then the table's clustering columns, which a
run's file is sorted by) and then sliced per run; if the cast fails, each run is cast alone, so
the error lands on the org whose rows do not fit, not its batch. Arrow slices share the batch's
buffers and pickle them whole: split Arrow batches only where the slices are consumed in place.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.transforms.elements import OrgBatch, RunsBatch
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.base import TableSpec

log = logging.getLogger(__name__)


def _slices(run_ids: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(run id, row positions) of each run, rows of a run in their original order."""
    order = np.argsort(run_ids, kind="stable")
    ordered = run_ids[order]
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1)) if len(ordered) else []
    ends = list(starts[1:]) + [len(ordered)]
    for start, end in zip(starts, ends):
        yield ordered[start], order[start:end]


def _run_column(names) -> str:
    """FOCUS rows name their run ``x_RunId``; every other table ``run_id``."""
    return "x_RunId" if "x_RunId" in names else "run_id"


def run_counts(rows: pd.DataFrame | pa.Table) -> dict[str, int]:
    """Rows per run id."""
    if not len(rows):
        return {}
    column = _run_column(rows.column_names if isinstance(rows, pa.Table) else rows.columns)
    run_ids = rows.column(column).to_pandas() if isinstance(rows, pa.Table) else rows[column]
    return {str(k): int(v) for k, v in run_ids.astype(object).value_counts(sort=False).items()}


def split_runs(batch: OrgBatch | RunsBatch, order_by: tuple[str, ...] = ()) -> Iterator[OrgBatch]:
    """One OrgBatch per run of the batch (an OrgBatch passes through). Arrow rows of a run come
    ordered by ``order_by`` (a stable sort: equal keys keep their order), pandas rows as they were."""
    if isinstance(batch, OrgBatch):
        yield batch
        return
    orgs = {run_id: org for org, run_id in batch.runs}
    rows = batch.rows
    if isinstance(rows, pa.Table):  # one sort and one take for the batch, then zero-copy slices
        column = _run_column(rows.column_names)
        keys = [(column, "ascending"), *((c, "ascending") for c in order_by)]
        ordered = rows.take(pc.sort_indices(rows, sort_keys=keys)) if len(rows) else rows
        offset = 0
        for run_id, positions in _slices(ordered.column(column).to_numpy(zero_copy_only=False).astype(object)):
            yield OrgBatch(orgs[run_id], run_id, ordered.slice(offset, len(positions)))
            offset += len(positions)
        return
    run_ids = rows[_run_column(rows.columns)].astype(object).to_numpy()
    for run_id, positions in _slices(run_ids):
        yield OrgBatch(orgs[run_id], run_id, rows.iloc[positions].reset_index(drop=True))


def split_runs_as_arrow(batch: OrgBatch | RunsBatch, spec: TableSpec) -> Iterator[OrgBatch]:
    """Per-run batches already in the table's Arrow schema, cast once per batch, each run's rows sorted
    by the table's clustering columns (as the warehouse stages them); pandas where the cast failed."""
    if isinstance(batch, RunsBatch) and isinstance(batch.rows, pd.DataFrame) and len(batch.rows):
        try:
            batch = RunsBatch(batch.runs, to_arrow(batch.rows, spec.schema, spec.table))
        except Exception as exc:  # some run's rows do not fit: each run is cast alone by its load, and fails alone
            log.debug("%s: batch cast failed (%s); casting per run", spec.table, type(exc).__name__)
    yield from split_runs(batch, tuple(spec.cluster_by))
