"""The CLI's subcommands. Each takes (settings, parsed args) and returns an exit code."""
from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from tqdm import tqdm

from beam_pipelines.cli.args import last_days
from beam_pipelines.cli.output import render
from beam_pipelines.errors import ConfigError, ConvergenceError, NotFoundError
from beam_pipelines.runs.records import kept_warning


def cmd_validate(settings, args) -> int:
    from beam_pipelines.config.loader import load_pipeline_file, pipeline_files
    from beam_pipelines.config.other import validate_other_configs

    problems = []
    files = pipeline_files(settings.configs_dir)
    for path in files:
        try:
            loaded = load_pipeline_file(settings.configs_dir, path)
            print(f"ok  {loaded.pipeline_id}  ({len(loaded.config.steps)} steps, schedule {loaded.config.schedule or '-'})")
        except ConfigError as exc:
            problems.append(str(exc))
    for name, problem in validate_other_configs(settings.configs_dir):
        if problem:
            problems.append(problem)
        else:
            print(f"ok  {name}")
    if not files:
        problems.append(f"{settings.configs_dir}: no pipeline configs ({{provider}}/{{domain}}/{{pipeline}}.yml)")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _progress_bar(total_label: str):
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=total_label, unit="org", file=sys.stderr, leave=False)
        if done != bar.n:
            bar.update(done - bar.n)

    def close():
        if bar is not None:
            bar.close()

    return update, close


def cmd_run(settings, args) -> int:
    from beam_pipelines.pipeline.run import LOCAL_RUNNER, RunRequest

    request = RunRequest(
        pipeline_ref=args.pipeline, orgs=args.orgs or [], all_orgs=args.all_orgs,
        start_date=args.start_date, end_date=args.end_date, runner=args.runner or LOCAL_RUNNER,
    )
    return _run_and_report(settings, request, quiet=args.quiet)


def reprice_pipeline(configs_dir, ref: str) -> str:
    """The re-pricing pipeline for ``ref``: itself, the ``reprice`` beside a cost pipeline, or a provider's only one."""
    from beam_pipelines.config.loader import discover_pipelines, resolve_pipeline_ref
    from beam_pipelines.errors import NotFoundError

    known = set(discover_pipelines(configs_dir))
    parts = ref.strip("/").split("/")
    if len(parts) == 1:
        found = [p for p in known if p.split("/")[0] == parts[0] and p.endswith("/reprice")]
    else:
        pipeline_id = resolve_pipeline_ref(ref, known)
        sibling = pipeline_id.rsplit("/", 1)[0] + "/reprice"
        found = [pipeline_id] if pipeline_id.endswith("/reprice") else [p for p in known if p == sibling]
    if len(found) != 1:
        raise NotFoundError(f"reprice {ref!r}: no re-pricing pipeline for it (expected <provider>/<domain>/reprice)")
    return found[0]


def cmd_reprice(settings, args) -> int:
    from beam_pipelines.pipeline.run import LOCAL_RUNNER, RunRequest

    request = RunRequest(
        pipeline_ref=reprice_pipeline(settings.configs_dir, args.pipeline), orgs=args.orgs or [],
        all_orgs=args.all_orgs, start_date=args.start_date, end_date=args.end_date, runner=LOCAL_RUNNER,
        trigger="reprice",
    )
    return _run_and_report(settings, request, quiet=args.quiet)


def cmd_prices(settings, args) -> int:
    if args.prices_command == "diff":
        from beam_pipelines.cli.prices import run_prices

        return run_prices(args, settings)
    return cmd_prices_missing(settings, args)


def cmd_prices_missing(settings, args) -> int:
    from beam_pipelines.metastore import MetastoreSpec
    from beam_pipelines.pipeline.dates import utc_today
    from beam_pipelines.pricing.missing import COLUMNS, COST_TABLES, unpriced_usage
    from beam_pipelines.warehouse.base import WarehouseSpec

    end = args.end_date or utc_today() - timedelta(days=1)
    start = args.start_date or end - timedelta(days=max(args.days, 1) - 1)
    providers = tuple(COST_TABLES) if args.provider == "all" else (args.provider,)
    orgs = args.orgs
    if not orgs:
        store = MetastoreSpec.from_settings(settings).open()
        orgs = sorted({o for p in providers for o in store.eligible_orgs(settings.system.integration(p), utc_today())})
    rows = unpriced_usage(WarehouseSpec.from_settings(settings).open(), {o: settings.org_dataset(o) for o in orgs},
                          start, end, providers)
    print(f"usage without a price, {start} .. {end}: {len(rows)} model(s)")
    if rows:
        print(render(COLUMNS, rows))
        print("add their rows to the price book (or the org's own table), then: convergence reprice <provider>"
              " --org <org> --start-date <first_day> --end-date <last_day>")
    return 0


