"""GCP billing export: flattening, late data, malformed input, the BigQuery path on a fake transport."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from beam_pipelines.config.step_options import GcpBillingOptions
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.errors import ConvergenceError, ProviderError
from beam_pipelines.gcp.config import load_bq_etl_config
from beam_pipelines.gcp.credentials import google_credentials
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.generator import generate_export
from beam_pipelines.gcp.sources import BigQueryExportSource
from beam_pipelines.pipeline.run import RunRequest, run_pipeline
from beam_pipelines.secrets.credentials import Credential
from beam_pipelines.transforms.elements import WorkItem
from beam_pipelines.transforms.gcp import GcpBillingFetcher
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS
from tests.http_fakes import JsonHandler, serve

DAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 10, tzinfo=timezone.utc)
ETL = load_bq_etl_config(CONFIGS / "gcp/bq_etl/config.yml", "gcp/bq_etl/config.yml")


def test_net_cost_per_day_equals_cost_plus_credits_from_the_export():
    export = generate_export("acme", DAY + timedelta(days=1), 2, 3000)
    flat = Flattener()(export, "acme", "r1", NOW)
    assert flat.num_rows == export.num_rows
    credits = pc.list_flatten(export.column("credits"))
    independent_credits = pc.sum(pc.struct_field(credits, "amount")).as_py()
    assert float(pc.sum(flat.column("credits_total")).as_py()) == pytest.approx(independent_credits)
    assert float(pc.sum(flat.column("net_cost")).as_py()) == pytest.approx(pc.sum(export.column("cost")).as_py() + independent_credits)
    eur = flat.filter(pc.equal(flat.column("currency"), "EUR"))
    assert eur.num_rows > 0
    assert float(pc.sum(eur.column("cost_usd")).as_py()) == pytest.approx(float(pc.sum(eur.column("cost")).as_py()) / 0.92)
    assert set(flat.column("cost_type").to_pylist()) == {"regular", "tax", "adjustment", "rounding_error"}
    assert json.loads(flat.column("project_labels")[0].as_py()) is not None
    assert pc.min(flat.column("usage_date")).as_py() == DAY


def test_newer_and_older_export_shapes_do_not_break_it():
    export = generate_export("acme", DAY, 1, 200)
    newer = export.append_column("carbon_footprint_kgco2", pa.array([0.1] * export.num_rows))
    older = export.drop_columns(["cost_at_list", "credits", "labels", "currency_conversion_rate"])
    flatten = Flattener()
    assert flatten(newer, "acme", "r", NOW).num_rows == 200
    out = flatten(older, "acme", "r", NOW)
    assert out.column("cost_at_list").null_count == 200
    assert pc.sum(out.column("credits_total")).as_py() == 0
    assert out.column("cost").type == pa.decimal128(38, 9), "money is exact NUMERIC, never FLOAT64"
    assert out.column("labels").to_pylist()[0] == "[]"
    with pytest.raises(ProviderError, match=r"lacks required field\(s\) \['cost'\]"):
        flatten(export.drop_columns(["cost"]), "acme", "r", NOW)


def _run(settings, orgs, start, end):
    return run_pipeline(settings, RunRequest("gcp/cost/billing", orgs=orgs, start_date=start, end_date=end))


def _rows_for(warehouse, org, day):
    _, rows = warehouse.query(f"SELECT row_key, cost, export_time FROM {org}_dev.gcp_billing_daily_raw"
                              f" WHERE usage_date = DATE '{day}' ORDER BY row_key, export_time")
    return rows


def test_late_rows_land_without_duplicating_earlier_ones(settings, tmp_path):
    final = generate_export("acme", DAY + timedelta(days=1), 3, 1500)  # D-1, D, D+1
    cutoff = datetime.combine(DAY + timedelta(days=1), datetime.min.time(), timezone.utc)
    path = tmp_path / "export.parquet"
    pq.write_table(final.filter(pc.less(final.column("export_time"), pa.scalar(cutoff, pa.timestamp("us", tz="UTC")))), path)
    seed_org(settings, "acme", gcp_billing_export=str(path))
    first = _run(settings, ["acme"], DAY, DAY)
    assert first.runs[0]["status"] == "COMPLETED" and first.start_date == DAY - timedelta(days=2)
    warehouse = LocalWarehouse(settings.warehouse_dir)
    early = len(_rows_for(warehouse, "acme", DAY))

    pq.write_table(final, path)  # late rows arrive in the export
    second = _run(settings, ["acme"], DAY + timedelta(days=1), DAY + timedelta(days=1))
    assert second.runs[0]["status"] == "COMPLETED"
    expected = final.filter(pc.equal(pc.cast(final.column("usage_start_time"), pa.date32()), pa.scalar(DAY, pa.date32())))
    got = _rows_for(warehouse, "acme", DAY)
    assert len(got) == expected.num_rows > early
    assert float(sum(r[1] for r in got)) == pytest.approx(pc.sum(expected.column("cost")).as_py())
    assert len({r[0] for r in got}) == len(got), "no row twice"
    assert not list((settings.home / "staging").glob("*/*")), "staged batches are removed after the load"


def test_malformed_export_fails_that_org_and_writes_nothing(settings, tmp_path):
    good, bad, typed = tmp_path / "good.parquet", tmp_path / "bad.parquet", tmp_path / "typed.parquet"
    pq.write_table(generate_export("acme", DAY, 1, 300), good)
    bad.write_bytes(b"PAR1 this is not parquet")
    export = generate_export("globex", DAY, 1, 300)
    pq.write_table(export.set_column(export.schema.get_field_index("cost"), "cost", pa.array(["n/a"] * 300)), typed)
    seed_org(settings, "acme", gcp_billing_export=str(good))
    seed_org(settings, "broken", gcp_billing_export=str(bad))
    seed_org(settings, "typed", gcp_billing_export=str(typed))
    result = _run(settings, ["acme", "broken", "typed"], DAY, DAY)
    status = {r["org_slug"]: r for r in result.runs}
    assert status["acme"]["status"] == "COMPLETED"
    assert status["broken"]["status"] == "FAILED" and "malformed billing export bad.parquet" in status["broken"]["error_message"]
    assert status["typed"]["status"] == "FAILED" and "malformed billing export" in status["typed"]["error_message"]
    warehouse = LocalWarehouse(settings.warehouse_dir)
    assert warehouse.read_table("broken_dev", "gcp_billing_daily_raw") is None
    assert warehouse.read_table("typed_dev", "gcp_billing_daily_raw") is None
    assert not list((settings.home / "staging").rglob("*.parquet"))


def test_a_focus_part_that_cannot_be_mapped_fails_its_org_only(settings, tmp_path, monkeypatch):
    """Parts of several orgs are mapped to FOCUS on a pool at once: one org's failure stays its own."""
    import beam_pipelines.transforms.focus as focus_step

    for org in ("acme", "globex"):
        path = tmp_path / f"{org}.parquet"
        pq.write_table(generate_export(org, DAY, 3, 400), path)
        seed_org(settings, org, gcp_billing_export=str(path))
    mapping = focus_step.focus_rows_gcp

    def refuse_globex(rows, **kwargs):
        if "globex" in rows.column("org_slug").to_pylist():
            raise ValueError("credits: not a JSON list of credits (in a test)")
        return mapping(rows, **kwargs)

    monkeypatch.setattr(focus_step, "focus_rows_gcp", refuse_globex)
    result = _run(settings, ["acme", "globex"], DAY, DAY)
    status = {r["org_slug"]: r for r in result.runs}
    assert status["acme"]["status"] == "COMPLETED"
    assert status["globex"]["status"] == "FAILED" and "not a JSON list of credits" in status["globex"]["error_message"]
    warehouse = LocalWarehouse(settings.warehouse_dir)
    _, days = warehouse.query("SELECT x_ChargeDate, COUNT(*) FROM acme_dev.focus_cost_daily GROUP BY 1 ORDER BY 1")
    _, raw = warehouse.query("SELECT usage_date, COUNT(*) FROM acme_dev.gcp_billing_daily_raw GROUP BY 1 ORDER BY 1")
    assert [d for d, _ in days] == [d for d, _ in raw] == [DAY - timedelta(days=2), DAY - timedelta(days=1), DAY]
    assert all(n >= r for (_, n), (_, r) in zip(days, raw)), "every source row has its FOCUS row"
    assert warehouse.read_table("globex_dev", "gcp_billing_daily_raw") is None
    assert warehouse.read_table("globex_dev", "focus_cost_daily") is None
    assert not list((settings.home / "staging").rglob("*.parquet"))


