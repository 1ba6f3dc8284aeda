"""Beam transforms on the FnApiRunner with TestPipeline, assert_that and equal_to."""
from __future__ import annotations

import asyncio
import threading
import time
from datetime import date, datetime, timezone

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.config.loader import load_pipeline
from beam_pipelines.config.schema import load_schema
from beam_pipelines.dev.seed import seed_org
from beam_pipelines.registry import lookup
from beam_pipelines.runs.records import CommitReport, fold_run
from beam_pipelines.settings import load_settings
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import EVENTS, OrgBatch, StagedRows, StepEvent, WorkItem
from beam_pipelines.transforms.fetch import FetchOrgs
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS, flattened

DAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 3, tzinfo=timezone.utc)


def pipeline():
    return BeamTestPipeline(runner="FnApiRunner")


class FakeFetcher:
    """Two pages per org; org 'broken' fails after its first page; tracks concurrency."""

    provider = "openai"
    lock = threading.Lock()
    active = 0
    peak = 0
    secrets_seen: list = []
    hooks: list = []

    def __init__(self, delay=0.0):
        self.delay = delay

    def fetch(self, item, credential):
        self._enter(credential.secret)
        try:
            time.sleep(self.delay)
            return self._pages(item, credential.secret)
        finally:
            self._leave()

    def _enter(self, secret):
        cls = type(self)
        with cls.lock:
            FakeFetcher.active += 1
            FakeFetcher.peak = max(FakeFetcher.peak, FakeFetcher.active)
            FakeFetcher.secrets_seen.append(secret)

    def _leave(self):
        with type(self).lock:
            FakeFetcher.active -= 1

    @staticmethod
    def _pages(item, secret):
        pages = []
        for page in range(2):
            if item.org_slug.startswith("broken") and page == 1:
                raise RuntimeError(f"upstream exploded using {secret}")
            day = date(2025, 1, 1) if item.org_slug == "stray" and page == 1 else item.start_date
            pages.append(pd.DataFrame({"row_key": [f"{item.org_slug}-{page}-{i}" for i in range(3)],
                                       "usage_date": [day] * 3, "n": [page] * 3}))
        return pages


class AsyncFakeFetcher(FakeFetcher):
    """The same orgs fetched as the HTTP providers are: a coroutine on the fetch step's event loop."""

    async def setup(self):
        FakeFetcher.hooks.append(("setup", threading.current_thread().name))

    async def teardown(self):
        FakeFetcher.hooks.append(("teardown", threading.current_thread().name))

    async def fetch(self, item, credential):
        self._enter(credential.secret)
        try:
            await asyncio.sleep(self.delay)
            return self._pages(item, credential.secret)
        finally:
            self._leave()


FETCHERS = pytest.mark.parametrize("fetcher_cls", [FakeFetcher, AsyncFakeFetcher], ids=["threads", "event-loop"])


@pytest.fixture
def seeded(home):
    settings = load_settings()
    for org in ("acme", "globex", "broken", "stray"):
        seed_org(settings, org)
    seed_org(settings, "paused", subscription="SUSPENDED")
    seed_org(settings, "trial_over", subscription="TRIAL", trial_ends=date(2026, 1, 1))
    return settings


def fetch_graph(settings, items, fetcher, max_concurrency):
    p = pipeline()
    ctx = RunContext.from_settings(settings, load_pipeline(CONFIGS, "openai/cost/usage_cost"), NOW)
    outputs = (
        p | beam.Create(items)
        | beam.ParDo(FetchOrgs(fetcher, "extract_usage", "openai.usage", ctx, max_concurrency))
        .with_outputs(EVENTS, main="main")
    )
    return p, outputs


