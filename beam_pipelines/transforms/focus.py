"""``<provider>.focus``: FOCUS 1.2 rows of the run's costs, for the shared ``focus_cost_daily`` table.

A cost pipeline adds this step after its cost step and loads its output beside the cost table,
scoped to its provider and replacing the same days (``days_like``), in the same per-org commit: the
FOCUS table is rebuilt from exactly the rows the provider tables were, and never disagrees with
them. Rows are checked against the specification (:mod:`beam_pipelines.focus.validator`) before
they can be staged; a rule broken fails the org, naming the column. Usage we could not price is
left out of FOCUS (never $0) and counted in the step's log (``unpriced``).

Google Cloud rows arrive as staged Parquet parts (a billing day may not fit in memory): each part
is mapped chunk by chunk to FOCUS parts written beside it, in Arrow from end to end
(:func:`beam_pipelines.focus.gcp.focus_rows_gcp` is vectorised; no row becomes a Python object);
several parts are mapped at once on a pool (Arrow releases the GIL).
"""
from __future__ import annotations

import os
from datetime import datetime, timezone

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.errors import ValidationFailed, one_line_error
from beam_pipelines.focus.columns import PARTITION, SCOPE, focus_schema
from beam_pipelines.focus.gcp import SOURCE_COLUMNS, focus_rows_gcp
from beam_pipelines.focus.llm import ANTHROPIC, OPENAI, Source, focus_rows, price_list_rates, unpriced_by_run
from beam_pipelines.focus.validator import validate_focus
from beam_pipelines.pricing.anthropic_cost import BATCH_TIERS
from beam_pipelines.pricing.openai_cost import TIER_ALIASES
from beam_pipelines.transforms.background import PooledDoFn
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, StagedRows
from beam_pipelines.transforms.step import StepTransform
from beam_pipelines.transforms.usage import OrgPricedStep
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.parquet_options import write_options


def check_focus(rows: pd.DataFrame | pa.Table) -> None:
    errors = [f for f in validate_focus(rows) if f.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationFailed(f"FOCUS 1.2: {first.column}: {first.rule}: {first.detail}{more}")


class FocusFromCosts(OrgPricedStep):
    source: Source

    def work(self, batch: OrgBatch, prices) -> tuple[pd.DataFrame, dict]:
        rows, unpriced = focus_rows(self.source, batch.rows, *price_list_rates(prices), run_id=batch.run_id,
                                    loaded_at=self.ctx.loaded_at)
        if self.options.validate_rows and len(rows):
            check_focus(rows)
        return rows, {"unpriced": unpriced} if unpriced else {}

    def work_runs(self, rows: pd.DataFrame, prices) -> tuple[pd.DataFrame, dict[str, dict]]:
        focus, _ = focus_rows(self.source, rows, *price_list_rates(prices), loaded_at=self.ctx.loaded_at, as_arrow=True)
        if self.options.validate_rows and len(focus):
            check_focus(focus)
        return focus, {run_id: {"unpriced": unpriced} for run_id, unpriced in unpriced_by_run(self.source, rows).items()}


class OpenAIFocus(FocusFromCosts):
    provider = "openai"
    tier_aliases = TIER_ALIASES
    source = OPENAI


class AnthropicFocus(FocusFromCosts):
    provider = "anthropic"
    batch_tiers = BATCH_TIERS
    source = ANTHROPIC


CHUNK_ROWS = 50_000  # source rows mapped at a time (a whole staged part of the extract), each chunk its own FOCUS part:
# the load reads a part whole, and a FOCUS part has 70 columns; repeated row keys are numbered within a chunk. Part of
# the mapping costs per distinct value, not per row: 25,000-row chunks cost ~10% more per row
PART_THREADS = max(1, min(4, os.cpu_count() or 1))  # parts mapped at once: Arrow's reader, kernels and writer release
# the GIL (a 2M-row day's FOCUS took 10 s on one thread, ~5 s on two on two cores); each holds a chunk and its FOCUS rows


class _FocusParts(PooledDoFn):
    """Maps each staged part on a pool, ``PART_THREADS`` parts at once, its outputs in the order of the parts.

    A part's chunks are read, mapped and written one after the other on its thread; the parts in
    flight keep the cores busy (within one part, each step waited for the one before it).
    """

    pool_name = "focus"

    def __init__(self, step: StepTransform):
        self._step = step

    def pool_size(self) -> int:
        return PART_THREADS

    def setup(self):
        self._schema = focus_schema(self._step.ctx.configs_dir)
        super().setup()

    def work(self, batch: OrgBatch) -> list:
        """One part's FOCUS parts and its event (or only its failed event), on a pool thread."""
        started = datetime.now(timezone.utc)
        staged: list[StagedRows] = []
        try:
            part: StagedRows = batch.rows
            head, _, name = part.path.rpartition("/")
            stem = name.removesuffix(".parquet")
            with FileSystems.open(part.path) as source:
                parquet = pq.ParquetFile(source)
                columns = [c for c in parquet.schema_arrow.names if c in SOURCE_COLUMNS]
                for number, chunk in enumerate(parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns)):
                    rows = focus_rows_gcp(pa.Table.from_batches([chunk]), run_id=batch.run_id)  # Arrow, schema order
                    if self._step.options.validate_rows and len(rows):
                        check_focus(rows)
                    table = to_arrow(rows, self._schema, "focus_cost_daily")
                    if table.num_rows:
                        path = FileSystems.join(head, "focus", f"{stem}-{number:04d}.parquet")
                        _write_part(path, table)
                        staged.append(StagedRows(path, part.day, table.num_rows))
        except Exception as exc:
            return [beam.pvalue.TaggedOutput(EVENTS, self._step.event(batch.run_id, batch.org_slug,
                                                                      error=one_line_error(exc), started_at=started))]
        return [*(OrgBatch(batch.org_slug, batch.run_id, focus_part) for focus_part in staged),
                beam.pvalue.TaggedOutput(EVENTS, self._step.event(batch.run_id, batch.org_slug,
                                                                  rows=sum(p.num_rows for p in staged), started_at=started))]


def _write_part(path: str, table: pa.Table) -> None:
    """A FOCUS part, written as the warehouse writes its files: the load adopts it as it is."""
    with FileSystems.create(path) as sink:  # local folders are created as needed
        pq.write_table(table, sink, **write_options(table.schema, table.num_rows, (PARTITION, SCOPE)))


class GcpFocus(StepTransform):
    kind = "transform"

    def expand(self, batches):
        outputs = batches | "Focus" >> beam.ParDo(_FocusParts(self)).with_outputs(EVENTS, main="main")
        return {"main": outputs.main, "events": outputs[EVENTS]}
