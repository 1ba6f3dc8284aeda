"""The launcher API: every check in its documented order, isolation between orgs, limits."""
from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
import requests
from fastapi.testclient import TestClient

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.errors import ConfigError
from beam_pipelines.settings import load_settings
from launcher.logs import JsonFormatter
from launcher.settings import LauncherSettings
from tests.launcher_support import ROOT_KEY, make_app, running_server

RUN = "/api/v1/pipelines/run/{org}/openai/cost/usage_cost"
YESTERDAY = (date.today() - timedelta(days=1)).isoformat()


@pytest.fixture(params=["sqlite", "bigquery"])
def twin(request):
    """The embedded metastore, and the BigQuery one on the emulator: launcher checks hold on both."""
    return request.getfixturevalue("settings" if request.param == "sqlite" else "bq_settings")


@pytest.fixture
def orgs(settings):
    return _seed_orgs(settings)


@pytest.fixture
def twin_orgs(twin):
    return _seed_orgs(twin)


def _seed_orgs(settings):
    keys = {org: seed_org(settings, org)["api_key"] for org in ("acme", "globex")}
    keys["suspended"] = seed_org(settings, "suspended", subscription="SUSPENDED")["api_key"]
    keys["cancelled"] = seed_org(settings, "cancelled", subscription="CANCELLED")["api_key"]
    keys["expired"] = seed_org(settings, "expired", subscription="TRIAL", trial_ends=date(2020, 1, 1))["api_key"]
    keys["trial"] = seed_org(settings, "trial", subscription="TRIAL", trial_ends=date.today() + timedelta(days=5))["api_key"]
    keys["quota"] = seed_org(settings, "quota", daily_quota=1)["api_key"]
    return keys


@pytest.fixture
def client(orgs):
    app, backend = make_app()
    with TestClient(app) as c:
        c.backend = backend
        yield c


def post(client, org, key, body=None, path=RUN, headers=None):
    headers = {**({} if body is None else {"Content-Type": "application/json"}), **(headers or {}),
               **({} if key is None else {"X-API-Key": key})}
    return client.post(path.format(org=org), headers=headers, content=b"" if body is None else json.dumps(body))


@pytest.fixture
def twin_client(twin_orgs):
    app, backend = make_app()
    with TestClient(app) as c:
        c.backend = backend
        yield c


