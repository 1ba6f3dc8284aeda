"""What the routes do, in plain Python (sync; called from FastAPI's threadpool).

A run request goes through the checks in the documented order, each with its own status code:
401 key → 403 org → 403 subscription → 404 pipeline → 422 dates/body → 409 credential →
409 duplicate → 429 quota; then the run is recorded (QUEUED) and launched.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import date, datetime, time, timedelta, timezone
from datetime import date as Day

from croniter import croniter
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from beam_pipelines.config.loader import resolve_pipeline_ref
from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.errors import NotFoundError
from beam_pipelines.metastore import ELIGIBLE_SUBSCRIPTIONS
from beam_pipelines.pipeline.dates import DateRangeError, resolve_range
from launcher.auth import authenticate_org_key
from launcher.backends import LaunchSpec
from launcher.problems import ApiProblem

log = logging.getLogger(__name__)
SEGMENT = re.compile(r"^[a-z0-9_]{1,64}$")
RUN_FIELDS = ("pipeline_logging_id", "org_slug", "pipeline_id", "status", "trigger_type", "start_date", "end_date",
              "rows_written", "error_message", "job_id", "runner", "created_at", "started_at", "ended_at", "duration_ms")
STEP_FIELDS = ("step_id", "ps_type", "status", "rows_processed", "error_message", "started_at", "ended_at", "duration_ms")


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    date: Day | None = None
    start_date: Day | None = None
    end_date: Day | None = None

    @model_validator(mode="after")
    def _one_form(self):
        if self.date and (self.start_date or self.end_date):
            raise ValueError("give either date or start_date/end_date, not both")
        if self.end_date and not self.start_date:
            raise ValueError("end_date needs start_date")
        return self


class TriggerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipelines: list[str] | None = None
    date: Day | None = None


def parse_body(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(422, "invalid_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiProblem(422, "invalid_request", "body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = "unexpected field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ApiProblem(422, "invalid_request", f"{where}: {message}") from None


def next_utc_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), time.min, timezone.utc)


def run_view(run: dict, steps: list[dict] | None = None) -> dict:
    view = {k: run.get(k) for k in RUN_FIELDS}
    if steps is not None:
        view["steps"] = [{k: s.get(k) for k in STEP_FIELDS} for s in steps]
    return view


class LaunchService:
    def __init__(self, settings, backend, pipelines: dict[str, LoadedPipeline], metastore):
        self.settings = settings
        self.backend = backend
        self.pipelines = pipelines
        self.metastore = metastore

    # pipeline runs ---------------------------------------------------------------------------------
    def run_pipeline(self, api_key: str | None, org: str, segments: list[str], raw_body: bytes,
                     now: datetime | None = None) -> dict:
        now = now or datetime.now(timezone.utc)
        key = authenticate_org_key(api_key, self.metastore)  # 1
        if key["org_slug"] != org:  # 2
            raise ApiProblem(403, "forbidden", "this API key does not belong to the org in the path")
        self._check_subscription(org, now.date())  # 3
        loaded = self._pipeline(segments)  # 4
        body = parse_body(RunBody, raw_body)  # 5
        try:
            start, end = resolve_range(body.date or body.start_date, body.date or body.end_date,
                                       loaded.config.max_range_days, today=now.date(),
                                       trailing_days=loaded.config.trailing_days)
        except DateRangeError as exc:
            raise ApiProblem(422, "invalid_dates", str(exc)) from None
        provider = loaded.config.credential
        if self.metastore.get_credential(org, provider) is None:  # 6
            raise ApiProblem(409, "no_credential", f"org has no active {provider} credential")
        run_id = uuid.uuid4().hex
        quota = self.metastore.get_daily_quota(org)
        reservation = self.metastore.reserve_run(  # 7 and 8, atomically
            {"pipeline_logging_id": run_id, "org_slug": org, "pipeline_id": loaded.pipeline_id, "status": "QUEUED",
             "trigger_type": "api", "start_date": start, "end_date": end, "runner": self.backend.name,
             "created_at": now},
            daily_limit=self.settings.default_daily_quota if quota is None else quota,
            since=datetime.combine(now.date(), time.min, timezone.utc),
        )
        if reservation.outcome == "duplicate":
            raise ApiProblem(409, "duplicate_run", "a run of this pipeline for these dates is already queued or running",
                             pipeline_logging_id=reservation.run_id)
        if reservation.outcome == "quota":
            retry = int((next_utc_midnight(now) - now).total_seconds()) + 1
            raise ApiProblem(429, "quota_exceeded", f"daily pipeline quota reached ({reservation.used} runs today)",
                             {"Retry-After": str(retry)})
        job_id = self._launch(LaunchSpec(loaded.pipeline_id, ((org, run_id),), start, end, "api"))
        log.info("run launched", extra={"org_slug": org, "pipeline_id": loaded.pipeline_id, "run_id": run_id})
        return {"pipeline_logging_id": run_id, "status": "QUEUED", "job_id": job_id, "org_slug": org,
                "pipeline_id": loaded.pipeline_id, "start_date": start.isoformat(), "end_date": end.isoformat()}

    def _check_subscription(self, org: str, today: date) -> None:
        subscription = self.metastore.get_subscription(org)
        status = subscription["status"] if subscription else "NONE"
        if status not in ELIGIBLE_SUBSCRIPTIONS:
            raise ApiProblem(403, "subscription_inactive", f"subscription status is {status}", subscription_status=status)
        ends = subscription.get("trial_ends_at")
        if status == "TRIAL" and ends and date.fromisoformat(ends) < today:
            raise ApiProblem(403, "subscription_inactive", f"trial ended on {ends}", subscription_status="TRIAL_EXPIRED")

    def _pipeline(self, segments: list[str]) -> LoadedPipeline:
        if not all(SEGMENT.match(s) for s in segments):
            raise ApiProblem(404, "not_found", "no such pipeline")
        try:
            return self.pipelines[resolve_pipeline_ref("/".join(segments), set(self.pipelines))]
        except NotFoundError:
            raise ApiProblem(404, "not_found", "no such pipeline") from None

    def _launch(self, spec: LaunchSpec) -> str:
        try:
            job_id = self.backend.launch(spec)
        except Exception as exc:
            log.exception("launch failed for %s", spec.pipeline_id)
            self.metastore.fail_open_runs(f"launch failed: {type(exc).__name__}", spec.run_ids)
            raise ApiProblem(503, "launch_failed", "the job could not be launched; the run is recorded as FAILED") from None
        for run_id in spec.run_ids:
            self.metastore.update_run(run_id, job_id=job_id)
        return job_id

    def get_run(self, api_key: str | None, run_id: str) -> dict:
        key = authenticate_org_key(api_key, self.metastore)
        run = self.metastore.get_run(run_id) if SEGMENT.match(run_id) else None
        if run is None or run["org_slug"] != key["org_slug"]:  # another org's run does not exist for you
            raise ApiProblem(404, "not_found", "no such run")
        view = run_view(run, self.metastore.list_steps(run_id))
        view["data_quality"] = [{k: r[k] for k in ("table_name", "expectation_type", "severity", "success", "observed_value")}
                                for r in self.metastore.list_dq_results(run_id)]
        return view

    def list_runs(self, api_key: str | None, limit: int, status: str | None) -> dict:
        key = authenticate_org_key(api_key, self.metastore)
        if status is not None and status not in ("QUEUED", "RUNNING", "COMPLETED", "FAILED"):
            raise ApiProblem(422, "invalid_request", "status: must be QUEUED, RUNNING, COMPLETED or FAILED")
        if not 1 <= limit <= 200:
            raise ApiProblem(422, "invalid_request", "limit: must be between 1 and 200")
        runs = self.metastore.list_runs(org_slug=key["org_slug"], status=status, limit=limit)
        return {"runs": [run_view(r) for r in runs]}

    # scheduler ------------------------------------------------------------------------------------
    def due_pipelines(self, requested: list[str] | None, now: datetime) -> list[LoadedPipeline]:
        if requested:
            out = []
            for ref in requested:
                out.append(self._pipeline(ref.strip("/").split("/")))
            return out
        day_start = datetime.combine(now.date(), time.min, timezone.utc)
        return [p for p in self.pipelines.values()
                if p.config.schedule and croniter(p.config.schedule, day_start - timedelta(seconds=1)).get_next(datetime) <= now]

    def trigger(self, raw_body: bytes, now: datetime | None = None) -> dict:
        now = now or datetime.now(timezone.utc)
        body = parse_body(TriggerBody, raw_body)
        day = body.date or (now.date() - timedelta(days=1))
        if day > now.date():
            raise ApiProblem(422, "invalid_dates", f"date {day} is in the future")
        launched = []
        for loaded in self.due_pipelines(body.pipelines, now):
            start = day - timedelta(days=loaded.config.trailing_days - 1)
            runs = []
            for org in self.metastore.eligible_orgs(loaded.config.credential, now.date()):
                run_id = uuid.uuid4().hex
                reservation = self.metastore.reserve_run(
                    {"pipeline_logging_id": run_id, "org_slug": org, "pipeline_id": loaded.pipeline_id,
                     "status": "QUEUED", "trigger_type": "scheduler", "start_date": start, "end_date": day,
                     "runner": self.backend.name, "created_at": now},
                    daily_limit=None, since=now, dedupe_statuses=("QUEUED", "RUNNING", "COMPLETED"),
                )
                if reservation.outcome == "created":
                    runs.append((org, run_id))
            job_id = self._launch(LaunchSpec(loaded.pipeline_id, tuple(runs), start, day, "scheduler")) if runs else None
            launched.append({"pipeline_id": loaded.pipeline_id, "job_id": job_id, "runs": len(runs),
                             "pipeline_logging_ids": [r for _, r in runs]})
        return {"date": day.isoformat(), "launched": launched}
