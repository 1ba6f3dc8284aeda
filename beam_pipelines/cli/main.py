"""``convergence``: validate configs, run pipelines, inspect runs, query the warehouse, simulate.

Every command takes ``--configs DIR`` (or ``CONVERGENCE_CONFIGS``). Errors print as one line;
the detail goes to ``$CONVERGENCE_HOME/logs/convergence.log``.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys

from beam_pipelines.cli.args import day
from beam_pipelines.cli.doctor import add_doctor_parser
from beam_pipelines.cli.prices import add_diff_parser
from beam_pipelines.errors import ConvergenceError

log = logging.getLogger("convergence")


class _Parser(argparse.ArgumentParser):
    """Every (sub)command takes ``--configs`` and ``-v``, before or after the command name."""

    def __init__(self, *args, top: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        default = None if top else argparse.SUPPRESS
        self.add_argument("--configs", metavar="DIR", default=default,
                          help="configs folder (default: $CONVERGENCE_CONFIGS or ./configs)")
        self.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                          help="log to stderr too")


def _orgs_and_days(parser: argparse.ArgumentParser) -> None:
    """Which orgs and which UTC days, as every command that runs a pipeline takes them."""
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--org", action="append", dest="orgs", metavar="SLUG", help="repeatable")
    who.add_argument("--all-orgs", action="store_true", help="every eligible org (ACTIVE or unexpired TRIAL, with the credential)")
    parser.add_argument("--start-date", type=day, help="first UTC day (default: yesterday)")
    parser.add_argument("--end-date", type=day, help="last UTC day, inclusive (default: start date or yesterday)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convergence", description=__doc__.splitlines()[0], top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("validate", help="check every pipeline config, system config and the files they name")

    provision = sub.add_parser("provision", help="create the organizations dataset and tables (or one org's), if missing")
    provision.add_argument("--org", metavar="SLUG", help="create this org's dataset and every table the pipelines write")

    run = sub.add_parser("run", help="run a pipeline locally for one or more orgs")
    run.add_argument("pipeline", help="provider/domain/pipeline, or provider/pipeline when unique")
    _orgs_and_days(run)
    run.add_argument("--runner", default=None, help="Beam runner (default: FnApiRunner, the DirectRunner's engine)")

    reprice = sub.add_parser("reprice", help="recompute cost tables from the stored raw usage with today's price book")
    reprice.add_argument("pipeline", help="a cost pipeline (openai/cost/usage_cost), its reprice pipeline, or a provider")
    _orgs_and_days(reprice)

    prices = sub.add_parser("prices", help="the price book: usage without a price, proposals from LiteLLM's price map")
    prices_sub = prices.add_subparsers(dest="prices_command", required=True, parser_class=_Parser)
    add_diff_parser(prices_sub)
    missing = prices_sub.add_parser("missing", help="models seen in usage without a price, with their token volumes")
    missing.add_argument("--org", action="append", dest="orgs", metavar="SLUG", help="repeatable (default: every eligible org)")
    missing.add_argument("--provider", choices=["openai", "anthropic", "all"], default="all")
    missing.add_argument("--start-date", type=day, help="first UTC day (default: --days before the end)")
    missing.add_argument("--end-date", type=day, help="last UTC day (default: yesterday)")
    missing.add_argument("--days", type=int, default=31, help="window when --start-date is not given (default 31)")

    reconcile = sub.add_parser("reconcile", help="the ledger: our computed cost beside each provider's bill, per day")
    reconcile.add_argument("--org", required=True, metavar="SLUG")
    reconcile.add_argument("--days", type=int, default=7, help="the last N days up to yesterday (default 7)")
    reconcile.add_argument("--provider", choices=["openai", "anthropic"])

    add_doctor_parser(sub)

    focus = sub.add_parser("focus", help="the org's FOCUS 1.2 table")
    focus_sub = focus.add_subparsers(dest="focus_command", required=True, parser_class=_Parser)
    check = focus_sub.add_parser("check", help="validate the stored FOCUS rows against the FOCUS 1.2 specification")
    check.add_argument("--org", required=True, metavar="SLUG")
    check.add_argument("--days", type=int, default=31, help="the last N days up to yesterday (default 31)")

    job = sub.add_parser("job", help="run pre-recorded runs (used by the launcher's local backend)")
    job.add_argument("pipeline")
    job.add_argument("--run", action="append", required=True, metavar="ORG=RUN_ID", dest="runs")
    job.add_argument("--start-date", type=day, required=True)
    job.add_argument("--end-date", type=day, required=True)
    job.add_argument("--trigger", default="api")

    serve = sub.add_parser("serve", help="start the launcher API on the embedded default")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8001)

    runs = sub.add_parser("runs", help="list recorded runs, or `runs show ID`")
    runs.add_argument("--org", metavar="SLUG")
    runs.add_argument("--status", choices=["QUEUED", "RUNNING", "COMPLETED", "FAILED"])
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--format", choices=["table", "json"], default="table")
    runs_sub = runs.add_subparsers(dest="runs_command")
    show = runs_sub.add_parser("show", help="one run with its steps")
    show.add_argument("run_id")
    show.add_argument("--format", choices=["table", "json"], default="table")

    query = sub.add_parser("query", help="SQL over the local warehouse (BigQuery names: acme_dev.openai_cost_daily)")
    query.add_argument("sql")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")

    simulate = sub.add_parser("simulate", help="serve the provider simulator on loopback")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8787)
    simulate.add_argument("--idle-timeout", type=float, default=None, help="stop after N idle seconds")
    simulate.add_argument("--latency", type=float, default=0.0, help="seconds before every answer (e.g. 0.05)")

    dev = sub.add_parser("dev", help="local set-up helpers (refused in production)")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    seed = dev_sub.add_parser("seed-org", help="create or re-seed a local org")
    seed.add_argument("slug")
    seed.add_argument("--subscription", choices=["ACTIVE", "TRIAL", "SUSPENDED", "CANCELLED"], default="ACTIVE")
    seed.add_argument("--openai-admin-key", metavar="KEY", help="default: a key the simulator accepts")
    seed.add_argument("--anthropic-admin-key", metavar="KEY", help="default: a key the simulator accepts")
    seed.add_argument("--gcp-billing-export", metavar="PATH_OR_TABLE",
                      help="local Parquet export, or project.dataset.gcp_billing_export_v1_XXXX")
    seed.add_argument("--gcp-service-account-key", metavar="FILE", help="service-account JSON key (default: a local placeholder)")
    seed.add_argument("--gcp-worker-identity", action="store_true",
                      help="no key: the workers' own identity reads the export (granted bigquery.dataViewer)")
    seed.add_argument("--gcp-impersonate", metavar="SERVICE_ACCOUNT",
                      help="with --gcp-worker-identity: a customer service account to impersonate")
    seed.add_argument("--trial-ends", type=day, metavar="YYYY-MM-DD")
    seed.add_argument("--daily-quota", type=int, metavar="N")
    seed.add_argument("--json", action="store_true", help='print {"org_slug": ..., "api_key": ...}')

    fleet = dev_sub.add_parser("seed-fleet", help="create or re-seed many local orgs (PREFIX0000, PREFIX0001, ...)")
    fleet.add_argument("--orgs", type=int, default=1000, metavar="N")
    fleet.add_argument("--prefix", default="fleet", help="org slug prefix (default: fleet)")

    export = dev_sub.add_parser("gcp-export", help="generate a realistic Cloud Billing export as Parquet")
    export.add_argument("--org", required=True)
    export.add_argument("--days", type=int, default=7)
    export.add_argument("--rows-per-day", type=int, default=2000)
    export.add_argument("--end-date", type=day, help="last usage day (default: yesterday)")
    export.add_argument("--out", required=True, metavar="PATH")

    templates = sub.add_parser("templates", help="Flex Template metadata generated from the configs")
    templates_sub = templates.add_subparsers(dest="templates_command", required=True)
    generate = templates_sub.add_parser("generate", help="write templates/metadata/<provider>_<domain>_<pipeline>.json")
    generate.add_argument("--out", default="templates/metadata", metavar="DIR")
    publish = templates_sub.add_parser("publish", help="write each Flex Template spec (Dataflow ContainerSpec) to Cloud Storage")
    publish.add_argument("--path", default=os.environ.get("DATAFLOW_TEMPLATES_PATH", ""), metavar="gs://BUCKET/templates",
                         help="default $DATAFLOW_TEMPLATES_PATH")
    publish.add_argument("--image", default=os.environ.get("DATAFLOW_SDK_CONTAINER_IMAGE", ""),
                         help="the image with an immutable tag (default $DATAFLOW_SDK_CONTAINER_IMAGE)")
    publish.add_argument("--service-account", default=os.environ.get("DATAFLOW_SERVICE_ACCOUNT", ""),
                         help="worker service account (default $DATAFLOW_SERVICE_ACCOUNT)")
    publish.add_argument("--temp-location", default=os.environ.get("DATAFLOW_TEMP_LOCATION", ""), metavar="gs://...",
                         help="default $DATAFLOW_TEMP_LOCATION")
    publish.add_argument("--max-workers", type=int, default=int(os.environ.get("DATAFLOW_MAX_WORKERS", "0") or 0))

    schedules = sub.add_parser("schedules", help="Cloud Scheduler jobs from the configs' schedules")
    schedules_sub = schedules.add_subparsers(dest="schedules_command", required=True)
    render_cmd = schedules_sub.add_parser("render", help="print one Cloud Scheduler HTTP job per scheduled pipeline")
    render_cmd.add_argument("--format", choices=["gcloud", "json", "flags"], default="gcloud")
    render_cmd.add_argument("--launcher-url", default=None, help="default: $LAUNCHER_URL")
    render_cmd.add_argument("--service-account", default=None, help="default: $SCHEDULER_SERVICE_ACCOUNT")
    render_cmd.add_argument("--project", default=None, help="default: $GCP_PROJECT_ID")
    render_cmd.add_argument("--region", default=None, help="default: $GCP_REGION")

    demo = sub.add_parser("demo", help="simulator + two demo orgs + the last 7 days + a cost summary")
    demo.add_argument("--days", type=int, default=7)
    demo.add_argument("--bigquery", action="store_true",
                      help="on the BigQuery twin: $BIGQUERY_EMULATOR_HOST, or a private emulator for the demo")

    emulator = sub.add_parser("emulator", help="run a local service emulator in the foreground")
    emulator.add_argument("service", choices=["bigquery"])
    emulator.add_argument("--port", type=int, default=9050)
    emulator.add_argument("--project", default="convergence-local")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from beam_pipelines.cli import commands
    from beam_pipelines.cli.logs import setup_logging
    from beam_pipelines.settings import load_settings

    try:
        settings = load_settings(args.configs)
        setup_logging(settings.home, settings.log_dir, args.verbose)
        handler = getattr(commands, f"cmd_{args.command}")
        return handler(settings, args) or 0
    except ConvergenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unexpected: one line for the user, the traceback in the log
        log.exception("unexpected error")
        print(f"error: {type(exc).__name__}: {exc} (details in the log)", file=sys.stderr)
        return 1


def entry() -> None:
    """The ``convergence`` command: :func:`main`, then exit without taking the interpreter apart.

    When a command returns, its work is finished: runs closed, files written and closed, workers
    joined. What an ordinary exit does after that is free every module of Beam, pandas and Arrow one
    by one, ~0.6 s after each command here (a daily run, a job the launcher started). The exit
    handlers still run (log files flushed and closed, thread pools joined) and the output is flushed.
    """
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing more can be said there
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
