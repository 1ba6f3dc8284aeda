"""Flex Template metadata, the template entry point, Make targets, and Cloud Scheduler jobs."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from google.cloud import dataflow_v1beta3

from beam_pipelines.config.loader import discover_pipelines
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.errors import ConfigError
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.metastore.base import new_run
from beam_pipelines.pipeline import template
from beam_pipelines.pipeline.schedules import gcloud_commands, scheduler_jobs
from beam_pipelines.pipeline.template_metadata import render
from tests.conftest import CONFIGS

REPO = Path(__file__).resolve().parents[1]
METADATA = REPO / "templates" / "metadata"


def test_generated_metadata_parses_as_template_metadata_and_is_up_to_date():
    pipelines = discover_pipelines(CONFIGS)
    assert {p.name for p in METADATA.glob("*.json")} == {f"{p.template_name}.json" for p in pipelines.values()}
    for loaded in pipelines.values():
        text = (METADATA / f"{loaded.template_name}.json").read_text()
        assert text == render(loaded), f"{loaded.template_name}.json is out of date: run `make templates`"
        metadata = dataflow_v1beta3.TemplateMetadata.from_json(text)
        assert [p.name for p in metadata.parameters] == [p.name for p in template.PARAMETERS]
        assert all(p.regexes and p.help_text and p.label for p in metadata.parameters)
        required = [p.name for p in metadata.parameters if not p.is_optional]
        assert required == ["pipeline", "org_slugs", "run_ids", "start_date", "end_date"]
        assert metadata.parameters[0].regexes == [f"^{loaded.pipeline_id}$"], "a template runs only its own pipeline"
        assert loaded.pipeline_id in metadata.description


def test_template_entry_runs_the_same_graph_for_recorded_runs(settings, past_days):
    seed_org(settings, "acme")
    store = MetastoreSpec.from_settings(settings).open()
    run_id = uuid.uuid4().hex
    store.create_runs([new_run(run_id, "acme", "openai/cost/usage_cost", past_days[0], past_days[0], "QUEUED",
                               "scheduler", "dataflow", "dataflow:job-1")])
    result = template.run(["--pipeline=openai/cost/usage_cost", "--org_slugs=acme", f"--run_ids={run_id}",
                           f"--start_date={past_days[0]}", f"--end_date={past_days[0]}", "--environment=development",
                           "--runner=FnApiRunner"])
    result.wait_until_finish()
    run = store.get_run(run_id)
    assert run["status"] == "COMPLETED" and run["rows_written"] > 0


@pytest.mark.parametrize("args, message", [
    (["--org_slugs=acme,globex", f"--run_ids={'a' * 32}"], "same length"),
    (["--org_slugs=../etc", f"--run_ids={'a' * 32}"], "org_slugs"),
    (["--org_slugs=acme", "--run_ids=not-hex"], "run_ids"),
    (["--org_slugs=acme", f"--run_ids={'a' * 32}", "--smtp_password_secret=hunter2"], "smtp_password_secret"),
    (["--org_slugs=acme", f"--run_ids={'a' * 32}", "--end_date=2026-02-01"], "end_date is before start_date"),
])
def test_template_parameters_are_validated(args, message):
    argv = ["--pipeline=openai/cost/usage_cost", "--start_date=2026-03-01", "--end_date=2026-03-01", *args]
    with pytest.raises(ConfigError, match=message):
        template.work_items(template.parse_args(argv)[0])


def test_make_targets_print_exact_commands_with_dry_run():
    env = {**os.environ, "GCP_PROJECT_ID": "acme-prod", "GCP_REGION": "europe-west1"}
    image = subprocess.run(["make", "-s", "template-image", "DRY_RUN=1"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60).stdout.strip()
    assert image.startswith("gcloud builds submit --project=acme-prod --region=europe-west1 "
                            "--config=templates/cloudbuild.yaml --substitutions=_IMAGE=europe-west1-docker.pkg.dev/acme-prod/")
    run = subprocess.run(["make", "-s", "template-run", "DRY_RUN=1", "PIPELINE=gcp/cost/billing", "ORGS=acme",
                          f"RUN_IDS={'a' * 32}", "START_DATE=2026-03-01", "END_DATE=2026-03-02"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60).stdout.strip()
    assert "--template-file-gcs-location=gs://acme-prod-convergence/templates/gcp_cost_billing.json" in run
    assert (f"--parameters=^;^pipeline=gcp/cost/billing;org_slugs=acme;run_ids={'a' * 32};start_date=2026-03-01;"
            "end_date=2026-03-02;environment=production") in run
    assert "--region=europe-west1" in run and "sdk_container_image" not in run, "the spec's default environment has it"
    build = subprocess.run(["make", "-s", "template-build", "DRY_RUN=1"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120).stdout.strip().splitlines()[-1]
    assert "templates publish --path=gs://acme-prod-convergence/templates --image=europe-west1-docker.pkg.dev/" in build
    assert "--env" not in build


def test_scheduler_jobs_call_the_trigger_with_oidc_and_retries():
    jobs = scheduler_jobs(discover_pipelines(CONFIGS), "https://launcher.example.test/", "sched@p.iam.gserviceaccount.com",
                          "p", "europe-west1")
    *triggers, reconcile = jobs
    by_pipeline = {json.loads(j["httpTarget"]["body"])["pipelines"][0]: j for j in triggers}
    assert set(by_pipeline) == {"openai/cost/usage_cost", "anthropic/cost/usage_cost", "gcp/cost/billing",
                                "openai/subscriptions/subscriptions", "openai/ledger/billed_cost",
                                "anthropic/ledger/billed_cost"}, "only scheduled pipelines"
    job = by_pipeline["openai/cost/usage_cost"]
    assert job["schedule"] == "0 4 * * *" and job["timeZone"] == "UTC"
    assert job["httpTarget"]["uri"] == "https://launcher.example.test/api/v1/scheduler/trigger"
    assert job["httpTarget"]["oidcToken"] == {"serviceAccountEmail": "sched@p.iam.gserviceaccount.com",
                                              "audience": "https://launcher.example.test"}, "one audience for every job"
    assert reconcile["httpTarget"]["uri"] == "https://launcher.example.test/api/v1/reconcile"
    assert reconcile["schedule"] == "*/10 * * * *" and reconcile["httpTarget"]["oidcToken"] == job["httpTarget"]["oidcToken"]
    assert job["retryConfig"]["retryCount"] == 3
    [command] = [c for c in gcloud_commands(jobs) if "openai-cost-usage-cost" in c]
    assert command.startswith("gcloud scheduler jobs create http convergence-openai-cost-usage-cost --location=europe-west1")
    assert "--oidc-service-account-email=sched@p.iam.gserviceaccount.com" in command
    with pytest.raises(ConfigError, match="LAUNCHER_URL"):
        scheduler_jobs(discover_pipelines(CONFIGS), "", "sa", "p", "r")
