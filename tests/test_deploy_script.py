"""deploy/deploy.sh without Google Cloud: DRY_RUN=1 prints every command in order, and those
commands carry the flags gcloud 578 accepts (see the deploy step files for why each one).

gcloud and bq are replaced by stubs on PATH: a dry run must never call them, and the one
non-dry test (Scheduler jobs that already exist) records what would have been run.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENV = {"PROJECT": "my-proj", "REGION": "europe-west1", "BUCKET": "my-proj-convergence",
       "CORS_ORIGINS": "https://app.example.com,https://admin.example.com",
       "IMAGE": "REGISTRY-URI/convergence:test"}
STEP_TITLES = ["services", "service accounts", "bucket", "Artifact Registry", "KMS", "Secret Manager",
               "BigQuery", "IAM", "Flex Template", "Cloud Run", "Scheduler"]
LIVE_URL = "https://convergence-launcher-abc123-ew.a.run.app"

STUB = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0])] + args) + "\\n")
if os.environ.get("STUB_MODE") != "live":
    sys.exit(97)  # a dry run must not get here
if args[:3] == ["run", "services", "describe"]:
    print("{url}")
"""


def _convergence_cli() -> str:
    local = Path(sys.executable).parent / "convergence"
    return str(local) if local.exists() else (shutil.which("convergence") or "convergence")


def _clean_environ() -> dict:
    """The caller's environment without anything the deploy reads, so a developer's shell can't leak in."""
    lib = (DEPLOY / "lib.sh").read_text()
    optional = re.search(r'OPTIONAL_SERVICE_SETTINGS="([^"]*)"', lib).group(1).split()
    drop = {*ENV, *optional, "LOCATION", "REPO", "SERVICE", "DRY_RUN", "CONVERGENCE", "PYTHON", "STUB_MODE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("stub-bin")
    for name in ("gcloud", "bq"):
        path = bin_dir / name
        path.write_text(STUB.format(python=sys.executable, url=LIVE_URL))
        path.chmod(0o755)
    return bin_dir


def _deploy(stubs, script: Path, env: dict, log: Path, dry: bool = True) -> subprocess.CompletedProcess:
    full = {**_clean_environ(), **env, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
            "STUB_LOG": str(log), "CONVERGENCE": _convergence_cli(), "PYTHON": sys.executable}
    if dry:
        full["DRY_RUN"] = "1"
    else:
        full["STUB_MODE"] = "live"
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full, cwd=ROOT, timeout=60)


@pytest.fixture(scope="module")
def dry_run(stubs, tmp_path_factory):
    log = tmp_path_factory.mktemp("dry") / "calls.jsonl"
    proc = _deploy(stubs, DEPLOY / "deploy.sh", ENV, log)
    assert proc.returncode == 0, proc.stderr
    assert not log.exists(), f"the dry run called gcloud/bq: {log.read_text()}"
    return proc.stdout.splitlines()


def _commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in lines if line.startswith("+ ")]


def _find(commands, *prefix) -> list[list[str]]:
    return [c for c in commands if c[:len(prefix)] == list(prefix)]


def _flag(command: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in command if a.startswith(name + "=")]
    assert len(values) == 1, f"{name} in {command}"
    return values[0]


def test_every_line_is_a_header_a_command_or_a_note_and_parses(dry_run):
    for line in dry_run:
        assert line.startswith(("==> ", "+ ", "# ")), line
        shlex.split(line)


def test_steps_run_in_order(dry_run):
    headers = [line for line in dry_run if re.match(r"==> \[\d+/11\]", line)]
    assert [int(re.match(r"==> \[(\d+)/", h).group(1)) for h in headers] == list(range(1, 12))
    for header, title in zip(headers, STEP_TITLES):
        assert title in header
    joined = [" ".join(c) for c in _commands(dry_run)]

    def first(text):
        return next(i for i, c in enumerate(joined) if text in c)
    assert first("iam service-accounts create") < first("projects add-iam-policy-binding")
    assert first("secrets create ca-root-key") < first("secrets add-iam-policy-binding ca-root-key") < first("run deploy")
    assert first("mk -f --dataset") < first("provision") < first("GRANT") < first("run deploy")
    assert first("builds submit") < first("templates publish") < first("run deploy") < first("scheduler jobs create")


