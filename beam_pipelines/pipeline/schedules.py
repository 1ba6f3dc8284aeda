"""Cloud Scheduler jobs from each config's ``schedule`` (UTC cron, validated with croniter).

Each job calls the launcher's ``POST /api/v1/scheduler/trigger`` for its one pipeline with an
OIDC token of the scheduler service account; retries back off from 1 to 10 minutes for up to an
hour (the trigger is idempotent: a run already recorded for the same org and dates is skipped).
One more job calls ``POST /api/v1/reconcile`` every 10 minutes: Cloud Run gives an idle service no
CPU, so run states are reconciled on a schedule rather than by a background thread. Every job's
token carries one audience, the service's base URL, which is what the launcher checks
(``SCHEDULER_AUDIENCE``).
"""
from __future__ import annotations

import json
import shlex

from croniter import croniter

from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.errors import ConfigError

RETRY = {"retryCount": 3, "minBackoffDuration": "60s", "maxBackoffDuration": "600s", "maxRetryDuration": "3600s"}
ATTEMPT_DEADLINE = "180s"
RECONCILE_SCHEDULE = "*/10 * * * *"


def scheduler_jobs(pipelines: dict[str, LoadedPipeline], launcher_url: str, service_account: str,
                   project: str, region: str) -> list[dict]:
    missing = [n for n, v in (("LAUNCHER_URL", launcher_url), ("SCHEDULER_SERVICE_ACCOUNT", service_account),
                              ("GCP_PROJECT_ID", project), ("GCP_REGION", region)) if not v]
    if missing:
        raise ConfigError(f"schedules render needs {', '.join(missing)}")
    base = launcher_url.rstrip("/")
    uri = base + "/api/v1/scheduler/trigger"
    oidc = {"serviceAccountEmail": service_account, "audience": base}
    jobs = []
    for loaded in sorted(pipelines.values(), key=lambda p: p.pipeline_id):
        cron = loaded.config.schedule
        if not cron:
            continue
        if not croniter.is_valid(cron):
            raise ConfigError(f"{loaded.path}: schedule: not a valid cron expression: {cron!r}")
        body = json.dumps({"pipelines": [loaded.pipeline_id]})
        jobs.append({
            "name": f"projects/{project}/locations/{region}/jobs/convergence-{loaded.template_name.replace('_', '-')}",
            "description": f"Scheduled trigger of {loaded.pipeline_id} ({cron} UTC)",
            "schedule": cron,
            "timeZone": "UTC",
            "attemptDeadline": ATTEMPT_DEADLINE,
            "retryConfig": dict(RETRY),
            "httpTarget": {
                "uri": uri, "httpMethod": "POST", "headers": {"Content-Type": "application/json"},
                "body": body,
                "oidcToken": dict(oidc),
            },
        })
    jobs.append({
        "name": f"projects/{project}/locations/{region}/jobs/convergence-reconcile",
        "description": "Reconcile recorded runs with their Dataflow jobs (every 10 minutes)",
        "schedule": RECONCILE_SCHEDULE,
        "timeZone": "UTC",
        "attemptDeadline": "300s",
        "retryConfig": {"retryCount": 0},
        "httpTarget": {"uri": base + "/api/v1/reconcile", "httpMethod": "POST",
                       "headers": {"Content-Type": "application/json"}, "body": "{}", "oidcToken": dict(oidc)},
    })
    return jobs


RETRY_FLAGS = (("max-retry-attempts", "retryCount"), ("min-backoff", "minBackoffDuration"),
               ("max-backoff", "maxBackoffDuration"), ("max-retry-duration", "maxRetryDuration"))


def job_flags(job: dict) -> list[str]:
    """The flags ``gcloud scheduler jobs create http`` and ``update http`` share for one job (headers
    aside: ``create`` takes ``--headers``, ``update`` takes ``--update-headers``)."""
    target = job["httpTarget"]
    return [
        f"--location={job['name'].split('/')[3]}", f"--schedule={job['schedule']}", f"--time-zone={job['timeZone']}",
        f"--uri={target['uri']}", "--http-method=POST", f"--message-body={target['body']}",
        f"--oidc-service-account-email={target['oidcToken']['serviceAccountEmail']}",
        f"--oidc-token-audience={target['oidcToken']['audience']}", f"--attempt-deadline={job['attemptDeadline']}",
        *(f"--{flag}={job['retryConfig'][key]}" for flag, key in RETRY_FLAGS if key in job["retryConfig"]),
        f"--description={job['description']}",
    ]


def job_name(job: dict) -> str:
    return job["name"].rsplit("/", 1)[1]


def gcloud_commands(jobs: list[dict]) -> list[str]:
    """``create`` commands, one per job (first deploy; ``deploy/steps/11-scheduler.sh`` updates in place)."""
    return [shlex.join(["gcloud", "scheduler", "jobs", "create", "http", job_name(job), *job_flags(job),
                        "--headers=Content-Type=application/json"]) for job in jobs]


def flag_lines(jobs: list[dict]) -> list[str]:
    """One line per job, tab-separated: its name, then its flags (for scripts; no shell quoting needed)."""
    return ["\t".join([job_name(job), *job_flags(job)]) for job in jobs]
