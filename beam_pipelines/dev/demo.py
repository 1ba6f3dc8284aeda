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
DAILY = ("openai/cost/usage_cost", "anthropic/cost/usage_cost", "gcp/cost/billing", "openai/ledger/billed_cost",
         "anthropic/ledger/billed_cost")
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
    from beam_pipelines.ledger.reconcile import describe
    from beam_pipelines.warehouse.base import WarehouseSpec

    warehouse = WarehouseSpec.from_settings(settings).open()
    days = f"BETWEEN DATE '{start.isoformat()}' AND DATE '{end.isoformat()}'"

    def show(title: str, sql: str) -> None:
        columns, rows = warehouse.query(sql)
        print(f"\n{title}")
        print(render(columns, rows))

    show("gcp_billing_daily_raw: USD by service, both demo orgs",
         f"SELECT service_description AS service, ROUND(SUM(cost_usd), 2) AS cost_usd,"
         f" ROUND(SUM(credits_total_usd), 2) AS credits_usd, ROUND(SUM(net_cost_usd), 2) AS net_cost_usd,"
         f" COUNT(*) AS export_rows FROM ({_union(settings, 'gcp_billing_daily_raw')}) WHERE usage_date {days}"
         f" GROUP BY service ORDER BY net_cost_usd DESC")
    for table in COST_TABLES:
        show(f"{table}: the five costliest models over the window, and usage we could not price",
             f"SELECT price_model, ROUND(SUM(total_cost_usd), 2) AS cost_usd, COUNT(*) AS usage_rows"
             f" FROM ({_union(settings, table)}) WHERE usage_date {days} AND pricing_status = 'PRICED'"
             f" GROUP BY price_model ORDER BY cost_usd DESC LIMIT 5")
        columns, rows = warehouse.query(
            f"SELECT pricing_status, model, COUNT(*) AS usage_rows FROM ({_union(settings, table)})"
            f" WHERE usage_date {days} AND pricing_status <> 'PRICED' GROUP BY pricing_status, model ORDER BY model")
        if rows:
            print(render(columns, rows))
    show("FOCUS 1.2 (focus_cost_daily): billed cost per provider and day, both demo orgs",
         f"SELECT x_ChargeDate AS day, x_Provider AS provider, BillingCurrency AS currency, COUNT(*) AS focus_rows,"
         f" ROUND(SUM(ListCost), 2) AS list_cost, ROUND(SUM(BilledCost), 2) AS billed_cost"
         f" FROM ({_union(settings, 'focus_cost_daily')}) WHERE x_ChargeDate {days}"
         f" GROUP BY x_ChargeDate, x_Provider, BillingCurrency ORDER BY day, provider, currency")
    columns, rows = warehouse.query(
        f"SELECT usage_date, org_slug, provider, computed_cost_usd, billed_cost_usd, variance_usd, status, reasons"
        f" FROM ({_union(settings, 'cost_reconciliation_daily')}) WHERE level = 'org' AND usage_date {days}"
        f" ORDER BY usage_date, org_slug, provider")
    print("\nledger (cost_reconciliation_daily): our computed cost beside each provider's bill")
    print(render(["usage_date", "org", "provider", "computed_usd", "billed_usd", "variance_usd", "status", "why"],
                 [(d, o, p, f"{c:.2f}", f"{b:.2f}", f"{v:+.2f}", st, describe(r)) for d, o, p, c, b, v, st, r in rows]))