def cmd_reconcile(settings, args) -> int:
    from beam_pipelines.ledger.report import COLUMNS, ledger_days, printable
    from beam_pipelines.orgs import check_org_slug
    from beam_pipelines.pipeline.dates import utc_today
    from beam_pipelines.warehouse.base import WarehouseSpec

    check_org_slug(args.org)
    start, end = last_days(args.days, utc_today())
    rows = ledger_days(WarehouseSpec.from_settings(settings).open(), settings.org_dataset(args.org), start, end,
                       args.provider)
    print(f"ledger of {args.org}, {start} .. {end}: computed (our priced usage) beside billed (the provider's bill)")
    if not rows:
        print("no ledger rows: run the <provider>/ledger/billed_cost pipelines after the usage pipelines")
        return 0
    print(render(COLUMNS, printable(rows)))
    off = [r for r in rows if r["status"] != "MATCHED"]
    print(f"{len(rows) - len(off)} of {len(rows)} provider-days MATCHED")
    return 1 if any(r["status"] == "VARIANCE" for r in off) else 0


def cmd_focus(settings, args) -> int:
    import pyarrow as pa

    from beam_pipelines.focus.columns import PARTITION, SCOPE, focus_schema
    from beam_pipelines.focus.validator import validate_focus
    from beam_pipelines.orgs import check_org_slug
    from beam_pipelines.pipeline.dates import utc_today
    from beam_pipelines.warehouse.base import TableSpec, WarehouseSpec

    check_org_slug(args.org)
    start, end = last_days(args.days, utc_today())
    spec = TableSpec("focus_cost_daily", focus_schema(settings.configs_dir), PARTITION, scope_field=SCOPE)
    parts = list(WarehouseSpec.from_settings(settings).open().read_days(settings.org_dataset(args.org), spec, start, end))
    if not parts:
        print(f"no FOCUS rows for {args.org} in {start} .. {end}")
        return 0
    table = pa.concat_tables(parts)
    findings = validate_focus(table)
    for f in findings:
        print(f"{f.severity}: {f.column}: {f.rule}: {f.detail}")
    errors = sum(f.severity == "error" for f in findings)
    print(f"{table.num_rows} FOCUS rows of {args.org}, {start} .. {end}: {errors} error(s),"
          f" {len(findings) - errors} warning(s) against FOCUS 1.2")
    return 1 if errors else 0


def cmd_doctor(settings, args) -> int:
    from beam_pipelines.cli.doctor import run_doctor_cli

    return run_doctor_cli(args, settings)


def cmd_templates(settings, args) -> int:
    from beam_pipelines.config.loader import discover_pipelines

    pipelines = discover_pipelines(settings.configs_dir)
    if args.templates_command == "publish":
        from beam_pipelines.pipeline.template_spec import SpecEnvironment, publish

        env = SpecEnvironment(args.image, args.service_account, args.temp_location, args.max_workers)
        written = publish(pipelines, env, args.path)
    else:
        from beam_pipelines.pipeline.template_metadata import write_all

        written = write_all(pipelines, Path(args.out))
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_schedules(settings, args) -> int:
    from beam_pipelines.config.loader import discover_pipelines
    from beam_pipelines.pipeline.schedules import flag_lines, gcloud_commands, scheduler_jobs

    jobs = scheduler_jobs(
        discover_pipelines(settings.configs_dir),
        args.launcher_url or os.environ.get("LAUNCHER_URL", ""),
        args.service_account or os.environ.get("SCHEDULER_SERVICE_ACCOUNT", ""),
        args.project or settings.gcp_project, args.region or os.environ.get("GCP_REGION", ""),
    )
    if args.format == "json":
        print(json.dumps(jobs, indent=2))
    else:
        print("\n".join(flag_lines(jobs) if args.format == "flags" else gcloud_commands(jobs)))
    return 0


