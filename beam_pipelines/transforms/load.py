"""``warehouse.load``: replace each (org dataset, table, day) partition with the run's rows.

Batches are split by day and grouped on (org, run, day) so one writer sees the whole partition;
every day of the run's range is included, even with no rows, so a re-run that finds less data
still replaces (empties) the partition instead of leaving stale rows. Orgs that failed in an
earlier step are skipped (a side input of failed run ids), so a failed org writes nothing.
"""
from __future__ import annotations

from datetime import date, datetime, timezone

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipelines.config.schema import load_schema
from beam_pipelines.transforms.elements import OrgBatch, StagedRows, WorkItem
from beam_pipelines.transforms.fetch import one_line_error
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.warehouse.arrow_schema import arrow_schema, to_arrow


def split_by_day(batch: OrgBatch, field: str):
    """Keys are (org, run id, ISO day): strings, so the GroupByKey encodes them deterministically."""
    rows = batch.rows
    if isinstance(rows, StagedRows):
        yield (batch.org_slug, batch.run_id, rows.day.isoformat()), rows
        return
    if isinstance(rows, pa.Table):
        column = rows.column(field)
        for day in pc.unique(column).to_pylist():
            yield (batch.org_slug, batch.run_id, day.isoformat()), rows.filter(pc.equal(column, day))
        return
    for day, part in rows.groupby(field, sort=True):
        yield (batch.org_slug, batch.run_id, day.isoformat()), part


def every_day(item: WorkItem):
    for day in item.days():
        yield (item.org_slug, item.run_id, day.isoformat()), None


class _WritePartition(beam.DoFn):
    def __init__(self, step: StepTransform, schema):
        self._step = step
        self._schema = schema

    def setup(self):
        from beam_pipelines.warehouse.local import LocalWarehouse

        self._warehouse = LocalWarehouse(self._step.ctx.warehouse_root)

    def process(self, keyed, failed_runs):
        (org_slug, run_id, iso_day), frames = keyed
        day = date.fromisoformat(iso_day)
        if run_id in set(failed_runs):
            return
        started = datetime.now(timezone.utc)
        options = self._step.options
        frames = [f for f in frames if f is not None]
        try:
            if frames and all(isinstance(f, StagedRows) for f in frames):
                written = self._warehouse.replace_partition_from(
                    self._step.ctx.org_dataset(org_slug), options.table, options.partition_field, day,
                    (to_arrow(f.read(), self._schema, options.table) for f in frames),
                    arrow_schema(self._schema),
                )
                yield self._step.event(run_id, org_slug, rows=written, started_at=started, table=options.table)
                return
            if frames and all(isinstance(f, pa.Table) for f in frames):
                table = to_arrow(pa.concat_tables(frames), self._schema, options.table)
            else:
                frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self._schema.names)
                table = to_arrow(frame, self._schema, options.table)
            if options.cluster_by and table.num_rows:
                table = table.sort_by([(c, "ascending") for c in options.cluster_by])
            written = self._warehouse.replace_partition(
                self._step.ctx.org_dataset(org_slug), options.table, options.partition_field, day, table
            )
        except Exception as exc:
            yield self._step.event(run_id, org_slug, error=one_line_error(exc), started_at=started)
            return
        yield self._step.event(run_id, org_slug, rows=written, started_at=started, table=options.table)


class LoadPartitions(StepTransform):
    kind = "load"

    def expand(self, batches):
        options = self.options
        schema = load_schema(self.ctx.configs_dir / options.schema_file, options.schema_file)
        keyed_rows = batches | "SplitByDay" >> beam.FlatMap(split_by_day, options.partition_field)
        keyed_days = self.inputs["work_items"] | "EveryDay" >> beam.FlatMap(every_day)
        events = (
            (keyed_rows, keyed_days)
            | "Partitions" >> beam.Flatten()
            | "GroupPartition" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(
                _WritePartition(self, schema), beam.pvalue.AsList(self.inputs["failed_runs"])
            )
        )
        return {"events": events}

