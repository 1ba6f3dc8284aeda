"""Cloud Scheduler jobs from each config's ``schedule`` (UTC cron, validated with croniter).

Each job calls the launcher's ``POST /api/v1/scheduler/trigger`` for its one pipeline with an
OIDC token of the scheduler service account; retries back off from 1 to 10 minutes for up to an
hour (the trigger is idempotent: a run already recorded for the same org and dates is skipped).
"""
from __future__ import annotations

import json
import shlex

from croniter import croniter

from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.errors import ConfigError

RETRY = {"retryCount": 3, "minBackoffDuration": "60s", "maxBackoffDuration": "600s", "maxRetryDuration": "3600s"}
ATTEMPT_DEADLINE = "180s"


def scheduler_jobs(pipelines: dict[str, LoadedPipeline], launcher_url: str, service_account: str,
                   project: str, region: str) -> list[dict]:
    missing = [n for n, v in (("LAUNCHER_URL", launcher_url), ("SCHEDULER_SERVICE_ACCOUNT", service_account),
                              ("GCP_PROJECT_ID", project), ("GCP_REGION", region)) if not v]
    if missing:
        raise ConfigError(f"schedules render needs {', '.join(missing)}")
    uri = launcher_url.rstrip("/") + "/api/v1/scheduler/trigger"
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
                "oidcToken": {"serviceAccountEmail": service_account, "audience": uri},
            },
        })
    return jobs


def gcloud_commands(jobs: list[dict]) -> list[str]:
    commands = []
    for job in jobs:
        _, _, _, location, _, name = job["name"].split("/")
        target = job["httpTarget"]
        args = [
            "gcloud", "scheduler", "jobs", "create", "http", name, f"--location={location}",
            f"--schedule={job['schedule']}", "--time-zone=UTC", f"--uri={target['uri']}", "--http-method=POST",
            "--headers=Content-Type=application/json", f"--message-body={target['body']}",
            f"--oidc-service-account-email={target['oidcToken']['serviceAccountEmail']}",
            f"--oidc-token-audience={target['oidcToken']['audience']}",
            f"--attempt-deadline={job['attemptDeadline']}", f"--max-retry-attempts={job['retryConfig']['retryCount']}",
            f"--min-backoff={job['retryConfig']['minBackoffDuration']}",
            f"--max-backoff={job['retryConfig']['maxBackoffDuration']}",
            f"--max-retry-duration={job['retryConfig']['maxRetryDuration']}",
            f"--description={job['description']}",
        ]
        commands.append(shlex.join(args))
    return commands
