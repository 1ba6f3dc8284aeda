"""Local backend: a bounded pool runs each job as a DirectRunner subprocess (`convergence job`).

Jobs beyond the pool size wait in a queue (their runs stay QUEUED). The job process updates its
own run records; when it exits, the launcher closes any run it left open as FAILED with the exit
reason (code or signal), so a crashed or killed job never stays RUNNING. On start-up, runs left
open by a previous launcher process are failed the same way.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid

from beam_pipelines.metastore import MetastoreSpec
from launcher.backends import LaunchSpec

log = logging.getLogger(__name__)


class LocalBackend:
    name = "local"

    def __init__(self, settings):
        self.settings = settings
        self.core = settings.core
        self._metastore_spec = MetastoreSpec.from_settings(self.core)
        self._queue: queue.Queue = queue.Queue()
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, name=f"local-job-{i}", daemon=True)
                         for i in range(settings.local_max_jobs)]
        self._started = False

    def start(self) -> None:
        failed = self._metastore_spec.open().fail_open_runs("launcher restarted before the job finished")
        if failed:
            log.warning("marked %d run(s) left open by a previous launcher as FAILED", len(failed))
        for worker in self._workers:
            worker.start()
        self._started = True

    def launch(self, spec: LaunchSpec) -> str:
        job_id = f"local-{uuid.uuid4().hex[:16]}"
        self._queue.put((job_id, spec))
        return job_id

    def pid(self, job_id: str) -> int | None:
        with self._lock:
            proc = self._procs.get(job_id)
            return proc.pid if proc else None

    def stop(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.terminate()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(timeout=10)

    def _command(self, spec: LaunchSpec) -> list[str]:
        command = [sys.executable, "-m", "beam_pipelines.cli.main", "--configs", str(self.core.configs_dir), "job",
                   spec.pipeline_id, "--start-date", spec.start_date.isoformat(), "--end-date",
                   spec.end_date.isoformat(), "--trigger", spec.trigger]
        for org, run_id in spec.runs:
            command += ["--run", f"{org}={run_id}"]
        return command

    def _env(self) -> dict:
        return {**os.environ, "CONVERGENCE_HOME": str(self.core.home), "ENVIRONMENT": self.core.environment,
                "OPENAI_BASE_URL": self.core.openai_base_url, "ANTHROPIC_BASE_URL": self.core.anthropic_base_url}

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job_id, spec = item
            try:
                self._run(job_id, spec)
            except Exception:  # never lose the worker thread; close the runs instead
                log.exception("local job %s could not run", job_id)
                self._metastore_spec.open().fail_open_runs("job could not be started", spec.run_ids)

    def _run(self, job_id: str, spec: LaunchSpec) -> None:
        log_dir = self.core.log_dir / "jobs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{job_id}.log", "ab") as out:
            # An argument list, no shell; every value is a known pipeline id, an authenticated org slug,
            # a server-made run id or a validated date.
            proc = subprocess.Popen(self._command(spec), stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                    env=self._env(), stdin=subprocess.DEVNULL, start_new_session=True)
            with self._lock:
                self._procs[job_id] = proc
            code = proc.wait()
        with self._lock:
            self._procs.pop(job_id, None)
        if code < 0:
            reason = f"job {job_id} was killed by signal {signal.Signals(-code).name}"
        else:
            reason = f"job {job_id} exited with code {code} before recording the run"
        closed = self._metastore_spec.open().fail_open_runs(reason, spec.run_ids)
        log.info("job %s ended with %s; %d run(s) closed by the launcher", job_id, code, len(closed))