def _logical_commands(lines: list[str]) -> list[str]:
    """Shell lines with their backslash continuations joined, comment marks removed."""
    joined, current = [], ""
    for line in lines:
        text = re.sub(r"^\s*(#\s*)?(\+ )?", "", line)
        current += " " + text.rstrip("\\").strip()
        if not text.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return joined


def test_flex_template_build_never_pairs_image_with_env(dry_run):
    commands = _logical_commands(dry_run)
    for script in sorted(DEPLOY.rglob("*.sh")):
        commands += _logical_commands(script.read_text().splitlines())
    builds = [c for c in commands if c.startswith("gcloud dataflow flex-template build")]
    assert builds, "the documented gcloud alternative is missing from deploy/steps/09-templates.sh"
    for build in builds:
        assert "--image=" in build and "--env" not in build, build


def test_cloud_run_is_public_at_the_front_end_and_starts_the_server(dry_run):
    assert not any("--no-allow-unauthenticated" in line for line in dry_run)
    (deploy,) = _find(_commands(dry_run), "gcloud", "run", "deploy")
    assert "--no-invoker-iam-check" in deploy and "--cpu-throttling" in deploy
    assert "--command=convergence" in deploy and "--args=serve,--host,0.0.0.0,--port,8080" in deploy
    assert _flag(deploy, "--image") == ENV["IMAGE"]


def _service_env(dry_run) -> dict[str, str]:
    (deploy,) = _find(_commands(dry_run), "gcloud", "run", "deploy")
    value = _flag(deploy, "--set-env-vars")
    assert value.startswith("^;^"), "CORS_ORIGINS has commas: the list needs the ';' delimiter"
    pairs = [item.split("=", 1) for item in value[3:].split(";")]
    assert all(len(p) == 2 for p in pairs)
    return dict(pairs)


def _production_required_names(monkeypatch) -> set[str]:
    """launcher/settings.py has no importable list: read the names off production_problems() of an
    empty production configuration, refusing any problem line that does not start with NAME[ and NAME]:"""
    from beam_pipelines.settings import load_settings
    from launcher.settings import LauncherSettings

    for key in list(os.environ):
        monkeypatch.delenv(key)
    monkeypatch.setenv("ENVIRONMENT", "production")
    names = set()
    for problem in LauncherSettings.from_env(load_settings()).production_problems():
        head = problem.split(":", 1)[0]
        assert re.fullmatch(r"[A-Z0-9_]+( and [A-Z0-9_]+)*", head), f"cannot read a setting name from {problem!r}"
        names.update(head.split(" and "))
    assert {"KMS_KEY_NAME", "CORS_ORIGINS", "SCHEDULER_AUDIENCE", "DATAFLOW_SDK_CONTAINER_IMAGE"} <= names
    return names


def test_service_env_has_every_setting_the_production_check_requires(dry_run, monkeypatch):
    env = _service_env(dry_run)
    for name in _production_required_names(monkeypatch):
        # secrets travel as Secret Manager names: the service reads NAME_SECRET (service_secrets.py)
        assert name in env or f"{name}_SECRET" in env, name
    assert env["CA_ROOT_API_KEY_SECRET"] == "projects/my-proj/secrets/ca-root-key"
    assert env["CORS_ORIGINS"] == ENV["CORS_ORIGINS"]
    assert env["DATAFLOW_SDK_CONTAINER_IMAGE"] == ENV["IMAGE"]


def test_the_service_env_passes_the_production_check(dry_run, monkeypatch):
    import launcher.settings as launcher_settings
    from beam_pipelines.settings import load_settings

    env = _service_env(dry_run)
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def fake_secret(name):  # Secret Manager, as the revision would read it at start
        assert os.environ[f"{name}_SECRET"].startswith("projects/my-proj/secrets/")
        return "k" * 48

    monkeypatch.setattr(launcher_settings, "resolve_secret", fake_secret)
    settings = launcher_settings.LauncherSettings.from_env(load_settings())
    assert settings.core.is_production and settings.production_problems() == []