@FETCHERS
def test_failing_org_goes_to_events_and_others_complete(seeded, fetcher_cls):
    items = [WorkItem(o, f"run-{o}", DAY, DAY) for o in ("acme", "globex", "broken")]
    p, outputs = fetch_graph(seeded, items, fetcher_cls(), 2)
    batches = outputs.main | "Shape" >> beam.Map(lambda b: (b.org_slug, len(b.rows)))
    events = outputs[EVENTS] | "Ev" >> beam.Map(lambda e: (e.org_slug, e.rows, e.failed, (e.error or "")[:60]))
    assert_that(batches, equal_to([("acme", 6), ("globex", 6)]), label="an org's pages merge into one batch")
    assert_that(events, equal_to([
        ("acme", 6, False, ""), ("globex", 6, False, ""),
        ("broken", 0, True, "RuntimeError: upstream exploded using [REDACTED]"),
    ]), label="events")
    p.run().wait_until_finish()


@FETCHERS
def test_refused_orgs_are_never_fetched_and_stray_days_fail_the_org(seeded, fetcher_cls):
    FakeFetcher.secrets_seen = []
    items = [WorkItem(o, f"run-{o}", DAY, DAY) for o in ("paused", "trial_over", "stray")]
    p, outputs = fetch_graph(seeded, items, fetcher_cls(), 2)
    events = outputs[EVENTS] | "Ev" >> beam.Map(lambda e: (e.org_slug, e.failed, e.error))
    assert_that(outputs.main, equal_to([]), label="nothing emitted")
    assert_that(events, equal_to([
        ("paused", True, "refused: subscription status is SUSPENDED (nothing fetched)"),
        ("trial_over", True, "refused: trial ended on 2026-01-01 (nothing fetched)"),
        ("stray", True, "openai API: answer carries usage for 2025-01-01, outside the requested 2026-03-02..2026-03-02:"
                        " nothing written"),
    ]), label="events")
    p.run().wait_until_finish()
    assert FakeFetcher.secrets_seen == ["sk-admin-sim-stray"], "refused orgs are not even decrypted"


@FETCHERS
def test_fetches_overlap_with_bounded_concurrency(seeded, fetcher_cls):
    FakeFetcher.peak = 0
    FakeFetcher.secrets_seen = []
    FakeFetcher.hooks = []
    items = [WorkItem("acme", f"run-{i}", DAY, DAY) for i in range(8)]
    p, outputs = fetch_graph(seeded, items, fetcher_cls(delay=0.2), 3)
    count = outputs.main | beam.combiners.Count.Globally()
    assert_that(count, equal_to([8]), label="one batch per org: its two pages merged")
    p.run().wait_until_finish()
    assert FakeFetcher.peak == 3, "max_concurrency orgs at once, whether on threads or on the loop"
    if fetcher_cls is AsyncFakeFetcher:
        assert FakeFetcher.hooks == [("setup", "fetch-loop"), ("teardown", "fetch-loop")], "once per worker, on its loop"
    assert set(FakeFetcher.secrets_seen) == {"sk-admin-sim-acme"}, "decrypted in the worker from the metastore"


def test_price_step_uses_the_price_list_side_input(seeded):
    loaded = load_pipeline(CONFIGS, "openai/cost/usage_cost")
    step = next(s for s in loaded.config.steps if s.ps_type == "openai.cost")
    entry = lookup(step.ps_type)
    ctx = RunContext.from_settings(seeded, loaded, NOW)
    rows = pd.DataFrame([{
        "usage_date": DAY, "org_slug": "acme", "row_key": m, "run_id": "r", "project_id": "p", "api_key_id": "k",
        "model": m, "batch": False, "service_tier": "default", "input_tokens": 1_000_000,
        "input_cached_tokens": 0, "output_tokens": 1_000_000, "num_model_requests": 1,
    } for m in ("gpt-4o-mini-2024-07-18", "mystery-model")])
    p = pipeline()
    result = (p | beam.Create([OrgBatch("acme", "r", rows)])
              | entry.load_transform()(step, loaded.options(step.step_id), ctx))
    costs = result["main"] | beam.FlatMap(
        lambda b: [(r["model"], r["pricing_status"], None if pd.isna(r["total_cost_usd"]) else round(r["total_cost_usd"], 6))
                   for r in b.rows.to_dict("records")])
    assert_that(costs, equal_to([("gpt-4o-mini-2024-07-18", "PRICED", 0.75), ("mystery-model", "UNPRICED", None)]),
                label="costs")
    unpriced = flattened(result["events"]) | beam.Map(lambda e: (e.rows, tuple(e.detail["unpriced_models"])))
    assert_that(unpriced, equal_to([(2, ("mystery-model",))]), label="events")
    p.run().wait_until_finish()


