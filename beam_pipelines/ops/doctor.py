"""``convergence doctor``: check a deployed project and say, one line each, what is wrong.

Every check is a small function returning its problems as one-line messages. They run in order and
a failing one never stops the next, so one run lists everything; a check that cannot run (HTTP 403,
a network error) reports exactly that as its problem, because an unchecked thing is not a healthy
one. Nothing here changes the project: reads, ``testIamPermissions`` and BigQuery dry runs only.

IAM is tested for the identity the doctor runs as (on Cloud Run: ``convergence-launcher``);
``testIamPermissions`` cannot speak for anyone else, so the worker's grants stay untested here. Its
answer fails open: a resource that does not exist yields an empty set, exactly like a missing grant.
So each resource is read first, and a 404 is reported as "not found", not as a permission gap. A 403
on that read is no problem by itself: the launcher's roles are the least it needs (secretAccessor
cannot read the secret's metadata, objectViewer not the bucket's, and it holds nothing on the KMS
key), so the permission answer alone then decides, and a gap says the resource may also be missing.
The KMS key is the one resource where the right answer is EMPTY: only the workers decrypt
credentials, and a launcher that could decrypt them is over-granted.

The root key is read as the service reads it (``CA_ROOT_API_KEY_SECRET``, ``versions/latest`` unless
it pins one). Only its length is looked at, and the value is registered for redaction before
anything else happens, so no line this process writes can carry it.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

from beam_pipelines.secrets.redaction import redact, remember

log = logging.getLogger(__name__)

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
TIMEOUT = 30.0  # seconds per call: a doctor answers quickly or says it could not
MAX_MESSAGE = 400  # characters of one line; API messages can be long
ROOT_KEY_SECRET_ID = "ca-root-key"  # noqa: S105 - a Secret Manager name (deploy/steps/06-secrets.sh), not a value
JOB_PREFIX = "convergence-"  # every job deploy/steps/11-scheduler.sh creates
SCHEDULER_PAGE_SIZE = 500  # the API's maximum
MAX_PAGES = 100

# What the launcher needs (deploy/steps/02 and 08), and what it must not hold.
PROJECT_PERMISSIONS = ("dataflow.jobs.create", "dataflow.jobs.get", "dataflow.jobs.list", "bigquery.jobs.create")
WORKER_SA_PERMISSIONS = ("iam.serviceAccounts.actAs",)
SECRET_PERMISSIONS = ("secretmanager.versions.access",)
KMS_PERMISSIONS = ("cloudkms.cryptoKeyVersions.useToDecrypt",)  # expected: none of them
BUCKET_PERMISSIONS = ("storage.objects.get", "storage.objects.list")

SECRET_NAME = re.compile(r"projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?")
_REQUEST_PREFIX = re.compile(r"^(?:GET|POST|PUT|PATCH|DELETE) \S+: ")  # the client's "POST <url>: " before the API's message
KMS_KEY_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")


def default_endpoints(service: str) -> str:
    """The public REST endpoint of a Google API, by its service name (``cloudkms`` ...)."""
    return f"https://{service}.googleapis.com"


def default_session():
    """Application Default Credentials: on Cloud Run, the service's own identity."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    return AuthorizedSession(google.auth.default(scopes=SCOPES)[0])


@dataclass(frozen=True)
class Problem:
    check: str
    message: str


class ApiError(Exception):
    """A Google REST call answered 4xx/5xx: its status, and the API's own status name and message."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"HTTP {status}" + (f" {reason}" if reason else "") + (f": {message}" if message else ""))
        self.status, self.reason = status, reason


class Skip(Exception):  # noqa: N818 - a signal, not an error
    """A setting the check needs is not set; the settings check reports it, so no second line."""


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return redact(line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 3] + "...")


def describe(exc: BaseException) -> str:
    """One line for an exception: an API's status and message, else its type and text."""
    if isinstance(exc, ApiError):
        return _one_line(str(exc))
    code, message = getattr(exc, "code", None), getattr(exc, "message", None)
    if isinstance(code, int) and message:  # google.api_core errors (BigQuery, Cloud Storage)
        details = [e["message"] for e in getattr(exc, "errors", None) or [] if isinstance(e, dict) and e.get("message")]
        text = details[0] if details else _REQUEST_PREFIX.sub("", str(message))
        return _one_line(f"HTTP {code}: {text.splitlines()[0] if text else ''}")
    return _one_line(f"{type(exc).__name__}: {exc}")


