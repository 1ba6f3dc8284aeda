"""The two contenders of the `gcp_billing` case, each run in a child process (see gcp_billing.py)."""
from __future__ import annotations

import json
import resource
import sys
import time
from datetime import date, datetime, timezone

DAY = date(2026, 3, 2)


def _peak_rss_mb() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries it across fork and exec, so a job
    started by a bench process that already held 1 GB reported 1 GB whatever it used itself."""
    try:
        with open("/proc/self/status") as fh:
            return round(next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def pipeline(export: str) -> dict:
    from beam_pipelines.dev.seed import seed_org
    from beam_pipelines.pipeline.run import RunRequest, run_pipeline
    from beam_pipelines.settings import load_settings
    from beam_pipelines.warehouse.local import LocalWarehouse

    settings = load_settings()
    seed_org(settings, "bench", gcp_billing_export=export)
    started, cpu = time.perf_counter(), time.process_time()
    result = run_pipeline(settings, RunRequest("gcp/cost/billing", orgs=["bench"], start_date=DAY, end_date=DAY))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.failed:
        raise SystemExit(f"pipeline failed: {result.runs[0]['error_message']}")
    _, rows = LocalWarehouse(settings.warehouse_dir).query("SELECT COUNT(*) FROM bench_dev.gcp_billing_daily_raw")
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "rows": rows[0][0], "peak_rss_mb": _peak_rss_mb()}


def baseline(export: str, out: str) -> dict:
    """What a plain script would do: read, flatten with pyarrow compute and pandas, write Parquet."""
    import json as js

    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    started, cpu = time.perf_counter(), time.process_time()
    t = pq.read_table(export)
    credits = t.column("credits").combine_chunks()
    amounts = pc.struct_field(credits.flatten(), "amount").to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(credits).to_numpy()
    credit_sum = pd.Series(amounts).groupby(parents).sum().reindex(range(t.num_rows), fill_value=0.0).to_numpy()

    def sub(col, name):
        return pc.struct_field(t.column(col), name)

    def as_json(column):
        return [js.dumps(v, separators=(",", ":")) for v in column.to_pylist()]

    cost = t.column("cost").to_numpy()
    rate = t.column("currency_conversion_rate").to_numpy()
    df = pd.DataFrame({
        "usage_date": pc.cast(t.column("usage_start_time"), pa.date32()).to_pandas(),
        "org_slug": "bench", "run_id": "baseline",
        "billing_account_id": t.column("billing_account_id").to_pandas(),
        "service_id": sub("service", "id").to_pandas(), "service_description": sub("service", "description").to_pandas(),
        "sku_id": sub("sku", "id").to_pandas(), "sku_description": sub("sku", "description").to_pandas(),
        "usage_start_time": t.column("usage_start_time").to_pandas(), "usage_end_time": t.column("usage_end_time").to_pandas(),
        "project_id": sub("project", "id").to_pandas(), "project_name": sub("project", "name").to_pandas(),
        "project_labels": as_json(sub("project", "labels")), "labels": as_json(t.column("labels")),
        "region": sub("location", "region").to_pandas(), "usage_amount": sub("usage", "amount").to_pandas(),
        "usage_unit": sub("usage", "unit").to_pandas(), "cost": cost, "credits_total": credit_sum,
        "net_cost": cost + credit_sum, "cost_at_list": t.column("cost_at_list").to_pandas(),
        "currency": t.column("currency").to_pandas(), "cost_usd": cost / rate, "net_cost_usd": (cost + credit_sum) / rate,
        "cost_type": t.column("cost_type").to_pandas(), "invoice_month": sub("invoice", "month").to_pandas(),
        "export_time": t.column("export_time").to_pandas(), "loaded_at": datetime.now(timezone.utc),
    })
    df.to_parquet(out, index=False)
    return {"seconds": round(time.perf_counter() - started, 3), "cpu_seconds": round(time.process_time() - cpu, 3), "rows": len(df),
            "peak_rss_mb": _peak_rss_mb()}


if __name__ == "__main__":
    kind, *rest = sys.argv[1:]
    print(json.dumps(pipeline(*rest) if kind == "pipeline" else baseline(*rest)))
