"""Data-quality suites and run notifications (local SMTP with STARTTLS, local webhook), Secret Manager."""
from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta, timezone

import apache_beam as beam
import google_crc32c
import pandas as pd
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.auth.credentials import AnonymousCredentials

from beam_pipelines.config.loader import load_pipeline
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.errors import ConfigError
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.pricing.openai_cost import price_openai_usage
from beam_pipelines.pricing.price_list import load_price_list
from beam_pipelines.quality.suite import Expectation, Suite, evaluate, load_suite
from beam_pipelines.registry import lookup
from beam_pipelines.secrets.service_secrets import resolve_secret
from beam_pipelines.settings import load_settings
from beam_pipelines.testing.emulators.process import free_port
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import OrgBatch
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS, flattened
from tests.http_fakes import JsonHandler, self_signed_cert, serve

PIPELINE = "openai/cost/usage_cost"
CANARY = "sk-proj-CANARY-notify-77aa"


def check(kind, frame, severity="critical", **kwargs):
    [result] = evaluate(Suite("s", (Expectation(kind, kwargs, severity),)), frame)
    return result


def test_each_expectation_type():
    df = pd.DataFrame({"k": ["a", "b", "b", None], "n": [1, -2, 3, 4], "t": [3.0, 1.5, 2.0, None],
                       "p1": [1.0, 0.5, 1.0, 1.0], "p2": [2.0, 0.5, 1.0, 1.0], "s": ["PRICED", "UNPRICED", "PRICED", "PRICED"]})
    assert check("expect_column_values_to_not_be_null", df, column="k").observed == {"null_count": 1}
    assert not check("expect_column_values_to_be_between", df, column="n", min_value=0).success
    assert check("expect_column_values_to_be_between", df, column="n", min_value=-5, max_value=5).success
    assert check("expect_compound_columns_to_be_unique", df, column_list=["k"]).observed == {"duplicated_rows": 2}
    assert check("expect_table_row_count_to_be_between", df, min_value=1, max_value=3).observed == {"row_count": 4}
    unpriced = check("expect_column_values_to_not_be_in_set", df, column="s", value_set=["UNPRICED"], report_column="k")
    assert not unpriced.success and unpriced.observed["unexpected_k"] == ["b"]
    total = check("expect_column_to_equal_sum_of_columns", df, column="t", sum_columns=["p1", "p2"])
    assert not total.success and total.observed["unexpected_count"] == 1
    assert not check("expect_column_values_to_not_be_null", df, column="nope").success


def test_grouped_evaluation_gives_each_run_what_evaluating_it_alone_gives():
    from decimal import Decimal

    from beam_pipelines.quality.suite import evaluate_runs, load_suite

    every_type = Suite("all", tuple(Expectation(kind, kwargs, "critical") for kind, kwargs in (
        ("expect_column_values_to_not_be_null", {"column": "k"}),
        ("expect_column_values_to_be_between", {"column": "n", "min_value": 0, "max_value": 3}),
        ("expect_compound_columns_to_be_unique", {"column_list": ["k"]}),
        ("expect_table_row_count_to_be_between", {"min_value": 2}),
        ("expect_column_values_to_not_be_in_set", {"column": "s", "value_set": ["UNPRICED"], "report_column": "k"}),
        ("expect_column_values_to_be_in_set", {"column": "s", "value_set": ["PRICED", "UNPRICED"]}),
        ("expect_column_to_equal_sum_of_columns", {"column": "t", "sum_columns": ["p1", "p2"]}),
        ("expect_column_values_to_not_be_null", {"column": "absent"}),
    )))
    D = Decimal
    df = pd.DataFrame({
        "run_id": ["r1", "r2", "r1", "r3", "r2", "r1", "r3"],
        "k": ["a", "b", "a", None, "c", "d", "e"],
        "n": [1, -2, 3, None, 4, 2, 0],
        "s": ["PRICED", "UNPRICED", "PRICED", "ODD", "PRICED", "UNPRICED", "PRICED"],
        "t": [D("3.000000001"), D("1.0"), None, D("2.0"), D("2.0"), D("1.6"), D("0")],
        "p1": [D("1"), D("0.5"), D("1"), D("1"), D("1"), D("1"), None],
        "p2": [D("2"), D("0.5"), D("1"), D("1"), D("1"), D("0.5"), None],
    })
    grouped = evaluate_runs(every_type, df)
    for run_id, rows in df.groupby("run_id"):
        alone = evaluate(every_type, rows.reset_index(drop=True))
        assert grouped[run_id] == alone, run_id
    assert {r: [x.success for x in results] for r, results in grouped.items()} == {
        "r1": [True, True, False, True, False, True, False, False], "r2": [True, False, True, True, False, True, True, False],
        "r3": [False, True, True, True, True, False, True, False]}
    suite = load_suite(CONFIGS / "data_quality/expectations/openai_cost_suite.json", "openai")  # the shipped suite, too
    cost = df.rename(columns={"k": "model"}).assign(usage_date=None)
    assert evaluate_runs(suite, cost)["r2"] == evaluate(suite, cost[cost["run_id"] == "r2"].reset_index(drop=True))


