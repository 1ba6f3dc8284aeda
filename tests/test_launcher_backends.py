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
from beam_pipelines.metastore.base import new_run
from beam_pipelines.pipeline import template
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
        "SELECT (SELECT COUNT(*) FROM acme_dev.openai_usage_daily_raw) + (SELECT COUNT(*) FROM acme_dev.openai_cost_daily)"
        " + (SELECT COUNT(*) FROM acme_dev.focus_cost_daily)")
    assert rows[0][0] == run["rows_written"], "raw, cost and FOCUS rows of the one day"


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


def test_a_restart_closes_runs_of_dead_owners_only(settings):
    store = MetastoreSpec.from_settings(settings).open()
    seed_org(settings, "acme")
    day = date.fromisoformat(DAY)
    store.create_runs([
        new_run("dead-owner", "acme", "openai/cost/usage_cost", day, day, "RUNNING", "api", "local", "launcher:old",
                lease=datetime.now(timezone.utc) - timedelta(seconds=1)),
        new_run("live-cli-job", "acme", "openai/cost/usage_cost", day - timedelta(days=1), day - timedelta(days=1),
                "RUNNING", "cli", "FnApiRunner", "cli:elsewhere")])
    backend = LocalBackend(launcher_settings(local_max_jobs=1))
    backend.start()
    try:
        dead = store.get_run("dead-owner")
        assert dead["status"] == "FAILED"
        assert dead["error_message"].startswith("owner launcher:old gone since ") and "nothing replaced" in dead["error_message"]
        assert store.get_run("live-cli-job")["status"] == "RUNNING", "a run whose owner is alive is never failed"
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
        "CA_ROOT_API_KEY", "KMS_KEY_NAME", "CORS_ORIGINS", "CONVERGENCE_METASTORE", "CONVERGENCE_SINK", "LAUNCHER_BACKEND",
        "GCP_PROJECT_ID", "GCP_REGION", "DATAFLOW_TEMPLATES_PATH", "DATAFLOW_SERVICE_ACCOUNT", "DATAFLOW_TEMP_LOCATION",
        "DATAFLOW_SDK_CONTAINER_IMAGE", "SCHEDULER_SERVICE_ACCOUNT and SCHEDULER_AUDIENCE"}


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
    monkeypatch.setenv("KMS_KEY_NAME", "projects/proj/locations/eu/keyRings/r/cryptoKeys/k")
    monkeypatch.setenv("SMTP_HOST", "smtp.example.test")
    monkeypatch.setenv("SMTP_PASSWORD_SECRET", "projects/proj/secrets/smtp-password")
    monkeypatch.setenv("SMTP_PASSWORD", "never-sent")
    monkeypatch.setenv("SLACK_WEBHOOK_URL_SECRET", "projects/proj/secrets/slack-webhook")
    options = {"api_endpoint": fake_dataflow}
    templates = df.FlexTemplatesServiceClient(transport="rest", credentials=AnonymousCredentials(), client_options=options)
    jobs = df.JobsV1Beta3Client(transport="rest", credentials=AnonymousCredentials(), client_options=options)
    settings = launcher_settings(backend="dataflow", gcp_region="europe-west1", templates_path="gs://bkt/templates/",
                                 dataflow_service_account="df@proj.iam.gserviceaccount.com",
                                 dataflow_temp_location="gs://bkt/tmp", dataflow_max_workers=7,
                                 dataflow_sdk_image="europe-west1-docker.pkg.dev/proj/convergence/pipelines:abc123")
    store = MetastoreSpec.from_settings(settings.core).open()
    backend = DataflowBackend(settings, templates_client=templates, jobs_client=jobs, metastore=store)
    backend.start()
    spec = LaunchSpec("openai/cost/usage_cost", (("acme", "a1b2c3d4e5"), ("globex", "f6e5d4c3b2")),
                      date(2026, 3, 1), date(2026, 3, 2), "scheduler")
    assert backend.launch(spec) == "2026-11-26_01_02_03-123456789"
    path, body = FakeDataflow.requests[0]
    assert path == "/v1b3/projects/proj/locations/europe-west1/flexTemplates:launch"
    launch = body["launchParameter"]
    assert launch["containerSpecGcsPath"] == "gs://bkt/templates/openai_cost_usage_cost.json"
    assert launch["parameters"] == {
        "pipeline": "openai/cost/usage_cost", "org_slugs": "acme,globex", "run_ids": "a1b2c3d4e5,f6e5d4c3b2",
        "start_date": "2026-03-01", "end_date": "2026-03-02", "environment": "development", "bigquery_location": "US",
        "kms_key_name": "projects/proj/locations/eu/keyRings/r/cryptoKeys/k", "kms_credential_aad": "none",
        "smtp_host": "smtp.example.test", "smtp_port": "587", "smtp_password_secret": "projects/proj/secrets/smtp-password",
        "notify_email_from": "convergence@localhost", "slack_webhook_secret": "projects/proj/secrets/slack-webhook"}
    assert set(launch["parameters"]) <= {p.name for p in template.PARAMETERS}, "only declared template parameters"
    assert launch["jobName"].startswith("openai-cost-usage-cost-") and launch["jobName"].endswith("-a1b2c3d4")
    assert len(launch["jobName"]) <= 63
    environment = launch["environment"]
    assert environment["serviceAccountEmail"] == "df@proj.iam.gserviceaccount.com"
    assert environment["tempLocation"] == "gs://bkt/tmp" and environment["stagingLocation"] == "gs://bkt/tmp/staging"
    assert environment["sdkContainerImage"] == "europe-west1-docker.pkg.dev/proj/convergence/pipelines:abc123"
    assert environment["maxWorkers"] == 7
    labels = environment["additionalUserLabels"]
    assert labels["trigger"] == "scheduler" and labels["org_count"] == "2" and len(labels["org_set"]) == 16
    assert all(len(v) <= 63 and v == v.lower() for v in labels.values())
    assert "never-sent" not in json.dumps(body) and "sk-" not in json.dumps(body)
    assert backend.state("2026-11-26_01_02_03-123456789") == "JOB_STATE_RUNNING"
    assert FakeDataflow.requests[1][0] == "/v1b3/projects/proj/locations/europe-west1/jobs/2026-11-26_01_02_03-123456789"