def _error_of(response) -> ApiError:
    """Google's error envelope ``{"error": {"code", "status", "message"}}``; never a 2xx body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        return ApiError(response.status_code, str(error.get("status") or ""), _one_line(error.get("message") or ""))
    return ApiError(response.status_code, "", _one_line(response.reason or ""))


def _need(value: str, name: str) -> str:
    if not value:
        raise Skip(f"{name} not set")
    return value


class Context:
    """What the checks share: settings, and the clients (made on first use, so a missing
    credential fails the checks that need it, one line each, not the whole run)."""

    def __init__(self, settings, launcher, session=None, endpoints=None, storage_client=None, bigquery_client=None,
                 root_key_secret: str | None = None):
        self.settings, self.launcher = settings, launcher
        self.endpoints: Callable[[str], str] = endpoints or default_endpoints
        self._session, self._storage, self._bigquery = session, storage_client, bigquery_client
        self._root_key_secret = root_key_secret

    @property
    def root_key_secret(self) -> str:
        """``CA_ROOT_API_KEY_SECRET`` as given, else the secret deploy/steps/06-secrets.sh creates."""
        return self._root_key_secret or f"projects/{self.project}/secrets/{ROOT_KEY_SECRET_ID}"

    @property
    def project(self) -> str:
        return _need(self.settings.gcp_project, "GCP_PROJECT_ID")

    @property
    def region(self) -> str:
        return _need(self.launcher.gcp_region, "GCP_REGION")

    @cached_property
    def session(self):
        return self._session or default_session()

    @cached_property
    def storage(self):
        if self._storage is not None:
            return self._storage
        from google.cloud import storage

        return storage.Client(project=self.project)

    @cached_property
    def bigquery(self):
        if self._bigquery is not None:
            return self._bigquery
        from beam_pipelines.bigquery.client import make_client

        return make_client(self.project, self.settings.bigquery_location)

    @cached_property
    def pipelines(self) -> dict:
        from beam_pipelines.config.loader import discover_pipelines

        return discover_pipelines(self.settings.configs_dir)

    def _url(self, service: str, path: str) -> str:
        return self.endpoints(service).rstrip("/") + path

    def get(self, service: str, path: str, params: dict | None = None) -> dict:
        response = self.session.get(self._url(service, path), params=params, timeout=TIMEOUT)
        if response.status_code >= 400:
            raise _error_of(response)
        return response.json() if response.content else {}

    def post(self, service: str, path: str, body: dict) -> dict:
        response = self.session.post(self._url(service, path), json=body, timeout=TIMEOUT)
        if response.status_code >= 400:
            raise _error_of(response)
        return response.json() if response.content else {}


# --- (a) settings -------------------------------------------------------------------------------

def check_settings(ctx: Context) -> list[str]:
    """The launcher's own production start-up check. Its root-key line is left to the root-key check,
    which reads the secret itself, so one missing key is one line."""
    if not ctx.settings.is_production:
        return [f"ENVIRONMENT is {ctx.settings.environment!r}: a deployed service runs with ENVIRONMENT=production"]
    return [p for p in ctx.launcher.production_problems() if not p.startswith("CA_ROOT_API_KEY:")]


# --- (b) IAM of the running identity -----------------------------------------------------------

def _judge(what: str, asked: tuple[str, ...], granted, readable: bool, expect_none: bool = False) -> list[str]:
    held = [p for p in asked if p in set(granted or ())]
    if expect_none:
        return [f"over-granted: the running identity holds {', '.join(held)} on {what}; only the worker account should"] \
            if held else []
    missing = [p for p in asked if p not in held]
    if not missing:
        return []
    maybe = "" if readable else " (or it does not exist: reading it was refused too)"
    return [f"the running identity lacks {', '.join(missing)} on {what}{maybe}"]


def _rest_probe(ctx: Context, what: str, service: str, path: str, asked: tuple[str, ...], expect_none: bool = False) -> list[str]:
    """GET the resource, then ``POST <resource>:testIamPermissions`` with ``{"permissions": [...]}``."""
    readable = True
    try:
        ctx.get(service, path)
    except ApiError as exc:
        if exc.status == 404:
            return [f"{what} not found"]
        if exc.status != 403:
            raise
        readable = False
    answer = ctx.post(service, path + ":testIamPermissions", {"permissions": list(asked)})
    return _judge(what, asked, answer.get("permissions"), readable, expect_none)


def check_project_iam(ctx: Context) -> list[str]:
    """Launch Flex Templates, read their jobs, run BigQuery jobs (project-level roles)."""
    return _rest_probe(ctx, f"project {ctx.project}", "cloudresourcemanager", f"/v3/projects/{ctx.project}",
                       PROJECT_PERMISSIONS)


def check_worker_account_iam(ctx: Context) -> list[str]:
    """Act as the worker account: a launch naming it is refused without ``actAs``."""
    account = _need(ctx.launcher.dataflow_service_account, "DATAFLOW_SERVICE_ACCOUNT")
    return _rest_probe(ctx, f"service account {account}", "iam", f"/v1/projects/{ctx.project}/serviceAccounts/{account}",
                       WORKER_SA_PERMISSIONS)


def _secret(ctx: Context) -> str:
    if not SECRET_NAME.fullmatch(ctx.root_key_secret):
        raise ValueError(f"CA_ROOT_API_KEY_SECRET {ctx.root_key_secret!r} is not projects/P/secrets/S[/versions/V]")
    return ctx.root_key_secret


def check_root_key_secret_iam(ctx: Context) -> list[str]:
    """Access the root key; checked on the secret, since its versions inherit its policy."""
    secret = _secret(ctx).split("/versions/")[0]
    return _rest_probe(ctx, f"secret {secret}", "secretmanager", f"/v1/{secret}", SECRET_PERMISSIONS)


def check_kms_iam(ctx: Context) -> list[str]:
    """Decrypting credentials belongs to the workers: from the launcher the answer must be empty."""
    key = _need(ctx.settings.kms_key_name, "KMS_KEY_NAME")
    if not KMS_KEY_NAME.fullmatch(key):
        return [f"KMS_KEY_NAME {key!r} is not projects/P/locations/L/keyRings/R/cryptoKeys/K"]
    return _rest_probe(ctx, f"KMS key {key}", "cloudkms", f"/v1/{key}", KMS_PERMISSIONS, expect_none=True)


def _templates_bucket(ctx: Context) -> tuple[str, str]:
    from beam_pipelines.pipeline.template_spec import split_gcs_path

    return split_gcs_path(_need(ctx.launcher.templates_path, "DATAFLOW_TEMPLATES_PATH"))


def check_bucket_iam(ctx: Context) -> list[str]:
    """Read the template specs, through the storage client (it honours ``STORAGE_EMULATOR_HOST``)."""
    from google.api_core.exceptions import Forbidden, NotFound

    bucket, _ = _templates_bucket(ctx)
    readable = True
    try:
        ctx.storage.get_bucket(bucket, timeout=TIMEOUT)
    except NotFound:
        return [f"bucket gs://{bucket} not found"]
    except Forbidden:
        readable = False
    granted = ctx.storage.bucket(bucket).test_iam_permissions(list(BUCKET_PERMISSIONS), timeout=TIMEOUT)
    return _judge(f"bucket gs://{bucket}", BUCKET_PERMISSIONS, granted, readable)


# --- (c) the root key ---------------------------------------------------------------------------

def check_root_key(ctx: Context) -> list[str]:
    """The version the service will read exists, is enabled, is intact and long enough."""
    import google_crc32c

    from launcher.settings import MIN_ROOT_KEY

    secret = _secret(ctx)
    version = secret if "/versions/" in secret else f"{secret}/versions/latest"
    short = secret.split("/")[3]
    try:
        answer = ctx.get("secretmanager", f"/v1/{version}:access")
    except ApiError as exc:
        if exc.status == 404:
            return [f"{version}: no such version (the secret has none, or does not exist): add one with"
                    f" printf '%s' \"$(openssl rand -base64 48)\" | gcloud secrets versions add {short} --data-file=-"
                    f" --project={secret.split('/')[1]}"]
        if exc.reason == "FAILED_PRECONDITION":  # the version is disabled or destroyed
            return [f"{version} cannot be read ({exc}); enable a version or add a new one"]
        raise
    payload = answer.get("payload") or {}
    try:
        data = base64.b64decode(payload.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        return [f"{version}: the payload is not base64"]
    value = data.decode(errors="replace")
    remember(value)  # before anything else: nothing written from now on can carry it
    crc = payload.get("dataCrc32c")
    if crc is not None and int(google_crc32c.value(data)) != int(crc):
        return [f"{version}: payload corrupted (CRC32C mismatch)"]
    if len(value) < MIN_ROOT_KEY:
        return [f"{version}: the root key is shorter than {MIN_ROOT_KEY} characters; add a longer version"]
    return []


# --- (d) Flex Template specs --------------------------------------------------------------------

def _spec_problems(path: str, text: str, image: str) -> list[str]:
    from google.cloud import dataflow_v1beta3 as df

    try:
        spec = df.ContainerSpec.from_json(text)  # an unknown or misspelt field raises here, as the API would refuse it
    except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
        return [f"{path}: not a Flex Template spec (ContainerSpec): {describe(exc)}"]
    issues = []
    worker_image = spec.default_environment.sdk_container_image
    if image and spec.image != image:
        too = " (defaultEnvironment.sdkContainerImage too)" if worker_image == spec.image else ""
        issues.append(f"image {spec.image or '(none)'}{too}, expected {image} (DATAFLOW_SDK_CONTAINER_IMAGE)")
    if image and worker_image and worker_image not in (image, spec.image):
        issues.append(f"defaultEnvironment.sdkContainerImage {worker_image}, expected {image}")
    if spec.sdk_info.language != df.SDKInfo.Language.PYTHON:
        issues.append(f"sdkInfo.language {spec.sdk_info.language.name}, expected PYTHON")
    return [f"{path}: " + "; ".join(issues)] if issues else []


def check_templates(ctx: Context) -> list[str]:
    """One spec per discovered pipeline at ``<templates path>/<template name>.json``, as the launcher
    names it at launch, for the image the launcher gives the workers."""
    from google.api_core.exceptions import NotFound

    bucket, prefix = _templates_bucket(ctx)
    folder = f"{prefix}/" if prefix else ""
    try:
        present = {blob.name for blob in ctx.storage.list_blobs(bucket, prefix=folder, timeout=TIMEOUT)}
    except NotFound:
        raise Skip(f"bucket gs://{bucket} not found (iam/bucket says so)") from None
    problems = []
    for loaded in sorted(ctx.pipelines.values(), key=lambda p: p.template_name):
        name = f"{folder}{loaded.template_name}.json"
        path = f"gs://{bucket}/{name}"
        if name not in present:
            problems.append(f"{path} missing (pipeline {loaded.pipeline_id}): publish with deploy/steps/09-templates.sh")
            continue
        text = ctx.storage.bucket(bucket).blob(name).download_as_text(timeout=TIMEOUT)
        problems += _spec_problems(path, text, ctx.launcher.dataflow_sdk_image)
    return problems


# --- (e) Cloud Scheduler jobs -------------------------------------------------------------------

def _list_jobs(ctx: Context, project: str, region: str) -> Iterator[dict]:
    """Every job of the location, following ``nextPageToken`` (a page may hold fewer than asked)."""
    path, token, seen = f"/v1/projects/{project}/locations/{region}/jobs", "", set()
    for _ in range(MAX_PAGES):
        params = {"pageSize": SCHEDULER_PAGE_SIZE, **({"pageToken": token} if token else {})}
        page = ctx.get("cloudscheduler", path, params=params)
        yield from page.get("jobs") or []
        token = page.get("nextPageToken") or ""
        if not token:
            return
        if token in seen:
            raise RuntimeError("the job list repeats a page token")
        seen.add(token)
    raise RuntimeError(f"more than {MAX_PAGES} pages of jobs")


def _body(raw):
    """The API returns the body as base64 bytes; compare it as the JSON it carries."""
    try:
        return json.loads(base64.b64decode(raw or "", validate=True))
    except (binascii.Error, ValueError):
        return raw


def _job_differences(want: dict, have: dict, audience: str) -> list[str]:
    target, actual = want["httpTarget"], have.get("httpTarget") or {}
    oidc = actual.get("oidcToken") or {}
    pairs = (("schedule", want["schedule"], have.get("schedule")), ("time zone", want["timeZone"], have.get("timeZone")),
             ("URI", target["uri"], actual.get("uri")), ("HTTP method", target["httpMethod"], actual.get("httpMethod")),
             ("body", json.loads(target["body"]), _body(actual.get("body"))),
             ("OIDC service account", target["oidcToken"]["serviceAccountEmail"], oidc.get("serviceAccountEmail")),
             ("OIDC audience", audience, oidc.get("audience")), ("state", "ENABLED", have.get("state", "ENABLED")))
    return [f"{label} {got!r}, expected {expected!r}" for label, expected, got in pairs if got != expected]


def check_scheduler(ctx: Context) -> list[str]:
    """The jobs ``schedules render`` derives from the configs, as deployed; token audience = SCHEDULER_AUDIENCE."""
    from beam_pipelines.pipeline.schedules import job_name, scheduler_jobs

    project, region = ctx.project, ctx.region
    account = _need(ctx.launcher.scheduler_service_account, "SCHEDULER_SERVICE_ACCOUNT")
    audience = _need(ctx.launcher.scheduler_audience, "SCHEDULER_AUDIENCE")
    expected = {job_name(job): job for job in scheduler_jobs(ctx.pipelines, audience, account, project, region)}
    actual = {job_name(job): job for job in _list_jobs(ctx, project, region) if job.get("name")}
    problems = []
    for name, want in expected.items():
        if name not in actual:
            problems.append(f"job {name} missing: create it with deploy/steps/11-scheduler.sh")
            continue
        differences = _job_differences(want, actual[name], audience)
        if differences:
            problems.append(f"job {name}: " + "; ".join(differences))
    problems += [f"job {name}: not derived from the configs (a pipeline no longer scheduled?); delete it"
                 for name in sorted(actual) if name.startswith(JOB_PREFIX) and name not in expected]
    return problems


# --- (f) metastore statements -------------------------------------------------------------------

def _statement_name(number: int, kind: str, sql: str) -> str:
    table = re.search(r"`[^`.]+\.[^`.]+\.([^`]+)`", sql)
    return f"statement {number} ({kind} {table.group(1) if table else '?'})"


def check_metastore(ctx: Context) -> list[str]:
    """Dry-run every statement the metastore sends, with its typed sample parameters: BigQuery
    parses and plans each against the real tables, and runs none of them."""
    from google.cloud import bigquery
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    from beam_pipelines.bigquery.client import BigQueryRunner
    from beam_pipelines.bigquery.sql import check_statement
    from beam_pipelines.metastore.bigquery import BigQueryMetastore

    project, location = ctx.project, ctx.settings.bigquery_location
    runner = BigQueryRunner(project, location, client=ctx.bigquery)
    store = BigQueryMetastore(project, ctx.settings.configs_dir, location, runner=runner)
    problems = []
    for number, (kind, sql, params) in enumerate(store.statement_catalog(), 1):
        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, use_legacy_sql=False,
                                         query_parameters=list(params))
        try:
            check_statement(sql)
            ctx.bigquery.query(sql, job_config=config, location=location, retry=DEFAULT_RETRY.with_deadline(TIMEOUT),
                               job_retry=None, timeout=TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - every failing statement is one finding
            problems.append(f"{_statement_name(number, kind, sql)} fails its dry run: {describe(exc)}")
    return problems


# --- running them -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], list[str]]


CHECKS: tuple[Check, ...] = (
    Check("settings", check_settings),
    Check("iam/project", check_project_iam),
    Check("iam/worker-service-account", check_worker_account_iam),
    Check("iam/root-key-secret", check_root_key_secret_iam),
    Check("iam/kms-key", check_kms_iam),
    Check("iam/bucket", check_bucket_iam),
    Check("root-key", check_root_key),
    Check("templates", check_templates),
    Check("scheduler", check_scheduler),
    Check("metastore", check_metastore),
)


def run_doctor(settings, launcher_settings, session=None, endpoints=None, storage_client=None, bigquery_client=None,
               *, root_key_secret: str | None = None, checks: tuple[Check, ...] = CHECKS) -> list[Problem]:
    """Run every check in order; the problems found, in that order (empty: all is well).

    A check skipped for a missing setting adds no line when the settings check has reported it; a run
    that found nothing else still never looks clean with something unchecked."""
    ctx = Context(settings, launcher_settings, session, endpoints, storage_client, bigquery_client, root_key_secret)
    problems, skipped = [], []
    for check in checks:
        try:
            messages = check.run(ctx)
        except Skip as exc:
            log.info("doctor: %s: skipped (%s)", check.name, exc)
            skipped.append(Problem(check.name, f"not checked: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - a check that cannot run reports that, and the next one runs
            log.warning("doctor: %s: could not run", check.name, exc_info=True)
            messages = [f"could not run: {describe(exc)}"]
        for message in messages:
            problem = Problem(check.name, _one_line(message))
            log.warning("doctor: %s: %s", problem.check, problem.message)
            problems.append(problem)
    return problems or skipped


def format_problems(problems: list[Problem], checks: int = len(CHECKS)) -> str:
    """``doctor: <check>: <message>`` per problem, or ``ok: N checks, 0 problems``."""
    if not problems:
        return f"ok: {checks} checks, 0 problems"
    return "\n".join(f"doctor: {p.check}: {p.message}" for p in problems)
