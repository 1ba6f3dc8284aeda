"""The providers' own bills: the OpenAI costs and Anthropic cost-report clients, against the documents'
examples (served as-is by a loopback fake) and against the simulator (paging, grouping, retries, totals)."""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest

from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import MalformedResponseError, ProviderError
from beam_pipelines.providers import anthropic_costs, openai_costs
from beam_pipelines.providers.anthropic_costs import AnthropicCostClient
from beam_pipelines.providers.http import PageQuery, RetryPolicy
from beam_pipelines.providers.openai_costs import OpenAICostsClient
from beam_pipelines.testing.simulator import anthropic_data, openai_data
from beam_pipelines.warehouse.arrow_schema import to_arrow
from tests.conftest import CONFIGS
from tests.http_fakes import JsonHandler, serve

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
OPENAI_KEY, ANTHROPIC_KEY = "sk-admin-sim-billed", "sk-ant-admin01-sim-billed"
START, END = date(2026, 3, 2), date(2026, 3, 8)
DAYS = [START + timedelta(days=i) for i in range(7)]
LOADED = datetime(2026, 3, 9, tzinfo=timezone.utc)
TOLERANCE = Decimal("0.000001")  # a ten-thousandth of a cent: the simulator's float bill vs exact rows


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def openai_client(base_url, key=OPENAI_KEY):
    policy = RetryPolicy(max_retries=4, backoff_seconds=0.5, backoff_max_seconds=8, timeout_seconds=5)
    return OpenAICostsClient(key, base_url, policy, sleep=Sleeps())


def anthropic_client(base_url, key=ANTHROPIC_KEY):
    policy = RetryPolicy(max_retries=4, backoff_seconds=0.5, backoff_max_seconds=8, timeout_seconds=5)
    return AnthropicCostClient(key, base_url, policy, sleep=Sleeps())


def openai_rows(client, start=START, end=END, **kwargs):
    return [row for page in client.cost_pages(start, end, **kwargs)
            for row in openai_costs.billed_rows(page, "acme", "run-1", LOADED)]


def anthropic_rows(client, start=START, end=END, **kwargs):
    return [row for page in client.cost_pages(start, end, **kwargs)
            for row in anthropic_costs.billed_rows(page, "acme", "run-1", LOADED)]


def per_day(rows, *fields) -> dict:
    totals: dict = defaultdict(Decimal)
    for row in rows:
        totals[(row["usage_date"], *(row[f] for f in fields))] += row["amount_usd"]
    return dict(totals)


def fits_schema(rows, provider, table):
    schema = load_schema(CONFIGS / provider / "ledger" / "schemas" / f"{table}.json")
    return to_arrow(pd.DataFrame(rows), schema, table).num_rows == len(rows)


class Canned:
    """A loopback server answering each GET with the next canned body (the last one repeats)."""

    def __init__(self, *bodies):
        self.bodies, self.requests = bodies, []
        canned = self

        class Handler(JsonHandler):
            def do_GET(self):
                canned.requests.append((urlsplit(self.path).path, parse_qsl(urlsplit(self.path).query), dict(self.headers)))
                self.send_json(canned.bodies[min(len(canned.requests), len(canned.bodies)) - 1])

        self._serve = serve(Handler)

    def __enter__(self):
        return self._serve.__enter__()

    def __exit__(self, *exc):
        return self._serve.__exit__(*exc)


# ---- the documents' own examples ------------------------------------------------------------------

VENDORED = Path(__file__).resolve().parent / "fixtures" / "openai_costs_examples.json"
VENDORED_KEYS = {"operationId: usage-costs": "usage_costs_response", "    CostsResult:\n": "costs_result_example"}


def spec_example(anchor: str, key: str) -> dict:
    """The JSON literal block ``key: |`` that follows ``anchor`` in the OpenAPI document, parsed; the
    copy vendored in tests/fixtures when the shared reference is not beside the repo (and a test
    checks the copy against the document whenever it is)."""
    path = REFERENCE / "openai-openapi.yaml"
    if not path.exists():
        return json.loads(VENDORED.read_text())[VENDORED_KEYS[anchor]]
    text = path.read_text()
    lines = text[text.index(f"{key}: |", text.index(anchor)):].splitlines()[1:]
    indent = len(lines[0]) - len(lines[0].lstrip())
    block = []
    for line in lines:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return json.loads("\n".join(block))


