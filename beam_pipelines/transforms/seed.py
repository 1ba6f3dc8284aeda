"""``<provider>.seed_csv`` and ``openai.subscriptions``: the org's seed tables and monthly seat costs."""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam

from beam_pipelines.config.schema import load_schema
from beam_pipelines.seed.merge import merge_seed, monthly_subscription_rows, read_seed_csv
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, StepEvent, WorkItem
from beam_pipelines.transforms.fetch import one_line_error
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.warehouse.arrow_schema import to_arrow


class _WarehouseDoFn(beam.DoFn):
    """Reads and writes the org's unpartitioned tables in the local warehouse."""

    def __init__(self, step: StepTransform):
        self._step = step

    def setup(self):
        from beam_pipelines.warehouse.local import LocalWarehouse

        self._warehouse = LocalWarehouse(self._step.ctx.warehouse_root)


class _SeedOrg(_WarehouseDoFn):
    def process(self, item: WorkItem):
        started = datetime.now(timezone.utc)
        dataset = self._step.ctx.org_dataset(item.org_slug)
        written, error = 0, None
        try:
            staged = []
            for table in self._step.options.tables:  # build every table first: all or nothing
                schema = load_schema(self._step.ctx.configs_dir / table.schema_file, table.schema_file)
                defaults = read_seed_csv(self._step.ctx.configs_dir / table.csv, table.csv, schema, self._step.ctx.loaded_at)
                existing = self._warehouse.read_table(dataset, table.table)
                merged = merge_seed(defaults, None if existing is None else existing.to_pandas(), list(table.key))
                staged.append((table.table, to_arrow(merged[schema.names], schema, table.table)))
            for name, rows in staged:
                written += self._warehouse.write_table(dataset, name, rows)
        except Exception as exc:
            error = one_line_error(exc)
        yield beam.pvalue.TaggedOutput(EVENTS, StepEvent(
            item.run_id, item.org_slug, self._step.step.step_id, self._step.step.ps_type, "load", written, error,
            started, datetime.now(timezone.utc)))


class SeedCsv(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        outputs = work_items | "Seed" >> beam.ParDo(_SeedOrg(self)).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}


class _Subscriptions(_WarehouseDoFn):
    def process(self, item: WorkItem):
        started = datetime.now(timezone.utc)
        try:
            table = self._warehouse.read_table(self._step.ctx.org_dataset(item.org_slug), self._step.options.source_table)
            if table is None:
                raise LookupError(f"{self._step.options.source_table} is empty: run the seed pipeline first")
            rows = monthly_subscription_rows(table.to_pandas(), item.org_slug, item.run_id, item.start_date,
                                             item.end_date, self._step.ctx.loaded_at)
        except Exception as exc:
            yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(item.run_id, item.org_slug, error=one_line_error(exc),
                                                                    started_at=started))
            return
        if len(rows):
            yield OrgBatch(item.org_slug, item.run_id, rows)
        yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(item.run_id, item.org_slug, rows=len(rows),
                                                                started_at=started,
                                                                cost_usd=float(rows["prorated_cost_usd"].sum()) if len(rows) else 0.0))


class ExtractSubscriptions(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        outputs = work_items | "Prorate" >> beam.ParDo(_Subscriptions(self)).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}