def test_suites_are_validated_as_config(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"expectations": [{"expectation_type": "expect_magic", "kwargs": {}}]}))
    with pytest.raises(ConfigError, match=r"expectations\[0\]\.expectation_type: unsupported 'expect_magic'"):
        load_suite(path, "s.json")
    path.write_text(json.dumps({"expectations": [{"expectation_type": "expect_column_values_to_not_be_null",
                                                  "kwargs": {"colum": "x"}}]}))
    with pytest.raises(ConfigError, match=r"expectations\[0\]\.kwargs"):
        load_suite(path, "s.json")
    for name in ("openai_cost_suite", "anthropic_cost_suite", "billing_cost_suite"):
        assert load_suite(CONFIGS / f"data_quality/expectations/{name}.json", name).expectations


def test_validate_step_fails_an_org_with_a_broken_row(settings):
    seed_org(settings, "acme")
    loaded = load_pipeline(CONFIGS, PIPELINE)
    step = next(s for s in loaded.config.steps if s.ps_type == "data_quality.validate")
    entry = lookup(step.ps_type)
    ctx = RunContext.from_settings(settings, loaded, datetime.now(timezone.utc))
    raw = pd.DataFrame([{"usage_date": date(2026, 3, 2), "org_slug": "acme", "row_key": "k1", "run_id": "run-a",
                         "model": "gpt-5", "input_tokens": 10, "input_cached_tokens": 0, "output_tokens": 1,
                         "num_model_requests": 1, "project_id": "p", "api_key_id": "a", "batch": False,
                         "service_tier": "default"}])
    good = price_openai_usage(raw, load_price_list(CONFIGS / "openai/seed/data/default_pricing.csv"),
                              datetime.now(timezone.utc))
    broken = good.assign(row_key="k2", output_tokens=-5, project_id="p2")
    p = BeamTestPipeline(runner="FnApiRunner")
    batches = p | beam.Create([OrgBatch("acme", "run-a", good), OrgBatch("globex", "run-g", pd.concat([good, broken]))])
    result = batches | entry.load_transform()(step, loaded.options(step.step_id), ctx)
    events = flattened(result["events"]) | beam.Map(lambda e: (e.org_slug, e.failed, (e.error or "").split(" observed")[0]))
    assert_that(events, equal_to([
        ("acme", False, ""),
        ("globex", True, "data quality: expect_column_values_to_be_between(output_tokens)"),
    ]), label="events")
    failed = flattened(result["events"]) | beam.FlatMap(lambda e: [
        (e.org_slug, r["expectation_type"], r["kwargs"]["column"], r["severity"])
        for r in e.detail["dq_results"] if not r["success"]])
    assert_that(failed, equal_to([("globex", "expect_column_values_to_be_between", "output_tokens", "critical")]),
                label="results")
    p.run().wait_until_finish()


