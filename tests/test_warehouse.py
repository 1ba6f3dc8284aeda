"""The warehouse contract: the same cases locally (Parquet + manifest) and on BigQuery (emulator)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from decimal import Decimal

import pandas as pd
import pyarrow.parquet as pq
import pytest

from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import WarehouseError
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.base import CommitError, TableSpec
from beam_pipelines.warehouse.bigquery import BigQueryWarehouse
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS

SCHEMA = load_schema(CONFIGS / "openai/cost/schemas/openai_usage_daily_raw.json")
RAW = TableSpec("openai_usage_daily_raw", SCHEMA, "usage_date", ("model",))
COST = TableSpec("openai_cost_daily", load_schema(CONFIGS / "openai/cost/schemas/openai_cost_daily.json"), "usage_date")
D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
TS = datetime(2026, 3, 2, tzinfo=timezone.utc)


def rows(n, day=D1, run_id="r1", **over):
    out = []
    for i in range(n):
        row = {name: None for name in SCHEMA.names}
        row.update(usage_date=day, org_slug="acme", row_key=f"k{i}-{day}", run_id=run_id, bucket_start_time=TS,
                   bucket_end_time=TS, input_tokens=10 * i, output_tokens=i, num_model_requests=1, loaded_at=TS,
                   model="gpt-5")
        row.update(over)
        out.append(row)
    return to_arrow(pd.DataFrame(out, columns=SCHEMA.names), SCHEMA, RAW.table)


@pytest.fixture(params=["local", "bigquery"])
def wh(request, tmp_path):
    if request.param == "local":
        return LocalWarehouse(tmp_path / "wh")
    request.getfixturevalue("bq_env")
    return BigQueryWarehouse(request.getfixturevalue("bq_project"))


def counts(wh, table="openai_usage_daily_raw"):
    _, result = wh.query(f"SELECT usage_date, COUNT(*) AS n FROM acme_dev.{table} GROUP BY usage_date ORDER BY usage_date")
    return {d: n for d, n in result}


def test_commit_replaces_exactly_the_staged_days(wh):
    first = wh.stage("acme_dev", RAW, "r1", [rows(5, D1), rows(4, D2), rows(3, D3)])
    assert first.days == (D1, D2, D3) and first.rows == 12
    assert wh.pending("acme_dev", "r1") == ["openai_usage_daily_raw"]
    assert wh.commit([first]) == ["openai_usage_daily_raw"]
    assert counts(wh) == {D1: 5, D2: 4, D3: 3}
    assert wh.pending("acme_dev", "r1") == []
    again = wh.stage("acme_dev", RAW, "r2", [rows(2, D2, run_id="r2")])
    wh.commit([again])
    assert counts(wh) == {D1: 5, D2: 2, D3: 3}, "only the re-staged day changes; nothing is appended"
    assert wh.days_written_by("acme_dev", RAW, "r2", D1, D3) == [D2]
    assert wh.days_written_by("acme_dev", RAW, "r1", D1, D3) == [D1, D3]
    stats = wh.day_stats("acme_dev", RAW, [D1, D2, date(2026, 3, 9)], "input_tokens")
    assert {d: (s.rows, Decimal(str(s.total))) for d, s in stats.items()} == {D1: (5, Decimal(100)), D2: (2, Decimal(10))}


def test_staged_rows_are_invisible_until_commit_and_discard_leaves_nothing(wh):
    wh.commit([wh.stage("acme_dev", RAW, "r1", [rows(3)])])
    wh.stage("acme_dev", RAW, "r9", [rows(7, run_id="r9")])
    assert counts(wh) == {D1: 3}
    assert wh.discard("acme_dev", "r9") == ["openai_usage_daily_raw"]
    assert wh.pending("acme_dev", "r9") == []
    assert counts(wh) == {D1: 3}
    assert wh.stage("acme_dev", RAW, "r10", []) is None


def test_several_tables_of_an_org_commit_together(wh):
    raw = wh.stage("acme_dev", RAW, "r1", [rows(3)])
    defaults = {"STRING": "x", "INTEGER": 1, "FLOAT": 0.5, "NUMERIC": Decimal("0.5"), "DATE": D1, "TIMESTAMP": TS,
                "BOOLEAN": False}
    cost_rows = pd.DataFrame([{f.name: defaults[f.type] if f.required else None for f in COST.schema.fields}])
    cost = wh.stage("acme_dev", COST, "r1", [to_arrow(cost_rows, COST.schema, COST.table)])
    assert sorted(wh.commit([raw, cost])) == ["openai_cost_daily", "openai_usage_daily_raw"]
    assert counts(wh, "openai_cost_daily") == {D1: 1}


def test_scope_limits_the_replacement_to_its_own_rows(wh):
    scoped = TableSpec("openai_usage_daily_raw", SCHEMA, "usage_date", scope_field="model")
    wh.commit([wh.stage("acme_dev", scoped, "a", [rows(3, model="gpt-5")], scope="gpt-5")])
    wh.commit([wh.stage("acme_dev", scoped, "b", [rows(2, model="o3")], scope="o3")])
    wh.commit([wh.stage("acme_dev", scoped, "c", [rows(1, model="gpt-5")], scope="gpt-5")])
    _, result = wh.query("SELECT model, COUNT(*) FROM acme_dev.openai_usage_daily_raw GROUP BY model ORDER BY model")
    assert result == [("gpt-5", 1), ("o3", 2)]


def test_whole_tables_are_replaced_and_read_back(wh):
    seed = TableSpec("openai_usage_daily_raw", SCHEMA, None)
    assert wh.read_table("acme_dev", "openai_usage_daily_raw") is None
    assert wh.replace_table("acme_dev", seed, rows(4)) == 4
    assert wh.replace_table("acme_dev", seed, rows(2)) == 2
    assert wh.read_table("acme_dev", "openai_usage_daily_raw").num_rows == 2


def test_a_failed_bigquery_commit_replaces_no_table_of_the_org(bq_env, bq_project):
    """One table the commit cannot write (an operator added a REQUIRED column): the org's other table is
    not replaced either: the commit is one transaction."""
    wh = BigQueryWarehouse(bq_project)
    wh.commit([wh.stage("acme_dev", RAW, "r0", [rows(3, D1, run_id="r0")])])
    other = TableSpec("openai_cost_daily", SCHEMA, "usage_date")
    wh.runner.client.query(f"CREATE TABLE `{bq_project}.acme_dev.openai_cost_daily` (usage_date DATE,"
                           " must_have INT64 NOT NULL)").result()
    raw = wh.stage("acme_dev", RAW, "r1", [rows(5, D1)])
    cost = wh.stage("acme_dev", other, "r1", [rows(2, D1)])
    with pytest.raises(CommitError) as failure:
        wh.commit([raw, cost])
    assert (failure.value.committed, failure.value.not_committed) == ([], ["openai_usage_daily_raw", "openai_cost_daily"])
    assert counts(wh) == {D1: 3}, "the raw table kept its previous rows"
    assert wh.discard("acme_dev", "r1") == ["openai_cost_daily", "openai_usage_daily_raw"]


def test_the_commit_script_follows_bigquerys_rules():
    from beam_pipelines.bigquery.sql import UnsafeSqlError, check_statement
    from beam_pipelines.warehouse.bigquery import commit_script

    scoped = TableSpec("focus", SCHEMA, "usage_date", scope_field="model")
    script = commit_script([("`p.acme_dev.t`", "`p.acme_dev._stg_t_r1`", COST),
                            ("`p.acme_dev.focus`", "`p.acme_dev._stg_focus_r1`", scoped)])
    check_statement(script)
    lines = script.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["DECLARE", "DECLARE", "DECLARE", "BEGIN", "MERGE", "MERGE", "COMMIT"]
    assert "DECLARE days_0 ARRAY<DATE> DEFAULT @days_0" in script and "DECLARE scope_1 STRING DEFAULT @scope_1" in script
    assert "WHEN NOT MATCHED BY SOURCE AND T.usage_date IN UNNEST(days_0) THEN DELETE" in script
    assert "AND T.model = scope_1 THEN DELETE" in script and "ON FALSE" in script
    with pytest.raises(UnsafeSqlError, match="declarations must come first"):
        check_statement("BEGIN TRANSACTION; DECLARE x INT64 DEFAULT 1; COMMIT TRANSACTION;")
    with pytest.raises(UnsafeSqlError, match="literal"):
        check_statement("SELECT * FROM `p.d.t` WHERE org_slug = 'acme'")
    with pytest.raises(UnsafeSqlError, match="backquoted"):
        check_statement("SELECT * FROM d.t")


def test_local_commit_is_one_manifest_swap_and_a_crash_leaves_no_trace(tmp_path):
    wh = LocalWarehouse(tmp_path / "wh")
    wh.commit([wh.stage("acme_dev", RAW, "r1", [rows(4)])])
    staged = wh.stage("acme_dev", RAW, "r2", [rows(9, run_id="r2")])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    original = wh._write_manifest
    wh._write_manifest = crash
    with pytest.raises(CommitError):
        wh.commit([staged])
    wh._write_manifest = original
    assert counts(wh) == {D1: 4}, "readers still see the previous commit"
    orphans = list((tmp_path / "wh/acme_dev/openai_usage_daily_raw").rglob("*.parquet"))
    assert len(orphans) == 2, "the moved file is an orphan until the next commit"
    wh.commit([wh.stage("acme_dev", RAW, "r3", [rows(1, run_id="r3")])])
    assert len(list((tmp_path / "wh/acme_dev/openai_usage_daily_raw").rglob("*.parquet"))) == 1
    assert not list((tmp_path / "wh/acme_dev").glob(".tmp-*"))


def test_a_crashed_commits_orphans_go_with_the_next_commit_of_their_partition(tmp_path):
    wh = LocalWarehouse(tmp_path / "wh")
    table = tmp_path / "wh/acme_dev/openai_usage_daily_raw"
    staged = wh.stage("acme_dev", RAW, "r1", [rows(2, D2)])
    original = wh._write_manifest
    wh._write_manifest = lambda *a: (_ for _ in ()).throw(OSError("disk full"))
    with pytest.raises(CommitError):
        wh.commit([staged])
    wh._write_manifest = original
    orphan = list(table.glob("usage_date=2026-03-02/*.parquet"))
    assert len(orphan) == 1 and not wh.has_table("acme_dev", "openai_usage_daily_raw")

    wh.commit([wh.stage("acme_dev", RAW, "r2", [rows(3, D1, run_id="r2")])])
    assert orphan[0].exists(), "a commit lists only the partitions it touched"
    assert not (tmp_path / "wh/acme_dev/_staging/r2").exists(), "the run's emptied staging is gone"
    wh.commit([wh.stage("acme_dev", RAW, "r3", [rows(1, D2, run_id="r3")])])
    assert not orphan[0].exists()
    assert counts(wh) == {D1: 3, D2: 1}
    assert len(list(table.rglob("*.parquet"))) == 2


def test_staging_left_in_the_older_nested_layout_is_still_named_and_discarded(tmp_path):
    wh = LocalWarehouse(tmp_path / "wh")
    old = tmp_path / "wh/acme_dev/_staging/r9/openai_usage_daily_raw/usage_date=2026-03-01"
    old.mkdir(parents=True)
    pq.write_table(rows(2), old / "part-x.parquet")
    wh.stage("acme_dev", dataclasses.replace(RAW, table="other_raw"), "r9", [rows(1, run_id="r9")])
    assert wh.pending("acme_dev", "r9") == ["openai_usage_daily_raw", "other_raw"]
    assert wh.discard("acme_dev", "r9") == ["openai_usage_daily_raw", "other_raw"]
    assert not (tmp_path / "wh/acme_dev/_staging/r9").exists()


def test_legacy_layout_is_read_and_adopted(tmp_path):
    folder = tmp_path / "wh/acme_dev/openai_usage_daily_raw/usage_date=2026-03-01"
    folder.mkdir(parents=True)
    pq.write_table(rows(3), folder / "data.parquet")
    wh = LocalWarehouse(tmp_path / "wh")
    assert counts(wh) == {D1: 3}
    wh.commit([wh.stage("acme_dev", RAW, "r2", [rows(1, D2, run_id="r2")])])
    assert counts(wh) == {D1: 3, D2: 1}


def test_names_and_queries_fail_clearly(tmp_path):
    wh = LocalWarehouse(tmp_path / "wh")
    with pytest.raises(WarehouseError, match="query failed"):
        wh.query("SELECT * FROM nope_dev.openai_cost_daily")
    with pytest.raises(WarehouseError, match="invalid dataset/table name"):
        wh.stage("../etc", RAW, "r", [rows(1)])


def test_schema_violations_are_named():
    frame = pd.DataFrame([{n: None for n in SCHEMA.names}])
    with pytest.raises(WarehouseError, match="REQUIRED column 'usage_date' has NULL"):
        to_arrow(frame, SCHEMA, "openai_usage_daily_raw")
    good = rows(2).to_pandas()
    with pytest.raises(WarehouseError, match=r"lack column\(s\) \['row_key'\]"):
        to_arrow(good.drop(columns=["row_key"]), SCHEMA, "t")
    with pytest.raises(WarehouseError, match="not in the schema"):
        to_arrow(good.assign(extra=1), SCHEMA, "t")
    with pytest.raises(WarehouseError, match="do not fit the schema"):
        to_arrow(good.assign(input_tokens="lots"), SCHEMA, "t")


def _concurrent_writer(root, worker):
    wh = LocalWarehouse(root)
    for i in range(10):
        wh.commit([wh.stage("acme_dev", RAW, f"w{worker}-{i}", [rows(worker + 1, date(2026, 3, 1 + worker),
                                                                      run_id=f"w{worker}-{i}")])])


def test_processes_committing_to_one_dataset_never_lose_each_others_tables(tmp_path):
    root = tmp_path / "wh"
    code = "import sys; from tests.test_warehouse import _concurrent_writer as w; w(sys.argv[1], int(sys.argv[2]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), str(w)], cwd=os.getcwd()) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert counts(LocalWarehouse(root)) == {D1: 1, D2: 2, D3: 3}


def test_local_adopts_parts_that_prove_their_day_and_schema_and_refuses_others(tmp_path):
    wh = LocalWarehouse(tmp_path / "wh")
    parts = tmp_path / "parts"
    parts.mkdir()

    def part(name, table):
        pq.write_table(table, parts / name)
        return str(parts / name)

    good = [part("a.parquet", rows(3, D2)), part("b.parquet", rows(2, D2, row_key="x"))]
    two_days = part("c.parquet", rows(2, D2).slice(0, 1).to_pandas().pipe(
        lambda f: to_arrow(pd.concat([f, f.assign(usage_date=D3, row_key="y")]), SCHEMA, RAW.table)))
    reordered = part("d.parquet", rows(2, D2).select(list(reversed(SCHEMA.names))))
    assert wh.adopt_parts("acme_dev", RAW, "r1", [two_days], D2) is None, "a row of another day"
    assert wh.adopt_parts("acme_dev", RAW, "r1", [reordered], D2) is None, "not the table's schema"
    assert wh.adopt_parts("acme_dev", RAW, "r1", good + [two_days], D2) is None, "all or nothing"
    assert all(os.path.exists(p) for p in good + [two_days, reordered]), "a refusal moves nothing"
    staged = wh.adopt_parts("acme_dev", RAW, "r1", good, D2)
    assert (staged.days, staged.rows) == ((D2,), 5) and not any(os.path.exists(p) for p in good)
    assert wh.commit([staged]) == ["openai_usage_daily_raw"]
    assert counts(wh) == {D2: 5}
    focus = TableSpec("scoped", SCHEMA, "usage_date", (), "model")
    assert wh.adopt_parts("acme_dev", focus, "r2", [part("e.parquet", rows(2, D1))], D1, scope="gpt-4o") is None
    assert wh.adopt_parts("acme_dev", focus, "r2", [str(parts / "e.parquet")], D1, scope="gpt-5").rows == 2
