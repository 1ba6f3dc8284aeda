"""The simulator follows OpenAI's published schemas and is deterministic per (key, day)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml

from beam_pipelines.testing.simulator import openai_data

FIXTURE = Path(__file__).parent / "fixtures" / "openai_usage_schemas.json"
SHARED_SPEC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "openai-openapi.yaml"
KEY = "sk-admin-sim-spec"
PARAMS = {"start_time": 1772409600, "end_time": 1772668800, "bucket_width": "1d", "limit": 2,
          "group_by[]": ["model", "project_id", "api_key_id", "batch", "service_tier"]}


def _validator(name):
    doc = json.loads(FIXTURE.read_text())
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


def _get(sim, path, key=KEY, **params):
    return requests.get(f"{sim.openai_base_url}{path}", params={**PARAMS, **params},
                        headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_every_usage_page_is_valid_against_the_published_schema(simulator):
    validator = _validator("UsageResponse")
    page, cursor, pages = None, None, 0
    while page is None or page["has_more"]:
        response = _get(simulator, "/organization/usage/completions", **({"page": cursor} if cursor else {}))
        assert response.status_code == 200
        page = response.json()
        validator.validate(page)
        cursor = page["next_page"]
        pages += 1
        for bucket in page["data"]:
            for result in bucket["results"]:
                assert result["input_tokens"] == (
                    result["input_cached_tokens"] + result["input_cache_write_tokens"] + result["input_uncached_tokens"]
                )
    assert pages > 2


def test_costs_page_is_valid_against_the_published_schema(simulator):
    body = _get(simulator, "/organization/costs").json()
    _validator("UsageResponse").validate(body)
    assert body["data"][0]["results"][0]["object"] == "organization.costs.result"


def test_non_admin_key_gets_401_in_openai_error_format(simulator):
    response = _get(simulator, "/organization/usage/completions", key="sk-proj-abc")
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key"


def test_fault_per_request_header(simulator):
    response = requests.get(f"{simulator.openai_base_url}/organization/usage/completions", params=PARAMS,
                            headers={"Authorization": f"Bearer {KEY}", "X-Simulator-Fault": "429:7"}, timeout=10)
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"


def test_data_is_deterministic_per_key_and_day():
    from datetime import date

    a = openai_data.day_results(KEY, date(2026, 3, 2))
    assert a == openai_data.day_results(KEY, date(2026, 3, 2))
    assert a != openai_data.day_results(KEY, date(2026, 3, 3))
    assert a != openai_data.day_results(KEY + "x", date(2026, 3, 2))
    models = {r["model"] for r in a}
    assert any(m[-10:-8] == "20" for m in models), "dated snapshots present"
    assert {r["batch"] for r in a} == {True, False}


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="shared/ reference folder not beside the repo")
def test_vendored_schemas_match_the_shared_reference():
    spec = yaml.safe_load(SHARED_SPEC.read_text())["components"]["schemas"]
    vendored = json.loads(FIXTURE.read_text())["components"]["schemas"]
    for name in ("UsageCompletionsResult", "CostsResult", "UsageResponse"):
        assert vendored[name]["required"] == spec[name]["required"]
        assert set(vendored[name]["properties"]) == set(spec[name]["properties"])


def test_cursors_are_short_and_good_only_for_their_own_query(simulator):
    """Like the providers' own (a few dozen characters), and refused with other filters or when forged."""
    openai = _get(simulator, "/organization/usage/completions").json()
    assert openai["has_more"] and len(openai["next_page"]) < 80
    assert _get(simulator, "/organization/usage/completions", page=openai["next_page"]).status_code == 200
    elsewhere = _get(simulator, "/organization/usage/completions", page=openai["next_page"], limit=3)
    assert elsewhere.status_code == 400 and "does not belong to this query" in elsewhere.json()["error"]["message"]
    forged = _get(simulator, "/organization/usage/completions", page="page_not-a-cursor")
    assert forged.status_code == 400 and "Invalid 'page' cursor" in forged.json()["error"]["message"]

    def anthropic(**params):
        return requests.get(f"{simulator.anthropic_base_url}/v1/organizations/usage_report/messages", timeout=10,
                            params={"starting_at": "2026-03-02T00:00:00Z", "ending_at": "2026-03-05T00:00:00Z",
                                    "bucket_width": "1d", "limit": 1, **params},
                            headers={"x-api-key": "sk-ant-admin01-sim-spec", "anthropic-version": "2023-06-01"})

    first = anthropic().json()
    assert first["has_more"] and len(first["next_page"]) < 80
    assert anthropic(page=first["next_page"]).status_code == 200
    for bad in (anthropic(page=first["next_page"], limit=2), anthropic(page="bm90LWEtY3Vyc29y")):
        assert bad.status_code == 400 and "invalid cursor for this query" in bad.json()["error"]["message"]


def test_answers_take_the_latency_and_many_are_in_flight_at_once():
    """One event loop answers every connection: twenty requests at once each wait out the latency
    together, rather than one after another (a fleet keeps a hundred in flight)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from beam_pipelines.testing.simulator import ProviderSimulator

    with ProviderSimulator(latency=0.3) as sim, ThreadPoolExecutor(20) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda _: _get(sim, "/organization/usage/completions"), range(20)))
        finished = time.monotonic()
        assert all(a.status_code == 200 for a in answers) and sim.requests == 20
        assert all(a.elapsed.total_seconds() >= 0.29 for a in answers), "no answer before its latency (timers' granularity aside)"
        assert finished - started < 20 * 0.3 / 2, "answered one after another"


def test_faults_set_over_http_and_unknown_methods_are_refused(simulator):
    url = f"{simulator.url}/_simulator/faults"
    assert requests.post(url, json={"key": KEY, "faults": ["nope"]}, timeout=10).status_code == 400
    assert requests.post(url, json={"key": KEY, "faults": ["503", "malformed"]}, timeout=10).json() == {"ok": True}
    assert _get(simulator, "/organization/usage/completions").status_code == 503
    malformed = _get(simulator, "/organization/usage/completions")
    assert malformed.status_code == 200 and malformed.text == '{"object": "page", "data": ['
    assert _get(simulator, "/organization/usage/completions").status_code == 200, "the queue is spent"
    assert requests.put(f"{simulator.openai_base_url}/organization/usage/completions", timeout=10).status_code == 405
    assert requests.get(f"{simulator.url}/v1/nowhere", timeout=10).status_code == 404
