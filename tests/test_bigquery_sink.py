"""The BigQuery sink built on WriteToBigQuery, run on the FnApiRunner with Beam's test client hook."""
from __future__ import annotations

from datetime import date, datetime, timezone

import apache_beam as beam
import pandas as pd
from apache_beam.io.gcp.bigquery import WriteToBigQuery
from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from beam_pipelines.config.loader import load_pipeline
from beam_pipelines.config.schema import load_schema
from beam_pipelines.registry import lookup
from beam_pipelines.transforms.bigquery_sink import BigQueryLoad
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import OrgBatch, WorkItem
from tests.conftest import CONFIGS

NOW = datetime(2026, 3, 5, tzinfo=timezone.utc)
SCHEMA = load_schema(CONFIGS / "openai/cost/schemas/openai_cost_daily.json")


def cost_rows(org, run_id, day, n):
    rows = []
    for i in range(n):
        row = {name: None for name in SCHEMA.names}
        row.update(usage_date=day, org_slug=org, row_key=f"{org}{day}{i}", run_id=run_id, model="gpt-5", input_tokens=1,
                   input_cached_tokens=0, input_uncached_tokens=1, input_audio_tokens=0, output_tokens=1,
                   output_audio_tokens=0, num_model_requests=1, total_cost_usd=float("nan") if i else 1.5,
                   pricing_status="PRICED", loaded_at=NOW)
        rows.append(row)
    return OrgBatch(org, run_id, pd.DataFrame(rows))


CALLS: list = []  # module level: the runner pickles the client, and every copy records here


class _Recorder:
    def __init__(self, service):
        self._service = service

    def __getattr__(self, method):
        if method.startswith("_"):  # unpickling looks up _service before it is set
            raise AttributeError(method)

        def call(request=None, *args, **kwargs):
            CALLS.append((f"{self._service}.{method}", request))
            if self._service == "jobs":
                reference = (getattr(getattr(request, "job", None), "jobReference", None)
                             or bigquery_api.JobReference(projectId="proj", jobId="job1"))
                return bigquery_api.Job(jobReference=reference, status=bigquery_api.JobStatus(state="DONE"))
            return None
        return call


class RecordingBigQueryClient:
    """Stands in for Beam's apitools BigQuery client (the ``test_client`` hook of WriteToBigQuery)."""

    def __init__(self):
        self.jobs = _Recorder("jobs")
        self.tables = _Recorder("tables")
        self.datasets = _Recorder("datasets")


def bq_test_client():
    CALLS.clear()
    return RecordingBigQueryClient()