def test_stage_skips_failed_runs_and_stages_invisibly(seeded):
    loaded = load_pipeline(CONFIGS, "openai/cost/usage_cost")
    step = next(s for s in loaded.config.steps if s.step_id == "load_usage_raw")
    ctx = RunContext.from_settings(seeded, loaded, NOW)
    p = pipeline()
    failed = p | "Failed" >> beam.Create(["run-broken"])
    batches = p | "Batches" >> beam.Create([raw_batch("acme", 4), raw_batch("broken", 2)])
    result = batches | lookup(step.ps_type).load_transform()(step, loaded.options(step.step_id), ctx, failed_runs=failed)
    assert_that(flattened(result["events"]) | beam.Map(lambda e: (e.org_slug, e.rows, e.failed, e.detail["days"])),
                equal_to([("acme", 4, False, ["2026-03-02"])]), label="events")
    assert_that(flattened(result["staged"]) | beam.MapTuple(lambda run_id, s: (run_id, s.table, s.rows, s.days)),
                equal_to([("run-acme", "openai_usage_daily_raw", 4, (DAY,))]), label="staged")
    p.run().wait_until_finish()
    warehouse = LocalWarehouse(seeded.warehouse_dir)
    assert warehouse.read_table("acme_dev", "openai_usage_daily_raw") is None, "invisible until the run's commit"
    assert warehouse.pending("acme_dev", "run-acme") == ["openai_usage_daily_raw"]
    assert warehouse.pending("broken_dev", "run-broken") == []


def raw_batch(org, n, day=DAY):
    schema_names = load_schema(CONFIGS / "openai/cost/schemas/openai_usage_daily_raw.json").names
    ts = datetime(2026, 3, 2, tzinfo=timezone.utc)
    rows = [{c: None for c in schema_names} | dict(
        usage_date=day, org_slug=org, row_key=f"{org}{i}", run_id=f"run-{org}", bucket_start_time=ts,
        bucket_end_time=ts, input_tokens=1, output_tokens=1, num_model_requests=1, loaded_at=ts) for i in range(n)]
    return OrgBatch(org, f"run-{org}", pd.DataFrame(rows, columns=schema_names))


