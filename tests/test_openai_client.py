"""The OpenAI usage client against the loopback simulator: paging, retries, failing closed."""
from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone

import pytest

from beam_pipelines.errors import MalformedResponseError, ProviderError
from beam_pipelines.providers.http import RetryPolicy
from beam_pipelines.providers.openai import OpenAIUsageClient, usage_rows
from beam_pipelines.testing.simulator import openai_data

KEY = "sk-admin-sim-client-test"
START, END = date(2026, 3, 2), date(2026, 3, 4)
LOADED = datetime(2026, 3, 5, tzinfo=timezone.utc)


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def client(sim, key=KEY, retries=4):
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=retries, backoff_seconds=0.5, backoff_max_seconds=8, timeout_seconds=2)
    return OpenAIUsageClient(key, sim.openai_base_url, policy, sleep=sleeps), sleeps


def fetch_rows(c):
    return [row for page in c.completions_pages(START, END, page_limit=31) for row in usage_rows(page, "acme", "r", LOADED)]


def expected_results():
    return [r for d in (date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)) for r in openai_data.day_results(KEY, d)]


def test_pages_through_every_result_in_cursor_order(simulator):
    c, _ = client(simulator)
    rows = fetch_rows(c)
    expected = expected_results()
    assert c.requests_made > 3, "a day spans several pages"
    assert len(rows) == len(expected)
    assert [r["input_tokens"] for r in rows] == [e["input_tokens"] for e in expected]
    assert sorted({r["usage_date"] for r in rows}) == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    assert len({r["row_key"] for r in rows}) == len(rows)


