"""Entry point of the Dataflow Flex Template (``templates/main.py``).

The template is built once per pipeline with ``CONVERGENCE_PIPELINE`` in its launcher environment;
the launcher API passes org slugs, run ids and dates (never a secret) as template parameters. The
graph is the same one the local runner builds; ``run()`` submits it and returns without waiting,
as a Flex Template launcher must.
"""
from __future__ import annotations

import argparse
import os
import re
from datetime import date, datetime, timezone

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.config import load_pipeline
from beam_pipelines.errors import ConfigError
from beam_pipelines.pipeline.compiler import compile_pipeline
from beam_pipelines.settings import load_settings
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import WorkItem

ORG_LIST = r"^[a-z][a-z0-9_]{2,49}(,[a-z][a-z0-9_]{2,49})*$"
RUN_ID_LIST = r"^[0-9a-f]{32}(,[0-9a-f]{32})*$"
DAY = r"^\d{4}-\d{2}-\d{2}$"
ENVIRONMENT = r"^(development|staging|production)$"

PARAMETERS = (  # (name, label, help, optional, regex): the contract with templates/metadata/*.json
    ("org_slugs", "Org slugs", "Comma-separated org slugs to run, in the same order as run_ids.", False, ORG_LIST),
    ("run_ids", "Run ids", "Comma-separated pipeline_logging_id of each org's recorded run.", False, RUN_ID_LIST),
    ("start_date", "Start date", "First UTC day to process (YYYY-MM-DD).", False, DAY),
    ("end_date", "End date", "Last UTC day to process, inclusive (YYYY-MM-DD).", False, DAY),
    ("environment", "Environment", "development, staging or production (selects the {org}_{env} datasets).", True,
     ENVIRONMENT),
)


def parse_work_items(args: argparse.Namespace) -> list[WorkItem]:
    for name, _, _, _, regex in PARAMETERS:
        value = getattr(args, name)
        if value is not None and not re.match(regex, value):
            raise ConfigError(f"template parameter {name}: {value!r} does not match {regex}")
    orgs, run_ids = args.org_slugs.split(","), args.run_ids.split(",")
    if len(orgs) != len(run_ids):
        raise ConfigError("template parameters org_slugs and run_ids must have the same length")
    start, end = date.fromisoformat(args.start_date), date.fromisoformat(args.end_date)
    if end < start:
        raise ConfigError("template parameter end_date is before start_date")
    return [WorkItem(org, run_id, start, end) for org, run_id in zip(orgs, run_ids)]


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    parser = argparse.ArgumentParser()
    for name, _, help_text, optional, _ in PARAMETERS:
        parser.add_argument(f"--{name}", required=not optional, help=help_text)
    args, beam_args = parser.parse_known_args(argv)
    if args.environment:
        os.environ["ENVIRONMENT"] = args.environment
    settings = load_settings()
    pipeline_id = os.environ.get("CONVERGENCE_PIPELINE", "")
    loaded = load_pipeline(settings.configs_dir, pipeline_id)
    items = parse_work_items(args)
    ctx = RunContext.from_settings(settings, loaded, datetime.now(timezone.utc), tuple(i.org_slug for i in items))
    p = beam.Pipeline(options=PipelineOptions(beam_args, save_main_session=False))
    compile_pipeline(p, ctx, items)
    return p.run()  # no wait_until_finish: Dataflow runs the job after the launcher exits
