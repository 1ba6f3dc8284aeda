"""What the routes do, in plain Python (sync; called from FastAPI's threadpool).

A run request goes through the checks in the documented order, each with its own status code:
401 key → 403 org → 403 subscription → 404 pipeline → 415/422 body and dates → 409 credential →
409 duplicate → 429 quota; then the run is recorded (QUEUED, leased by this launcher) and launched.
"""
from __future__ import annotations

import json
import logging
import uuid
from datetime import date as Day
from datetime import datetime, time, timedelta, timezone

from croniter import croniter
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from beam_pipelines.config.loader import resolve_pipeline_ref
from beam_pipelines.config.models import SEGMENT, LoadedPipeline
from beam_pipelines.errors import ConvergenceError, NotFoundError
from beam_pipelines.metastore.base import OPEN_STATUSES, RUN_STATUSES, new_run
from beam_pipelines.orgs import is_org_slug
from beam_pipelines.pipeline.dates import DateRangeError, parse_day, resolve_range
from beam_pipelines.runs.admission import subscription_refusal
from launcher.auth import authenticate_org_key
from launcher.backends import LaunchSpec
from launcher.problems import ApiProblem

log = logging.getLogger(__name__)
RUN_FIELDS = ("pipeline_logging_id", "org_slug", "pipeline_id", "config_path", "status", "trigger_type", "start_date",
              "end_date", "rows_written", "error_message", "job_id", "runner", "created_at", "started_at", "ended_at",
              "duration_ms", "outcome")
STEP_FIELDS = ("step_id", "ps_type", "status", "rows_processed", "error_message", "started_at", "ended_at", "duration_ms")
DQ_FIELDS = ("table_name", "expectation_type", "severity", "success", "kwargs", "observed_value")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _days(cls, value, info):
        if value is None or info.field_name == "pipelines":
            return value
        try:
            return parse_day(value, info.field_name)
        except DateRangeError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None


class RunBody(_Body):
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


class TriggerBody(_Body):
    pipelines: list[str] | None = None
    date: Day | None = None


def check_json(content_type: str, body: bytes) -> None:
    media = content_type.split(";", 1)[0].strip().lower()
    if body.strip() and media != "application/json":
        raise ApiProblem(415, "unsupported_media_type", "the body must be application/json")


