"""``ledger.reconcile``: the provider's bill beside our computed cost, per org and day.

Input: the bill rows an extract step fetched for the run (not yet committed). The computed side is
the org's cost table as the usage pipeline committed it for the same days, read through the job's
warehouse. The run's work items give the days, so a day the provider did not bill still gets its
row (``MISSING_BILL``). All of an org's bill pages are grouped first: a ledger row sums a whole day.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import apache_beam as beam
import pandas as pd

from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import one_line_error
from beam_pipelines.ledger.reconcile import Tolerance, reconcile
from beam_pipelines.pipeline.dates import utc_today
from beam_pipelines.transforms.elements import EVENTS, OrgBatch
from beam_pipelines.transforms.org_tables import OrgTablesDoFn
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.warehouse.base import TableSpec

COMPUTED = ["usage_date", "scope_id", "model", "pricing_status", "total_cost_usd", "price_version"]
LEVELS = {"project_id": "project", "workspace_id": "workspace"}


class _ReconcileOrg(OrgTablesDoFn):
    def setup(self):
        super().setup()
        options = self._step.options
        schema = load_schema(self._step.ctx.configs_dir / options.schema_file, options.schema_file)
        self._spec = TableSpec(options.computed_table, schema, options.partition_field)
        self._columns = [COMPUTED[0], options.scope_column, *COMPUTED[2:]]
        self._tolerance = Tolerance(Decimal(str(options.tolerance_usd)), Decimal(str(options.tolerance_pct)))

    def process(self, keyed):
        run_id, grouped = keyed
        items, batches = list(grouped["items"]), list(grouped["billed"])
        if not items:
            return
        item = items[0]
        started = datetime.now(timezone.utc)
        options = self._step.options
        try:
            computed = self._computed(item)
            billed = pd.concat([b.rows for b in batches], ignore_index=True) if batches else pd.DataFrame(
                columns=["usage_date", options.scope_column, "model", "amount_usd"])
            billed = billed.rename(columns={options.scope_column: "scope_id"})
            rows = reconcile(options.provider, item.org_slug, run_id, item.days(), computed, billed,
                             LEVELS[options.scope_column], self._tolerance, utc_today(), options.restatement_days,
                             self._step.ctx.loaded_at)
        except Exception as exc:
            yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(run_id, item.org_slug, error=one_line_error(exc),
                                                                    started_at=started))
            return
        if len(rows):
            yield OrgBatch(item.org_slug, run_id, rows)
        org_rows = rows[rows["level"] == "org"]
        yield beam.pvalue.TaggedOutput(EVENTS, self._step.event(
            run_id, item.org_slug, rows=len(rows), started_at=started,
            statuses={d.isoformat(): s for d, s in zip(org_rows["usage_date"], org_rows["status"])}))

    def _computed(self, item) -> pd.DataFrame:
        parts = [p.select(self._columns).to_pandas(date_as_object=True)
                 for p in self._warehouse.read_days(self._step.ctx.org_dataset(item.org_slug), self._spec, item.start_date,
                                                    item.end_date)]
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=self._columns)
        return frame.rename(columns={self._step.options.scope_column: "scope_id"})


class Reconcile(StepTransform):
    kind = "transform"

    def expand(self, batches):
        items = self.inputs["work_items"] | "ItemsByRun" >> beam.Map(lambda i: (i.run_id, i))
        billed = batches | "BillByRun" >> beam.Map(lambda b: (b.run_id, b))
        grouped = {"items": items, "billed": billed} | "JoinRun" >> beam.CoGroupByKey()
        outputs = grouped | "Reconcile" >> beam.ParDo(_ReconcileOrg(self)).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}
