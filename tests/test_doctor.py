"""``convergence doctor`` against stand-ins that refuse what the real services refuse.

- BigQuery: the BigQuery emulator of the suite. It honours ``dryRun`` for SELECTs (it plans them
  and discards the rows) but waves DML through unchecked (an unknown table or column in an
  INSERT/UPDATE/MERGE passes), so the shape of the dry-run request itself is also checked through
  the real google-cloud-bigquery client against a loopback ``jobs.insert`` that validates it.
- Cloud Storage: the storage emulator, with the specs written by ``template_spec.publish``.
- IAM, Secret Manager, KMS, Resource Manager, Cloud Scheduler: one loopback server that checks
  every request against the documented REST shape (path per service, GET for resources,
  ``{"permissions": [...]}`` for testIamPermissions, Scheduler paging) and answers 400 to anything
  else; each test ends by asserting that nothing was refused.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, urlsplit

import google_crc32c
import pytest
import requests
from google.cloud import storage

from beam_pipelines.bigquery.client import BigQueryRunner
from beam_pipelines.cli.doctor import add_doctor_parser, run_doctor_cli
from beam_pipelines.config.loader import discover_pipelines
from beam_pipelines.metastore.bigquery import BigQueryMetastore
from beam_pipelines.ops.doctor import CHECKS, Problem, format_problems, run_doctor
from beam_pipelines.pipeline.schedules import scheduler_jobs
from beam_pipelines.pipeline.template_spec import SpecEnvironment, publish
from beam_pipelines.settings import Settings
from beam_pipelines.testing.emulators.storage import StorageEmulator
from launcher.settings import LauncherSettings
from tests.conftest import CONFIGS
from tests.http_fakes import JsonHandler, serve

REGION = "europe-west1"
IMAGE = "europe-west1-docker.pkg.dev/proj/convergence/convergence:3f2a9c1d0b7e"
AUDIENCE = "https://convergence-launcher-4fz2x7q-ew.a.run.app"
CANARY = "canary-" + secrets.token_hex(24)  # the root key: must never be written anywhere
PROJECT_PERMISSIONS = {"dataflow.jobs.create", "dataflow.jobs.get", "dataflow.jobs.list", "bigquery.jobs.create"}


def error(status: int, code: str, message: str) -> tuple[int, dict]:
    """Google's JSON error envelope."""
    return status, {"error": {"code": status, "message": message, "status": code}}


# --- a strict stand-in for the control-plane REST APIs ------------------------------------------

PROJECT_ID = r"projects/[a-z][a-z0-9-]{4,28}[a-z0-9]"
ROUTES = [  # (method, path pattern, action); every path starts with its service's name (see Deployment.endpoints)
    ("GET", rf"/cloudresourcemanager/v3/(?P<res>{PROJECT_ID})", "get"),
    ("POST", rf"/cloudresourcemanager/v3/(?P<res>{PROJECT_ID}):testIamPermissions", "test"),
    ("GET", rf"/iam/v1/(?P<res>{PROJECT_ID}/serviceAccounts/[a-z][a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com)", "get"),
    ("POST", rf"/iam/v1/(?P<res>{PROJECT_ID}/serviceAccounts/[a-z][a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com)"
             r":testIamPermissions", "test"),
    ("GET", rf"/secretmanager/v1/(?P<res>{PROJECT_ID}/secrets/[A-Za-z0-9_-]+)", "get"),
    ("POST", rf"/secretmanager/v1/(?P<res>{PROJECT_ID}/secrets/[A-Za-z0-9_-]+):testIamPermissions", "test"),
    ("GET", rf"/secretmanager/v1/(?P<res>{PROJECT_ID}/secrets/[A-Za-z0-9_-]+)/versions/(?P<version>latest|[1-9][0-9]*):access",
     "access"),
    ("GET", rf"/cloudkms/v1/(?P<res>{PROJECT_ID}/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]+/cryptoKeys/[A-Za-z0-9_-]+)", "get"),
    ("POST", rf"/cloudkms/v1/(?P<res>{PROJECT_ID}/locations/[a-z0-9-]+/keyRings/[A-Za-z0-9_-]+/cryptoKeys/[A-Za-z0-9_-]+)"
             r":testIamPermissions", "test"),
    ("GET", rf"/cloudscheduler/v1/(?P<res>{PROJECT_ID}/locations/[a-z0-9-]+)/jobs", "list_jobs"),
]
PERMISSION = re.compile(r"[a-z][a-zA-Z0-9]*\.[a-zA-Z0-9]+\.[a-zA-Z0-9]+")  # service.resource.verb, no wildcard
SCHEDULER_PAGE = 2  # fewer than asked, as the API may: the doctor must follow nextPageToken