def parse_body(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(422, "invalid_request", "body is not valid JSON") from None
    except RecursionError:
        raise ApiProblem(422, "invalid_request", "body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiProblem(422, "invalid_request", "body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = "unexpected field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
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
        self.system = settings.core.system
        self._warehouse = None

    # pipeline runs ---------------------------------------------------------------------------------
    def run_pipeline(self, api_key: str | None, org: str, segments: list[str], raw_body: bytes,
                     content_type: str = "application/json", now: datetime | None = None) -> dict:
        now = now or datetime.now(timezone.utc)
        key = authenticate_org_key(api_key, self.metastore)  # 1
        if key["org_slug"] != org or not is_org_slug(org):  # 2
            raise ApiProblem(403, "forbidden", "this API key does not belong to the org in the path")
        refusal = subscription_refusal(self.metastore.get_subscription(org), now.date())  # 3
        if refusal is not None:
            raise ApiProblem(403, "subscription_inactive", str(refusal), subscription_status=refusal.code)
        loaded = self._pipeline(segments)  # 4
        check_json(content_type, raw_body)  # 5
        body = parse_body(RunBody, raw_body)
        try:
            start, end = resolve_range(body.date or body.start_date, body.date or body.end_date,
                                       loaded.config.max_range_days, today=now.date(),
                                       trailing_days=loaded.config.trailing_days)
        except DateRangeError as exc:
            raise ApiProblem(422, "invalid_dates", str(exc)) from None
        provider = loaded.config.credential
        if self.metastore.get_credential(org, self.system.integration(provider)) is None:  # 6
            raise ApiProblem(409, "no_credential", f"org has no active {provider} credential")
        run = new_run(uuid.uuid4().hex, org, loaded.pipeline_id, start, end, "QUEUED", "api", self.backend.name,
                      self.backend.owner_id, now, self.backend.lease_until(now))
        quota = self.metastore.get_daily_quota(org)
        reservation = self.metastore.reserve_run(  # 7 and 8
            run, daily_limit=self.settings.default_daily_quota if quota is None else quota,
            since=datetime.combine(now.date(), time.min, timezone.utc))
        if reservation.outcome == "duplicate":
            raise ApiProblem(409, "duplicate_run", "a run of this pipeline for these dates is already queued or running",
                             pipeline_logging_id=reservation.run_id)
        if reservation.outcome == "quota":
            retry = int((next_utc_midnight(now) - now).total_seconds()) + 1
            raise ApiProblem(429, "quota_exceeded", f"daily pipeline quota reached ({reservation.used} runs today)",
                             {"Retry-After": str(retry)})
        run_id = run["pipeline_logging_id"]
        job_id = self._launch(LaunchSpec(loaded.pipeline_id, ((org, run_id),), start, end, "api"))
        log.info("run launched", extra={"org_slug": org, "pipeline_id": loaded.pipeline_id, "run_id": run_id})
        return {"pipeline_logging_id": run_id, "status": "QUEUED", "job_id": job_id, "org_slug": org,
                "pipeline_id": run["pipeline_id"], "config_path": loaded.pipeline_id, "start_date": start.isoformat(),
                "end_date": end.isoformat()}

    def _pipeline(self, segments: list[str]) -> LoadedPipeline:
        if not all(SEGMENT.match(s) and len(s) <= 64 for s in segments):
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
            reason = str(exc) if isinstance(exc, ConvergenceError) else type(exc).__name__
            self.metastore.fail_open_runs(f"launch failed: {reason}", spec.run_ids)
            raise ApiProblem(503, "launch_failed", "the job could not be launched; the run is recorded as FAILED") from None
        self.metastore.close_runs([{"pipeline_logging_id": r, "job_id": job_id} for r in spec.run_ids])
        return job_id

    def get_run(self, api_key: str | None, run_id: str) -> dict:
        key = authenticate_org_key(api_key, self.metastore)
        run = self.metastore.get_run(run_id) if SEGMENT.match(run_id) and len(run_id) <= 64 else None
        if run is None or run["org_slug"] != key["org_slug"]:  # another org's run does not exist for you
            raise ApiProblem(404, "not_found", "no such run")
        view = run_view(run, self.metastore.list_steps(run_id))
        view["data_quality"] = [{k: r[k] for k in DQ_FIELDS} for r in self.metastore.list_dq_results(run_id)]
        view["reconciliation"] = self.reconciliation(run)
        return view

    def reconciliation(self, run: dict) -> list[dict]:
        """The ledger's status of the run's days for its provider (LLM pipelines; empty before a ledger run)."""
        from beam_pipelines.ledger.report import ledger_days
        from beam_pipelines.warehouse.base import WarehouseSpec

        provider = (run.get("config_path") or "").split("/")[0]
        if provider not in ("openai", "anthropic") or not run.get("start_date") or not run.get("end_date"):
            return []
        if self._warehouse is None:
            self._warehouse = WarehouseSpec.from_settings(self.settings.core).open()
        rows = ledger_days(self._warehouse, self.settings.core.org_dataset(run["org_slug"]), run["start_date"],
                           run["end_date"], provider)
        return [{"usage_date": r["usage_date"].isoformat(), "status": r["status"],
                 "computed_cost_usd": str(r["computed_cost_usd"]), "billed_cost_usd": str(r["billed_cost_usd"]),
                 "variance_usd": str(r["variance_usd"])} for r in rows]

    def list_runs(self, api_key: str | None, limit: int, status: str | None) -> dict:
        key = authenticate_org_key(api_key, self.metastore)
        if status is not None and status not in RUN_STATUSES:
            raise ApiProblem(422, "invalid_request", "status: must be QUEUED, RUNNING, COMPLETED or FAILED")
        if not 1 <= limit <= 200:
            raise ApiProblem(422, "invalid_request", "limit: must be between 1 and 200")
        runs = self.metastore.list_runs(org_slug=key["org_slug"], status=status, limit=limit)
        return {"runs": [run_view(r) for r in runs]}

    # scheduler ------------------------------------------------------------------------------------
    def due_pipelines(self, requested: list[str] | None, now: datetime) -> list[LoadedPipeline]:
        if requested:
            return [self._pipeline(ref.strip("/").split("/")) for ref in requested]
        day_start = datetime.combine(now.date(), time.min, timezone.utc)
        return [p for p in self.pipelines.values()
                if p.config.schedule and croniter(p.config.schedule, day_start - timedelta(seconds=1)).get_next(datetime) <= now]

    def trigger(self, raw_body: bytes, now: datetime | None = None) -> dict:
        """Reserve every eligible org of each due pipeline in one statement, then launch one job each."""
        now = now or datetime.now(timezone.utc)
        body = parse_body(TriggerBody, raw_body)
        day = body.date or (now.date() - timedelta(days=1))
        if day > now.date():
            raise ApiProblem(422, "invalid_dates", f"date {day} is in the future")
        launched = []
        for loaded in self.due_pipelines(body.pipelines, now):
            start = day - timedelta(days=loaded.config.trailing_days - 1)
            integration = self.system.integration(loaded.config.credential)
            candidates = [new_run(uuid.uuid4().hex, org, loaded.pipeline_id, start, day, "QUEUED", "scheduler",
                                  self.backend.name, self.backend.owner_id, now, self.backend.lease_until(now))
                          for org in self.metastore.eligible_orgs(integration, now.date())]
            created = set(self.metastore.reserve_runs(candidates, (*OPEN_STATUSES, "COMPLETED")))
            runs = tuple((r["org_slug"], r["pipeline_logging_id"]) for r in candidates
                         if r["pipeline_logging_id"] in created)
            job_id = self._launch(LaunchSpec(loaded.pipeline_id, runs, start, day, "scheduler")) if runs else None
            launched.append({"pipeline_id": loaded.pipeline_id, "job_id": job_id, "runs": len(runs),
                             "pipeline_logging_ids": [r for _, r in runs]})
        return {"date": day.isoformat(), "launched": launched}

    # reconciliation -------------------------------------------------------------------------------
    def reconcile(self) -> dict:
        """Close runs of dead owners and of jobs that ended without recording them."""
        return self.backend.reconcile()