def test_sends_the_documented_request():
    """As it reaches the provider: path, query, the org's key, nothing else of ours."""
    from urllib.parse import parse_qs, urlsplit

    from tests.http_fakes import JsonHandler, serve

    seen = []

    class Usage(JsonHandler):
        def do_GET(self):
            seen.append((self.path, dict(self.headers)))
            self.send_json({"object": "page", "data": [], "has_more": False, "next_page": None})

    with serve(Usage) as url:
        c = OpenAIUsageClient(KEY, f"{url}/v1", RetryPolicy(0, 0.1, 0.1, 5))
        c.completions_pages(START, END)
    path, headers = seen[0]
    assert urlsplit(path).path == "/v1/organization/usage/completions"
    query = parse_qs(urlsplit(path).query)
    assert query["start_time"] == ["1772409600"]  # 2026-03-02T00:00Z
    assert query["end_time"] == ["1772668800"]  # 2026-03-05T00:00Z, exclusive
    assert query["bucket_width"] == ["1d"] and query["limit"] == ["31"]
    assert query["group_by[]"] == ["model", "project_id", "api_key_id", "batch", "service_tier"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["User-Agent"].startswith("Python/") and "aiohttp" in headers["User-Agent"]
    assert "Cookie" not in headers


def test_a_redirect_is_never_followed_with_the_orgs_key():
    from tests.http_fakes import JsonHandler, serve

    hits = []

    class Elsewhere(JsonHandler):
        def do_GET(self):
            hits.append(self.headers.get("Authorization"))
            self.send_json({"object": "page", "data": [], "has_more": False, "next_page": None})

    with serve(Elsewhere) as target:
        class Redirect(JsonHandler):
            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", f"{target}/steal?key={KEY}")
                self.send_header("Content-Length", "0")
                self.end_headers()

        with serve(Redirect) as url:
            c = OpenAIUsageClient(KEY, f"{url}/v1", RetryPolicy(2, 0.1, 0.1, 5))
            with pytest.raises(ProviderError) as err:
                list(c.completions_pages(START, END))
    assert "answered a redirect to" in str(err.value) and "not followed" in str(err.value)
    assert KEY not in str(err.value), "the location is redacted like any provider text"
    assert hits == [] and c.requests_made == 1, "not followed, and not retried"


def test_429_honours_retry_after_and_500_backs_off(simulator):
    simulator.faults.add(KEY, ["429:3", "500", "503"])
    c, sleeps = client(simulator)
    rows = fetch_rows(c)
    assert len(rows) == len(expected_results())
    assert sleeps[0] == 3.0
    assert len(sleeps) == 3 and all(0 < s <= 8 for s in sleeps[1:])


def test_slow_response_times_out_and_is_retried(simulator):
    simulator.faults.add(KEY, ["slow:3"])
    c, sleeps = client(simulator)
    assert len(fetch_rows(c)) == len(expected_results())
    assert len(sleeps) == 1


def test_gives_up_after_bounded_retries(simulator):
    simulator.faults.add(KEY, ["500"] * 10)
    c, sleeps = client(simulator, retries=3)
    with pytest.raises(ProviderError, match="gave up after 4 attempts"):
        fetch_rows(c)
    assert len(sleeps) == 3


def test_exhausted_quota_is_not_retried(simulator):
    simulator.faults.add(KEY, ["spend-limit"])
    c, sleeps = client(simulator)
    with pytest.raises(ProviderError, match="HTTP 429: insufficient_quota"):
        fetch_rows(c)
    assert sleeps == []


def test_rejected_key_fails_with_openai_message_and_no_key(simulator):
    c, sleeps = client(simulator, key="sk-proj-not-an-admin-key")
    with pytest.raises(ProviderError) as exc:
        fetch_rows(c)
    assert "HTTP 401" in str(exc.value) and "Admin API key" in str(exc.value)
    assert "sk-proj" not in str(exc.value)
    assert sleeps == []


@pytest.mark.parametrize("fault, message", [
    ("malformed", "response is not valid JSON"),
    ("bad-schema", "malformed page 1: data: Input should be a valid array"),
])
def test_fails_closed_on_bad_pages(simulator, fault, message):
    simulator.faults.add(KEY, [fault])
    c, _ = client(simulator)
    with pytest.raises(MalformedResponseError, match=message):
        fetch_rows(c)


def test_fails_closed_on_a_repeated_cursor(simulator):
    c, _ = client(simulator)
    simulator.faults.add(KEY, ["slow:0", "repeat-cursor"])  # page 1 as usual; page 2 repeats the cursor it was asked with
    with pytest.raises(MalformedResponseError, match="page 2 repeats cursor"):
        c.completions_pages(START, END)


def test_client_repr_never_shows_the_key(simulator):
    c, _ = client(simulator)
    assert KEY not in repr(c)


def test_a_netrc_entry_never_replaces_the_orgs_key(simulator, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-org-key\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))  # a client trusting the environment sends these as Basic auth instead
    c, _ = client(simulator)
    assert len(fetch_rows(c)) == len(expected_results())


def test_environment_proxies_are_honoured_and_read_once(monkeypatch):
    from beam_pipelines.providers import http as provider_http
    from tests.http_fakes import JsonHandler, serve

    asked = []

    class Proxy(JsonHandler):
        def do_GET(self):
            asked.append((self.path, self.headers.get("Authorization")))
            self.send_json({"object": "page", "data": [], "has_more": False, "next_page": None})

    scans = []
    original = provider_http.requests.utils.get_environ_proxies
    monkeypatch.setattr(provider_http.requests.utils, "get_environ_proxies", lambda *a, **k: scans.append(a) or original(*a, **k))
    with serve(Proxy) as proxy:
        for variable in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy)
        provider_http._environment_settings.cache_clear()
        for _ in range(2):
            c = OpenAIUsageClient(KEY, "http://provider.invalid/v1", RetryPolicy(0, 0.1, 0.1, 2))
            assert list(c.completions_pages(START, END)) and c.requests_made == 1
        monkeypatch.setenv("NO_PROXY", "provider.invalid")
        provider_http._environment_settings.cache_clear()
        with pytest.raises(ProviderError, match="ConnectionError"):  # no proxy for this host: straight to it
            list(OpenAIUsageClient(KEY, "http://provider.invalid/v1", RetryPolicy(0, 0.1, 0.1, 2)).completions_pages(START, END))
    provider_http._environment_settings.cache_clear()
    assert [path.split("?")[0] for path, _ in asked] == ["http://provider.invalid/v1/organization/usage/completions"] * 2
    assert {auth for _, auth in asked} == {f"Bearer {KEY}"}
    assert len(scans) == 2, "the environment is read once per base URL, not on every request"


