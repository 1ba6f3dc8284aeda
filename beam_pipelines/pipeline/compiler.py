"""Compile a validated pipeline config into a Beam graph.

    Create(org work items) → Reshuffle → extract (admit + decrypt + fetch) → transforms
      → stage each table → commit per org + run log → notify

Steps are looked up in the registry by ``ps_type``; each receives its options as parsed when the
config was loaded. Load steps are applied after every other step, so each receives the complete
set of failed runs as a side input and stages nothing for an org that failed upstream; the commit
stage then replaces an org's tables only if no step of that org failed.
"""
from __future__ import annotations

import apache_beam as beam

from beam_pipelines.registry import lookup
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import WorkItem
from beam_pipelines.transforms.runlog import RecordRunLog
from beam_pipelines.transforms.step import pcollections


def _failed_run(event) -> list[str]:
    return [event.run_id] if event.failed else []


def compile_pipeline(p: beam.Pipeline, ctx: RunContext, work_items: list[WorkItem]):
    """Add the pipeline's graph to ``p``; returns the PCollection of per-org run summaries."""
    items = (
        p
        | "CreateOrgWorkItems" >> beam.Create(work_items)
        | "SpreadOrgs" >> beam.Reshuffle()
    )
    loaded = ctx.pipeline
    outputs: dict[str, beam.PCollection] = {}
    events: list[beam.PCollection] = []
    loads, notifies, staged = [], [], []  # events and staged: every step's PCollections, flattened once each
    for step in loaded.config.steps:
        entry = lookup(step.ps_type)
        options = loaded.options(step.step_id)
        transform_cls = entry.load_transform()
        if entry.kind in ("load", "notify"):
            (loads if entry.kind == "load" else notifies).append((step, options, transform_cls))
            continue
        if entry.kind == "extract":
            result = items | transform_cls(step, options, ctx)
        else:  # a transform may also need the run's work items (its orgs and days), e.g. the ledger
            result = outputs[step.input] | transform_cls(step, options, ctx, work_items=items)
        outputs[step.step_id] = result["main"]
        events += pcollections(result["events"])
        if "staged" in result:  # steps that write whole tables (seed) stage them for the same commit
            staged += pcollections(result["staged"])

    failed_runs = (  # each step's failed runs picked where its events are made; only those are flattened
        tuple(step_events | f"FailedRuns{n}" >> beam.FlatMap(_failed_run) for n, step_events in enumerate(events))
        | "FailedRunIds" >> beam.Flatten()
        | "DistinctFailed" >> beam.Distinct()
    )
    for step, options, transform_cls in loads:
        result = outputs[step.input] | transform_cls(step, options, ctx, failed_runs=failed_runs)
        events += pcollections(result["events"])
        staged += pcollections(result["staged"])

    summaries = p | "RunLog" >> RecordRunLog(ctx, [(s.step_id, o) for s, o, _ in loads], items, events, staged)
    for step, options, transform_cls in notifies:
        summaries | transform_cls(step, options, ctx)
    return summaries
