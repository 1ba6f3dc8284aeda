"""Dataflow backend: launch the pipeline's Flex Template; reconcile job states into run records.

The template spec lives at ``{DATAFLOW_TEMPLATES_PATH}/{provider}_{domain}_{pipeline}.json``. The
launch request carries the template parameters of :mod:`beam_pipelines.pipeline.template` (org
slugs, run ids, dates, environment, KMS key name, notification secret *names*: never a secret) and
always the worker environment: the image for the workers (``sdk_container_image``), the worker
service account, temp and staging locations, max workers, and labels naming the org set.

Runs launched here are leased to their Dataflow job for ``DATAFLOW_LEASE_HOURS``. Nothing runs in
the background (Cloud Run throttles idle CPU): ``reconcile()`` is called by a scheduled,
authenticated ``POST /api/v1/reconcile`` and reads each open run's job state. A job still pending
or running renews its runs' leases; a job that ended (done, failed, cancelled, drained, updated)
without closing a run gets it closed as FAILED with the job state.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from datetime import datetime, timedelta, timezone

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.metastore.base import OPEN_STATUSES
from beam_pipelines.runs.reaper import reap_expired
from beam_pipelines.warehouse.base import WarehouseSpec
from launcher.backends import LaunchSpec

log = logging.getLogger(__name__)

# Dataflow's JobState, as its reference defines each: not-yet-started and in-flight states keep a
# run open; terminal ones end it. STOPPED means "not yet started", not a failure; UNKNOWN is unknown.
ACTIVE_STATES = {"JOB_STATE_UNKNOWN", "JOB_STATE_STOPPED", "JOB_STATE_PENDING", "JOB_STATE_QUEUED",
                 "JOB_STATE_RUNNING", "JOB_STATE_DRAINING", "JOB_STATE_CANCELLING", "JOB_STATE_RESOURCE_CLEANING_UP"}
TERMINAL_STATES = {"JOB_STATE_DONE": "finished", "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLED": "was cancelled",
                   "JOB_STATE_DRAINED": "was drained", "JOB_STATE_UPDATED": "was replaced by an update"}


def job_name(pipeline_id: str, first_run_id: str, now: datetime | None = None) -> str:
    """Unique, Dataflow-valid ([a-z]([-a-z0-9]*[a-z0-9])?), at most 63 characters."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^a-z0-9-]", "-", pipeline_id.replace("/", "-").replace("_", "-"))[:36].strip("-")
    return f"{base}-{stamp}-{first_run_id[:8].lower()}"


