"""Launch backends and scheduler OIDC at their boundaries: real subprocess jobs, fake Google endpoints."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from google.auth import crypt, jwt
from google.auth.credentials import AnonymousCredentials

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.warehouse.local import LocalWarehouse
from launcher.auth import google_oidc_verifier
from launcher.backends import LaunchSpec
from launcher.backends.dataflow import DataflowBackend
from launcher.backends.local import LocalBackend
from tests.http_fakes import JsonHandler, serve
from tests.launcher_support import launcher_settings, make_app, running_server

DAY = (date.today() - timedelta(days=2)).isoformat()


def wait_for(predicate, timeout=120, interval=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def test_local_job_runs_to_completed_and_rows_are_queryable(settings):
    key = seed_org(settings, "acme")["api_key"]
    app, backend = make_app(backend=LocalBackend(launcher_settings()))
    with TestClient(app) as client:
        accepted = client.post("/api/v1/pipelines/run/acme/openai/cost/usage_cost", headers={"X-API-Key": key},
                               json={"date": DAY})
        assert accepted.status_code == 202
        run_id = accepted.json()["pipeline_logging_id"]

        def finished():
            run = client.get(f"/api/v1/pipelines/runs/{run_id}", headers={"X-API-Key": key}).json()
            return run if run["status"] in ("COMPLETED", "FAILED") else None

        run = wait_for(finished)
    assert run["status"] == "COMPLETED", run["error_message"]
    assert run["rows_written"] > 0 and [s["step_id"] for s in run["steps"]][0] == "extract_usage"
    _, rows = LocalWarehouse(settings.warehouse_dir).query(
        f"SELECT COUNT(*) FROM acme_dev.openai_cost_daily WHERE usage_date = DATE '{DAY}'")
    assert rows[0][0] * 2 == run["rows_written"]


def test_killed_job_ends_failed_with_the_signal(settings, simulator):
    key = seed_org(settings, "acme")["api_key"]
    simulator.faults.add("sk-admin-sim-acme", ["slow:30"])
    backend = LocalBackend(launcher_settings())
    app, _ = make_app(backend=backend)
    with TestClient(app) as client:
        accepted = client.post("/api/v1/pipelines/run/acme/openai/cost/usage_cost", headers={"X-API-Key": key},
                               json={"date": DAY}).json()
        run_id = accepted["pipeline_logging_id"]
        store = MetastoreSpec.from_settings(settings).open()
        wait_for(lambda: store.get_run(run_id)["status"] == "RUNNING")
        pid = wait_for(lambda: backend.pid(accepted["job_id"]))
        os.killpg(pid, signal.SIGKILL)
        run = wait_for(lambda: (r := store.get_run(run_id))["status"] == "FAILED" and r)
    assert run["error_message"] == f"job {accepted['job_id']} was killed by signal SIGKILL"


def test_queued_beyond_the_pool_and_restart_fails_open_runs(settings):
    store = MetastoreSpec.from_settings(settings).open()
    seed_org(settings, "acme")
    store.create_run({"pipeline_logging_id": "left-running", "org_slug": "acme", "pipeline_id": "openai/cost/usage_cost",
                      "status": "RUNNING", "trigger_type": "api", "start_date": DAY, "end_date": DAY})
    backend = LocalBackend(launcher_settings(local_max_jobs=1))
    backend.start()
    try:
        assert store.get_run("left-running")["status"] == "FAILED"
        assert store.get_run("left-running")["error_message"] == "launcher restarted before the job finished"
    finally:
        backend.stop()


def test_production_serve_refuses_with_one_line_per_problem(home):
    env = {**os.environ, "CONVERGENCE_HOME": str(home), "ENVIRONMENT": "production", "LAUNCHER_BACKEND": "local"}
    proc = subprocess.run([sys.executable, "-m", "beam_pipelines.cli.main", "serve", "--port", "0"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "error: launcher refuses to start:"
    assert {line.split(":")[0].strip(" -") for line in lines[1:]} == {
        "CA_ROOT_KEY", "KMS_KEY_NAME", "CORS_ORIGINS", "CONVERGENCE_METASTORE", "LAUNCHER_BACKEND"}


class FakeDataflow(JsonHandler):
    requests: list = []



    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeDataflow.requests.append((self.path.split("?")[0], body))
        self.send_json({"job": {"id": "2026-11-26_01_02_03-123456789", "projectId": "proj"}})

    states: dict = {}

    def do_GET(self):
        FakeDataflow.requests.append((self.path.split("?")[0], None))
        job_id = self.path.split("?")[0].rsplit("/", 1)[-1]
        self.send_json({"id": job_id, "currentState": FakeDataflow.states.get(job_id, "JOB_STATE_RUNNING")})


@pytest.fixture
def fake_dataflow():
    FakeDataflow.requests = []
    with serve(FakeDataflow) as url:
        yield url


def test_dataflow_launch_request_field_by_field(home, fake_dataflow, monkeypatch):
    from google.cloud import dataflow_v1beta3 as df

    monkeypatch.setenv("GCP_PROJECT_ID", "proj")
    options = {"api_endpoint": fake_dataflow}
    templates = df.FlexTemplatesServiceClient(transport="rest", credentials=AnonymousCredentials(), client_options=options)
    jobs = df.JobsV1Beta3Client(transport="rest", credentials=AnonymousCredentials(), client_options=options)
    settings = launcher_settings(backend="dataflow", gcp_region="europe-west1", templates_path="gs://bkt/templates/",
                                 dataflow_service_account="df@proj.iam.gserviceaccount.com",
                                 dataflow_temp_location="gs://bkt/tmp")
    settings = type(settings)(**{**settings.__dict__, "core": type(settings.core)(**{**settings.core.__dict__, "gcp_project": "proj"})})
    store = MetastoreSpec.from_settings(settings.core).open()
    backend = DataflowBackend(settings, templates_client=templates, jobs_client=jobs, metastore=store, poll_seconds=3600)
    backend.start()
    spec = LaunchSpec("openai/cost/usage_cost", (("acme", "a1b2c3d4e5"), ("globex", "f6e5d4c3b2")),
                      date(2026, 3, 1), date(2026, 3, 2), "scheduler")
    assert backend.launch(spec) == "2026-11-26_01_02_03-123456789"
    path, body = FakeDataflow.requests[0]
    assert path == "/v1b3/projects/proj/locations/europe-west1/flexTemplates:launch"
    launch = body["launchParameter"]
    assert launch["containerSpecGcsPath"] == "gs://bkt/templates/openai_cost_usage_cost.json"
    assert launch["parameters"] == {"org_slugs": "acme,globex", "run_ids": "a1b2c3d4e5,f6e5d4c3b2",
                                    "start_date": "2026-03-01", "end_date": "2026-03-02", "environment": "development"}
    assert launch["jobName"].startswith("openai-cost-usage-cost-") and launch["jobName"].endswith("-a1b2c3d4")
    assert len(launch["jobName"]) <= 63
    assert launch["environment"]["serviceAccountEmail"] == "df@proj.iam.gserviceaccount.com"
    assert launch["environment"]["tempLocation"] == "gs://bkt/tmp"
    assert launch["environment"]["additionalUserLabels"]["trigger"] == "scheduler"
    assert "sk-" not in json.dumps(body)
    assert backend.status("2026-11-26_01_02_03-123456789") == "RUNNING"
    assert FakeDataflow.requests[1][0] == "/v1b3/projects/proj/locations/europe-west1/jobs/2026-11-26_01_02_03-123456789"

    # a job that dies before its run-log stage: the launcher closes its runs with the job's fate
    seed_org(settings.core, "acme")
    for run_id, job in (("a1b2c3d4e5", "job-dead"), ("f6e5d4c3b2", "job-alive")):
        store.create_run({"pipeline_logging_id": run_id, "org_slug": "acme", "pipeline_id": "openai/cost/usage_cost",
                          "status": "RUNNING", "trigger_type": "api", "start_date": "2026-03-01", "end_date": "2026-03-01",
                          "runner": "dataflow", "job_id": job})
    FakeDataflow.states = {"job-dead": "JOB_STATE_FAILED"}
    try:
        assert backend.reconcile_once() == ["a1b2c3d4e5"]
    finally:
        FakeDataflow.states = {}
        backend.stop()
    assert store.get_run("a1b2c3d4e5")["error_message"] == "Dataflow job job-dead failed or was cancelled"
    assert store.get_run("f6e5d4c3b2")["status"] == "RUNNING"


class Certs(JsonHandler):
    body = b"{}"

    def do_GET(self):
        self.send_json(Certs.body)


def _signing_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-google")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return crypt.RSASigner.from_string(pem, key_id="kid1"), cert.public_bytes(serialization.Encoding.PEM).decode()


def test_scheduler_accepts_only_google_signed_tokens_of_the_service_account(settings):
    seed_org(settings, "acme")
    signer, cert = _signing_key()
    Certs.body = json.dumps({"kid1": cert}).encode()
    audience = "https://launcher.example.test/api/v1/scheduler/trigger"
    sa = "scheduler@proj.iam.gserviceaccount.com"

    def token(email=sa, aud=audience, verified=True, with_signer=signer):
        now = int(time.time())
        claims = {"iss": "https://accounts.google.com", "aud": aud, "email": email, "email_verified": verified,
                  "iat": now, "exp": now + 600, "sub": "1"}
        return jwt.encode(with_signer, claims).decode()

    with serve(Certs) as certs_url:
        verifier = google_oidc_verifier(f"{certs_url}/certs")
        app, backend = make_app(oidc_verifier=verifier, scheduler_service_account=sa, scheduler_audience=audience)
        with running_server(app) as url:
            def call(t):
                return requests.post(f"{url}/api/v1/scheduler/trigger", headers={"Authorization": f"Bearer {t}"},
                                     json={"pipelines": ["openai/usage_cost"], "date": DAY}, timeout=30)

            other_signer, _ = _signing_key()
            assert call(token(with_signer=other_signer)).status_code == 401
            assert call(token(aud="https://elsewhere.test")).status_code == 401
            assert call(token(email="intruder@proj.iam.gserviceaccount.com")).status_code == 401
            assert call(token(verified=False)).status_code == 401
            ok = call(token())
            assert ok.status_code == 202 and ok.json()["launched"][0]["runs"] == 1
            assert len(backend.launched) == 1
