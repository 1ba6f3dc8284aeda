"""Delivery: SMTP with mandatory STARTTLS, and Slack incoming webhooks (with retries)."""
from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.notify.message import Message
from beam_pipelines.secrets.service_secrets import resolve_secret


class NotificationError(ConvergenceError):
    pass


class ChannelNotConfigured(NotificationError):
    """The environment has no settings for this channel: the notification is skipped, not failed."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    sender: str
    default_recipients: tuple[str, ...]
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, notify) -> SmtpSettings:
        """From the job's NotifySettings; the password is read here, in the process that sends."""
        if not notify.smtp_host:
            raise ChannelNotConfigured("SMTP_HOST is not set")
        return cls(
            host=notify.smtp_host,
            port=notify.smtp_port,
            username=notify.smtp_username or None,
            password=resolve_secret("SMTP_PASSWORD", resource=notify.smtp_password_secret),
            sender=notify.email_from,
            default_recipients=tuple(notify.email_to),
            ca_file=notify.smtp_ca_file or None,
        )


def send_email(message: Message, recipients: list[str], smtp: SmtpSettings) -> None:
    to = list(recipients) or list(smtp.default_recipients)
    if not to:
        raise NotificationError("no email recipients (config recipients or NOTIFY_EMAIL_TO)")
    email = EmailMessage()
    email["Subject"], email["From"], email["To"] = message.subject, smtp.sender, ", ".join(to)
    email.set_content(message.text)
    context = ssl.create_default_context(cafile=smtp.ca_file)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=30) as client:
            client.ehlo()
            if not client.has_extn("starttls"):
                raise NotificationError(f"SMTP server {smtp.host} does not offer STARTTLS; refusing to send in clear")
            client.starttls(context=context)
            client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            client.send_message(email)
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise NotificationError(f"email via {smtp.host}:{smtp.port} failed: {type(exc).__name__}") from None


def send_slack(message: Message, webhook_secret: str = "", webhook_url: str | None = None) -> None:
    url = webhook_url or resolve_secret("SLACK_WEBHOOK_URL", resource=webhook_secret)
    if not url:
        raise ChannelNotConfigured("SLACK_WEBHOOK_URL is not set")
    session = requests.Session()
    retry = Retry(total=3, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504), allowed_methods={"POST"})
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    try:
        response = session.post(url, json={"text": f"*{message.subject}*\n{message.text}"}, timeout=15)
    except requests.RequestException as exc:  # the URL is a secret: never echo it
        raise NotificationError(f"Slack webhook failed: {type(exc).__name__}") from None
    finally:
        session.close()
    if response.status_code >= 300:
        raise NotificationError(f"Slack webhook answered HTTP {response.status_code}")
