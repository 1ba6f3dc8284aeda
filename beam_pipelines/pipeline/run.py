"""Run a pipeline for a set of orgs on a local Beam runner, recording one run per org.

Run records are created (RUNNING) before the graph is built; the graph's run-log stage closes
them. If the whole job dies, every record it left open is closed here as FAILED with the reason,
so nothing stays RUNNING.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.config import load_pipeline
from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.errors import NotFoundError
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.pipeline.compiler import compile_pipeline
from beam_pipelines.pipeline.dates import resolve_range, utc_today
from beam_pipelines.settings import Settings
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import WorkItem
from beam_pipelines.transforms.fetch import one_line_error

log = logging.getLogger(__name__)
LOCAL_RUNNER = "FnApiRunner"  # the DirectRunner's in-process engine, without the Prism download


@dataclass
class RunRequest:
    pipeline_ref: str
    orgs: list[str] = field(default_factory=list)
    all_orgs: bool = False
    start_date: date | None = None
    end_date: date | None = None
    trigger: str = "cli"
    run_ids: dict[str, str] | None = None  # org → pre-created run id (launcher)
    runner: str = LOCAL_RUNNER


@dataclass
class RunResult:
    pipeline_id: str
    start_date: date
    end_date: date
    runs: list[dict]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.runs if r["status"] != "COMPLETED"]


def plan_runs(settings: Settings, request: RunRequest) -> tuple[LoadedPipeline, list[WorkItem]]:
    """Validate the request and create one RUNNING run record per org."""
    loaded = load_pipeline(settings.configs_dir, request.pipeline_ref)
    config = loaded.config
    # Pre-recorded runs (launcher jobs) carry their final dates; new runs widen for late data.
    if request.run_ids:
        max_days, trailing = config.max_range_days + config.trailing_days - 1, 1
    else:
        max_days, trailing = config.max_range_days, config.trailing_days
    start, end = resolve_range(request.start_date, request.end_date, max_days, trailing_days=trailing)
    metastore = MetastoreSpec.from_settings(settings).open()
    try:
        if request.all_orgs:
            orgs = metastore.eligible_orgs(config.credential, utc_today())
        else:
            orgs = list(dict.fromkeys(request.orgs))
            for org in orgs:
                if metastore.get_org(org) is None:
                    raise NotFoundError(f"org {org!r} does not exist (create it with `convergence dev seed-org`)")
        if not orgs:
            raise NotFoundError(f"no org to run {loaded.pipeline_id} for")
        items = []
        now = datetime.now(timezone.utc)
        for org in orgs:
            run_id = (request.run_ids or {}).get(org)
            if run_id is None:
                run_id = uuid.uuid4().hex
                metastore.create_run({
                    "pipeline_logging_id": run_id, "org_slug": org, "pipeline_id": loaded.pipeline_id,
                    "status": "RUNNING", "trigger_type": request.trigger, "start_date": start,
                    "end_date": end, "runner": request.runner, "created_at": now, "started_at": now,
                })
            else:
                metastore.update_run(run_id, status="RUNNING", started_at=now, runner=request.runner)
            items.append(WorkItem(org, run_id, start, end))
        return loaded, items
    finally:
        metastore.close()


def execute(settings: Settings, loaded: LoadedPipeline, items: list[WorkItem], runner: str = LOCAL_RUNNER,
            on_progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Build and run the graph; close any run the job left open."""
    ctx = RunContext.from_settings(settings, loaded, datetime.now(timezone.utc),
                                   org_slugs=tuple(i.org_slug for i in items))
    metastore = MetastoreSpec.from_settings(settings).open()
    run_ids = [i.run_id for i in items]
    stop = threading.Event()
    watcher = None
    if on_progress:
        extract_step = next(s.step_id for s in loaded.config.steps if s.input is None)
        watcher = threading.Thread(
            target=_watch, args=(MetastoreSpec.from_settings(settings), run_ids, extract_step, on_progress, stop),
            daemon=True,
        )
        watcher.start()
    crash = None
    try:
        options = PipelineOptions(runner=runner, save_main_session=False)
        p = beam.Pipeline(options=options)
        compile_pipeline(p, ctx, items)
        p.run().wait_until_finish()
    except Exception as exc:  # the whole job died: close every run it left open
        crash = exc
        log.exception("pipeline %s crashed", loaded.pipeline_id)
    finally:
        stop.set()
        if watcher:
            watcher.join()
    runs = []
    for run_id in run_ids:
        run = metastore.get_run(run_id)
        if run["status"] in ("RUNNING", "QUEUED"):
            reason = f"job crashed: {one_line_error(crash)}" if crash else "job ended without recording this org"
            metastore.update_run(run_id, status="FAILED", error_message=reason, ended_at=datetime.now(timezone.utc))
            run = metastore.get_run(run_id)
        runs.append(run)
    metastore.close()
    items_by_run = {i.run_id: i for i in items}
    first = items_by_run[run_ids[0]]
    return RunResult(loaded.pipeline_id, first.start_date, first.end_date, runs)


def _watch(spec: MetastoreSpec, run_ids: list[str], step_id: str, on_progress, stop: threading.Event) -> None:
    metastore = spec.open()
    try:
        while not stop.wait(0.3):
            done = sum(
                1 for run_id in run_ids
                if any(s["step_id"] == step_id for s in metastore.list_steps(run_id))
            )
            on_progress(done, len(run_ids))
    finally:
        metastore.close()


def run_pipeline(settings: Settings, request: RunRequest,
                 on_progress: Callable[[int, int], None] | None = None) -> RunResult:
    loaded, items = plan_runs(settings, request)
    return execute(settings, loaded, items, request.runner, on_progress)