def test_seed_refuses_an_export_that_is_neither_table_nor_file(settings):
    with pytest.raises(ConvergenceError, match="neither project.dataset"):
        seed_org(settings, "acme", gcp_billing_export="/nope/missing.parquet")


class FakeGoogle(JsonHandler):
    """OAuth token endpoint + BigQuery jobs.insert / getQueryResults, with two result pages."""

    calls: list = []
    SCHEMA = {"fields": [
        {"name": "billing_account_id", "type": "STRING"},
        {"name": "service", "type": "RECORD", "fields": [{"name": "id", "type": "STRING"}, {"name": "description", "type": "STRING"}]},
        {"name": "usage_start_time", "type": "TIMESTAMP"},
        {"name": "cost", "type": "FLOAT"},
        {"name": "currency", "type": "STRING"},
        {"name": "credits", "type": "RECORD", "mode": "REPEATED", "fields": [{"name": "name", "type": "STRING"},
                                                                             {"name": "amount", "type": "FLOAT"}]},
    ]}



    @staticmethod
    def _row(i):
        micros = str(int(datetime(2026, 3, 2, i, tzinfo=timezone.utc).timestamp() * 1_000_000))
        credits = [{"v": {"f": [{"v": "Sustained use"}, {"v": "-0.5"}]}}] if i % 2 else []
        return {"f": [{"v": "01A2B3-C4D5E6"}, {"v": {"f": [{"v": "6F81"}, {"v": "Compute Engine"}]}}, {"v": micros},
                      {"v": str(1.0 + i)}, {"v": "USD"}, {"v": credits}]}

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        FakeGoogle.calls.append(("POST", self.path.split("?")[0], self.headers.get("Authorization"), raw))
        if self.path.startswith("/token"):
            return self.send_json({"access_token": "token-for-reader", "expires_in": 3600, "token_type": "Bearer"})
        return self.send_json({"jobReference": {"projectId": "cust-proj", "jobId": "job-1", "location": "US"},
                           "status": {"state": "DONE"}, "configuration": json.loads(raw)["configuration"]})

    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        FakeGoogle.calls.append(("GET", self.path.split("?")[0], self.headers.get("Authorization"), query))
        second = "pageToken" in query
        rows = [self._row(i) for i in (range(3, 5) if second else range(0, 3))]
        return self.send_json({"jobReference": {"projectId": "cust-proj", "jobId": "job-1", "location": "US"},
                           "jobComplete": True, "schema": self.SCHEMA, "totalRows": "5", "rows": rows,
                           **({} if second else {"pageToken": "page-2"})})