def test_rows_load_into_partition_decorators_with_truncate_and_empty_days_are_deleted(home, tmp_path, monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    from beam_pipelines.settings import load_settings

    settings = load_settings()
    loaded = load_pipeline(CONFIGS, "openai/cost/usage_cost")
    step = next(s for s in loaded.config.steps if s.step_id == "load_cost_daily")
    options = lookup(step.ps_type).options.model_validate(step.options)
    ctx = RunContext.from_settings(settings, loaded, NOW)
    ctx = type(ctx)(**{**ctx.__dict__, "sink": "bigquery", "gcp_project": "proj",
                       "bigquery_temp_location": str(tmp_path / "bq-temp")})
    client = bq_test_client()
    monkeypatch.setattr(BigQueryLoad, "test_client", client)
    monkeypatch.setattr(BigQueryLoad, "validate", False)

    p = BeamTestPipeline(runner="FnApiRunner")
    items = p | "Items" >> beam.Create([WorkItem("acme", "run-a", date(2026, 3, 2), date(2026, 3, 4)),
                                        WorkItem("globex", "run-g", date(2026, 3, 2), date(2026, 3, 2))])
    failed = p | "Failed" >> beam.Create(["run-g"])
    batches = p | "Batches" >> beam.Create([cost_rows("acme", "run-a", date(2026, 3, 2), 3),
                                            cost_rows("acme", "run-a", date(2026, 3, 3), 2),
                                            cost_rows("globex", "run-g", date(2026, 3, 2), 4)])
    transform = BigQueryLoad(step, options, ctx, work_items=items, failed_runs=failed)
    _ = batches | transform
    p.run().wait_until_finish()

    inserted = [r for name, r in CALLS if name == "jobs.Insert"]
    loads = [r.job.configuration.load for r in inserted if r.job.configuration.load]
    copies = [r.job.configuration.copy for r in inserted if r.job.configuration.copy]
    final = [(c.destinationTable.datasetId, c.destinationTable.tableId, c.writeDisposition) for c in copies] or \
            [(ld.destinationTable.datasetId, ld.destinationTable.tableId, ld.writeDisposition) for ld in loads]
    assert sorted(final) == [("acme_prod", "openai_cost_daily$20260302", "WRITE_TRUNCATE"),
                             ("acme_prod", "openai_cost_daily$20260303", "WRITE_TRUNCATE")]
    assert not any("globex" in str(r) for r in inserted), "a failed org writes nothing"
    for load in loads:
        assert load.timePartitioning.field == "usage_date" and load.timePartitioning.type == "DAY"
        assert list(load.clustering.fields) == ["model", "project_id"]
        assert [f.name for f in load.schema.fields] == SCHEMA.names
    deleted = [r for name, r in CALLS if name == "tables.Delete"]
    partitions = [(d.datasetId, d.tableId) for d in deleted if d.tableId.startswith("openai_cost_daily")]
    assert partitions == [("acme_prod", "openai_cost_daily$20260304")], "the run day with no rows is emptied"
    temp = {d.tableId for d in deleted} - {t for _, t in partitions}
    assert temp == {ld.destinationTable.tableId for ld in loads}, "every temp table is removed after its copy"


def test_the_sink_is_writetobigquery_with_file_loads(home, tmp_path):
    from beam_pipelines.settings import load_settings

    loaded = load_pipeline(CONFIGS, "openai/cost/usage_cost")
    step = next(s for s in loaded.config.steps if s.step_id == "load_cost_daily")
    ctx = RunContext.from_settings(load_settings(), loaded, NOW)
    ctx = type(ctx)(**{**ctx.__dict__, "sink": "bigquery", "gcp_project": "proj", "bigquery_temp_location": str(tmp_path)})
    p = beam.Pipeline(runner="FnApiRunner")
    items = p | "Items" >> beam.Create([WorkItem("acme", "r", date(2026, 3, 2), date(2026, 3, 2))])
    failed = p | "Failed" >> beam.Create([])
    _ = (p | beam.Create([]) | BigQueryLoad(step, lookup(step.ps_type).options.model_validate(step.options), ctx,
                                            work_items=items, failed_runs=failed))
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, WriteToBigQuery):
                found.append(node.transform)

    p.visit(Visitor())
    [write] = found
    assert write.method == WriteToBigQuery.Method.FILE_LOADS
    assert write.write_disposition == "WRITE_TRUNCATE" and write.create_disposition == "CREATE_IF_NEEDED"
    assert write.additional_bq_parameters == {"timePartitioning": {"type": "DAY", "field": "usage_date"},
                                              "clustering": {"fields": ["model", "project_id"]}}
    assert callable(write.table_reference)
    destination = write.table_reference({"org_slug": "acme", "usage_date": "2026-03-02"})
    assert destination == "proj:acme_dev.openai_cost_daily$20260302"



def test_staged_billing_rows_reach_the_sink_as_json_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beam_pipelines.transforms.bigquery_sink import batch_rows
    from beam_pipelines.transforms.elements import StagedRows

    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"usage_date": [date(2026, 3, 2)], "org_slug": ["acme"], "cost": [1.25],
                             "export_time": [datetime(2026, 3, 3, 1, tzinfo=timezone.utc)]}), path)
    staged = OrgBatch("acme", "run-a", StagedRows(str(path), date(2026, 3, 2), 1))
    assert list(batch_rows(staged, [])) == [{"usage_date": "2026-03-02", "org_slug": "acme", "cost": 1.25,
                                              "export_time": "2026-03-03T01:00:00+00:00"}]
    assert list(batch_rows(staged, ["run-a"])) == [], "failed runs are filtered before the sink"
