"""Entry point of the Dataflow Flex Template (``templates/main.py``): the template contract.

Everything a job needs arrives as a declared template parameter (below) or a standard pipeline
option Dataflow always passes (``--project``, ``--region``, ``--temp_location``, ...). Nothing is
read from the environment of the launcher VM or of the workers except what the image itself sets
(``templates/Dockerfile``: which twins production uses). Parameters carry names, ids, dates and
Secret Manager resource *names*; never a secret. The graph is the one the local runner builds;
``run()`` submits it and returns without waiting, as a Flex Template launcher must.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_pipelines.config.loader import load_pipeline
from beam_pipelines.errors import ConfigError
from beam_pipelines.orgs import ORG_SLUG_PATTERN
from beam_pipelines.pipeline.compiler import compile_pipeline
from beam_pipelines.pipeline.dates import DateRangeError, parse_day
from beam_pipelines.settings import NotifySettings, Settings, load_settings
from beam_pipelines.transforms.context import RunContext
from beam_pipelines.transforms.elements import WorkItem

log = logging.getLogger(__name__)

DAY = r"^\d{4}-\d{2}-\d{2}$"
SECRET_RESOURCE = r"^projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?$"  # noqa: S105 - a pattern of resource names, not a secret


@dataclass(frozen=True)
class TemplateParameter:
    name: str
    label: str
    help_text: str
    optional: bool
    regex: str


PARAMETERS = (  # the contract with templates/metadata/*.json and the launcher's launch request
    TemplateParameter("pipeline", "Pipeline", "The pipeline config this template runs (provider/domain/pipeline).",
                      False, r"^[a-z0-9_]+/[a-z0-9_]+/[a-z0-9_]+$"),
    TemplateParameter("org_slugs", "Org slugs", "Comma-separated org slugs to run, in the same order as run_ids.", False,
                      rf"^{ORG_SLUG_PATTERN}(,{ORG_SLUG_PATTERN})*$"),
    TemplateParameter("run_ids", "Run ids", "Comma-separated pipeline_logging_id of each org's recorded run.", False,
                      r"^[0-9a-f]{32}(,[0-9a-f]{32})*$"),
    TemplateParameter("start_date", "Start date", "First UTC day to process (YYYY-MM-DD).", False, DAY),
    TemplateParameter("end_date", "End date", "Last UTC day to process, inclusive (YYYY-MM-DD).", False, DAY),
    TemplateParameter("environment", "Environment", "development, staging or production (the {org}_{env} datasets).",
                      True, r"^(development|staging|production)$"),
    TemplateParameter("bigquery_location", "BigQuery location", "Location of the datasets and jobs (default US).",
                      True, r"^[A-Za-z0-9-]{2,40}$"),
    TemplateParameter("kms_key_name", "KMS key", "Cloud KMS key name that decrypts org credentials.", True,
                      r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$"),
    TemplateParameter("kms_credential_aad", "Credential AAD", "none (as onboarding encrypts) or org_provider.", True,
                      r"^(none|org_provider)$"),
    TemplateParameter("smtp_host", "SMTP host", "Mail relay for run notifications (STARTTLS).", True,
                      r"^[A-Za-z0-9.-]{1,253}$"),
    TemplateParameter("smtp_port", "SMTP port", "Mail relay port (default 587).", True, r"^[0-9]{1,5}$"),
    TemplateParameter("smtp_username", "SMTP user", "Mail relay user.", True, r"^[^\s,]{1,200}$"),
    TemplateParameter("smtp_password_secret", "SMTP password secret", "Secret Manager resource of the SMTP password.",
                      True, SECRET_RESOURCE),
    TemplateParameter("notify_email_from", "Email sender", "From address of run notifications.", True, r"^[^\s,]+@[^\s,]+$"),
    TemplateParameter("notify_email_to", "Email recipients", "Comma-separated default recipients.", True,
                      r"^[^\s,]+@[^\s,]+(,[^\s,]+@[^\s,]+)*$"),
    TemplateParameter("slack_webhook_secret", "Slack webhook secret", "Secret Manager resource of the Slack webhook URL.",
                      True, SECRET_RESOURCE),
)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="convergence-template")
    for p in PARAMETERS:
        parser.add_argument(f"--{p.name}", required=not p.optional, help=p.help_text)
    args, beam_args = parser.parse_known_args(argv)
    import re

    for p in PARAMETERS:
        value = getattr(args, p.name)
        if value is not None and not re.match(p.regex, value):
            raise ConfigError(f"template parameter {p.name}: {value!r} does not match {p.regex}")
    return args, beam_args


def work_items(args: argparse.Namespace) -> list[WorkItem]:
    orgs, run_ids = args.org_slugs.split(","), args.run_ids.split(",")
    if len(orgs) != len(run_ids):
        raise ConfigError("template parameters org_slugs and run_ids must have the same length")
    try:
        start, end = parse_day(args.start_date, "start_date"), parse_day(args.end_date, "end_date")
    except DateRangeError as exc:
        raise ConfigError(f"template parameter {exc}") from None
    if end < start:
        raise ConfigError("template parameter end_date is before start_date")
    return [WorkItem(org, run_id, start, end) for org, run_id in zip(orgs, run_ids)]


def settings_from(args: argparse.Namespace, options: PipelineOptions) -> Settings:
    """The image's defaults (its ENV) overridden by the parameters and the standard options."""
    base = load_settings()
    cloud = options.view_as(GoogleCloudOptions)
    temp = (cloud.temp_location or "").rstrip("/")
    notify = NotifySettings(
        smtp_host=args.smtp_host or "", smtp_port=int(args.smtp_port or 587), smtp_username=args.smtp_username or "",
        smtp_password_secret=args.smtp_password_secret or "", email_from=args.notify_email_from or "convergence@localhost",
        email_to=tuple(filter(None, (args.notify_email_to or "").split(","))),
        slack_webhook_secret=args.slack_webhook_secret or "")
    changes = {
        "environment": args.environment or base.environment,
        "gcp_project": cloud.project or base.gcp_project,
        "bigquery_location": args.bigquery_location or base.bigquery_location,
        # staged billing parts go under the job's temp location (Dataflow's own --staging_location is
        # Beam's: packages it stages; it passes through to Beam untouched)
        "staging_location": f"{temp}/parts" if temp else base.staging_location,
        "notify": notify,
    }
    if args.kms_key_name:
        changes.update(cipher="kms", kms_key_name=args.kms_key_name)
    if args.kms_credential_aad:
        changes["kms_credential_aad"] = args.kms_credential_aad
    settings = dataclasses.replace(base, **changes)
    if settings.sink == "bigquery" and not settings.gcp_project:
        raise ConfigError("--project: required (the datasets' project) when the warehouse is BigQuery")
    if settings.environment not in settings.system.environments:
        raise ConfigError(f"template parameter environment: unknown {settings.environment!r}")
    return settings


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    args, beam_args = parse_args(argv)
    options = PipelineOptions(beam_args, save_main_session=False)
    settings = settings_from(args, options)
    loaded = load_pipeline(settings.configs_dir, args.pipeline)
    items = work_items(args)
    ctx = RunContext.from_settings(settings, loaded, datetime.now(timezone.utc), tuple(i.org_slug for i in items))
    p = beam.Pipeline(options=options)
    compile_pipeline(p, ctx, items)
    log.info("submitting %s for %d org(s)", loaded.pipeline_id, len(items))
    return p.run()  # no wait_until_finish: Dataflow runs the job after the launcher exits
