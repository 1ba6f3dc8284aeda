"""The local warehouse: schema-checked, atomically replaced partitions, BigQuery names in DuckDB."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest

from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import WarehouseError
from beam_pipelines.warehouse.arrow_schema import to_arrow
from beam_pipelines.warehouse.local import LocalWarehouse
from tests.conftest import CONFIGS

SCHEMA = load_schema(CONFIGS / "openai/cost/schemas/openai_usage_daily_raw.json")
DAY = date(2026, 3, 2)


def frame(n, day=DAY, **over):
    ts = datetime(2026, 3, 2, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        row = {name: None for name in SCHEMA.names}
        row.update(usage_date=day, org_slug="acme", row_key=f"k{i}", run_id="r", bucket_start_time=ts,
                   bucket_end_time=ts, input_tokens=10 * i, output_tokens=i, num_model_requests=1, loaded_at=ts,
                   model="gpt-5")
        row.update(over)
        rows.append(row)
    return pd.DataFrame(rows, columns=SCHEMA.names)


def test_partition_is_replaced_not_appended(tmp_path):
    wh = LocalWarehouse(tmp_path)
    wh.replace_partition("acme_dev", "openai_usage_daily_raw", "usage_date", DAY, to_arrow(frame(5), SCHEMA, "t"))
    wh.replace_partition("acme_dev", "openai_usage_daily_raw", "usage_date", DAY, to_arrow(frame(3), SCHEMA, "t"))
    _, rows = wh.query("SELECT COUNT(*), SUM(input_tokens) FROM acme_dev.openai_usage_daily_raw")
    assert rows == [(3, 30)]
    wh.replace_partition("acme_dev", "openai_usage_daily_raw", "usage_date", DAY, to_arrow(frame(0), SCHEMA, "t"))
    assert wh.tables() == []


def test_failed_write_leaves_the_old_partition_intact(tmp_path, monkeypatch):
    wh = LocalWarehouse(tmp_path)
    wh.replace_partition("acme_dev", "t", "usage_date", DAY, to_arrow(frame(4), SCHEMA, "t"))

    class FullDisk(pq.ParquetWriter):
        def write_table(self, *args, **kwargs):
            raise OSError("disk full")

    monkeypatch.setattr(pq, "ParquetWriter", FullDisk)
    with pytest.raises(OSError):
        wh.replace_partition("acme_dev", "t", "usage_date", DAY, to_arrow(frame(9), SCHEMA, "t"))
    monkeypatch.undo()
    assert wh.read_table("acme_dev", "t").num_rows == 4
    assert not list((tmp_path / "acme_dev" / "t").glob("*/.tmp-*")), "no temp file left behind"


def test_schema_violations_are_named():
    with pytest.raises(WarehouseError, match="REQUIRED column 'org_slug' has NULL"):
        to_arrow(frame(2, org_slug=None), SCHEMA, "openai_usage_daily_raw")
    with pytest.raises(WarehouseError, match=r"lack column\(s\) \['row_key'\]"):
        to_arrow(frame(2).drop(columns=["row_key"]), SCHEMA, "t")
    with pytest.raises(WarehouseError, match="not in the schema"):
        to_arrow(frame(2).assign(extra=1), SCHEMA, "t")
    with pytest.raises(WarehouseError, match="do not fit the schema"):
        to_arrow(frame(2, input_tokens="lots"), SCHEMA, "t")


def test_query_errors_and_names(tmp_path):
    wh = LocalWarehouse(tmp_path)
    with pytest.raises(WarehouseError, match="query failed"):
        wh.query("SELECT * FROM nope_dev.openai_cost_daily")
    with pytest.raises(WarehouseError, match="invalid dataset/table name"):
        wh.replace_partition("../etc", "t", "usage_date", DAY, to_arrow(frame(1), SCHEMA, "t"))