def test_the_vendored_examples_are_the_documents_own():
    if (REFERENCE / "openai-openapi.yaml").exists():
        vendored = json.loads(VENDORED.read_text())
        assert spec_example("operationId: usage-costs", "response") == vendored["usage_costs_response"]
        assert spec_example("    CostsResult:\n", "example") == vendored["costs_result_example"]
    else:
        assert VENDORED.exists()


def test_openapi_costs_examples_become_rows_to_the_cent_fraction():
    page = spec_example("operationId: usage-costs", "response")  # the endpoint's example page (2024-11-01)
    result = spec_example("    CostsResult:\n", "example")  # the CostsResult object's example
    grouped = json.loads(json.dumps(page))
    grouped["data"][0]["results"] = [result]
    day = date(2024, 11, 1)
    with Canned(page, grouped) as url:
        client = openai_client(f"{url}/v1")
        [total] = openai_rows(client, day, day, group_by=(), now=datetime(2024, 11, 3, tzinfo=timezone.utc))
        [row] = openai_rows(client, day, day, now=datetime(2024, 11, 3, tzinfo=timezone.utc))
    assert total["amount_usd"] == Decimal("0.06") and total["usage_date"] == day
    assert total["line_item"] is None and total["project_id"] is None and total["model"] is None
    assert row["amount_usd"] == Decimal("0.06") and row["project_id"] == "proj_abc"
    assert (row["line_item"], row["quantity"], row["quantity_unit"]) == ("input_tokens", 10000.0, "tokens")
    assert row["model"] is None, "'input_tokens' names no model (no ', ')"
    assert row["row_key"] != total["row_key"]
    assert fits_schema([total, row], "openai", "openai_billed_cost_daily")


def test_openai_request_is_the_documented_one():
    canned = Canned({"object": "page", "data": [], "has_more": False, "next_page": None})
    with canned as url:
        assert openai_rows(openai_client(f"{url}/v1"), START, END, project_ids=("proj_a",), now=LOADED) == []
    [(path, query, headers)] = canned.requests
    assert path == "/v1/organization/costs"
    assert query == [("start_time", "1772409600"), ("end_time", "1773014400"), ("bucket_width", "1d"), ("limit", "31"),
                     ("group_by", "project_id"), ("group_by", "line_item"), ("project_ids", "proj_a")]
    assert headers["Authorization"] == f"Bearer {OPENAI_KEY}"


def test_anthropic_sheet_cents_example_is_exact_dollars():
    sheet = REFERENCE / "anthropic-admin-usage.md"
    if sheet.exists():
        assert '(`"123.45"` = $1.2345)' in sheet.read_text()
    result = {"amount": "123.45", "currency": "USD", "cost_type": "tokens", "token_type": "uncached_input_tokens",
              "description": "Claude Sonnet 4.5 Usage - Input Tokens", "model": "claude-sonnet-4-5-20250929",
              "service_tier": "standard", "context_window": "0-200k", "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"}
    page = {"data": [{"starting_at": "2026-03-02T00:00:00Z", "ending_at": "2026-03-03T00:00:00Z", "results": [result]}],
            "has_more": False, "next_page": None}
    canned = Canned(page)
    with canned as url:
        [row] = anthropic_rows(anthropic_client(url), START, START, now=LOADED)
    assert row["amount_usd"] == Decimal("1.2345")
    assert {k: row[k] for k in result if k != "amount"} == {k: v for k, v in result.items() if k != "amount"}
    assert fits_schema([row], "anthropic", "anthropic_billed_cost_daily")
    [(path, query, headers)] = canned.requests
    assert path == "/v1/organizations/cost_report"
    assert query == [("starting_at", "2026-03-02T00:00:00Z"), ("ending_at", "2026-03-03T00:00:00Z"), ("bucket_width", "1d"),
                     ("limit", "31"), ("group_by[]", "workspace_id"), ("group_by[]", "description")]
    assert headers["x-api-key"] == ANTHROPIC_KEY and headers["anthropic-version"] == "2023-06-01"


# ---- hostile or off-spec answers fail closed, in one line naming the field ----------------------------