def test_a_fleet_batch_is_staged_in_the_tables_cluster_order_as_a_single_org_is(seeded):
    """Runs of a RunsBatch come out of one sort of the batch; the warehouse then does not sort their
    files again. Each must hold exactly what the per-org path (sorted by the warehouse) writes."""
    import glob

    import pyarrow.parquet as pq

    from beam_pipelines.transforms.elements import RunsBatch

    loaded = load_pipeline(CONFIGS, "openai/cost/usage_cost")
    step = next(s for s in loaded.config.steps if s.step_id == "load_usage_raw")
    ctx = RunContext.from_settings(seeded, loaded, NOW)

    def shuffled(org):
        batch = raw_batch(org, 5)
        return batch._replace(rows=batch.rows.assign(model=["b", "a", "b", None, "a"], project_id=["p2", "p1", "p1", "p0", "p1"]))

    acme, globex = shuffled("acme"), shuffled("globex")
    fleet = RunsBatch((("globex", "run-globex"), ("acme", "run-acme")), pd.concat([globex.rows, acme.rows], ignore_index=True))
    for label, batches in (("fleet", [fleet]), ("alone", [acme, globex])):
        p = pipeline()
        failed = p | "Failed" >> beam.Create([])
        p | "Batches" >> beam.Create(batches) | lookup(step.ps_type).load_transform()(step, loaded.options(step.step_id), ctx,
                                                                                     failed_runs=failed)
        p.run().wait_until_finish()
        for org in ("acme", "globex"):
            [path] = glob.glob(str(seeded.warehouse_dir / f"{org}_dev" / "_staging" / f"run-{org}" / "*.parquet"))
            staged = pq.read_table(path).select(["model", "project_id", "row_key"]).to_pylist()
            assert [tuple(r.values()) for r in staged] == [
                ("a", "p1", f"{org}1"), ("a", "p1", f"{org}4"), ("b", "p1", f"{org}2"), ("b", "p2", f"{org}0"),
                (None, "p0", f"{org}3")], f"{label}: sorted by model, project_id; ties in arrival order; NULLs last"
            LocalWarehouse(seeded.warehouse_dir).discard(f"{org}_dev", f"run-{org}")


def test_fold_run_first_error_wins_and_counts_only_committed_tables():
    t0, t1 = datetime(2026, 3, 3, 1, tzinfo=timezone.utc), datetime(2026, 3, 3, 2, tzinfo=timezone.utc)
    ok = [StepEvent("r", "acme", "extract_usage", "openai.usage", "extract", 10, None, t0, t1),
          StepEvent("r", "acme", "load_a", "warehouse.load", "load", 6, None, t0, t1, {"staged": {"a": 6}}),
          StepEvent("r", "acme", "load_b", "warehouse.load", "load", 4, None, t0, t1, {"staged": {"b": 4}})]
    update, steps, dq, _ = fold_run("r", "acme", ok, CommitReport(committed={"a": [DAY], "b": [DAY]}))
    assert (update["status"], update["rows_written"], update["error_message"]) == ("COMPLETED", 10, None)
    assert update["outcome"]["replaced"] == {"a": ["2026-03-02"], "b": ["2026-03-02"]}
    assert [(s["step_id"], s["rows_processed"]) for s in steps] == [("extract_usage", 10), ("load_a", 6), ("load_b", 4)]
    update, _, _, _ = fold_run("r", "acme", ok, CommitReport(committed={"a": [DAY]}, not_committed=["b"],
                                                             error="commit of b failed: boom"))
    assert update["status"] == "FAILED" and update["rows_written"] == 6
    assert update["error_message"] == "commit: commit of b failed: boom (replaced anyway: a)"
    bad = [StepEvent("r", "acme", "extract_usage", "openai.usage", "extract", 0, "openai API HTTP 401: no", t0, t1)]
    update, steps, _, _ = fold_run("r", "acme", bad, CommitReport())
    assert update["status"] == "FAILED" and update["error_message"] == "extract_usage: openai API HTTP 401: no"
    assert steps[0]["status"] == "FAILED" and steps[0]["step_log_id"] == "r:extract_usage"
    kept = CommitReport(kept=[{"step_id": "load_a", "table": "a", "day": DAY, "rows": 7, "cost_usd": 1.5}])
    update, _, dq, summary = fold_run("r", "acme", ok[:1], kept)
    assert summary["dq_warnings"] == ["a 2026-03-02: the provider answered no usage; kept the 7 row(s), $1.50 already there"]
    assert dq[0]["expectation_type"] == "expect_populated_day_not_emptied" and dq[0]["severity"] == "warning"


