"""Compile a validated pipeline config into a Beam graph.

    Create(org work items) → Reshuffle → extract (decrypt + fetch) → transforms → loads → run log

Steps are looked up in the registry by ``ps_type``. Load steps are applied after every other
step, so each receives the complete set of failed runs as a side input and writes nothing for
an org that failed anywhere upstream.
"""
from __future__ import annotations

import apache_beam as beam

from beam_pipelines.registry import lookup
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import WorkItem
from beam_pipelines.transforms.runlog import RecordRunLog


def compile_pipeline(p: beam.Pipeline, ctx: RunContext, work_items: list[WorkItem]):
    """Add the pipeline's graph to ``p``; returns the PCollection of per-org run summaries."""
    items = (
        p
        | "CreateOrgWorkItems" >> beam.Create(work_items)
        | "SpreadOrgs" >> beam.Reshuffle()
    )
    outputs: dict[str, beam.PCollection] = {}
    events: list[beam.PCollection] = []
    loads, notifies = [], []
    for step in ctx.pipeline.config.steps:
        entry = lookup(step.ps_type)
        options = entry.options.model_validate(step.options)
        transform_cls = entry.load_transform()
        if entry.kind in ("load", "notify"):
            (loads if entry.kind == "load" else notifies).append((step, options, transform_cls))
            continue
        source = items if entry.kind == "extract" else outputs[step.input]
        result = source | transform_cls(step, options, ctx)
        outputs[step.step_id] = result["main"]
        events.append(result["events"])

    failed_runs = (
        tuple(events)
        | "UpstreamEvents" >> beam.Flatten()
        | "FailedOnly" >> beam.Filter(lambda e: e.failed)
        | "FailedRunIds" >> beam.Map(lambda e: e.run_id)
        | "DistinctFailed" >> beam.Distinct()
    )
    if ctx.sink == "bigquery":
        from beam_pipelines.transforms.bigquery_sink import BigQueryLoad
    for step, options, transform_cls in loads:
        if ctx.sink == "bigquery" and step.ps_type == "warehouse.load":
            transform_cls = BigQueryLoad
        result = outputs[step.input] | transform_cls(
            step, options, ctx, work_items=items, failed_runs=failed_runs
        )
        events.append(result["events"])

    all_events = tuple(events) | "AllEvents" >> beam.Flatten()
    summaries = p | "RunLog" >> RecordRunLog(ctx.metastore, items, all_events, ctx.staging_root)
    for step, options, transform_cls in notifies:
        summaries | transform_cls(step, options, ctx)
    return summaries