def openai_page(**amount):
    result = {"object": "organization.costs.result", "amount": {"value": 0.06, "currency": "usd", **amount},
              "line_item": "gpt-5.5, input", "project_id": "proj_abc"}
    if amount.get("value") == "missing":
        del result["amount"]["value"]
    return {"object": "page", "data": [{"object": "bucket", "start_time": 1772409600, "end_time": 1772496000,
                                         "results": [result]}], "has_more": False, "next_page": None}


@pytest.mark.parametrize("amount, error, words", [
    ({"currency": "eur"}, ProviderError, ["amount.currency", "'eur'", "not 'usd'"]),
    ({"value": "0.06"}, MalformedResponseError, ["amount.value", "finite JSON number"]),
    ({"value": True}, MalformedResponseError, ["amount.value"]),
    ({"value": "missing"}, MalformedResponseError, ["amount.value", "required"]),
    ({"currency": None}, MalformedResponseError, ["amount.currency"]),
])
def test_openai_bad_amount_or_currency_fails_in_one_line(amount, error, words):
    with Canned(openai_page(**amount)) as url, pytest.raises(error) as info:
        openai_rows(openai_client(f"{url}/v1"), START, START, now=LOADED)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def anthropic_page(**fields):
    result = {"amount": "123.45", "currency": "USD", "workspace_id": None, "description": "Web Search", **fields}
    return {"data": [{"starting_at": "2026-03-02T00:00:00Z", "ending_at": "2026-03-03T00:00:00Z", "results": [result]}],
            "has_more": False, "next_page": None}


@pytest.mark.parametrize("fields, error, words", [
    ({"currency": "EUR"}, ProviderError, ["currency", "'EUR'", "not 'USD'"]),
    ({"amount": 123.45}, MalformedResponseError, ["amount", "valid string"]),
    ({"amount": "1.2e3"}, MalformedResponseError, ["amount", "decimal string in cents", "'1.2e3'"]),
    ({"amount": "NaN"}, MalformedResponseError, ["amount", "decimal string in cents"]),
    ({"amount": "12,50"}, MalformedResponseError, ["amount", "decimal string in cents"]),
])
def test_anthropic_bad_amount_or_currency_fails_in_one_line(fields, error, words):
    with Canned(anthropic_page(**fields)) as url, pytest.raises(error) as info:
        anthropic_rows(anthropic_client(url), START, START, now=LOADED)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_bucket_outside_the_requested_days_or_off_midnight_fails_closed():
    stray = openai_page()
    stray["data"][0].update(start_time=1772409600 + 3 * 86400, end_time=1772409600 + 4 * 86400)
    with Canned(stray) as url, pytest.raises(ProviderError, match="costs for 2026-03-05, outside the requested"):
        openai_rows(openai_client(f"{url}/v1"), START, START, now=LOADED)
    shifted = openai_page()
    shifted["data"][0].update(start_time=1772409600 + 3600)
    with Canned(shifted) as url, pytest.raises(MalformedResponseError, match="not a UTC midnight"):
        openai_rows(openai_client(f"{url}/v1"), START, START, now=LOADED)
    stray = anthropic_page()
    stray["data"][0].update(starting_at="2026-03-01T00:00:00Z", ending_at="2026-03-02T00:00:00Z")
    with Canned(stray) as url, pytest.raises(ProviderError, match="costs for 2026-03-01, outside the requested"):
        anthropic_rows(anthropic_client(url), START, START, now=LOADED)


def test_an_ignored_grouping_fails_closed():
    ungrouped = openai_page()
    ungrouped["data"][0]["results"][0]["line_item"] = None
    with Canned(ungrouped) as url, pytest.raises(MalformedResponseError, match="no line_item although grouped"):
        openai_rows(openai_client(f"{url}/v1"), START, START, now=LOADED)
    with Canned(anthropic_page(description=None)) as url, pytest.raises(MalformedResponseError, match="no description"):
        anthropic_rows(anthropic_client(url), START, START, now=LOADED)


# ---- against the simulator ---------------------------------------------------------------------------

def test_openai_pages_through_every_day(simulator):
    client = openai_client(simulator.openai_base_url)
    rows = openai_rows(client, page_limit=2)
    assert client.requests_made == 4, "7 days at 2 buckets a page"
    assert sorted({r["usage_date"] for r in rows}) == DAYS
    assert len({r["row_key"] for r in rows}) == len(rows)
    assert all(r["project_id"] and r["line_item"] and r["model"] and r["quantity_unit"] == "tokens" for r in rows)
    assert per_day(openai_rows(openai_client(simulator.openai_base_url), page_limit=31)) == per_day(rows)
    assert fits_schema(rows, "openai", "openai_billed_cost_daily")


