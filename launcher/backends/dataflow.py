"""Dataflow backend: launch the pipeline's Flex Template; read job state back.

The template spec lives at ``{DATAFLOW_TEMPLATES_PATH}/{provider}_{domain}_{pipeline}.json``.
Parameters carry org slugs, run ids, dates and the environment: never a secret (workers read
ciphertext from the metastore and decrypt with KMS themselves).
"""
from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timezone

from beam_pipelines.errors import ConvergenceError
from launcher.backends import LaunchSpec

log = logging.getLogger(__name__)

STATES = {  # Dataflow JOB_STATE_* → our run status
    "JOB_STATE_PENDING": "QUEUED", "JOB_STATE_QUEUED": "QUEUED", "JOB_STATE_NOT_STARTED": "QUEUED",
    "JOB_STATE_RUNNING": "RUNNING", "JOB_STATE_DRAINING": "RUNNING", "JOB_STATE_CANCELLING": "RUNNING",
    "JOB_STATE_RESOURCE_CLEANING_UP": "RUNNING", "JOB_STATE_DONE": "COMPLETED", "JOB_STATE_DRAINED": "COMPLETED",
    "JOB_STATE_FAILED": "FAILED", "JOB_STATE_CANCELLED": "FAILED", "JOB_STATE_STOPPED": "FAILED",
    "JOB_STATE_UPDATED": "FAILED", "JOB_STATE_UNKNOWN": "RUNNING",
}


def job_name(pipeline_id: str, first_run_id: str, now: datetime | None = None) -> str:
    """Unique, Dataflow-valid ([a-z]([-a-z0-9]*[a-z0-9])?), at most 63 characters."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^a-z0-9-]", "-", pipeline_id.replace("/", "-").replace("_", "-"))[:36].strip("-")
    return f"{base}-{stamp}-{first_run_id[:8].lower()}"


class DataflowBackend:
    """Launches Flex Template jobs and reconciles their fate into the run records.

    A job normally closes its own runs (the graph's run-log stage). A job that fails, is
    cancelled, or ends without recording would leave them open, so a background loop reads each
    open run's job state every ``poll_seconds`` and closes such runs as FAILED with the state.
    """

    name = "dataflow"

    def __init__(self, settings, templates_client=None, jobs_client=None, metastore=None, poll_seconds: float = 60.0):
        self.settings = settings
        self._templates = templates_client
        self._jobs = jobs_client
        self._metastore = metastore
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        missing = [n for n, v in (("GCP_PROJECT_ID", self.settings.core.gcp_project), ("GCP_REGION", self.settings.gcp_region),
                                  ("DATAFLOW_TEMPLATES_PATH", self.settings.templates_path)) if not v]
        if missing:
            raise ConvergenceError(f"dataflow backend needs {', '.join(missing)}")
        from google.cloud import dataflow_v1beta3

        self._templates = self._templates or dataflow_v1beta3.FlexTemplatesServiceClient()
        self._jobs = self._jobs or dataflow_v1beta3.JobsV1Beta3Client()
        if self._metastore is None:
            from beam_pipelines.metastore import MetastoreSpec

            self._metastore = MetastoreSpec.from_settings(self.settings.core).open()
        self._thread = threading.Thread(target=self._loop, name="dataflow-reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.reconcile_once()
            except Exception:  # the next round tries again; never kill the loop
                log.exception("reconciling Dataflow jobs failed")

    def reconcile_once(self) -> list[str]:
        """Close the open runs of jobs that ended without recording them; returns the run ids closed."""
        jobs: dict[str, list[str]] = {}
        for status in ("QUEUED", "RUNNING"):
            for run in self._metastore.list_runs(status=status, limit=500):
                if run.get("job_id") and run.get("runner") == self.name:
                    jobs.setdefault(run["job_id"], []).append(run["pipeline_logging_id"])
        closed = []
        for job_id, run_ids in jobs.items():
            state = self.status(job_id)
            if state in ("FAILED", "COMPLETED"):
                reason = (f"Dataflow job {job_id} failed or was cancelled" if state == "FAILED"
                          else f"Dataflow job {job_id} finished without recording this run")
                closed += self._metastore.fail_open_runs(reason, run_ids)
        return closed

    def launch_request(self, spec: LaunchSpec):
        from google.cloud import dataflow_v1beta3 as df

        template = spec.pipeline_id.replace("/", "_")
        environment = df.FlexTemplateRuntimeEnvironment(
            service_account_email=self.settings.dataflow_service_account,
            temp_location=self.settings.dataflow_temp_location,
            additional_user_labels={"pipeline": template[:63], "trigger": spec.trigger,
                                    "environment": self.settings.core.environment},
        )
        return df.LaunchFlexTemplateRequest(
            project_id=self.settings.core.gcp_project,
            location=self.settings.gcp_region,
            launch_parameter=df.LaunchFlexTemplateParameter(
                job_name=job_name(spec.pipeline_id, spec.run_ids[0]),
                container_spec_gcs_path=f"{self.settings.templates_path.rstrip('/')}/{template}.json",
                parameters={
                    "org_slugs": ",".join(org for org, _ in spec.runs),
                    "run_ids": ",".join(spec.run_ids),
                    "start_date": spec.start_date.isoformat(),
                    "end_date": spec.end_date.isoformat(),
                    "environment": self.settings.core.environment,
                    **({"sdk_container_image": self.settings.dataflow_sdk_image}
                       if self.settings.dataflow_sdk_image else {}),
                },
                environment=environment,
            ),
        )

    def launch(self, spec: LaunchSpec) -> str:
        response = self._templates.launch_flex_template(request=self.launch_request(spec))
        return response.job.id

    def status(self, job_id: str) -> str:
        from google.cloud import dataflow_v1beta3 as df

        job = self._jobs.get_job(request=df.GetJobRequest(
            project_id=self.settings.core.gcp_project, location=self.settings.gcp_region, job_id=job_id))
        return STATES.get(df.JobState(job.current_state).name, "RUNNING")
