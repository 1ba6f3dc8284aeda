"""Notify steps: after the run log, one message for the whole run (every org), if the trigger matches.

A failed notification is logged and recorded as a FAILED step on each org's run, and never changes
a run's status.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import apache_beam as beam
import yaml

from beam_pipelines.errors import one_line_error
from beam_pipelines.notify.channels import ChannelNotConfigured, SmtpSettings, send_email, send_slack
from beam_pipelines.notify.message import build_message, should_send
from beam_pipelines.runs.records import step_log_row
from beam_pipelines.transforms.step import StepTransform

log = logging.getLogger(__name__)


class _Notify(beam.DoFn):
    def __init__(self, step: StepTransform, channel: dict, send):
        self._step = step
        self._channel = channel
        self._send = send

    def setup(self):
        self._metastore = self._step.ctx.metastore.open()

    def process(self, summaries: list[dict]):
        if not summaries or not should_send(self._step.options.trigger, summaries):
            return
        started = datetime.now(timezone.utc)
        message = build_message(self._step.ctx.pipeline.pipeline_id, summaries,
                                self._channel.get("subject_prefix", "[Convergence]"))
        error = None
        try:
            self._send(message, self._channel, self._step.ctx.notify)
        except ChannelNotConfigured as exc:
            log.warning("notification %s skipped: %s", self._step.step.step_id, exc)
            return
        except Exception as exc:
            error = one_line_error(exc)
            log.error("notification %s failed: %s", self._step.step.step_id, error)
        self._metastore.upsert_step_logs([
            step_log_row(self._step.event(s["run_id"], s["org_slug"], error=error, started_at=started)) for s in summaries])
        yield {"step_id": self._step.step.step_id, "sent": error is None, "error": error}


def _send_email(message, channel, notify):
    send_email(message, channel.get("recipients") or [], SmtpSettings.from_settings(notify))


def _send_slack(message, channel, notify):
    send_slack(message, notify.slack_webhook_secret)


class _Notification(StepTransform):
    kind = "notify"
    send = None

    def expand(self, summaries):
        channel = yaml.safe_load((self.ctx.configs_dir / self.options.config).read_text()) or {}
        return (
            summaries
            | "AllOrgs" >> beam.combiners.ToList()
            | "Send" >> beam.ParDo(_Notify(self, channel, type(self).send))
        )


class EmailNotification(_Notification):
    send = staticmethod(_send_email)


class SlackNotification(_Notification):
    send = staticmethod(_send_slack)