def test_anthropic_pages_through_every_day(simulator):
    client = anthropic_client(simulator.anthropic_base_url)
    rows = anthropic_rows(client, page_limit=3)
    assert client.requests_made == 3, "7 days at 3 buckets a page"
    assert sorted({r["usage_date"] for r in rows}) == DAYS
    assert len({r["row_key"] for r in rows}) == len(rows)
    assert {r["workspace_id"] for r in rows} == set(anthropic_data.org_shape(ANTHROPIC_KEY)["workspaces"])
    assert all(r["description"] and r["model"] and r["cost_type"] for r in rows)
    assert {r["cost_type"] for r in rows} == {"tokens", "web_search"}
    assert fits_schema(rows, "anthropic", "anthropic_billed_cost_daily")


@pytest.mark.parametrize("group_by", [(), ("project_id",), ("line_item",), ("api_key_id", "line_item"),
                                      ("project_id", "api_key_id", "line_item")])
def test_openai_any_grouping_sums_exactly_to_the_ungrouped_total(simulator, group_by):
    total = per_day(openai_rows(openai_client(simulator.openai_base_url), group_by=()))
    rows = openai_rows(openai_client(simulator.openai_base_url), group_by=group_by)
    assert per_day(rows) == total  # Decimal equality, not approximate
    for field in ("project_id", "api_key_id", "line_item"):
        assert all((r[field] is not None) == (field in group_by) for r in rows), field
    assert all((r["quantity"] is not None) == ("line_item" in group_by) for r in rows)


def test_openai_project_filter_splits_the_bill_exactly(simulator):
    projects = openai_data.org_shape(OPENAI_KEY)["projects"]
    total = per_day(openai_rows(openai_client(simulator.openai_base_url), group_by=()))
    split: dict = defaultdict(Decimal)
    for project in projects:
        rows = openai_rows(openai_client(simulator.openai_base_url), group_by=("project_id",), project_ids=(project,))
        assert {r["project_id"] for r in rows} == {project}
        for (day,), amount in per_day(rows).items():
            split[(day,)] += amount
    assert dict(split) == total


@pytest.mark.parametrize("group_by", [(), ("workspace_id",), ("description",), ("workspace_id", "description")])
def test_anthropic_any_grouping_sums_exactly_to_the_ungrouped_total(simulator, group_by):
    total = per_day(anthropic_rows(anthropic_client(simulator.anthropic_base_url), group_by=()))
    rows = anthropic_rows(anthropic_client(simulator.anthropic_base_url), group_by=group_by)
    assert per_day(rows) == total
    described = [r for r in rows if r["description"] is not None]
    assert len(described) == (len(rows) if "description" in group_by else 0)
    if "workspace_id" not in group_by:
        assert {r["workspace_id"] for r in rows} == {None}


def test_openai_rows_equal_the_simulators_own_bill_per_day_project_and_model(simulator):
    rows = openai_rows(openai_client(simulator.openai_base_url))
    bill: dict = defaultdict(float)
    for day in DAYS:
        for result in openai_data.day_results(OPENAI_KEY, day):
            for usd in (openai_data.billed_cost(result, day) or {}).values():
                bill[day, result["project_id"], result["model"]] += usd
    ours = per_day(rows, "project_id", "model")
    assert set(ours) == set(bill)
    for key, usd in bill.items():
        assert abs(ours[key] - Decimal(repr(usd))) <= TOLERANCE, key
    for day in DAYS:
        billed = sum(v for (d, _, _), v in bill.items() if d == day)
        assert abs(per_day(rows)[(day,)] - Decimal(repr(billed))) <= TOLERANCE, day


def test_anthropic_rows_equal_the_simulators_own_bill_per_day_workspace_and_model(simulator):
    rows = anthropic_rows(anthropic_client(simulator.anthropic_base_url))
    bill: dict = defaultdict(float)
    for day in DAYS:
        for result in anthropic_data.day_results(ANTHROPIC_KEY, day):
            for cents in (anthropic_data.billed_cents(result, day) or {}).values():
                bill[day, result["workspace_id"], result["model"]] += cents / 100
    ours = per_day(rows, "workspace_id", "model")
    assert set(ours) == set(bill)
    for key, usd in bill.items():
        assert abs(ours[key] - Decimal(repr(usd))) <= TOLERANCE, key