def test_health_needs_no_auth_and_says_nothing_else(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


def test_accepted_run_is_recorded_and_launched(twin_client, twin_orgs):
    client, orgs = twin_client, twin_orgs
    response = post(client, "acme", orgs["acme"], {"date": YESTERDAY})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "QUEUED" and body["job_id"] == "rec-1"
    assert (body["pipeline_id"], body["config_path"]) == ("acme-openai-usage-cost", "openai/cost/usage_cost")
    [spec] = client.backend.launched
    assert spec.runs == (("acme", body["pipeline_logging_id"]),) and spec.start_date.isoformat() == YESTERDAY
    run = client.get(f"/api/v1/pipelines/runs/{body['pipeline_logging_id']}", headers={"X-API-Key": orgs["acme"]}).json()
    assert run["status"] == "QUEUED" and run["job_id"] == "rec-1" and run["trigger_type"] == "api" and run["steps"] == []
    short = post(client, "trial", orgs["trial"], path="/api/v1/pipelines/run/{org}/anthropic/usage_cost")
    assert short.status_code == 202 and short.json()["config_path"] == "anthropic/cost/usage_cost"
    for org, status in (("suspended", "SUSPENDED"), ("expired", "TRIAL_EXPIRED")):
        response = post(client, org, orgs[org])
        assert response.status_code == 403 and response.json()["subscription_status"] == status


def test_401_for_missing_unknown_and_rotated_keys_without_hints(client, orgs, settings):
    missing = post(client, "acme", None)
    unknown = post(client, "nobody_here", "cvg_forged")
    assert missing.status_code == unknown.status_code == 401
    assert missing.json()["message"] == unknown.json()["message"] == "missing or invalid API key"
    old = orgs["acme"]
    seed_org(settings, "acme")  # rotates the key
    assert post(client, "acme", old).status_code == 401
    assert post(client, "acme", "x" * 5000).status_code == 401


def test_403_for_another_orgs_key_and_inactive_subscriptions(client, orgs):
    assert post(client, "globex", orgs["acme"]).status_code == 403
    for org, status in (("suspended", "SUSPENDED"), ("cancelled", "CANCELLED"), ("expired", "TRIAL_EXPIRED")):
        response = post(client, org, orgs[org])
        assert response.status_code == 403 and response.json()["subscription_status"] == status
    assert client.backend.launched == []


@pytest.mark.parametrize("path", [
    "/api/v1/pipelines/run/acme/openai/cost/nope", "/api/v1/pipelines/run/acme/openai/Cost/usage_cost",
    "/api/v1/pipelines/run/acme/openai/..%2f..%2fsystem/tables", "/api/v1/pipelines/run/acme/openai/cost/usage_cost;drop",
    "/api/v1/pipelines/run/acme/openai/cost/usage_cost'--", "/api/v1/pipelines/run/acme/openai/%2e%2e/usage_cost",
    "/api/v1/pipelines/run/acme/openai/cost", "/api/v1/pipelines/run/acme/gcp/cost/billing_v2",
])
def test_404_for_unknown_pipelines_and_hostile_segments(client, orgs, path):
    response = client.post(path, headers={"X-API-Key": orgs["acme"]})
    assert response.status_code == 404, (path, response.status_code)
    assert client.backend.launched == []


@pytest.mark.parametrize("org", ["..", "acme%27--", "ACME", "acme;"])
def test_hostile_org_segment_never_gets_through(client, orgs, org):
    assert client.post(RUN.format(org=org), headers={"X-API-Key": orgs["acme"]}).status_code in (403, 404)


@pytest.mark.parametrize("body, message", [
    ({"date": "2026-13-01"}, "date"),
    ({"start_date": "2026-03-05", "end_date": "2026-03-01"}, "before start date"),
    ({"date": "2999-01-01"}, "in the future"),
    ({"start_date": "2025-01-01", "end_date": "2025-12-31"}, "longer than this pipeline allows"),
    ({"date": YESTERDAY, "org": "globex"}, "org: unexpected field"),
    ({"date": YESTERDAY, "start_date": YESTERDAY}, "either date or start_date"),
])
def test_422_for_bad_dates_and_unexpected_fields(client, orgs, body, message):
    response = post(client, "acme", orgs["acme"], body)
    assert response.status_code == 422 and message in response.json()["message"]
    assert post(client, "acme", orgs["acme"]).status_code == 202
    bad_json = client.post(RUN.format(org="acme"), headers={"X-API-Key": orgs["acme"], "Content-Type": "application/json"},
                           content=b"{nope")
    assert bad_json.status_code == 422


@pytest.mark.parametrize("body, message", [
    ({"date": "0001-01-01"}, "before 2020-01-01"),
    ({"start_date": "2019-12-31", "end_date": "2020-01-02"}, "before 2020-01-01"),
    ({"date": f"{YESTERDAY}T00:00:00"}, "date: not a YYYY-MM-DD date"),
    ({"date": YESTERDAY.replace("-", "")}, "date: not a YYYY-MM-DD date"),
    ({"date": 20260301}, "date: not a YYYY-MM-DD date"),
])
def test_days_are_real_days_after_2020(client, orgs, body, message):
    response = post(client, "acme", orgs["acme"], body)
    assert response.status_code == 422 and message in response.json()["message"], response.text
    assert client.backend.launched == []


def test_odd_bodies_are_4xx_with_a_request_id(client, orgs):
    deep = b"[" * 5000 + b"]" * 5000
    nested = client.post(RUN.format(org="acme"), content=b'{"date": ' + deep + b"}",
                         headers={"X-API-Key": orgs["acme"], "Content-Type": "application/json"})
    assert nested.status_code == 422 and nested.json()["request_id"]
    form = client.post(RUN.format(org="acme"), content=b"date=2026-03-01",
                       headers={"X-API-Key": orgs["acme"], "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and form.json()["request_id"]
    assert client.post(RUN.format(org="acme"), content=json.dumps({"date": YESTERDAY}),
                       headers={"X-API-Key": orgs["acme"], "Content-Type": "application/json; charset=utf-8"}).status_code == 202
    assert client.post(RUN.format(org="acme"), content=b"", headers={"X-API-Key": orgs["acme"]}).status_code in (202, 409)


def test_409_without_an_active_credential(client, orgs, settings):
    conn = sqlite3.connect(settings.metastore_path)
    conn.execute("UPDATE org_integration_credentials SET is_active = 0 WHERE org_slug = 'acme' AND provider = 'OPENAI'")
    conn.commit()
    response = post(client, "acme", orgs["acme"])
    assert response.status_code == 409 and response.json()["error"] == "no_credential"


def test_409_duplicate_names_the_existing_run(client, orgs):
    first = post(client, "acme", orgs["acme"], {"date": YESTERDAY}).json()
    again = post(client, "acme", orgs["acme"], {"date": YESTERDAY})
    assert again.status_code == 409 and again.json()["pipeline_logging_id"] == first["pipeline_logging_id"]
    other_day = (date.today() - timedelta(days=2)).isoformat()
    assert post(client, "acme", orgs["acme"], {"date": other_day}).status_code == 202


def test_429_when_the_daily_quota_is_used(twin_client, twin_orgs):
    client, orgs = twin_client, twin_orgs
    assert post(client, "quota", orgs["quota"], {"date": YESTERDAY}).status_code == 202
    response = post(client, "quota", orgs["quota"], {"date": (date.today() - timedelta(days=3)).isoformat()})
    assert response.status_code == 429 and 0 < int(response.headers["Retry-After"]) <= 86401


def test_orgs_cannot_see_each_others_runs(client, orgs):
    acme_run = post(client, "acme", orgs["acme"]).json()["pipeline_logging_id"]
    post(client, "globex", orgs["globex"])
    assert client.get(f"/api/v1/pipelines/runs/{acme_run}", headers={"X-API-Key": orgs["globex"]}).status_code == 404
    listed = client.get("/api/v1/pipelines/runs?limit=10", headers={"X-API-Key": orgs["globex"]}).json()["runs"]
    assert [r["org_slug"] for r in listed] == ["globex"]
    assert client.get("/api/v1/pipelines/runs?status=BOGUS", headers={"X-API-Key": orgs["globex"]}).status_code == 422
    assert client.get("/api/v1/pipelines/runs").status_code == 401


def test_body_size_limit(client, orgs):
    huge = b'{"date": "' + b"x" * 100_000 + b'"}'
    response = client.post(RUN.format(org="acme"), headers={"X-API-Key": orgs["acme"]}, content=huge)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_request_ids_are_echoed_and_logged(client, orgs, caplog):
    response = client.get("/health", headers={"X-Request-ID": "trace-12345678"})
    assert response.headers["x-request-id"] == "trace-12345678"
    assert client.get("/health", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"
    with caplog.at_level(logging.INFO, logger="launcher"):
        post(client, "acme", orgs["acme"], headers={"X-Request-ID": "req-abcdefgh"})
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name.startswith("launcher")]
    assert lines and all(line["request_id"] == "req-abcdefgh" for line in lines if line["logger"] == "launcher.service")
    assert orgs["acme"] not in caplog.text


def test_rate_limits_per_key(orgs):
    app, _ = make_app(rate_limit_per_key="3/minute")
    with TestClient(app) as c:
        codes = [c.get("/api/v1/pipelines/runs", headers={"X-API-Key": orgs["acme"]}).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert c.get("/api/v1/pipelines/runs", headers={"X-API-Key": orgs["globex"]}).status_code == 200


def test_rate_limits_per_ip(orgs):
    app, _ = make_app(rate_limit_per_ip="4/minute")
    with TestClient(app) as c:
        codes = [c.get("/api/v1/pipelines/runs", headers={"X-API-Key": orgs["acme"]}).status_code for i in range(6)]
        assert codes == [200, 200, 200, 200, 429, 429]


def test_failed_authentications_are_limited_per_ip_whatever_the_key(orgs):
    app, _ = make_app(auth_failures_per_ip="5/minute")
    with TestClient(app) as c:
        codes = [c.get("/api/v1/pipelines/runs", headers={"X-API-Key": f"cvg_guess{i}"}).status_code for i in range(8)]
        assert codes == [401] * 5 + [429] * 3
        blocked = c.get("/api/v1/pipelines/runs", headers={"X-API-Key": orgs["acme"]})
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0, "even a good key waits"


def test_forwarded_headers_cannot_rotate_the_client_address(orgs):
    """On a real uvicorn with the launcher's options: a spoofed X-Forwarded-For is not the client."""
    from launcher.server import uvicorn_options
    from tests.launcher_support import launcher_settings

    app, _ = make_app(rate_limit_per_ip="10/minute", rate_limit_per_key="1000/minute",
                      auth_failures_per_ip="1000/minute")
    with running_server(app, **uvicorn_options(launcher_settings())) as url:
        codes = [requests.get(url + "/api/v1/pipelines/runs", timeout=10,
                              headers={"X-API-Key": orgs["acme"], "X-Forwarded-For": f"203.0.113.{i}"}).status_code
                 for i in range(30)]
    assert codes.count(200) == 10 and codes[10:] == [429] * 20


def test_behind_cloud_run_the_entry_google_appended_is_the_client(orgs):
    """FORWARDED_TRUSTED_HOPS=1: a forged left part rotates nothing; the rightmost entry is the client."""
    app, _ = make_app(rate_limit_per_ip="10/minute", rate_limit_per_key="1000/minute",
                      auth_failures_per_ip="1000/minute", forwarded_trusted_hops=1)
    with running_server(app) as url:
        def get(xff):
            return requests.get(url + "/api/v1/pipelines/runs", timeout=10,
                                headers={"X-API-Key": orgs["acme"], "X-Forwarded-For": xff}).status_code
        forged = [get(f"203.0.113.{i}, 198.51.100.7") for i in range(12)]
        other_client = get("198.51.100.8")
    assert forged.count(200) == 10 and forged[10:] == [429, 429], "same appended address: one client"
    assert other_client == 200, "a different appended address is a different client"


def test_forwarding_settings_that_trust_forgeable_entries_are_refused():
    from tests.launcher_support import launcher_settings

    for changes, message in (({"forwarded_allow_ips": "*"}, "leftmost"),
                             ({"forwarded_allow_ips": "10.0.0.1", "forwarded_trusted_hops": 1}, "not both"),
                             ({"forwarded_trusted_hops": 9}, "between 0 and 5")):
        with pytest.raises(ConfigError, match=message):
            dataclasses.replace(launcher_settings(), **changes).check()


def test_cors_from_settings(orgs):
    app, _ = make_app(cors_origins=("https://app.example.test",))
    with TestClient(app) as c:
        ok = c.options(RUN.format(org="acme"), headers={"Origin": "https://app.example.test",
                                                        "Access-Control-Request-Method": "POST"})
        assert ok.headers.get("access-control-allow-origin") == "https://app.example.test"
        other = c.options(RUN.format(org="acme"), headers={"Origin": "https://evil.test",
                                                           "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers


def test_fifty_identical_concurrent_requests_launch_exactly_one_run(twin_orgs):
    orgs = twin_orgs
    app, backend = make_app()
    with running_server(app) as url:
        def fire(_):
            return requests.post(url + RUN.format(org="acme"), headers={"X-API-Key": orgs["acme"]},
                                 json={"date": YESTERDAY}, timeout=60)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(fire, range(50)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] + [409] * 49
    winner = next(r.json()["pipeline_logging_id"] for r in responses if r.status_code == 202)
    assert {r.json()["pipeline_logging_id"] for r in responses if r.status_code == 409} == {winner}
    assert len(backend.launched) == 1


def test_scheduler_needs_root_key_or_oidc_and_launches_each_pipeline_once(twin_client, twin_orgs):
    client = twin_client
    trigger = "/api/v1/scheduler/trigger"
    assert client.post(trigger).status_code == 401
    assert client.post(trigger, headers={"X-CA-Root-Key": "r" * 39}).status_code == 401
    assert client.post(trigger, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    body = {"pipelines": ["openai/cost/usage_cost"], "date": YESTERDAY}
    response = client.post(trigger, headers={"X-CA-Root-Key": ROOT_KEY}, json=body)
    assert response.status_code == 202
    [launched] = response.json()["launched"]
    assert launched["runs"] == 4  # acme, globex, trial, quota: ACTIVE or unexpired TRIAL with the credential
    [spec] = client.backend.launched
    assert sorted(org for org, _ in spec.runs) == ["acme", "globex", "quota", "trial"]
    again = client.post(trigger, headers={"X-CA-Root-Key": ROOT_KEY}, json=body).json()
    assert again["launched"][0]["runs"] == 0 and len(client.backend.launched) == 1


def test_production_start_up_refuses_unsafe_settings(home, monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("CA_ROOT_API_KEY", "short")
    settings = LauncherSettings.from_env(load_settings())
    with pytest.raises(ConfigError) as exc:
        settings.check()
    lines = str(exc.value).splitlines()[1:]
    assert [line.split(":")[0].strip("- ").strip() for line in lines] == [
        "CA_ROOT_API_KEY", "KMS_KEY_NAME", "CORS_ORIGINS", "CONVERGENCE_METASTORE", "CONVERGENCE_SINK",
        "LAUNCHER_BACKEND", "GCP_PROJECT_ID", "GCP_REGION", "DATAFLOW_TEMPLATES_PATH", "DATAFLOW_SERVICE_ACCOUNT",
        "DATAFLOW_TEMP_LOCATION", "DATAFLOW_SDK_CONTAINER_IMAGE", "SCHEDULER_SERVICE_ACCOUNT and SCHEDULER_AUDIENCE"]


def test_the_launcher_never_imports_apache_beam():
    import subprocess
    import sys

    code = ("import sys, launcher.app, beam_pipelines.config, beam_pipelines.metastore, beam_pipelines.secrets; "
            "print(sorted(m for m in sys.modules if m.startswith('apache_beam')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
