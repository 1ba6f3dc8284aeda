"""Case `gcp_billing`: one org, one day of 2,000,000 export rows, through the pipeline to the local warehouse.

Project: `gcp/cost/billing` on the FnApiRunner (read the export in batches, flatten in DuckDB,
replace the day partition). Baseline: a plain pyarrow/pandas script doing the same flattening and
writing one Parquet file. Each runs in its own process so its peak RSS is its own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from beam_pipelines.gcp.generator import generate_export
from bench.gcp_billing_jobs import DAY

ROWS = 2_000_000


def _child(args: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.gcp_billing_jobs", *args], env=env, capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(workdir: Path, rows: int = ROWS) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    export = workdir / "export.parquet"
    print(f"[gcp_billing] generating one day of {rows:,} export rows ...", flush=True)
    pq.write_table(generate_export("bench", DAY, 1, rows), export, row_group_size=100_000)
    env = {**os.environ, "CONVERGENCE_HOME": str(workdir / "home")}
    print("[gcp_billing] pyarrow/pandas baseline ...", flush=True)
    base = _child(["baseline", str(export), str(workdir / "baseline.parquet")], env)
    print(f"[gcp_billing] baseline: {base}", flush=True)
    print("[gcp_billing] Beam pipeline (FnApiRunner) ...", flush=True)
    beam = _child(["pipeline", str(export)], env)
    print(f"[gcp_billing] pipeline: {beam}", flush=True)
    assert beam["rows"] == base["rows"] == rows, (beam, base)
    return {
        "rows": rows,
        "beam_seconds": beam["seconds"], "beam_rows_per_s": round(rows / beam["seconds"]),
        "beam_peak_rss_mb": beam["peak_rss_mb"],
        "baseline_seconds": base["seconds"], "baseline_rows_per_s": round(rows / base["seconds"]),
        "baseline_peak_rss_mb": base["peak_rss_mb"],
        "ratio": round(base["seconds"] / beam["seconds"], 3),
        "rss_ratio": round(beam["peak_rss_mb"] / base["peak_rss_mb"], 3),
    }