def test_openai_transient_answers_are_retried_with_the_usage_policy(simulator):
    expected = openai_rows(openai_client(simulator.openai_base_url), page_limit=4)
    simulator.faults.add(OPENAI_KEY, ["429:0", "500", "503", "429-no-retry-after"])
    client = openai_client(simulator.openai_base_url)
    assert openai_rows(client, page_limit=4) == expected
    assert client.requests_made == 2 + 4 and len(client._sleep) == 4
    assert client._sleep[0] == 0, "Retry-After is honoured"
    simulator.faults.add(OPENAI_KEY, ["spend-limit"])
    client = openai_client(simulator.openai_base_url)
    with pytest.raises(ProviderError, match="HTTP 429.*quota"):
        openai_rows(client)
    assert client.requests_made == 1, "an exhausted quota is final"


def test_anthropic_transient_answers_are_retried_with_the_usage_policy(simulator):
    expected = anthropic_rows(anthropic_client(simulator.anthropic_base_url), page_limit=4)
    simulator.faults.add(ANTHROPIC_KEY, ["529", "429-no-retry-after", "500", "429:0"])
    client = anthropic_client(simulator.anthropic_base_url)
    assert anthropic_rows(client, page_limit=4) == expected
    assert client.requests_made == 2 + 4 and len(client._sleep) == 4
    simulator.faults.add(ANTHROPIC_KEY, ["spend-limit"])
    client = anthropic_client(simulator.anthropic_base_url)
    with pytest.raises(ProviderError, match="HTTP 429.*spend limit"):
        anthropic_rows(client)
    assert client.requests_made == 1, "a reached spend limit is final"


@pytest.mark.parametrize("faults, match", [(["slow:0", "repeat-cursor"], "page 2 repeats cursor"),
                                           (["bad-schema"], "malformed page 1: data"), (["malformed"], "not valid JSON")])
def test_simulator_faults_fail_closed(simulator, faults, match):
    simulator.faults.add(OPENAI_KEY, faults)
    with pytest.raises(MalformedResponseError, match=match):
        openai_rows(openai_client(simulator.openai_base_url), page_limit=2)
    simulator.faults.add(ANTHROPIC_KEY, faults)
    with pytest.raises(MalformedResponseError, match=match):
        anthropic_rows(anthropic_client(simulator.anthropic_base_url), page_limit=2)


def test_the_window_never_reaches_into_the_future(simulator):
    today = datetime.now(timezone.utc).date()
    rows = anthropic_rows(anthropic_client(simulator.anthropic_base_url), today - timedelta(days=1), today)
    assert {r["usage_date"] for r in rows} <= {today - timedelta(days=1), today}  # a future ending_at is a 400
    rows = openai_rows(openai_client(simulator.openai_base_url), today - timedelta(days=1), today)
    assert {r["usage_date"] for r in rows} <= {today - timedelta(days=1), today}
    future = anthropic_client(simulator.anthropic_base_url)
    assert anthropic_rows(future, today + timedelta(days=1), today + timedelta(days=2)) == []
    assert future.requests_made == 0


def test_the_simulator_refuses_what_the_documents_do_not_offer(simulator):
    with pytest.raises(ProviderError, match="HTTP 400.*group_by") as info:
        list(openai_client(simulator.openai_base_url).pages(PageQuery(
            "/organization/costs", [("start_time", "1772409600"), ("group_by", "model")], openai_costs.CostsPage)))
    assert not isinstance(info.value, MalformedResponseError)
    with pytest.raises(ProviderError, match="HTTP 400.*group_by"):
        list(anthropic_client(simulator.anthropic_base_url).pages(PageQuery(
            anthropic_costs.COST_PATH, [("starting_at", "2026-03-02T00:00:00Z"), ("group_by[]", "api_key_id")],
            anthropic_costs.CostReportPage)))
    with pytest.raises(ProviderError, match="HTTP 400.*limit"):
        list(openai_client(simulator.openai_base_url).pages(PageQuery(
            "/organization/costs", [("start_time", "1772409600"), ("limit", "181")], openai_costs.CostsPage)))
    with pytest.raises(ValueError, match="page_limit"):
        anthropic_rows(anthropic_client(simulator.anthropic_base_url), page_limit=32)