def test_the_environments_ca_bundle_is_trusted_and_an_unknown_certificate_is_not(tmp_path, monkeypatch):
    from beam_pipelines.providers import http as provider_http
    from tests.http_fakes import JsonHandler, self_signed_cert, serve

    class Usage(JsonHandler):
        def do_GET(self):
            self.send_json({"object": "page", "data": [], "has_more": False, "next_page": None})

    cert, key = self_signed_cert(tmp_path)
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    with serve(Usage, tls=(cert, key)) as url:
        provider_http._environment_settings.cache_clear()
        with pytest.raises(ProviderError, match="ConnectionError"):  # the system's CAs do not know it
            OpenAIUsageClient(KEY, f"{url}/v1", RetryPolicy(0, 0.1, 0.1, 5)).completions_pages(START, END)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        provider_http._environment_settings.cache_clear()
        c = OpenAIUsageClient(KEY, f"{url}/v1", RetryPolicy(0, 0.1, 0.1, 5))
        assert len(c.completions_pages(START, END)) == 1 and c.requests_made == 1
    provider_http._environment_settings.cache_clear()


def test_a_workers_orgs_share_connections_but_never_keys_or_cookies():
    """Between the fetch step's setup and teardown every org goes over one kept-alive session: each
    request carries its own org's key, and a cookie the provider sets is never sent back."""
    from beam_pipelines.config.loader import load_pipeline
    from beam_pipelines.secrets.credentials import Credential
    from beam_pipelines.transforms.elements import WorkItem
    from beam_pipelines.transforms.openai import OpenAIUsageFetcher
    from tests.conftest import CONFIGS
    from tests.http_fakes import JsonHandler, serve

    seen = []

    class Usage(JsonHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            seen.append((self.client_address[1], self.headers.get("Authorization"), self.headers.get("Cookie")))
            payload = b'{"object": "page", "data": [], "has_more": false, "next_page": null}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Set-Cookie", "session=org-specific; Path=/")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    options = load_pipeline(CONFIGS, "openai/cost/usage_cost").options("extract_usage")
    day = date(2026, 3, 2)

    async def fetch_orgs(fetcher):
        await fetcher.setup()
        try:
            for n in range(5):
                await fetcher.fetch(WorkItem(f"org{n}", f"run{n}", day, day), Credential("ADMIN_API_KEY", f"sk-admin-{n}", {}))
        finally:
            await fetcher.teardown()
        await fetcher.fetch(WorkItem("alone", "run9", day, day), Credential("ADMIN_API_KEY", "sk-admin-9", {}))

    with serve(Usage) as url:
        asyncio.run(fetch_orgs(OpenAIUsageFetcher(f"{url}/v1", options, datetime(2026, 3, 3, tzinfo=timezone.utc))))
    assert [key for _, key, _ in seen] == [f"Bearer sk-admin-{n}" for n in (0, 1, 2, 3, 4, 9)]
    assert [cookie for _, _, cookie in seen] == [None] * 6, "the provider's cookie never goes back"
    assert len({port for port, _, _ in seen[:5]}) == 1, "the five orgs went over one kept-alive connection"
    assert seen[5][0] != seen[0][0], "a fetch outside setup/teardown opens its own"


def test_row_keys_are_stable_across_versions():
    """A row key is a hash of the row's natural key as JSON; rows loaded by an earlier version must get
    the same key on a re-run, or a day's MERGE would keep both. The value is pinned."""
    import hashlib
    import json
    from datetime import date

    from beam_pipelines.rows import row_key

    parts = ("acme", date(2026, 11, 20), "proj_a", None, None, "gpt-5", True, "default")
    assert row_key(*parts) == "4f3aae055ff85766bb2eb1afd5f5d127"
    assert row_key(*parts) == hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]
