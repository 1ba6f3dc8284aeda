"""The billing extract streams: bounded read batches, bounded staged parts, reading and writing overlapped."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_pipelines.errors import ProviderError
from beam_pipelines.gcp.config import load_bq_etl_config
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.generator import generate_export, write_export
from beam_pipelines.gcp.overlap import Writer, ahead
from beam_pipelines.gcp.sources import LocalExportSource
from beam_pipelines.settings import REPO_CONFIGS
from beam_pipelines.staging import DayParts
from beam_pipelines.transforms.background import mapped
from beam_pipelines.transforms.elements import WorkItem
from beam_pipelines.transforms.gcp import GcpBillingFetcher

ETL = load_bq_etl_config(REPO_CONFIGS / "gcp/bq_etl/config.yml", "gcp/bq_etl/config.yml")
NOW = datetime(2026, 3, 5, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> str:
    """Four days, one row group of 500 rows per day."""
    path = tmp_path_factory.mktemp("export") / "export.parquet"
    pq.write_table(generate_export("acme", date(2026, 3, 4), 4, 500), path, row_group_size=500)
    return str(path)


def test_the_local_source_reads_only_the_days_in_bounded_batches(export):
    batches = list(LocalExportSource(export).batches(date(2026, 3, 2), date(2026, 3, 3), 120))
    assert all(0 < b.num_rows <= 120 for b in batches)
    days = {d for b in batches for d in pc.cast(b.column("usage_start_time"), pa.date32()).to_pylist()}
    assert days == {date(2026, 3, 2), date(2026, 3, 3)} and sum(b.num_rows for b in batches) == 1000


def test_a_folder_is_read_file_by_file_and_a_file_without_usage_start_time_is_an_error(tmp_path, export):
    folder = tmp_path / "export"
    folder.mkdir()
    table = pq.read_table(export)
    pq.write_table(table.slice(0, 1000), folder / "a.parquet")
    pq.write_table(table.slice(1000), folder / "b.parquet")
    pq.write_table(table.slice(0, 10), folder / "_ignored.parquet")
    rows = sum(b.num_rows for b in LocalExportSource(str(folder)).batches(date(2026, 3, 1), date(2026, 3, 4), 300))
    assert rows == 2000
    pq.write_table(table.drop_columns(["usage_start_time"]), folder / "c.parquet")
    with pytest.raises(ProviderError, match="lacks usage_start_time"):
        list(LocalExportSource(str(folder)).batches(date(2026, 3, 1), date(2026, 3, 4), 300))


def test_day_parts_are_bounded_and_hold_every_row_once_in_order(tmp_path):
    rows = pa.table({"usage_date": [date(2026, 3, 1 + i % 2) for i in range(25)], "n": list(range(25))})
    parts = DayParts(str(tmp_path / "run"), part_rows=4)
    for start in range(0, 25, 7):
        parts.write(rows.slice(start, 7))
    staged = parts.close()
    assert all(0 < p.num_rows <= 4 for p in staged)
    for day in (date(2026, 3, 1), date(2026, 3, 2)):
        read = [n for p in staged if p.day == day for n in p.read().column("n").to_pylist()]
        assert read == [n for n, d in zip(rows["n"].to_pylist(), rows["usage_date"].to_pylist()) if d == day]
    assert sum(p.num_rows for p in staged) == 25


def test_the_fetcher_stages_bounded_parts_of_the_flattened_days(tmp_path, export):
    fetcher = GcpBillingFetcher(SimpleNamespace(page_rows=150), ETL, NOW, str(tmp_path / "staging"))
    credential = SimpleNamespace(metadata={"billing_export_path": export})
    staged = fetcher.fetch(WorkItem("acme", "run-1", date(2026, 3, 2), date(2026, 3, 4)), credential)
    assert all(0 < p.num_rows <= 150 for p in staged)
    assert {p.day for p in staged} == {date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)}
    flat = pa.concat_tables(p.read() for p in staged)
    assert flat.num_rows == 1500 and set(flat.column("org_slug").to_pylist()) == {"acme"}
    assert pc.count_distinct(flat.column("row_key")).as_py() == 1500


def test_staged_rows_keep_the_exports_order_and_are_written_as_warehouse_files(tmp_path, export):
    """Batches are flattened on several threads; the parts hold them in the export's order. Parts are
    written as the local warehouse writes a large file (it adopts them as they are): dictionaries for
    text only, statistics for the day only."""
    fetcher = GcpBillingFetcher(SimpleNamespace(page_rows=20_000), ETL, NOW, str(tmp_path / "staging"))
    item = WorkItem("acme", "run-3", date(2026, 3, 1), date(2026, 3, 4))
    credential = SimpleNamespace(metadata={"billing_export_path": export})
    serial = Flattener(ETL.flatten)
    expected = [serial(pa.Table.from_batches([b]), "acme", "run-3", NOW).column("row_key")
                for b in pq.ParquetFile(export).iter_batches(batch_size=100)]
    fetcher.options = SimpleNamespace(page_rows=100)  # read batches of 100 rows: many in flight at once
    staged = fetcher.fetch(item, credential)
    assert [k for p in staged for k in p.read().column("row_key").to_pylist()] == [
        k for column in expected for k in column.to_pylist()]

    fetcher.options = SimpleNamespace(page_rows=20_000)
    staged = fetcher.fetch(WorkItem("acme", "run-4", date(2026, 3, 1), date(2026, 3, 4)), credential)
    meta = pq.ParquetFile(staged[0].path).metadata
    columns = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert columns["usage_date"].statistics.has_min_max
    assert not columns["cost"].is_stats_set and not columns["service_description"].is_stats_set
    assert any("DICTIONARY" in e for e in columns["service_description"].encodings)
    assert not any("DICTIONARY" in e for e in columns["cost"].encodings)


def test_a_failing_batch_removes_what_the_org_staged(tmp_path, export, monkeypatch):
    fetcher = GcpBillingFetcher(SimpleNamespace(page_rows=100), ETL, NOW, str(tmp_path / "staging"))
    calls = []

    def fail_on_third(self, table):
        calls.append(table.num_rows)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, table)

    original = DayParts.write
    monkeypatch.setattr(DayParts, "write", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        fetcher.fetch(WorkItem("acme", "run-2", date(2026, 3, 1), date(2026, 3, 4)),
                      SimpleNamespace(metadata={"billing_export_path": export}))
    assert not (tmp_path / "staging" / "run-2").exists()


def test_ahead_keeps_order_raises_the_producers_error_and_closes_it_when_the_consumer_stops():
    assert list(ahead(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise ProviderError("gcp", "page 2 failed")

    with pytest.raises(ProviderError, match="page 2 failed"):
        list(ahead(broken()))
    closed = []

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    for n in ahead(endless()):
        if n == 3:
            break
    assert closed == [True]


def test_mapped_keeps_order_holds_at_most_depth_and_raises_an_error_in_its_turn():
    def slow_square(n):
        time.sleep(0.002 * (n % 3))  # later items finish first
        return n * n

    with ThreadPoolExecutor(3) as pool:
        assert list(mapped(slow_square, range(30), pool, 3)) == [n * n for n in range(30)]
        taken = []

        def source():
            for n in range(100):
                taken.append(n)
                yield n

        results = mapped(slow_square, source(), pool, 3)
        assert next(results) == 0
        results.close()
        assert taken == [0, 1, 2], "no more than depth items are taken ahead"

        def fail_on_four(n):
            if n == 4:
                raise ValueError("item 4")
            return n

        got = []
        with pytest.raises(ValueError, match="item 4"):
            for value in mapped(fail_on_four, range(10), pool, 2):
                got.append(value)
        assert got == [0, 1, 2, 3]


def test_the_writer_writes_in_order_and_raises_its_error_in_the_caller():
    written = []
    with Writer(written.append) as put:
        for n in range(20):
            put(n)
    assert written == list(range(20))

    def fail(item):
        raise OSError(f"cannot write {item}")

    with pytest.raises(OSError, match="cannot write 0"), Writer(fail) as put:
        for n in range(10):
            put(n)


def test_write_export_generates_a_day_in_chunks(tmp_path):
    path = tmp_path / "export.parquet"
    assert write_export(path, "acme", date(2026, 3, 2), 2, 2500, chunk_rows=1000, row_group_size=600) == 5000
    table = pq.read_table(path)
    days = pc.cast(table.column("usage_start_time"), pa.date32())
    assert table.num_rows == 5000 and sorted(set(days.to_pylist())) == [date(2026, 3, 1), date(2026, 3, 2)]
    assert table.slice(0, 1000).equals(generate_export("acme", date(2026, 3, 1), 1, 1000))  # the first chunk of a day
    assert not table.slice(1000, 1000).equals(table.slice(0, 1000))  # later chunks have their own seed
    assert pq.ParquetFile(path).metadata.row_group(0).num_rows == 600