def label_value(text: str) -> str:
    """A GCP label value: lowercase letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def org_set_labels(spec: LaunchSpec) -> dict[str, str]:
    orgs = sorted({org for org, _ in spec.runs})
    labels = {"org_count": str(len(orgs)),
              "org_set": hashlib.sha256(",".join(orgs).encode()).hexdigest()[:16]}
    if len(orgs) == 1:
        labels["org"] = label_value(orgs[0])
    return labels


class DataflowBackend:
    name = "dataflow"
    launch_waits = True  # a launch is a call to the Dataflow API: never on the event loop

    def __init__(self, settings, templates_client=None, jobs_client=None, metastore=None):
        self.settings = settings
        self.owner_id = "dataflow-launcher"
        self._templates = templates_client
        self._jobs = jobs_client
        self._metastore = metastore
        self.lease = timedelta(hours=float(os.environ.get("DATAFLOW_LEASE_HOURS", "6")))

    def lease_until(self, now=None):
        return (now or datetime.now(timezone.utc)) + self.lease

    def start(self) -> None:
        missing = [n for n, v in (("GCP_PROJECT_ID", self.settings.core.gcp_project), ("GCP_REGION", self.settings.gcp_region),
                                  ("DATAFLOW_TEMPLATES_PATH", self.settings.templates_path),
                                  ("DATAFLOW_SDK_CONTAINER_IMAGE", self.settings.dataflow_sdk_image),
                                  ("DATAFLOW_TEMP_LOCATION", self.settings.dataflow_temp_location)) if not v]
        if missing:
            raise ConvergenceError(f"dataflow backend needs {', '.join(missing)}")
        from google.cloud import dataflow_v1beta3

        self._templates = self._templates or dataflow_v1beta3.FlexTemplatesServiceClient()
        self._jobs = self._jobs or dataflow_v1beta3.JobsV1Beta3Client()
        if self._metastore is None:
            self._metastore = MetastoreSpec.from_settings(self.settings.core).open()

    def stop(self) -> None:
        pass

    def parameters(self, spec: LaunchSpec) -> dict[str, str]:
        core, notify = self.settings.core, self.settings.core.notify
        values = {
            "pipeline": spec.pipeline_id, "org_slugs": ",".join(org for org, _ in spec.runs),
            "run_ids": ",".join(spec.run_ids), "start_date": spec.start_date.isoformat(),
            "end_date": spec.end_date.isoformat(), "environment": core.environment,
            "bigquery_location": core.bigquery_location, "kms_key_name": core.kms_key_name,
            "kms_credential_aad": core.kms_credential_aad,
            "smtp_host": notify.smtp_host, "smtp_port": str(notify.smtp_port) if notify.smtp_host else "",
            "smtp_username": notify.smtp_username, "smtp_password_secret": notify.smtp_password_secret,
            "notify_email_from": notify.email_from if notify.smtp_host else "",
            "notify_email_to": ",".join(notify.email_to), "slack_webhook_secret": notify.slack_webhook_secret,
        }
        return {k: v for k, v in values.items() if v}

    def launch_request(self, spec: LaunchSpec):
        from google.cloud import dataflow_v1beta3 as df

        template = spec.pipeline_id.replace("/", "_")
        temp = self.settings.dataflow_temp_location.rstrip("/")
        environment = df.FlexTemplateRuntimeEnvironment(
            service_account_email=self.settings.dataflow_service_account,
            temp_location=temp,
            staging_location=f"{temp}/staging",
            sdk_container_image=self.settings.dataflow_sdk_image,
            max_workers=self.settings.dataflow_max_workers,
            additional_user_labels={"pipeline": label_value(template), "trigger": label_value(spec.trigger),
                                    "environment": label_value(self.settings.core.environment), **org_set_labels(spec)},
        )
        return df.LaunchFlexTemplateRequest(
            project_id=self.settings.core.gcp_project,
            location=self.settings.gcp_region,
            launch_parameter=df.LaunchFlexTemplateParameter(
                job_name=job_name(spec.pipeline_id, spec.run_ids[0]),
                container_spec_gcs_path=f"{self.settings.templates_path.rstrip('/')}/{template}.json",
                parameters=self.parameters(spec),
                environment=environment,
            ),
        )

    def launch(self, spec: LaunchSpec) -> str:
        response = self._templates.launch_flex_template(request=self.launch_request(spec))
        job_id = response.job.id
        self._metastore.renew_leases(spec.run_ids, f"dataflow:{job_id}", self.lease_until())
        return job_id

    def state(self, job_id: str) -> str:
        from google.cloud import dataflow_v1beta3 as df

        job = self._jobs.get_job(request=df.GetJobRequest(
            project_id=self.settings.core.gcp_project, location=self.settings.gcp_region, job_id=job_id))
        return df.JobState(job.current_state).name

    def reconcile(self) -> list[str]:
        """Close runs of ended jobs and of dead owners; renew the leases of live jobs' runs."""
        jobs: dict[str, list[str]] = {}
        for status in OPEN_STATUSES:
            for run in self._metastore.list_runs(status=status, limit=500):
                if run.get("job_id") and run.get("runner") == self.name:
                    jobs.setdefault(run["job_id"], []).append(run["pipeline_logging_id"])
        closed = []
        for job_id, run_ids in jobs.items():
            state = self.state(job_id)
            if state in TERMINAL_STATES:
                reason = f"Dataflow job {job_id} {TERMINAL_STATES[state]} without recording this run ({state})"
                closed += self._metastore.fail_open_runs(reason, run_ids)
            else:
                self._metastore.renew_leases(run_ids, f"dataflow:{job_id}", self.lease_until())
        closed += reap_expired(self._metastore, WarehouseSpec.from_settings(self.settings.core).open(),
                               self.settings.core)
        return closed
