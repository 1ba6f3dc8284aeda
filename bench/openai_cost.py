"""Case `openai_cost_stage`: price 1,000,000 usage rows.

Project: the Beam graph's cost stage on the FnApiRunner (the DirectRunner's engine): Create(file
paths) → read a batch → ParDo(price with the price list as a side input) → count.
Baseline: a plain pandas script doing the same computation on the same files: read, concat,
resolve dated models to their family, map tiers, pick the price in force (merge_asof on the
effective date), derive batch prices at 50% where none is listed, and compute the same costs.
"""
from __future__ import annotations

import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.pricing.openai_cost import price_openai_usage
from beam_pipelines.pricing.price_list import load_price_list
from beam_pipelines.settings import REPO_CONFIGS
from bench.synthetic import write_batches

PRICE_CSV = REPO_CONFIGS / "openai/seed/data/default_pricing.csv"


PRICED_ROWS = beam.metrics.Metrics.counter("bench", "priced_rows")


def _price_batch(path, prices):
    rows = pd.read_parquet(path)
    priced = price_openai_usage(rows, prices, rows["loaded_at"].iloc[0])
    PRICED_ROWS.inc(len(priced))
    return len(priced)


def run_beam(paths: list[str]) -> tuple[float, int]:
    prices = load_price_list(PRICE_CSV)
    started = time.perf_counter()
    p = beam.Pipeline(options=PipelineOptions(runner="FnApiRunner"))
    side = p | "Prices" >> beam.Create([prices])
    _ = (
        p | "Files" >> beam.Create(paths)
        | "Reshuffle" >> beam.Reshuffle()
        | "Price" >> beam.Map(_price_batch, beam.pvalue.AsSingleton(side))
    )
    result = p.run()
    result.wait_until_finish()
    elapsed = time.perf_counter() - started
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("priced_rows"))["counters"]
    return elapsed, sum(c.committed for c in counters)


def pandas_baseline(paths: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    prices = pd.read_csv(PRICE_CSV)
    prices["effective_from"] = pd.to_datetime(prices["effective_from"]).astype("datetime64[us]")
    known = set(prices["model"])
    family = df["model"].str.replace(r"-\d{4}-\d{2}-\d{2}$", "", regex=True)
    df["price_model"] = np.where(df["model"].isin(known), df["model"], family)
    tier = df["service_tier"].where(~df["service_tier"].isin(["default", "auto", "standard"]), "default")
    df["tier"] = np.where(df["batch"], "batch", tier)
    standard = prices[prices["service_tier"] == "default"]
    derived = standard.assign(service_tier="batch")
    for col in ("input_usd_per_mtok", "cached_input_usd_per_mtok", "output_usd_per_mtok"):
        derived[col] = derived[col] * 0.5
    listed_batch = set(prices.loc[prices["service_tier"] == "batch", "model"])
    table = pd.concat([prices, derived[~derived["model"].isin(listed_batch)]], ignore_index=True)
    df["day"] = pd.to_datetime(df["usage_date"]).astype("datetime64[us]")
    df = df.sort_values("day")
    table = table.sort_values("effective_from")
    merged = pd.merge_asof(df, table, left_on="day", right_on="effective_from",
                           left_by=["price_model", "tier"], right_by=["model", "service_tier"], suffixes=("", "_p"))
    cached_rate = merged["cached_input_usd_per_mtok"].fillna(merged["input_usd_per_mtok"])
    uncached = merged["input_tokens"] - merged["input_cached_tokens"]
    merged["total_cost_usd"] = (uncached * merged["input_usd_per_mtok"] + merged["input_cached_tokens"] * cached_rate
                                + merged["output_tokens"] * merged["output_usd_per_mtok"]) / 1e6
    merged["pricing_status"] = np.where(merged["input_usd_per_mtok"].isna(), "UNPRICED", "PRICED")
    return time.perf_counter() - started, len(merged)


def run(workdir: Path, rows: int = 1_000_000, batch_rows: int = 10_000) -> dict:
    print(f"[openai_cost_stage] writing {rows:,} synthetic usage rows in {rows // batch_rows} batches ...", flush=True)
    paths = write_batches(workdir / "openai_usage", rows, batch_rows)
    print("[openai_cost_stage] pandas baseline ...", flush=True)
    base_s, base_rows = pandas_baseline(paths)
    print("[openai_cost_stage] Beam pipeline (FnApiRunner) ...", flush=True)
    beam_s, beam_rows = run_beam(paths)
    assert beam_rows == base_rows == rows, (beam_rows, base_rows)
    result = {
        "rows": rows,
        "beam_seconds": round(beam_s, 3),
        "beam_rows_per_s": round(rows / beam_s),
        "pandas_seconds": round(base_s, 3),
        "pandas_rows_per_s": round(rows / base_s),
        "ratio": round(base_s / beam_s, 3),
    }
    print(f"[openai_cost_stage] Beam {result['beam_rows_per_s']:,} rows/s, pandas {result['pandas_rows_per_s']:,}"
          f" rows/s, ratio {result['ratio']} (goal >= 0.5)", flush=True)
    return result