def test_pages_merge_up_to_the_batch_size_and_staged_parts_pass_through():
    from beam_pipelines.transforms.fetch import BATCH_ROWS, coalesce

    page = pd.DataFrame({"x": range(BATCH_ROWS // 2 + 1)})
    staged = StagedRows("/tmp/p.parquet", DAY, 10)
    out = coalesce([page, page, staged, page.head(3), page.head(4)])
    assert [len(p) for p in out] == [len(page), len(page), 10, 7] and out[2] is staged


# Many orgs' rows in one frame (RunsBatch): gathered whole in fetch, worked once, reported and staged per run.

class FleetFetcher(FakeFetcher):
    fleet_batches = True


def usage_rows(org, models, day=DAY):
    return pd.DataFrame([{
        "usage_date": day, "org_slug": org, "row_key": f"{org}-{m}", "run_id": f"run-{org}", "project_id": "p",
        "api_key_id": "k", "model": m, "batch": False, "service_tier": "default", "input_tokens": 1_000_000,
        "input_cached_tokens": 0, "output_tokens": 1_000_000, "num_model_requests": 1,
    } for m in models])


def test_fleet_fetch_gathers_whole_orgs_into_one_batch(seeded):
    items = [WorkItem(o, f"run-{o}", DAY, DAY) for o in ("acme", "globex", "broken")]
    p, outputs = fetch_graph(seeded, items, FleetFetcher(), 2)
    shapes = outputs.main | "Shape" >> beam.Map(
        lambda b: (type(b).__name__, sorted(b.runs), sorted(b.rows.groupby("row_key").size().index.str[:-4].unique()),
                   len(b.rows)))
    assert_that(shapes, equal_to([("RunsBatch", [("acme", "run-acme"), ("globex", "run-globex")], ["acme", "globex"], 12)]))
    p.run().wait_until_finish()


def test_split_runs_gives_each_run_its_rows_in_order():
    import pyarrow as pa

    from beam_pipelines.transforms.elements import RunsBatch
    from beam_pipelines.transforms.runs import run_counts, split_runs

    frame = pd.DataFrame({"run_id": ["b", "a", "b", "c", "a"], "n": [1, 2, 3, 4, 5]})
    batch = RunsBatch((("org-b", "b"), ("org-a", "a"), ("org-c", "c")), frame)
    for rows in (frame, pa.Table.from_pandas(frame)):
        split = {b.run_id: (b.org_slug, list(b.rows.to_pandas()["n"] if isinstance(b.rows, pa.Table) else b.rows["n"]))
                 for b in split_runs(RunsBatch(batch.runs, rows))}
        assert split == {"a": ("org-a", [2, 5]), "b": ("org-b", [1, 3]), "c": ("org-c", [4])}
    assert run_counts(frame) == {"b": 2, "a": 2, "c": 1}
    assert list(split_runs(raw_batch("acme", 2)))[0].rows.shape[0] == 2, "an OrgBatch passes through"


def test_pricing_a_fleet_batch_equals_each_org_alone_and_an_exception_fails_only_its_org(seeded):
    from beam_pipelines.transforms.elements import RunsBatch

    loaded = load_pipeline(CONFIGS, "openai/cost/usage_cost")
    step = next(s for s in loaded.config.steps if s.ps_type == "openai.cost")
    ctx = RunContext.from_settings(seeded, loaded, NOW)
    acme, globex = usage_rows("acme", ["gpt-4o-mini-2024-07-18", "mystery"]), usage_rows("globex", ["gpt-4o", "gpt-4o-mini"])
    broken = usage_rows("broken", ["gpt-4o"]).assign(usage_date=[None])  # no day: pricing raises on it
    fleet = RunsBatch((("acme", "run-acme"), ("globex", "run-globex"), ("broken", "run-broken")),
                      pd.concat([acme, globex, broken], ignore_index=True))

    def run(batches):
        p = pipeline()
        result = p | beam.Create(batches) | lookup(step.ps_type).load_transform()(step, loaded.options(step.step_id), ctx)
        rows = result["main"] | beam.FlatMap(lambda b: [(r["run_id"], r["model"], r["pricing_status"], str(r["total_cost_usd"]))
                                                        for r in b.rows.to_dict("records")])
        events = flattened(result["events"]) | beam.Map(lambda e: (e.run_id, e.rows, e.failed, tuple(e.detail.get("unpriced_models", ())),
                                                        str(e.detail.get("cost_usd"))))
        return p, rows, events

    from beam_pipelines.pricing.openai_cost import TIER_ALIASES, price_openai_usage
    from beam_pipelines.pricing.price_list import load_price_list

    options = loaded.options(step.step_id)
    prices = load_price_list(CONFIGS / options.pricing_file, options.pricing_file, None, TIER_ALIASES)
    alone_rows, alone_events = [], []
    for org, frame in (("acme", acme), ("globex", globex)):  # what pricing each org alone gives
        cost = price_openai_usage(frame, prices, NOW)
        alone_rows += [(r["run_id"], r["model"], r["pricing_status"], str(r["total_cost_usd"])) for r in cost.to_dict("records")]
        unpriced = tuple(sorted(cost.loc[cost["pricing_status"] != "PRICED", "model"]))
        alone_events.append((f"run-{org}", len(cost), False, unpriced, str(sum(v for v in cost["total_cost_usd"] if v is not None))))
    assert ("run-acme", "mystery", "UNPRICED", "None") in alone_rows and len(alone_rows) == 4

    p, rows, events = run([fleet])
    assert_that(rows, equal_to(alone_rows), label="same rows as each org alone")
    failed = events | "Failed" >> beam.Filter(lambda e: e[2]) | "Which" >> beam.Map(lambda e: e[0])
    ok = events | "Ok" >> beam.Filter(lambda e: not e[2])
    assert_that(failed, equal_to(["run-broken"]), label="only the org whose rows raise fails")
    assert_that(ok, equal_to(alone_events), label="same events as each org alone")
    p.run().wait_until_finish()


def test_a_fleet_batch_is_staged_per_run_and_a_misfit_fails_only_its_org(seeded):
    from beam_pipelines.transforms.elements import RunsBatch

    loaded = load_pipeline(CONFIGS, "openai/cost/usage_cost")
    step = next(s for s in loaded.config.steps if s.step_id == "load_usage_raw")
    ctx = RunContext.from_settings(seeded, loaded, NOW)
    acme, globex, broken = raw_batch("acme", 3), raw_batch("globex", 2), raw_batch("broken", 2)
    misfit = raw_batch("stray", 2).rows.assign(row_key=None)  # REQUIRED column without a value
    runs = (("acme", "run-acme"), ("globex", "run-globex"), ("broken", "run-broken"), ("stray", "run-stray"))
    fleet = RunsBatch(runs, pd.concat([acme.rows, misfit, globex.rows, broken.rows], ignore_index=True))
    p = pipeline()
    failed = p | "Failed" >> beam.Create(["run-broken"])
    result = (p | "Batches" >> beam.Create([fleet])
              | lookup(step.ps_type).load_transform()(step, loaded.options(step.step_id), ctx, failed_runs=failed))
    assert_that(flattened(result["events"]) | beam.Map(lambda e: (e.org_slug, e.rows, e.failed)),
                equal_to([("acme", 3, False), ("globex", 2, False), ("broken", 2, False), ("stray", 0, True)]),
                label="events")
    assert_that(flattened(result["staged"]) | beam.MapTuple(lambda run_id, s: (run_id, s.rows)),
                equal_to([("run-acme", 3), ("run-globex", 2), ("run-broken", 2)]),
                label="staged, even an org failed upstream: its commit discards it")
    p.run().wait_until_finish()
    warehouse = LocalWarehouse(seeded.warehouse_dir)
    assert warehouse.pending("acme_dev", "run-acme") == ["openai_usage_daily_raw"]
    assert warehouse.read_table("acme_dev", "openai_usage_daily_raw") is None, "invisible until the run's commit"
    assert warehouse.pending("stray_dev", "run-stray") == [], "a misfit stages nothing"