def cmd_job(settings, args) -> int:
    from beam_pipelines.pipeline.run import run_recorded

    run_ids = {}
    for pair in args.runs:
        org, sep, run_id = pair.partition("=")
        if not sep or not org or not run_id:
            raise ConvergenceError(f"--run {pair!r}: expected ORG=RUN_ID")
        run_ids[org] = run_id
    result = run_recorded(settings, args.pipeline, run_ids, args.start_date, args.end_date)
    _report(result)
    return 1 if result.failed else 0


def cmd_provision(settings, args) -> int:
    from beam_pipelines.provision import provision_metadata, provision_org

    if args.org:
        dataset, tables = provision_org(settings, args.org)
        print(f"dataset {dataset}: {len(tables)} table(s) ready ({', '.join(tables)})")
    else:
        created = provision_metadata(settings)
        print(f"{settings.system.dataset}: metadata tables ready" + (f" (created {', '.join(created)})" if created else ""))
    return 0


def cmd_serve(settings, args) -> int:
    from launcher.server import serve

    return serve(settings, args.host, args.port)


def _run_and_report(settings, request, quiet: bool = False) -> int:
    from beam_pipelines.pipeline.run import run_pipeline

    update, close = _progress_bar("fetching") if not quiet else (None, lambda: None)
    try:
        result = run_pipeline(settings, request, on_progress=update)
    finally:
        close()
    _report(result)
    return 1 if result.failed else 0


def _report(result) -> None:
    print(f"{result.pipeline_id}  {result.start_date} .. {result.end_date}")
    rows = [(r["org_slug"], r["status"], r["rows_written"], r["duration_ms"], r["pipeline_logging_id"],
             r["error_message"] or "") for r in result.runs]
    print(render(["org", "status", "rows_written", "duration_ms", "run_id", "error"], rows))
    for run in result.runs:
        for kept in (run.get("outcome") or {}).get("kept", []):
            print(f"warning: {run['org_slug']}: {kept_warning(kept)}")


RUN_COLUMNS = ["pipeline_logging_id", "org_slug", "pipeline_id", "status", "trigger_type", "start_date",
               "end_date", "rows_written", "duration_ms", "created_at", "error_message"]
DQ_COLUMNS = ["table_name", "expectation_type", "severity", "success", "kwargs", "observed_value"]
STEP_COLUMNS = ["step_id", "ps_type", "status", "rows_processed", "duration_ms", "error_message"]


def cmd_runs(settings, args) -> int:
    from beam_pipelines.metastore import MetastoreSpec
    from beam_pipelines.runs.reaper import reap_expired
    from beam_pipelines.warehouse.base import WarehouseSpec

    metastore = MetastoreSpec.from_settings(settings).open()
    reap_expired(metastore, WarehouseSpec.from_settings(settings).open(), settings)
    if args.runs_command == "show":
        run = metastore.get_run(args.run_id)
        if run is None:
            raise NotFoundError(f"run {args.run_id!r} does not exist")
        steps = metastore.list_steps(args.run_id)
        checks = metastore.list_dq_results(args.run_id)
        if args.format == "json":
            print(json.dumps({**run, "steps": steps, "data_quality": checks}, indent=2, default=str))
        else:
            width = max(len(k) for k in run)
            for key, value in run.items():
                shown = json.dumps(value, default=str) if isinstance(value, (dict, list)) else value
                print(f"{key.ljust(width)}  {'' if value is None else shown}")
            print()
            print(render(STEP_COLUMNS, [tuple(s[c] for c in STEP_COLUMNS) for s in steps]))
            for kept in (run.get("outcome") or {}).get("kept", []):
                print(f"warning: {kept_warning(kept)}")
            if checks:
                print()
                print(render(DQ_COLUMNS, [tuple(json.dumps(c[k]) if k in ("kwargs", "observed_value") else c[k]
                                                for k in DQ_COLUMNS) for c in checks]))
        return 0
    runs = metastore.list_runs(org_slug=args.org, status=args.status, limit=args.limit)
    if args.format == "json":
        print(json.dumps(runs, indent=2, default=str))
    else:
        print(render(RUN_COLUMNS, [tuple(r[c] for c in RUN_COLUMNS) for r in runs]))
    return 0