@pytest.mark.parametrize("state, closed", [
    ("JOB_STATE_STOPPED", False), ("JOB_STATE_PENDING", False), ("JOB_STATE_QUEUED", False), ("JOB_STATE_UNKNOWN", False),
    ("JOB_STATE_RUNNING", False), ("JOB_STATE_CANCELLING", False), ("JOB_STATE_RESOURCE_CLEANING_UP", False),
    ("JOB_STATE_DONE", True), ("JOB_STATE_FAILED", True), ("JOB_STATE_CANCELLED", True), ("JOB_STATE_DRAINED", True),
    ("JOB_STATE_UPDATED", True)])
def test_reconcile_follows_dataflows_job_states(home, fake_dataflow, monkeypatch, state, closed):
    from google.cloud import dataflow_v1beta3 as df

    assert state in df.JobState.__members__  # a state Dataflow's own enum defines
    monkeypatch.setenv("GCP_PROJECT_ID", "proj")
    options = {"api_endpoint": fake_dataflow}
    jobs = df.JobsV1Beta3Client(transport="rest", credentials=AnonymousCredentials(), client_options=options)
    settings = launcher_settings(backend="dataflow", gcp_region="europe-west1")
    store = MetastoreSpec.from_settings(settings.core).open()
    backend = DataflowBackend(settings, templates_client=object(), jobs_client=jobs, metastore=store)
    seed_org(settings.core, "acme")
    run = new_run("r-df", "acme", "openai/cost/usage_cost", date(2026, 3, 1), date(2026, 3, 1), "RUNNING", "api",
                  "dataflow", "dataflow:job-x", lease=datetime.now(timezone.utc) + timedelta(minutes=1))
    store.create_runs([{**run, "job_id": "job-x"}])
    FakeDataflow.states = {"job-x": state}
    try:
        assert backend.reconcile() == (["r-df"] if closed else [])
    finally:
        FakeDataflow.states = {}
    after = store.get_run("r-df")
    if closed:
        assert after["status"] == "FAILED" and "Dataflow job job-x" in after["error_message"] and state in after["error_message"]
    else:
        assert after["status"] == "RUNNING"
        assert after["lease_expires_at"] > datetime.now(timezone.utc) + timedelta(hours=1), "a live job's runs are renewed"


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