def test_critical_failure_writes_nothing_and_unknown_model_is_a_warning(settings, configs_copy, past_days, monkeypatch):
    suite_path = configs_copy / "data_quality/expectations/openai_cost_suite.json"
    suite = json.loads(suite_path.read_text())
    suite["expectations"].append({"expectation_type": "expect_table_row_count_to_be_between",
                                  "kwargs": {"max_value": 100}, "meta": {"severity": "critical"}})
    suite_path.write_text(json.dumps(suite))
    monkeypatch.setenv("CONVERGENCE_CONFIGS", str(configs_copy))
    settings = load_settings()
    seed_org(settings, "acme")
    one_day = run_pipeline(settings, RunRequest(PIPELINE, orgs=["acme"], start_date=past_days[0], end_date=past_days[0]))
    assert one_day.runs[0]["status"] == "COMPLETED"
    store = MetastoreSpec.from_settings(settings).open()
    warning = next(r for r in store.list_dq_results(one_day.runs[0]["pipeline_logging_id"])
                   if r["expectation_type"] == "expect_column_values_to_not_be_in_set")
    assert warning["severity"] == "warning" and not warning["success"]
    assert warning["observed_value"]["unexpected_model"] == ["ft:gpt-4o-mini-2024-07-18:acme::B7xQ2kLm"]

    week = run_pipeline(settings, RunRequest(PIPELINE, orgs=["acme"], start_date=past_days[0] + timedelta(days=1),
                                             end_date=past_days[1]))
    run = week.runs[0]
    assert run["status"] == "FAILED" and "expect_table_row_count_to_be_between" in run["error_message"]
    _, rows = LocalWarehouse(settings.warehouse_dir).query("SELECT DISTINCT usage_date FROM acme_dev.openai_cost_daily")
    assert rows == [(past_days[0],)], "the failed week wrote nothing"


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp_server(tmp_path, monkeypatch):
    import ssl

    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.login == b"notifier" and auth_data.password == b"smtp-pass-xyz")

    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True)
    controller.start()
    for name, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_USERNAME": "notifier",
                        "SMTP_PASSWORD": "smtp-pass-xyz", "NOTIFY_EMAIL_FROM": "pipelines@example.test",
                        "NOTIFY_EMAIL_TO": "finops@example.test", "SMTP_CA_FILE": str(cert)}.items():
        monkeypatch.setenv(name, value)
    yield inbox, logins
    controller.stop()


class Hook(JsonHandler):
    received: list = []


    def do_POST(self):
        Hook.received.append(self.read_json())
        self.send_json(b"ok", content_type="text/plain")


@pytest.fixture
def webhook(monkeypatch):
    Hook.received = []
    with serve(Hook) as url:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{url}/services/T000/B000/XXXX")
        yield Hook.received


def test_one_email_and_one_slack_message_per_run_with_the_summary_and_no_secret(home, simulator_env, smtp_server,
                                                                                webhook, past_days):
    inbox, logins = smtp_server
    settings = load_settings()
    seed_org(settings, "acme")
    seed_org(settings, "globex", openai_admin_key=CANARY)
    result = run_pipeline(settings, RunRequest(PIPELINE, orgs=["acme", "globex"], start_date=past_days[0],
                                               end_date=past_days[0]))
    assert sorted(r["status"] for r in result.runs) == ["COMPLETED", "FAILED"]
    assert len(inbox.messages) == 1 and len(webhook) == 1
    recipients, email = inbox.messages[0]
    assert recipients == ["finops@example.test"] and logins == [(b"notifier", b"smtp-pass-xyz")]
    assert "1 of 2 org(s) FAILED" in email
    for run in result.runs:
        assert run["pipeline_logging_id"] in email and run["pipeline_logging_id"] in webhook[0]["text"]
    acme = next(r for r in result.runs if r["org_slug"] == "acme")
    assert f"acme: COMPLETED, rows {acme['rows_written']}, cost $" in email
    assert "unpriced models: ft:gpt-4o-mini" in email and "HTTP 401" in email
    for text in (email, webhook[0]["text"]):
        assert CANARY not in text and "smtp-pass-xyz" not in text and "sk-admin-sim-acme" not in text