def cmd_query(settings, args) -> int:
    from beam_pipelines.warehouse.base import WarehouseSpec

    columns, rows = WarehouseSpec.from_settings(settings).open().query(args.sql)
    print(render(columns, rows, args.format))
    return 0


def cmd_simulate(settings, args) -> int:
    from beam_pipelines.testing.simulator import ProviderSimulator

    sim = ProviderSimulator(args.host, args.port, idle_timeout=args.idle_timeout, latency=args.latency)
    print(f"provider simulator on {sim.url}  (OPENAI_BASE_URL={sim.openai_base_url}"
          f" ANTHROPIC_BASE_URL={sim.anthropic_base_url})", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_dev(settings, args) -> int:
    from beam_pipelines.dev.seed import seed_org

    if args.dev_command == "gcp-export":
        return _gcp_export(args)
    if args.dev_command == "seed-org":
        key = None
        if args.gcp_service_account_key:
            try:
                key = Path(args.gcp_service_account_key).read_text()
            except OSError as exc:
                raise ConvergenceError(f"--gcp-service-account-key: {exc.strerror}") from None
        created = seed_org(settings, args.slug, subscription=args.subscription,
                           openai_admin_key=args.openai_admin_key, trial_ends=args.trial_ends,
                           daily_quota=args.daily_quota, anthropic_admin_key=args.anthropic_admin_key,
                           gcp_billing_export=args.gcp_billing_export, gcp_service_account_key=key,
                           gcp_worker_identity=args.gcp_worker_identity, gcp_impersonate=args.gcp_impersonate)
        if args.json:
            print(json.dumps(created))
        else:
            print(f"org {created['org_slug']} ready ({args.subscription}).")
            print(f"API key (shown once, store it now): {created['api_key']}")
        return 0
    if args.dev_command == "seed-fleet":
        return _seed_fleet(settings, args.prefix, args.orgs)
    raise ConvergenceError(f"unknown dev command {args.dev_command}")


def _seed_fleet(settings, prefix: str, orgs: int) -> int:
    """Orgs for a fleet run (simulator credentials, ACTIVE); their API keys are not shown."""
    from beam_pipelines.dev.seed import seed_org

    if orgs < 1:
        raise ConvergenceError("--orgs: must be at least 1")
    slugs = [f"{prefix}{i:04d}" for i in range(orgs)]
    for slug in tqdm(slugs, desc="seeding", unit="org", file=sys.stderr, leave=False, disable=not sys.stderr.isatty()):
        seed_org(settings, slug)
    print(f"{orgs} orgs ready ({slugs[0]} .. {slugs[-1]}); their API keys are not shown (dev seed-org SLUG gives one a new key).")
    return 0


def _write_export(org: str, end, days: int, rows_per_day: int, out: Path) -> int:
    import pyarrow.parquet as pq

    from beam_pipelines.gcp.generator import generate_export

    table = generate_export(org, end, days, rows_per_day)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return table.num_rows


def _gcp_export(args) -> int:
    from beam_pipelines.pipeline.dates import utc_today

    if args.days < 1 or args.rows_per_day < 1:
        raise ConvergenceError("--days and --rows-per-day must be at least 1")
    end = args.end_date or utc_today() - timedelta(days=1)
    written = _write_export(args.org, end, args.days, args.rows_per_day, Path(args.out))
    print(f"wrote {written:,} export rows ({args.days} days to {end}) to {args.out}")
    return 0


def cmd_demo(settings, args) -> int:
    from beam_pipelines.dev.demo import run_demo

    return run_demo(settings, args.days, bigquery=args.bigquery)


def cmd_emulator(settings, args) -> int:
    from beam_pipelines.testing.emulators.bigquery import BigQueryEmulator

    with BigQueryEmulator(args.port, args.project) as emulator:
        print(f"BigQuery emulator on {emulator.url} (project {args.project}); in another shell:", flush=True)
        print(f"  export BIGQUERY_EMULATOR_HOST={emulator.url} GCP_PROJECT_ID={args.project}"
              " CONVERGENCE_SINK=bigquery CONVERGENCE_METASTORE=bigquery", flush=True)
        try:
            emulator.wait()
        except KeyboardInterrupt:
            pass
    return 0