def test_one_audience_the_service_url_for_every_scheduler_job(dry_run):
    commands = _commands(dry_run)
    (update,) = _find(commands, "gcloud", "run", "services", "update")
    assert "--update-env-vars=SCHEDULER_AUDIENCE=https://SERVICE-URL" in update
    jobs = _find(commands, "gcloud", "scheduler", "jobs", "create", "http")
    assert len(jobs) >= 2
    assert {_flag(j, "--oidc-token-audience") for j in jobs} == {"https://SERVICE-URL"}
    (reconcile,) = [j for j in jobs if j[5] == "convergence-reconcile"]
    assert _flag(reconcile, "--uri") == "https://SERVICE-URL/api/v1/reconcile"
    assert _flag(reconcile, "--schedule") == "*/10 * * * *"
    for job in jobs:
        assert "--headers=Content-Type=application/json" in job
        assert not any(a.startswith("--update-headers") for a in job)


def test_existing_scheduler_jobs_are_updated_with_update_headers(stubs, tmp_path):
    log = tmp_path / "calls.jsonl"
    proc = _deploy(stubs, DEPLOY / "steps" / "11-scheduler.sh", {k: v for k, v in ENV.items() if k != "CORS_ORIGINS"},
                   log, dry=False)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    updates = [c for c in calls if c[:5] == ["gcloud", "scheduler", "jobs", "update", "http"]]
    assert updates and not [c for c in calls if c[:4] == ["gcloud", "scheduler", "jobs", "create"]]
    for job in updates:
        assert "--update-headers=Content-Type=application/json" in job
        assert not any(a.startswith("--headers") for a in job)
        assert _flag(job, "--oidc-token-audience") == LIVE_URL


def test_bucket_flags_take_no_value_and_lifecycle_deletes_tmp_and_staging(dry_run):
    commands = _find(_commands(dry_run), "gcloud", "storage", "buckets", "create") + \
        _find(_commands(dry_run), "gcloud", "storage", "buckets", "update")
    assert len(commands) == 2
    for command in commands:
        for flag in ("--uniform-bucket-level-access", "--public-access-prevention"):
            assert flag in command and not any(a.startswith(flag + "=") for a in command)
        assert (ROOT / _flag(command, "--lifecycle-file")).is_file()
    rules = json.loads((DEPLOY / "lifecycle.json").read_text())["rule"]
    assert {(r["action"]["type"], r["condition"]["age"], p) for r in rules for p in r["condition"]["matchesPrefix"]} \
        == {("Delete", 7, "tmp/"), ("Delete", 7, "staging/")}


def test_project_bindings_carry_condition_none(dry_run):
    bindings = _find(_commands(dry_run), "gcloud", "projects", "add-iam-policy-binding")
    assert len(bindings) == 5, "worker: 2 roles; launcher: 3 (incl. cloudscheduler.viewer)"
    for binding in bindings:
        assert "--condition=None" in binding


def test_secrets_are_created_without_values(dry_run):
    creates = _find(_commands(dry_run), "gcloud", "secrets", "create")
    assert {c[3] for c in creates} == {"ca-root-key", "smtp-password", "slack-webhook"}
    for create in creates:
        assert not any(a.startswith("--data-file") for a in create)
    assert any(line.startswith("# printf '%s'") and "secrets versions add ca-root-key --data-file=-" in line
               for line in dry_run)


def test_a_step_runs_alone(stubs, tmp_path):
    env = {k: v for k, v in ENV.items() if k != "CORS_ORIGINS"}
    proc = _deploy(stubs, DEPLOY / "steps" / "03-bucket.sh", env, tmp_path / "calls.jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "==> [3/11] bucket gs://my-proj-convergence"
    assert len(_find(_commands(lines), "gcloud", "storage", "buckets", "create")) == 1


def test_missing_project_is_one_clear_line_and_exit_2(stubs, tmp_path):
    env = {k: v for k, v in ENV.items() if k != "PROJECT"}
    proc = _deploy(stubs, DEPLOY / "deploy.sh", env, tmp_path / "calls.jsonl")
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("deploy: error: PROJECT: required")
