"""``<provider>.seed_csv`` and ``openai.subscriptions``: the org's seed tables and monthly seat costs.

Both read the org's own tables through the job's warehouse (local or BigQuery alike). The seed step
stages every table it rebuilds, and the run's commit replaces them together, so an org never has a
new price list beside an old plan list.
"""
from __future__ import annotations

from datetime import datetime, timezone

import apache_beam as beam

from beam_pipelines.errors import one_line_error
from beam_pipelines.seed.merge import merge_seed, monthly_subscription_rows, read_seed_csv
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, WorkItem
from beam_pipelines.transforms.org_tables import OrgTablesDoFn
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.tables import seed_spec

STAGED = "staged"


class _SeedOrg(OrgTablesDoFn):
    def process(self, item: WorkItem):
        started = datetime.now(timezone.utc)
        dataset = self._step.ctx.org_dataset(item.org_slug)
        staged, error = [], None
        try:
            self.admit(item)
            for table in self._step.options.tables:  # every table staged first: they are committed together
                spec = seed_spec(self._step.ctx.configs_dir, table)
                schema = spec.schema
                defaults = read_seed_csv(self._step.ctx.configs_dir / table.csv, table.csv, schema, self._step.ctx.loaded_at)
                existing = self._warehouse.read_table(dataset, table.table)
                merged = merge_seed(defaults, None if existing is None else existing.to_pandas(), list(table.key))
                result = self._warehouse.stage(dataset, spec, item.run_id, [to_arrow(merged[schema.names], schema, table.table)])
                if result is not None:
                    staged.append(result)
        except Exception as exc:
            error = one_line_error(exc)
            self._warehouse.discard(dataset, item.run_id)
            staged = []
        for result in staged:
            yield beam.pvalue.TaggedOutput(STAGED, (item.run_id, result))
        yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(
            item.run_id, item.org_slug, rows=sum(s.rows for s in staged), error=error, started_at=started,
            staged={s.table: s.rows for s in staged}))


class SeedCsv(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        outputs = work_items | "Seed" >> beam.ParDo(_SeedOrg(self)).with_outputs(EVENTS, STAGED, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS], "staged": outputs[STAGED]}


class _Subscriptions(OrgTablesDoFn):
    def process(self, item: WorkItem):
        started = datetime.now(timezone.utc)
        try:
            self.admit(item)
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
        yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(
            item.run_id, item.org_slug, rows=len(rows), started_at=started,
            cost_usd=sum(rows["prorated_cost_usd"]) if len(rows) else 0))


class ExtractSubscriptions(StepTransform):
    kind = "extract"

    def expand(self, work_items):
        outputs = work_items | "Prorate" >> beam.ParDo(_Subscriptions(self)).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}
