"""``convergence demo`` / ``make demo``: the daily pipelines for two demo orgs, then what they cost.

Everything runs here: the provider simulator on loopback, and either the embedded default or, with
``--bigquery``, the BigQuery twin (the emulator at ``$BIGQUERY_EMULATOR_HOST``, or a private one
started for the demo). The summaries are read back through the same warehouse interface, with SQL
both DuckDB and BigQuery accept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from datetime import timedelta

from beam_pipelines.cli.output import render

DEMO_ORGS = ("acme_demo", "globex_demo")
DAILY = ("openai/cost/usage_cost", "anthropic/cost/usage_cost", "gcp/cost/billing")
COST_TABLES = ("openai_cost_daily", "anthropic_cost_daily")


@contextlib.contextmanager
def bigquery_twin(settings):
    """Settings on the BigQuery twin, on the emulator already running or on a private one."""
    from beam_pipelines.provision import provision_metadata
    from beam_pipelines.testing.emulators.bigquery import DEFAULT_PROJECT, BigQueryEmulator

    emulator = None
    if not os.environ.get("BIGQUERY_EMULATOR_HOST"):
        emulator = BigQueryEmulator(log_path=settings.log_dir / "bqemulator.log").start()
        os.environ["BIGQUERY_EMULATOR_HOST"] = emulator.url
    try:
        twin = dataclasses.replace(settings, sink="bigquery", metastore="bigquery",
                                   gcp_project=settings.gcp_project or DEFAULT_PROJECT)
        provision_metadata(twin)
        print(f"    BigQuery twin: emulator {os.environ['BIGQUERY_EMULATOR_HOST']}, project {twin.gcp_project}")
        yield twin
    finally:
        if emulator is not None:
            emulator.stop()
            os.environ.pop("BIGQUERY_EMULATOR_HOST", None)


def run_demo(settings, days: int, bigquery: bool = False) -> int:
    with (bigquery_twin(settings) if bigquery else contextlib.nullcontext(settings)) as settings:
        return _demo(settings, days)


def _demo(settings, days: int) -> int:
    import pyarrow.parquet as pq

    from beam_pipelines.cli.commands import _run_and_report
    from beam_pipelines.dev.seed import seed_org
    from beam_pipelines.gcp.generator import generate_export
    from beam_pipelines.pipeline.dates import utc_today
    from beam_pipelines.pipeline.run import RunRequest
    from beam_pipelines.testing.simulator import ProviderSimulator

    end = utc_today() - timedelta(days=1)
    start = end - timedelta(days=days - 1)
    code = 0
    with ProviderSimulator() as sim:
        print(f"1/4 provider simulator listening on {sim.url}")
        settings = dataclasses.replace(settings, openai_base_url=sim.openai_base_url,
                                       anthropic_base_url=sim.anthropic_base_url)
        for org in DEMO_ORGS:
            export = settings.home / "exports" / f"{org}_billing.parquet"
            export.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(generate_export(org, end, days + 2, 1500), export)
            seed_org(settings, org, gcp_billing_export=str(export))
        print(f"2/4 seeded demo orgs {', '.join(DEMO_ORGS)} (credentials encrypted under {settings.home})")
        for pipeline in DAILY:
            print(f"3/4 running {pipeline} for {start} .. {end}")
            request = RunRequest(pipeline, orgs=list(DEMO_ORGS), start_date=start, end_date=end, trigger="demo")
            code |= _run_and_report(settings, request)
    print("4/4 cost summary")
    summarize(settings, start, end)
    print('Query more with: .venv/bin/convergence query "SELECT ... FROM acme_demo_dev.openai_cost_daily"')
    return code


def _union(settings, table: str) -> str:
    return " UNION ALL ".join(f"SELECT * FROM {settings.org_dataset(org)}.{table}" for org in DEMO_ORGS)


def summarize(settings, start, end) -> None:
    from beam_pipelines.warehouse.base import WarehouseSpec

    warehouse = WarehouseSpec.from_settings(settings).open()
    span = f"usage_date BETWEEN DATE '{start.isoformat()}' AND DATE '{end.isoformat()}'"
    for table in COST_TABLES:
        _, rows = warehouse.query(
            f"SELECT usage_date, price_model, ROUND(SUM(total_cost_usd), 2) FROM ({_union(settings, table)})"
            f" WHERE {span} AND pricing_status = 'PRICED' GROUP BY usage_date, price_model")
        models = sorted({m for _, m, _ in rows})
        by_day: dict = {}
        for day, model, cost in rows:
            by_day.setdefault(day, {})[model] = cost
        print(f"\n{table}: USD per day and model, both demo orgs")
        print(render(["usage_date", *models], [(d, *(by_day[d].get(m) for m in models)) for d in sorted(by_day)]))
        columns, rows = warehouse.query(
            f"SELECT org_slug, COUNT(*) AS usage_rows, ROUND(SUM(total_cost_usd), 2) AS total_cost_usd,"
            f" SUM(CASE WHEN pricing_status <> 'PRICED' THEN 1 ELSE 0 END) AS flagged_rows,"
            f" STRING_AGG(DISTINCT CASE WHEN pricing_status <> 'PRICED' THEN pricing_status || ' ' || model END, ', ')"
            f" AS flagged FROM ({_union(settings, table)}) WHERE {span} GROUP BY org_slug ORDER BY org_slug")
        print(render(columns, rows))
    columns, rows = warehouse.query(
        f"SELECT service_description AS service, ROUND(SUM(cost_usd), 2) AS cost_usd,"
        f" ROUND(SUM(credits_total_usd), 2) AS credits_usd, ROUND(SUM(net_cost_usd), 2) AS net_cost_usd,"
        f" COUNT(*) AS export_rows FROM ({_union(settings, 'gcp_billing_daily_raw')}) WHERE {span}"
        f" GROUP BY service ORDER BY net_cost_usd DESC")
    print("\ngcp_billing_daily_raw: USD by service, both demo orgs")
    print(render(columns, rows))