@pytest.fixture
def fake_google():
    FakeGoogle.calls = []
    with serve(FakeGoogle) as url:
        yield url


def test_bigquery_path_query_parameters_credentials_and_paging(fake_google):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    info = {"type": "service_account", "project_id": "cust-proj", "private_key_id": "k1", "private_key": pem.decode(),
            "client_email": "reader@cust-proj.iam.gserviceaccount.com", "token_uri": f"{fake_google}/token"}
    fetcher = GcpBillingFetcher(GcpBillingOptions(page_rows=3000), ETL, NOW, "unused", api_endpoint=fake_google)
    credential = Credential("SERVICE_ACCOUNT_JSON", json.dumps(info),
                            {"billing_export_table": "cust-proj.billing.gcp_billing_export_v1_01A2B3_C4D5E6"})
    tables = list(fetcher.batches(WorkItem("acme", "run-1", DAY, DAY), credential))
    assert [t.num_rows for t in tables] == [3, 2], "one batch per result page"
    flat = pa.concat_tables(tables)
    assert flat.column("net_cost").to_pylist() == [1.0, 1.5, 3.0, 3.5, 5.0]
    assert flat.column("service_description").to_pylist() == ["Compute Engine"] * 5

    token_call, insert, first_page, second_page = FakeGoogle.calls
    assert token_call[1] == "/token" and b"assertion=" in token_call[3]
    assert all(call[2] == "Bearer token-for-reader" for call in (insert, first_page, second_page))
    assert insert[1] == "/bigquery/v2/projects/cust-proj/jobs"
    query = json.loads(insert[3])["configuration"]["query"]
    assert query["query"] == ("SELECT * FROM `cust-proj.billing.gcp_billing_export_v1_01A2B3_C4D5E6`"
                              " WHERE DATE(_PARTITIONTIME) >= @partition_start"
                              " AND usage_start_time >= @usage_start AND usage_start_time < @usage_end")
    params = {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in query["queryParameters"]}
    assert params["partition_start"] == ("DATE", "2026-03-02")
    assert params["usage_start"][0] == "TIMESTAMP" and params["usage_start"][1].startswith("2026-03-02 00:00:00")
    assert params["usage_end"][1].startswith("2026-03-03 00:00:00")
    assert query["useLegacySql"] is False
    assert first_page[3]["maxResults"] == ["3000"] and second_page[3]["pageToken"] == ["page-2"]