def test_a_failed_notification_is_recorded_but_never_fails_the_run(home, simulator_env, past_days, monkeypatch):
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(free_port()))  # nothing listens there
    monkeypatch.setenv("NOTIFY_EMAIL_TO", "finops@example.test")
    settings = load_settings()
    seed_org(settings, "acme", openai_admin_key=CANARY)
    result = run_pipeline(settings, RunRequest(PIPELINE, orgs=["acme"], start_date=past_days[0], end_date=past_days[0]))
    run = result.runs[0]
    assert run["status"] == "FAILED" and "extract_usage" in run["error_message"]
    steps = {s["step_id"]: s for s in MetastoreSpec.from_settings(settings).open().list_steps(run["pipeline_logging_id"])}
    assert steps["notify_email"]["status"] == "FAILED"
    assert "email via 127.0.0.1" in steps["notify_email"]["error_message"]


@pytest.mark.parametrize("trigger, sent_when_all_complete, sent_when_one_fails", [
    ("on_failure", False, True), ("on_success", True, False), ("on_completion", True, True), ("always", True, True)])
def test_each_email_trigger(trigger, sent_when_all_complete, sent_when_one_fails, home, simulator_env, smtp_server,
                            configs_copy, past_days, monkeypatch):
    inbox, _ = smtp_server
    path = configs_copy / "openai/cost/usage_cost.yml"
    data = yaml.safe_load(path.read_text())
    next(s for s in data["steps"] if s["step_id"] == "notify_email")["options"]["trigger"] = trigger
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CONVERGENCE_CONFIGS", str(configs_copy))
    settings = load_settings()
    seed_org(settings, "acme")
    seed_org(settings, "globex", openai_admin_key=CANARY)
    day = past_days[0]
    run_pipeline(settings, RunRequest(PIPELINE, orgs=["acme"], start_date=day, end_date=day))
    assert len(inbox.messages) == int(sent_when_all_complete)
    run_pipeline(settings, RunRequest(PIPELINE, orgs=["acme", "globex"], start_date=day, end_date=day))
    assert len(inbox.messages) == int(sent_when_all_complete) + int(sent_when_one_fails)
    for _, email in inbox.messages:
        assert CANARY not in email


def test_notify_config_must_match_its_channel(configs_copy):
    path = configs_copy / "openai/cost/usage_cost.yml"
    data = yaml.safe_load(path.read_text())
    data["steps"][-2]["options"]["config"] = "notify_systems/slack.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="is not a email channel"):
        load_pipeline(configs_copy, PIPELINE)


class FakeSecretManager(JsonHandler):

    def do_GET(self):
        path = self.path.split("?")[0]
        data = b"hooks-secret-value"
        FakeSecretManager.paths.append(path)
        self.send_json({"name": path.removeprefix("/v1/").removesuffix(":access"),
                        "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(google_crc32c.value(data))}})


def test_service_secrets_from_secret_manager_or_env():
    from google.cloud import secretmanager

    FakeSecretManager.paths = []
    with serve(FakeSecretManager) as url:
        client = secretmanager.SecretManagerServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                                          client_options={"api_endpoint": url})
        env = {"SLACK_WEBHOOK_URL_SECRET": "projects/p1/secrets/slack-webhook", "SLACK_WEBHOOK_URL": "ignored"}
        assert resolve_secret("SLACK_WEBHOOK_URL", env, client) == "hooks-secret-value"
        assert FakeSecretManager.paths == ["/v1/projects/p1/secrets/slack-webhook/versions/latest:access"]
        assert resolve_secret("SMTP_PASSWORD", {"SMTP_PASSWORD": "from-env"}, client) == "from-env"
        assert resolve_secret("SMTP_PASSWORD", {}, client) is None
