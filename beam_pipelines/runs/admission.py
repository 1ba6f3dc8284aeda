"""Whether an org may run a pipeline now: one rule for the launcher, the CLI and the workers.

An org runs only with an ACTIVE subscription, or a TRIAL whose last day is today or later (UTC).
The launcher asks before recording a run; the graph's first step asks again, inside the worker,
right before decrypting, so a job launched before a suspension does not fetch after it.
"""
from __future__ import annotations

from datetime import date

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.metastore.base import ELIGIBLE_SUBSCRIPTIONS


class RefusedError(ConvergenceError):
    """The org may not run now; ``code`` is the subscription state that refused it."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def subscription_refusal(subscription: dict | None, today: date) -> RefusedError | None:
    status = subscription["status"] if subscription else "NONE"
    if status not in ELIGIBLE_SUBSCRIPTIONS:
        return RefusedError(f"subscription status is {status}", status)
    ends = subscription.get("trial_end_date")
    if status == "TRIAL" and ends is not None and ends < today:
        return RefusedError(f"trial ended on {ends.isoformat()}", "TRIAL_EXPIRED")
    return None


def admit(metastore, org_slug: str, integration: str, today: date) -> dict | None:
    """The org's active credential row if it may run today; raises :class:`RefusedError` if not."""
    refusal = subscription_refusal(metastore.get_subscription(org_slug), today)
    if refusal is not None:
        raise RefusedError(f"refused: {refusal} (nothing fetched)", refusal.code)
    return metastore.get_credential(org_slug, integration)