def test_export_table_id_is_validated_not_interpolated():
    for bad in ("proj.ds.other_table", "proj.ds.gcp_billing_export_v1_X`; DROP TABLE t; --", "a.b", ""):
        with pytest.raises(ConvergenceError, match="expected project.dataset.gcp_billing_export_v1_XXXX"):
            BigQueryExportSource(bad, None, "p")


def test_a_usd_conversion_rate_of_zero_or_null_fails_the_org(settings, tmp_path):
    for org, rate in (("zero", 0.0), ("null", None)):
        export = generate_export(org, DAY, 1, 50)
        index = export.schema.get_field_index("currency_conversion_rate")
        path = tmp_path / f"{org}.parquet"
        pq.write_table(export.set_column(index, "currency_conversion_rate", pa.array([rate] * 50, pa.float64())), path)
        seed_org(settings, org, gcp_billing_export=str(path))
    result = _run(settings, ["zero", "null"], DAY, DAY)
    for run in result.runs:
        assert run["status"] == "FAILED"
        assert run["error_message"].startswith("validate_billing: data quality: expect_column_values_to_")
        assert "currency_conversion_rate" in run["error_message"] or "cost_usd" in run["error_message"]
        assert LocalWarehouse(settings.warehouse_dir).read_table(f"{run['org_slug']}_dev", "gcp_billing_daily_raw") is None


