"""Case `gcp_billing`: one org, one billing-export day of 2,000,000 and one of 10,000,000 rows, through the pipeline.

Project: `gcp/cost/billing` on the FnApiRunner (read the export in bounded batches, flatten in DuckDB,
check, map to FOCUS, replace the day partitions). Issue #15 asks for a peak RSS under 1 GB, the same
for both days: each size is reported on its own, with seconds, rows/s and peak RSS.

Baseline: a plain pyarrow/pandas script doing the same flattening and writing one Parquet file. It
reads the whole day, so its memory grows with the day (~1.4 KB a row); it runs for a size only when
that fits in 60 % of the memory available (else its figures are null and ``baseline_skipped`` says
why), so the benchmark never pushes a shared machine into swapping or the OOM killer.

Each contender runs in its own process so its peak RSS is its own. The export is written in chunks
(:func:`beam_pipelines.gcp.generator.write_export`), so the benchmark process never holds a day.
Sizes: ``GCP_BILLING_ROWS`` (comma-separated row counts; default ``2000000,10000000``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from beam_pipelines.gcp.generator import write_export
from bench.gcp_billing_jobs import DAY

ROWS = (2_000_000, 10_000_000)
BASELINE_BYTES_PER_ROW = 1_400  # measured: 2.73 GB peak for 2M rows
BASELINE_SHARE = 0.6


def sizes() -> list[int]:
    raw = os.environ.get("GCP_BILLING_ROWS", "")
    try:
        chosen = [int(v.replace("_", "")) for v in raw.split(",") if v.strip()] if raw.strip() else list(ROWS)
    except ValueError:
        raise SystemExit(f"GCP_BILLING_ROWS: expected comma-separated row counts, got {raw!r}") from None
    if not chosen or any(n < 1 for n in chosen):
        raise SystemExit(f"GCP_BILLING_ROWS: expected positive row counts, got {raw!r}")
    return chosen


def label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows:,}".replace(",", "_")


def _child(args: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.gcp_billing_jobs", *args], env=env, capture_output=True, text=True,
                         timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _baseline_fits(rows: int) -> str | None:
    """Why the baseline script would not fit in memory now, or None if it does."""
    need, available = rows * BASELINE_BYTES_PER_ROW, psutil.virtual_memory().available
    if need > BASELINE_SHARE * available:
        return f"needs ~{need / 2**30:.1f} GB, {available / 2**30:.1f} GB available"
    return None


def run_size(workdir: Path, rows: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    export = workdir / "export.parquet"
    print(f"[gcp_billing] generating one day of {rows:,} export rows ...", flush=True)
    write_export(export, "bench", DAY, 1, rows)
    env = {**os.environ, "CONVERGENCE_HOME": str(workdir / "home")}
    skipped = _baseline_fits(rows)
    base = None
    if skipped:
        print(f"[gcp_billing] pyarrow/pandas baseline not run: {skipped}", flush=True)
    else:
        print("[gcp_billing] pyarrow/pandas baseline ...", flush=True)
        base = _child(["baseline", str(export), str(workdir / "baseline.parquet")], env)
        print(f"[gcp_billing] baseline: {base}", flush=True)
        assert base["rows"] == rows, base
    print("[gcp_billing] Beam pipeline (FnApiRunner) ...", flush=True)
    beam = _child(["pipeline", str(export)], env)
    print(f"[gcp_billing] pipeline: {beam}", flush=True)
    assert beam["rows"] == rows, beam
    result = {
        "rows": rows,
        "beam_seconds": beam["seconds"], "beam_rows_per_s": round(rows / beam["seconds"]),
        "beam_peak_rss_mb": beam["peak_rss_mb"], "beam_cpu_seconds": beam["cpu_seconds"],
        "baseline_seconds": base and base["seconds"], "baseline_rows_per_s": base and round(rows / base["seconds"]),
        "baseline_peak_rss_mb": base and base["peak_rss_mb"], "baseline_cpu_seconds": base and base["cpu_seconds"],
        "ratio": base and round(base["seconds"] / beam["seconds"], 3),
        "rss_ratio": base and round(beam["peak_rss_mb"] / base["peak_rss_mb"], 3),
    }
    if skipped:
        result["baseline_skipped"] = skipped
    return result


def _line(name: str, r: dict) -> str:
    beam = (f"pipeline {r['beam_seconds']:.1f} s ({r['beam_rows_per_s']:,} rows/s, cpu {r['beam_cpu_seconds']:.1f} s),"
            f" peak RSS {r['beam_peak_rss_mb']:,.0f} MB")
    if r["baseline_seconds"] is None:
        return f"[gcp_billing] {name}: {beam} | baseline not run ({r['baseline_skipped']})"
    return (f"[gcp_billing] {name}: {beam} | baseline {r['baseline_seconds']:.1f} s ({r['baseline_rows_per_s']:,} rows/s),"
            f" peak RSS {r['baseline_peak_rss_mb']:,.0f} MB | speed x{r['ratio']}, RSS x{r['rss_ratio']}")


def run(workdir: Path) -> dict:
    results = {}
    for rows in sizes():
        folder = workdir / label(rows)
        try:
            results[label(rows)] = run_size(folder, rows)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # a 10M-row export and its warehouse are ~2 GB of disk
    for name, r in results.items():
        print(_line(name, r), flush=True)
    return results
