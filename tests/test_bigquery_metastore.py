"""The BigQuery metastore against a fake BigQuery REST endpoint: parameterised, idempotent writes."""
from __future__ import annotations

import base64
import json
from datetime import date, datetime, timezone

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from beam_pipelines.metastore.bigquery import BigQueryMetastore
from tests.conftest import CONFIGS
from tests.http_fakes import JsonHandler, serve


class FakeBigQuery(JsonHandler):
    """jobs.insert records the query; getQueryResults answers with the next canned result."""

    queries: list = []
    results: list = []

    def do_POST(self):
        body = self.read_json()
        FakeBigQuery.queries.append(body["configuration"]["query"])
        reference = {"projectId": "proj", "jobId": body["jobReference"]["jobId"], "location": "EU"}
        return self.send_json({"jobReference": reference, "status": {"state": "DONE"}, "configuration": body["configuration"]})

    def do_GET(self):
        fields, rows = FakeBigQuery.results.pop(0) if FakeBigQuery.results else ([], [])
        return self.send_json({"jobComplete": True, "totalRows": str(len(rows)), "jobReference": {"projectId": "proj",
                           "jobId": "j", "location": "EU"}, "schema": {"fields": fields},
                           "rows": [{"f": [{"v": v} for v in row]} for row in rows]})


@pytest.fixture
def store():
    FakeBigQuery.queries, FakeBigQuery.results = [], []
    with serve(FakeBigQuery) as url:
        client = bigquery.Client(project="proj", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
        yield BigQueryMetastore("proj", CONFIGS, client=client)


def params(query):
    return {p["name"]: (p["parameterType"]["type"], p["parameterValue"].get("value", p["parameterValue"].get("arrayValues")))
            for p in query.get("queryParameters", [])}


def test_key_lookup_is_parameterised_and_rows_come_back_as_dicts(store):
    FakeBigQuery.results.append(([{"name": "org_api_key_id", "type": "STRING"}, {"name": "org_slug", "type": "STRING"},
                                  {"name": "key_hash", "type": "STRING"}], [["k1", "acme", "ab" * 32]]))
    row = store.find_api_key("ab" * 32, now=datetime(2026, 3, 1, tzinfo=timezone.utc))
    assert row == {"org_api_key_id": "k1", "org_slug": "acme", "key_hash": "ab" * 32}
    [query] = FakeBigQuery.queries
    assert query["query"].startswith("SELECT * FROM `proj.organizations.org_api_keys` WHERE key_hash = @key_hash")
    assert params(query)["key_hash"] == ("STRING", "ab" * 32)
    assert params(query)["now"][0] == "TIMESTAMP"
    assert query["useLegacySql"] is False


def test_values_never_enter_sql_text(store):
    hostile = "acme'; DROP TABLE organizations.org_profiles; --"
    store.get_subscription(hostile)
    store.update_run("r1", status="FAILED", error_message=hostile)
    for query in FakeBigQuery.queries:
        assert hostile not in query["query"] and "DROP" not in query["query"]
    assert params(FakeBigQuery.queries[1])["error_message"] == ("STRING", hostile)


def test_run_records_are_merged_on_their_id_so_a_retry_cannot_duplicate(store):
    run = {"pipeline_logging_id": "r1", "org_slug": "acme", "pipeline_id": "openai/cost/usage_cost", "status": "QUEUED",
           "trigger_type": "api", "start_date": date(2026, 3, 1), "end_date": date(2026, 3, 2),
           "created_at": datetime(2026, 3, 3, tzinfo=timezone.utc)}
    store.create_run(run)
    store.create_run(run)  # a retried write
    first, second = FakeBigQuery.queries
    assert first["query"] == second["query"]
    assert first["query"].startswith("MERGE `proj.organizations.org_meta_pipeline_runs` T USING (SELECT")
    assert "ON T.pipeline_logging_id = S.pipeline_logging_id WHEN NOT MATCHED THEN INSERT" in first["query"]
    assert "WHEN MATCHED" not in first["query"]
    bound = params(first)
    assert bound["start_date"] == ("DATE", "2026-03-01") and bound["created_at"][0] == "TIMESTAMP"
    store.upsert_step_log({"step_log_id": "r1:extract_usage", "pipeline_logging_id": "r1", "org_slug": "acme",
                           "step_id": "extract_usage", "ps_type": "openai.usage", "status": "COMPLETED",
                           "rows_processed": 7})
    assert "ON T.step_log_id = S.step_log_id WHEN MATCHED THEN UPDATE" in FakeBigQuery.queries[-1]["query"]
    assert params(FakeBigQuery.queries[-1])["rows_processed"] == ("INT64", "7")


def test_reservation_is_one_transaction_and_reports_the_outcome(store):
    FakeBigQuery.results.append(([{"name": "outcome", "type": "STRING"}, {"name": "run_id", "type": "STRING"},
                                  {"name": "used", "type": "INTEGER"}], [["duplicate", "r0", "3"]]))
    reservation = store.reserve_run(
        {"pipeline_logging_id": "r9", "org_slug": "acme", "pipeline_id": "openai/cost/usage_cost", "status": "QUEUED",
         "trigger_type": "api", "start_date": date(2026, 3, 1), "end_date": date(2026, 3, 1)},
        daily_limit=10, since=datetime(2026, 3, 5, tzinfo=timezone.utc))
    assert (reservation.outcome, reservation.run_id, reservation.used) == ("duplicate", "r0", 3)
    [query] = FakeBigQuery.queries
    assert query["query"].startswith("BEGIN TRANSACTION;") and "COMMIT TRANSACTION;" in query["query"]
    assert params(query)["daily_limit"] == ("INT64", "10")
    assert [v["value"] for v in params(query)["dedupe"][1]] == ["QUEUED", "RUNNING"]


def test_credentials_travel_as_bytes_and_json_parameters(store):
    FakeBigQuery.results.append(([], []))  # get_credential: none yet
    store.put_credential("acme", "gcp", "service_account_json", b"\x01ciphertext", "kms", {"billing_export_table": "a.b.c"})
    merge = FakeBigQuery.queries[-1]
    bound = params(merge)
    assert bound["encrypted_credential"] == ("BYTES", base64.b64encode(b"\x01ciphertext").decode())
    assert bound["metadata"][0] == "JSON" and json.loads(bound["metadata"][1]) == {"billing_export_table": "a.b.c"}
    assert bound["is_active"] == ("BOOL", "true")