def test_worker_identity_reads_the_customers_export_on_bigquery(settings, bq_env, monkeypatch):
    """No key: the worker's own identity reads a real export table (on the emulator) the customer shared."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project="cust-proj", credentials=AnonymousCredentials())
    client.create_dataset("cust-proj.billing", exists_ok=True)
    export = generate_export("acme", DAY, 2, 40)
    table = bigquery.Table("cust-proj.billing.gcp_billing_export_v1_01A2B3_C4D5E6", schema=_bq_fields(export.schema))
    table.time_partitioning = bigquery.TimePartitioning(type_="DAY")  # ingestion time, as Google's export
    client.create_table(table, exists_ok=True)
    import io

    buffer = io.BytesIO()
    pq.write_table(export, buffer)
    buffer.seek(0)
    client.load_table_from_file(buffer, table.reference, job_config=bigquery.LoadJobConfig(
        source_format="PARQUET", write_disposition="WRITE_TRUNCATE", schema=table.schema)).result()
    asked = []
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (asked.append(scopes) or AnonymousCredentials(),
                                                                       "our-project"))
    seed_org(settings, "acme", gcp_billing_export="cust-proj.billing.gcp_billing_export_v1_01A2B3_C4D5E6",
             gcp_worker_identity=True)
    result = _run(settings, ["acme"], DAY, DAY)
    assert result.runs[0]["status"] == "COMPLETED", result.runs[0]["error_message"]
    expected = export.filter(pc.equal(pc.cast(export.column("usage_start_time"), pa.date32()), DAY))
    got = _rows_for(LocalWarehouse(settings.warehouse_dir), "acme", DAY)
    assert len(got) == expected.num_rows
    assert float(sum(r[1] for r in got)) == pytest.approx(pc.sum(expected.column("cost")).as_py())
    assert asked == [["https://www.googleapis.com/auth/cloud-platform"]]


def _bq_fields(schema: pa.Schema) -> list:
    """The export's BigQuery schema, as Google declares it, from the generator's Arrow schema."""
    from google.cloud import bigquery

    def field(f: pa.Field):
        kind, mode = f.type, "NULLABLE"
        if pa.types.is_list(kind):
            kind, mode = kind.value_type, "REPEATED"
        if pa.types.is_struct(kind):
            return bigquery.SchemaField(f.name, "RECORD", mode, fields=[field(c) for c in kind])
        name = ("TIMESTAMP" if pa.types.is_timestamp(kind) else "FLOAT" if pa.types.is_floating(kind)
                else "INTEGER" if pa.types.is_integer(kind) else "STRING")
        return bigquery.SchemaField(f.name, name, mode)

    return [field(f) for f in schema]


class FakeIamCredentials(JsonHandler):
    """The IAM Credentials API's generateAccessToken, checking the request as Google documents it."""

    calls: list = []

    def do_POST(self):
        body = self.read_json()
        FakeIamCredentials.calls.append((self.path, self.headers.get("Authorization"), body))
        expected_keys = {"scope", "lifetime"} | ({"delegates"} if "delegates" in body else set())
        if set(body) != expected_keys or not body["lifetime"].endswith("s"):
            return self.send_json({"error": {"code": 400, "message": "bad request"}}, 400)
        return self.send_json({"accessToken": "impersonated-token", "expireTime": "2099-01-01T00:00:00Z"})


def test_impersonation_mints_tokens_of_the_customers_account(monkeypatch):
    import google.auth
    import google.oauth2.credentials

    source = google.oauth2.credentials.Credentials(token="worker-token")
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (source, "our-project"))
    target = "billing-reader@cust-proj.iam.gserviceaccount.com"
    credential = Credential("WORKER_IDENTITY", None, {"impersonate_service_account": target,
                                                      "billing_export_table": "cust-proj.b.gcp_billing_export_v1_X"})
    FakeIamCredentials.calls = []
    with serve(FakeIamCredentials) as url:
        creds, project = google_credentials(credential, iam_endpoint=f"{url}/v1/projects/-/serviceAccounts/{target}"
                                                                     ":generateAccessToken")
        import google.auth.transport.requests

        creds.refresh(google.auth.transport.requests.Request())
    assert creds.token == "impersonated-token" and project == "our-project"
    [(path, authorization, body)] = FakeIamCredentials.calls
    assert path == f"/v1/projects/-/serviceAccounts/{target}:generateAccessToken"
    assert authorization == "Bearer worker-token"
    assert body["scope"] == ["https://www.googleapis.com/auth/bigquery.readonly"] and body["lifetime"] == "3600s"


def test_a_service_account_key_is_required_to_be_one():
    from beam_pipelines.errors import CredentialError

    with pytest.raises(CredentialError, match="not a service-account JSON key"):
        google_credentials(Credential("SERVICE_ACCOUNT_JSON", "sk-not-json", {}))
    with pytest.raises(CredentialError, match="cannot read a billing export"):
        google_credentials(Credential("API_KEY", "x", {}))