@dataclass
class FakeGoogle:
    """One project as its REST APIs show it. Keys are (service, resource name)."""

    resources: dict = field(default_factory=dict)  # -> the GET body
    unreadable: set = field(default_factory=set)  # GET answers 403 (the identity lacks *.get)
    grants: dict = field(default_factory=dict)  # -> the permissions the identity holds
    versions: dict = field(default_factory=dict)  # secret -> [(bytes, state)]
    jobs: list = field(default_factory=list)  # Scheduler jobs in API shape
    scheduler_forbidden: bool = False
    requests: list = field(default_factory=list)
    rejected: list = field(default_factory=list)

    def handle(self, method: str, path: str, query: dict, raw: bytes, content_type: str) -> tuple[int, dict]:
        self.requests.append((method, path, query))
        for route_method, pattern, action in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                service = path.split("/")[1]
                answer = getattr(self, action)(service, match, query, raw, content_type)
                if answer[1].get("error", {}).get("status") == "INVALID_ARGUMENT":  # malformed, not a state of the project
                    self.rejected.append(f"{method} {path}: {answer[1]['error']['message']}")
                return answer
        self.rejected.append(f"{method} {path}: no such method")
        return error(400, "INVALID_ARGUMENT", f"no REST method {method} {path}")

    @staticmethod
    def _plain_get(query: dict, raw: bytes) -> str | None:
        if raw:
            return "a GET carries no body"
        if query:
            return f"unexpected query parameters {sorted(query)}"
        return None

    def get(self, service, match, query, raw, content_type):
        if (bad := self._plain_get(query, raw)) is not None:
            return error(400, "INVALID_ARGUMENT", bad)
        key = (service, match["res"])
        if key in self.unreadable:
            return error(403, "PERMISSION_DENIED", f"Permission denied on resource {key[1]} (or it may not exist).")
        if key not in self.resources:
            return error(404, "NOT_FOUND", f"{key[1]} not found.")
        return 200, self.resources[key]

    def test(self, service, match, query, raw, content_type):
        if query or not content_type.startswith("application/json"):
            return error(400, "INVALID_ARGUMENT", "testIamPermissions takes a JSON body and no query")
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, "INVALID_ARGUMENT", "body is not JSON")
        asked = body.get("permissions") if isinstance(body, dict) else None
        if set(body) != {"permissions"} or not isinstance(asked, list) or not asked:
            return error(400, "INVALID_ARGUMENT", 'body must be {"permissions": [non-empty list]}')
        if not all(isinstance(p, str) and PERMISSION.fullmatch(p) for p in asked):
            return error(400, "INVALID_ARGUMENT", f"Permissions {asked} are not valid (wildcards are not allowed)")
        key = (service, match["res"])
        held = [p for p in asked if key in self.resources and p in self.grants.get(key, set())]
        return 200, ({"permissions": held} if held else {})  # the empty set comes back as {}

    def access(self, service, match, query, raw, content_type):
        if (bad := self._plain_get(query, raw)) is not None:
            return error(400, "INVALID_ARGUMENT", bad)
        secret = match["res"]
        if "secretmanager.versions.access" not in self.grants.get((service, secret), set()):
            return error(403, "PERMISSION_DENIED", f"Permission 'secretmanager.versions.access' denied for resource '{secret}'")
        versions = self.versions.get(secret) or []
        number = len(versions) if match["version"] == "latest" else int(match["version"])
        if not versions or number > len(versions):
            return error(404, "NOT_FOUND", f"Secret [{secret}] not found or has no versions.")
        data, state = versions[number - 1]
        if state != "ENABLED":
            return error(400, "FAILED_PRECONDITION", f"Secret Version [{secret}/versions/{number}] is in {state} state.")
        return 200, {"name": f"{secret}/versions/{number}",
                     "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(google_crc32c.value(data))}}

    def list_jobs(self, service, match, query, raw, content_type):
        if raw or set(query) - {"pageSize", "pageToken"}:
            return error(400, "INVALID_ARGUMENT", "jobs.list takes pageSize and pageToken only")
        size = query.get("pageSize", ["500"])
        if len(size) != 1 or not size[0].isdigit() or not 0 < int(size[0]) <= 500:
            return error(400, "INVALID_ARGUMENT", "pageSize must be 1..500")
        token = query.get("pageToken", [""])
        start = 0
        if token != [""]:
            if len(token) != 1 or not re.fullmatch(r"page-[1-9][0-9]*", token[0]):
                return error(400, "INVALID_ARGUMENT", f"pageToken {token} was not issued by this server")
            start = int(token[0].split("-")[1])
        if self.scheduler_forbidden:
            return error(403, "PERMISSION_DENIED", "The principal lacks IAM permission \"cloudscheduler.jobs.list\"")
        parent = match["res"]
        mine = [job for job in self.jobs if job["name"].startswith(parent + "/jobs/")]
        page = mine[start:start + min(SCHEDULER_PAGE, int(size[0]))]
        body = {"jobs": page} if page else {}
        if start + len(page) < len(mine):
            body["nextPageToken"] = f"page-{start + len(page)}"
        return 200, body


def google_handler(fake: FakeGoogle):
    class Handler(JsonHandler):
        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = fake.handle(method, url.path, parse_qs(url.query, keep_blank_values=True), raw,
                                       self.headers.get("Content-Type") or "")
            self.send_json(body, status)

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_PATCH(self):
            self._dispatch("PATCH")

        def do_DELETE(self):
            self._dispatch("DELETE")

    return Handler


def api_job(job: dict) -> dict:
    """A job as Cloud Scheduler returns it: the body as base64 bytes, plus server-set fields."""
    target = {**job["httpTarget"], "body": base64.b64encode(job["httpTarget"]["body"].encode()).decode()}
    return {**job, "httpTarget": target, "state": "ENABLED", "userUpdateTime": "2026-03-01T10:00:00Z"}


# --- a deployed project: the emulators plus the fake -------------------------------------------

@pytest.fixture(scope="module")
def gcs_emulator():
    with StorageEmulator() as emulator:
        yield emulator


@dataclass
class Deployment:
    settings: Settings
    launcher: LauncherSettings
    fake: FakeGoogle
    url: str
    storage: storage.Client
    bucket: str

    @property
    def project(self) -> str:
        return self.settings.gcp_project

    @property
    def secret(self) -> str:
        return f"projects/{self.project}/secrets/ca-root-key"

    def endpoints(self, service: str) -> str:
        return f"{self.url}/{service}"

    def bigquery(self):
        from beam_pipelines.bigquery.client import make_client

        return make_client(self.project, self.settings.bigquery_location)

    def run(self) -> list[Problem]:
        return run_doctor(self.settings, self.launcher, requests.Session(), self.endpoints, self.storage, self.bigquery(),
                          root_key_secret=self.secret)

    def lines(self) -> list[str]:
        return format_problems(self.run()).splitlines()


def clean_fake(settings: Settings, launcher: LauncherSettings) -> FakeGoogle:
    """Everything deploy/deploy.sh sets up, seen from convergence-launcher."""
    project = settings.gcp_project
    worker = launcher.dataflow_service_account
    secret = f"projects/{project}/secrets/ca-root-key"
    fake = FakeGoogle()
    fake.resources = {
        ("cloudresourcemanager", f"projects/{project}"): {"name": "projects/123456789012", "projectId": project, "state": "ACTIVE"},
        ("iam", f"projects/{project}/serviceAccounts/{worker}"): {"name": f"projects/{project}/serviceAccounts/{worker}",
                                                                   "email": worker},
        ("secretmanager", secret): {"name": secret.replace(project, "123456789012"), "replication": {"automatic": {}}},
        ("cloudkms", settings.kms_key_name): {"name": settings.kms_key_name, "purpose": "ENCRYPT_DECRYPT"},
    }
    # secretAccessor cannot read the secret's metadata; the launcher holds nothing on the key
    fake.unreadable = {("secretmanager", secret), ("cloudkms", settings.kms_key_name)}
    fake.grants = {("cloudresourcemanager", f"projects/{project}"): set(PROJECT_PERMISSIONS),
                   ("iam", f"projects/{project}/serviceAccounts/{worker}"): {"iam.serviceAccounts.actAs"},
                   ("secretmanager", secret): {"secretmanager.versions.access"}}
    fake.versions = {secret: [(b"an-old-root-key-that-was-rotated-out-long-ago", "DISABLED"), (CANARY.encode(), "ENABLED")]}
    expected = scheduler_jobs(discover_pipelines(settings.configs_dir), AUDIENCE, launcher.scheduler_service_account,
                              project, REGION)
    other_team = {**expected[0], "name": f"projects/{project}/locations/{REGION}/jobs/nightly-report"}
    fake.jobs = [api_job(job) for job in [expected[0], other_team, *expected[1:]]]
    return fake


@pytest.fixture
def deployment(bq_settings, gcs_emulator, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    project = bq_settings.gcp_project
    settings = replace(bq_settings, environment="production", cipher="kms",
                       kms_key_name=f"projects/{project}/locations/{REGION}/keyRings/convergence/cryptoKeys/credentials")
    client = storage.Client(project=project)
    bucket = client.create_bucket(f"{project}-convergence").name
    worker = f"convergence-worker@{project}.iam.gserviceaccount.com"
    publish(discover_pipelines(settings.configs_dir), SpecEnvironment(IMAGE, worker, f"gs://{bucket}/tmp"),
            f"gs://{bucket}/templates", client=client)
    launcher = LauncherSettings(
        core=settings, root_key=CANARY, backend="dataflow", cors_origins=("https://app.example.com",),
        scheduler_service_account=f"convergence-scheduler@{project}.iam.gserviceaccount.com", scheduler_audience=AUDIENCE,
        gcp_region=REGION, templates_path=f"gs://{bucket}/templates", dataflow_service_account=worker,
        dataflow_temp_location=f"gs://{bucket}/tmp", dataflow_sdk_image=IMAGE, forwarded_trusted_hops=1)
    fake = clean_fake(settings, launcher)
    with serve(google_handler(fake)) as url:
        yield Deployment(settings, launcher, fake, url, client, bucket)
    assert fake.rejected == [], "the doctor sent requests the real APIs would refuse"


def launcher_env(monkeypatch, d: Deployment) -> None:
    """The variables Cloud Run gives the service (deploy/steps/10-cloud-run.sh), the root key inline."""
    values = {"LAUNCHER_BACKEND": "dataflow", "CORS_ORIGINS": "https://app.example.com", "CA_ROOT_API_KEY": CANARY,
              "SCHEDULER_SERVICE_ACCOUNT": d.launcher.scheduler_service_account, "SCHEDULER_AUDIENCE": AUDIENCE,
              "GCP_REGION": REGION, "DATAFLOW_TEMPLATES_PATH": d.launcher.templates_path,
              "DATAFLOW_SERVICE_ACCOUNT": d.launcher.dataflow_service_account,
              "DATAFLOW_TEMP_LOCATION": d.launcher.dataflow_temp_location, "DATAFLOW_SDK_CONTAINER_IMAGE": IMAGE,
              "FORWARDED_TRUSTED_HOPS": "1"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CA_ROOT_API_KEY_SECRET", raising=False)


def cli(d: Deployment) -> int:
    import argparse

    sub = argparse.ArgumentParser(prog="convergence").add_subparsers(dest="command")
    add_doctor_parser(sub)
    args = sub._name_parser_map["doctor"].parse_args([])
    return run_doctor_cli(args, d.settings, session=requests.Session(), endpoints=d.endpoints, storage_client=d.storage,
                          bigquery_client=d.bigquery())


# --- the cases ---------------------------------------------------------------------------------

def test_a_clean_project_exits_0_with_the_ok_line_and_never_shows_the_root_key(deployment, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    launcher_env(monkeypatch, deployment)
    assert cli(deployment) == 0
    out = capsys.readouterr()
    assert out.out == f"ok: {len(CHECKS)} checks, 0 problems\n"
    written = out.out + out.err + caplog.text
    assert CANARY not in written and "[REDACTED]" not in written  # not even an attempt that redaction caught
    assert base64.b64encode(CANARY.encode()).decode() not in written  # nor the payload as the API sends it
    methods = {(method, path.split("/")[1]) for method, path, _ in deployment.fake.requests}
    assert {("GET", "cloudresourcemanager"), ("POST", "cloudresourcemanager"), ("GET", "iam"), ("POST", "iam"),
            ("GET", "secretmanager"), ("POST", "secretmanager"), ("GET", "cloudkms"), ("POST", "cloudkms"),
            ("GET", "cloudscheduler")} == methods
    pages = [query.get("pageToken") for _, path, query in deployment.fake.requests if path.endswith("/jobs")]
    assert pages == [None] + [[f"page-{n}"] for n in range(SCHEDULER_PAGE, len(deployment.fake.jobs), SCHEDULER_PAGE)]
    assert len(pages) >= 3  # every page followed


def _missing_template(d: Deployment, monkeypatch) -> None:
    d.storage.bucket(d.bucket).blob("templates/openai_cost_usage_cost.json").delete()


def _wrong_audience(d: Deployment, monkeypatch) -> None:
    job = next(j for j in d.fake.jobs if j["name"].endswith("/convergence-reconcile"))
    job["httpTarget"]["oidcToken"]["audience"] = AUDIENCE + "/api/v1/reconcile"


def _launcher_can_decrypt(d: Deployment, monkeypatch) -> None:
    d.fake.grants[("cloudkms", d.settings.kms_key_name)] = {"cloudkms.cryptoKeyVersions.useToDecrypt"}


def _no_secret_version(d: Deployment, monkeypatch) -> None:
    d.fake.versions[d.secret] = []


def _broken_statement(d: Deployment, monkeypatch) -> None:
    original = BigQueryMetastore.statement_catalog

    def broken(self):
        statements = original(self)
        kind, sql, params = statements[0]
        assert kind == "SELECT" and "WHERE org_slug = @org_slug" in sql
        statements[0] = (kind, sql.replace("WHERE org_slug", "WHERE no_such_column"), params)
        return statements

    monkeypatch.setattr(BigQueryMetastore, "statement_catalog", broken)


def _no_cors_origins(d: Deployment, monkeypatch) -> None:
    d.launcher = replace(d.launcher, cors_origins=())


@pytest.mark.parametrize("fault, line", [
    (_missing_template, r"doctor: templates: gs://[^/]+/templates/openai_cost_usage_cost\.json missing"
                        r" \(pipeline openai/cost/usage_cost\)"),
    (_wrong_audience, r"doctor: scheduler: job convergence-reconcile: OIDC audience '[^']+/api/v1/reconcile', expected '[^']+'$"),
    (_launcher_can_decrypt, r"doctor: iam/kms-key: over-granted: the running identity holds cloudkms\.cryptoKeyVersions\.useToDecrypt"
                            r" on KMS key projects/.+/cryptoKeys/credentials; only the worker account should$"),
    (_no_secret_version, r"doctor: root-key: projects/.+/secrets/ca-root-key/versions/latest: no such version"),
    (_broken_statement, r"doctor: metastore: statement 1 \(SELECT org_profiles\) fails its dry run: HTTP 400: .*no_such_column"),
    (_no_cors_origins, r"doctor: settings: CORS_ORIGINS: empty; list the frontend origins$"),
], ids=["missing-template", "wrong-audience", "kms-over-granted", "no-secret-version", "broken-statement", "setting-missing"])
def test_each_fault_is_exactly_its_one_line(deployment, monkeypatch, caplog, fault, line):
    fault(deployment, monkeypatch)
    lines = deployment.lines()
    assert len(lines) == 1 and re.match(line, lines[0]), lines
    assert CANARY not in lines[0] + caplog.text


def test_a_missing_resource_is_reported_missing_not_as_a_permission_gap(deployment):
    worker = deployment.launcher.dataflow_service_account
    del deployment.fake.resources[("iam", f"projects/{deployment.project}/serviceAccounts/{worker}")]
    assert deployment.lines() == [f"doctor: iam/worker-service-account: service account {worker} not found"]


def test_a_permission_gap_names_the_permissions_and_a_disabled_latest_version_is_named(deployment):
    deployment.fake.grants[("cloudresourcemanager", f"projects/{deployment.project}")] = {"bigquery.jobs.create"}
    deployment.fake.versions[deployment.secret].append((b"x" * 40, "DISABLED"))
    assert deployment.lines() == [
        f"doctor: iam/project: the running identity lacks dataflow.jobs.create, dataflow.jobs.get, dataflow.jobs.list"
        f" on project {deployment.project}",
        f"doctor: root-key: {deployment.secret}/versions/latest cannot be read (HTTP 400 FAILED_PRECONDITION: Secret Version"
        f" [{deployment.secret}/versions/3] is in DISABLED state.); enable a version or add a new one",
    ]


def test_a_short_root_key_is_reported_without_its_value(deployment, caplog):
    deployment.fake.versions[deployment.secret].append((b"short-key", "ENABLED"))
    [line] = deployment.lines()
    assert line.endswith("the root key is shorter than 32 characters; add a longer version")
    assert "short-key" not in line + caplog.text


def test_scheduler_extra_jobs_are_reported_and_other_teams_jobs_ignored(deployment):
    first = deployment.fake.jobs[0]
    stale = {**first, "name": first["name"].rsplit("/", 1)[0] + "/convergence-old-pipeline"}
    deployment.fake.jobs.append(stale)
    deployment.fake.jobs.remove(next(j for j in deployment.fake.jobs if j["name"].endswith("/convergence-gcp-cost-billing")))
    assert deployment.lines() == [
        "doctor: scheduler: job convergence-gcp-cost-billing missing: create it with deploy/steps/11-scheduler.sh",
        "doctor: scheduler: job convergence-old-pipeline: not derived from the configs (a pipeline no longer scheduled?);"
        " delete it",
    ]


def test_a_check_that_cannot_run_says_so_and_the_others_still_run(deployment):
    deployment.fake.scheduler_forbidden = True
    _launcher_can_decrypt(deployment, None)
    lines = deployment.lines()
    assert lines[0].startswith("doctor: iam/kms-key: over-granted")
    assert lines[1] == ('doctor: scheduler: could not run: HTTP 403 PERMISSION_DENIED: The principal lacks IAM permission'
                        ' "cloudscheduler.jobs.list"')
    assert len(lines) == 2  # the metastore check after it ran, and passed


def test_a_spec_for_another_image_is_named(deployment):
    other = IMAGE.replace("3f2a9c1d0b7e", "0000aaaa1111")
    one = {k: v for k, v in discover_pipelines(CONFIGS).items() if k == "gcp/cost/billing"}
    publish(one, SpecEnvironment(other), deployment.launcher.templates_path, client=deployment.storage)
    deployment.storage.bucket(deployment.bucket).blob("templates/openai_cost_usage_cost.json").upload_from_string(
        '{"image": "x", "sdkInfo": {"language": "PYTHON"}, "unknownField": 1}')
    lines = deployment.lines()
    assert lines[0] == (f"doctor: templates: gs://{deployment.bucket}/templates/gcp_cost_billing.json: image {other}"
                        f" (defaultEnvironment.sdkContainerImage too), expected {IMAGE} (DATAFLOW_SDK_CONTAINER_IMAGE)")
    assert lines[1].startswith(f"doctor: templates: gs://{deployment.bucket}/templates/openai_cost_usage_cost.json: not a Flex"
                               " Template spec (ContainerSpec)")
    assert len(lines) == 2


def test_the_cli_reads_the_service_settings_and_survives_an_unreadable_root_key(deployment, monkeypatch, capsys, caplog):
    """CA_ROOT_API_KEY_SECRET set, and the version gone: the service could not start, the doctor says why."""
    import launcher.settings
    from beam_pipelines.errors import ConvergenceError

    def resolve(name):
        import os

        if os.environ.get(f"{name}_SECRET"):
            raise ConvergenceError(f"{name}: Secret Manager access failed: NotFound")
        return os.environ.get(name)

    launcher_env(monkeypatch, deployment)
    monkeypatch.delenv("CA_ROOT_API_KEY")
    monkeypatch.setenv("CA_ROOT_API_KEY_SECRET", deployment.secret)
    monkeypatch.setattr(launcher.settings, "resolve_secret", resolve)
    deployment.fake.versions[deployment.secret] = []
    assert cli(deployment) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"doctor: root-key: {deployment.secret}/versions/latest: no such version")
    import os

    assert os.environ["CA_ROOT_API_KEY_SECRET"] == deployment.secret  # put back


def test_the_fake_refuses_what_the_apis_refuse(deployment):
    base, project = deployment.url, deployment.project
    post = lambda path, body: requests.post(base + path, json=body, timeout=10)
    assert post(f"/cloudresourcemanager/v3/projects/{project}:testIamPermissions", {"permissions": ["storage.*"]}).status_code == 400
    assert post(f"/cloudresourcemanager/v3/projects/{project}:testIamPermissions", {"permissions": []}).status_code == 400
    assert post(f"/cloudkms/v1/projects/{project}/secrets/ca-root-key:testIamPermissions",
                {"permissions": ["secretmanager.versions.access"]}).status_code == 400  # a secret is not a KMS resource
    assert requests.get(f"{base}/cloudresourcemanager/v3/projects/{project}:testIamPermissions", timeout=10).status_code == 400
    assert requests.get(f"{base}/cloudscheduler/v1/projects/{project}/locations/{REGION}/jobs?pageToken=guess",
                        timeout=10).status_code == 400
    assert len(deployment.fake.rejected) == 5
    deployment.fake.rejected.clear()


# --- the dry-run request itself, as BigQuery documents it ---------------------------------------

SCALARS = {"STRING", "BYTES", "INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL", "TIMESTAMP", "DATE", "TIME", "DATETIME",
           "JSON", "GEOGRAPHY", "INTERVAL"}


def type_problems(kind) -> list[str]:
    if not isinstance(kind, dict) or kind.get("type") not in SCALARS | {"ARRAY", "STRUCT"}:
        return [f"bad parameterType {kind}"]
    if kind["type"] == "ARRAY":
        return type_problems(kind.get("arrayType"))
    if kind["type"] == "STRUCT":
        fields = kind.get("structTypes")
        if not isinstance(fields, list) or not fields:
            return ["STRUCT without structTypes"]
        return [p for f in fields for p in ([] if f.get("name") else ["unnamed struct field"]) + type_problems(f.get("type"))]
    return []


def value_problems(kind: dict, value) -> list[str]:
    if not isinstance(value, dict):
        return [f"parameterValue {value!r} is not an object"]
    if kind["type"] == "ARRAY":
        return [p for v in value.get("arrayValues", []) for p in value_problems(kind["arrayType"], v)]
    if kind["type"] == "STRUCT":
        values = value.get("structValues", {})
        return [p for f in kind["structTypes"] for p in value_problems(f["type"], values.get(f["name"], {}))]
    raw = value.get("value")
    return [] if raw is None or isinstance(raw, str) else [f"scalar value {raw!r} is not a string"]


def dry_run_request_problems(body) -> list[str]:
    config = (body or {}).get("configuration") or {}
    query = config.get("query") or {}
    problems = []
    if config.get("dryRun") is not True:
        problems.append("configuration.dryRun is not true")
    if query.get("useLegacySql") is not False:
        problems.append("configuration.query.useLegacySql is not false")
    if query.get("useQueryCache") is not False:
        problems.append("configuration.query.useQueryCache is not false")
    sql = query.get("query")
    if not isinstance(sql, str) or not sql.strip():
        problems.append("no query text")
        return problems
    parameters = query.get("queryParameters") or []
    if parameters and query.get("parameterMode") != "NAMED":
        problems.append("parameterMode is not NAMED")
    for parameter in parameters:
        problems += type_problems(parameter.get("parameterType"))
        if not problems:
            problems += value_problems(parameter["parameterType"], parameter.get("parameterValue"))
    named = {p.get("name") for p in parameters}
    used = set(re.findall(r"@([A-Za-z_][A-Za-z0-9_]*)", sql))
    if named != used:
        problems.append(f"parameters {sorted(named)} do not match the query's {sorted(used)}")
    return problems


@dataclass
class JobsInsert:
    project: str
    bodies: list = field(default_factory=list)
    rejected: list = field(default_factory=list)

    def handler(self):
        fake = self

        class Handler(JsonHandler):
            def do_POST(self):
                path = urlsplit(self.path).path
                body = self.read_json()
                fake.bodies.append(body)
                problems = [] if path == f"/bigquery/v2/projects/{fake.project}/jobs" else [f"no method POST {path}"]
                problems += dry_run_request_problems(body)
                if problems:
                    fake.rejected += problems
                    self.send_json(error(400, "INVALID_ARGUMENT", "; ".join(problems))[1], 400)
                elif "no_such_column" in body["configuration"]["query"]["query"]:
                    self.send_json({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                              "message": "Unrecognized name: no_such_column at [1:70]",
                                              "errors": [{"reason": "invalidQuery", "location": "q",
                                                          "message": "Unrecognized name: no_such_column at [1:70]"}]}}, 400)
                else:  # the documented dry-run answer: a DONE job with statistics, never run
                    reference = {**body.get("jobReference", {}), "projectId": fake.project}
                    kind = body["configuration"]["query"]["query"].split(" ", 1)[0]
                    self.send_json({"kind": "bigquery#job", "jobReference": reference, "configuration": body["configuration"],
                                    "status": {"state": "DONE"},
                                    "statistics": {"creationTime": "1767225600000", "totalBytesProcessed": "0",
                                                   "query": {"totalBytesProcessed": "0", "totalBytesBilled": "0",
                                                             "cacheHit": False, "statementType": kind}}})

            def do_GET(self):  # a dry run is never polled nor read back
                fake.rejected.append(f"GET {self.path}")
                self.send_json(error(400, "INVALID_ARGUMENT", "unexpected GET")[1], 400)

        return Handler


def test_dry_runs_send_the_documented_request(monkeypatch):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    settings = Settings(environment="production", configs_dir=CONFIGS, gcp_project="proj-doctor", metastore="bigquery")
    _broken_statement(None, monkeypatch)
    fake = JobsInsert("proj-doctor")
    metastore_check = tuple(c for c in CHECKS if c.name == "metastore")
    with serve(fake.handler()) as url:
        client = bigquery.Client(project="proj-doctor", credentials=AnonymousCredentials(),
                                 client_options=ClientOptions(api_endpoint=url))
        problems = run_doctor(settings, LauncherSettings(core=settings), bigquery_client=client, checks=metastore_check)
        catalog = BigQueryMetastore("proj-doctor", CONFIGS, runner=BigQueryRunner("proj-doctor", client=client)).statement_catalog()
    assert fake.rejected == []
    assert len(fake.bodies) == len(catalog) >= 20
    assert {b["configuration"]["query"]["query"].split(" ", 1)[0] for b in fake.bodies} >= {"SELECT", "INSERT", "MERGE", "UPDATE"}
    assert all(b.get("jobReference", {}).get("location") == "US" for b in fake.bodies)
    assert problems == [Problem("metastore", "statement 1 (SELECT org_profiles) fails its dry run: HTTP 400: Unrecognized name:"
                                             " no_such_column at [1:70]")]


def test_a_check_skipped_for_a_missing_setting_never_looks_clean():
    settings = Settings(environment="production", configs_dir=CONFIGS, gcp_project="proj-doctor")
    scheduler = tuple(c for c in CHECKS if c.name == "scheduler")
    launcher = LauncherSettings(core=settings, gcp_region=REGION, scheduler_service_account="s@proj-doctor.iam.gserviceaccount.com")
    assert run_doctor(settings, launcher, checks=scheduler) == [Problem("scheduler", "not checked: SCHEDULER_AUDIENCE not set")]


def test_format_problems():
    assert format_problems([]) == f"ok: {len(CHECKS)} checks, 0 problems"
    assert format_problems([Problem("a", "b"), Problem("c", "d")]) == "doctor: a: b\ndoctor: c: d"
