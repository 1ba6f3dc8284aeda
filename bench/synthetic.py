"""Synthetic raw usage batches shaped like `openai_usage_daily_raw`, written as Parquet files."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from beam_pipelines.testing.simulator.openai_data import MODELS

TIERS = np.array(["default", "default", "default", "flex", "priority"], dtype=object)


def usage_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    models = np.array([m.id for m in MODELS] + ["gpt-4o-mini", "o3"], dtype=object)
    start = date(2026, 3, 1)
    requests = rng.integers(1, 4000, rows)
    input_tokens = requests * rng.integers(200, 6000, rows)
    cached = (input_tokens * rng.choice([0.0, 0.1, 0.35, 0.6], rows)).astype(np.int64)
    now = datetime(2026, 3, 10, tzinfo=timezone.utc)
    return pd.DataFrame({
        "usage_date": [start + timedelta(days=int(d)) for d in rng.integers(0, 7, rows)],
        "org_slug": "bench",
        "row_key": [f"{seed}-{i}" for i in range(rows)],
        "run_id": "bench-run",
        "project_id": rng.choice(np.array(["proj_a", "proj_b", "proj_c"], dtype=object), rows),
        "api_key_id": rng.choice(np.array(["key_a", "key_b"], dtype=object), rows),
        "model": rng.choice(models, rows),
        "batch": rng.random(rows) < 0.2,
        "service_tier": rng.choice(TIERS, rows),
        "input_tokens": input_tokens,
        "input_cached_tokens": cached,
        "output_tokens": requests * rng.integers(50, 1500, rows),
        "input_audio_tokens": np.zeros(rows, dtype=np.int64),
        "output_audio_tokens": np.zeros(rows, dtype=np.int64),
        "num_model_requests": requests,
        "loaded_at": now,
    })


def write_batches(folder: Path, total_rows: int, batch_rows: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(total_rows // batch_rows):
        path = folder / f"batch-{i:04d}.parquet"
        usage_frame(batch_rows, seed=i).to_parquet(path, index=False)
        paths.append(str(path))
    return paths
