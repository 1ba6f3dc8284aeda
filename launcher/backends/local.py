"""Local backend: a bounded pool runs each job as a DirectRunner subprocess (`convergence job`).

Jobs beyond the pool size wait in a queue (their runs stay QUEUED, leased by this launcher and
renewed while they wait). A job process takes its runs' leases over when it starts and keeps them
alive until it ends; when it exits, the launcher closes any run it left open as FAILED with the
exit reason (code or signal). A launcher that restarts fails nothing that is alive: runs of a live
CLI job or of a job process that outlived the launcher keep their owner; runs whose owner is gone
(their lease passed) are closed by the reaper, with what they had written.
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
from beam_pipelines.metastore.base import lease_seconds, lease_until
from beam_pipelines.runs.leases import LeaseKeeper, process_owner_id
from beam_pipelines.runs.reaper import reap_expired
from beam_pipelines.warehouse.base import WarehouseSpec
from launcher.backends import LaunchSpec

log = logging.getLogger(__name__)


class LocalBackend:
    name = "local"
    launch_waits = False  # a launch only queues the job

    def __init__(self, settings):
        self.settings = settings
        self.core = settings.core
        self.owner_id = process_owner_id("launcher")
        self._metastore_spec = MetastoreSpec.from_settings(self.core)
        self._queue: queue.Queue = queue.Queue()
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, name=f"local-job-{i}", daemon=True)
                         for i in range(settings.local_max_jobs)]
        self._keeper = LeaseKeeper(self._metastore_spec, self.owner_id, [])
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="local-reaper", daemon=True)
        self._started = False

    def lease_until(self, now=None):
        return lease_until(now)

    def start(self) -> None:
        closed = self.reconcile()
        if closed:
            log.warning("closed %d run(s) whose owner was gone", len(closed))
        self._keeper.start()
        for worker in self._workers:
            worker.start()
        self._reaper.start()
        self._started = True

    def reconcile(self) -> list[str]:
        metastore = self._metastore_spec.open()
        try:
            return reap_expired(metastore, WarehouseSpec.from_settings(self.core).open(), self.core)
        finally:
            metastore.close()

    def _reap_loop(self) -> None:
        while not self._stop.wait(max(1.0, lease_seconds() / 2)):
            try:
                self.reconcile()
            except Exception:  # the next round tries again
                log.exception("reaping runs of dead owners failed")

    def launch(self, spec: LaunchSpec) -> str:
        job_id = f"local-{uuid.uuid4().hex[:16]}"
        self._keeper.add(spec.run_ids)  # queued runs stay leased by this launcher until their job takes them
        self._queue.put((job_id, spec))
        return job_id

    def pid(self, job_id: str) -> int | None:
        with self._lock:
            proc = self._procs.get(job_id)
            return proc.pid if proc else None

    def stop(self) -> None:
        self._stop.set()
        for _ in self._workers:
            self._queue.put(None)
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.terminate()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(timeout=10)
        self._keeper.stop()

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
            finally:
                self._keeper.remove(spec.run_ids)

    def _run(self, job_id: str, spec: LaunchSpec) -> None:
        log_dir = self.core.log_dir / "jobs"
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(log_dir / f"{job_id}.log", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            # An argument list, no shell; every value is a known pipeline id, an authenticated org slug,
            # a server-made run id or a validated date.
            proc = subprocess.Popen(self._command(spec), stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                    env=self._env(), stdin=subprocess.DEVNULL, start_new_session=True)
            with self._lock:
                self._procs[job_id] = proc
            self._keeper.remove(spec.run_ids)  # the job process takes the leases over as it starts
            code = proc.wait()
        with self._lock:
            self._procs.pop(job_id, None)
        if code < 0:
            reason = f"job {job_id} was killed by signal {signal.Signals(-code).name}"
        else:
            reason = f"job {job_id} exited with code {code} before recording the run"
        closed = self._metastore_spec.open().fail_open_runs(reason, spec.run_ids)
        log.info("job %s ended with %s; %d run(s) closed by the launcher", job_id, code, len(closed))
