"""``convergence dev seed-org``: a local org with an API key, a subscription and credentials.

Onboarding belongs to a sibling service in production; this exists so every case can be set up
locally, and refuses to run with ENVIRONMENT=production. Re-seeding an org rotates its API key
(the old one is revoked) and replaces its subscription and credentials.
"""
from __future__ import annotations

import re
from datetime import date

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.secrets import CipherSpec, credential_aad
from beam_pipelines.secrets.api_keys import generate_api_key, hash_api_key
from beam_pipelines.settings import Settings

SLUG = re.compile(r"^[a-z][a-z0-9_]{2,49}$")


def simulator_admin_key(provider: str, org_slug: str) -> str:
    """The default credential: a key the local simulator accepts, deterministic per org."""
    prefixes = {"openai": "sk-admin-sim-", "anthropic": "sk-ant-admin01-sim-"}
    return prefixes[provider] + org_slug


def seed_org(settings: Settings, org_slug: str, subscription: str = "ACTIVE",
             openai_admin_key: str | None = None, trial_ends: date | None = None,
             daily_quota: int | None = None, anthropic_admin_key: str | None = None) -> dict:
    if settings.is_production:
        raise ConvergenceError("dev seed-org is refused when ENVIRONMENT=production")
    if not SLUG.match(org_slug):
        raise ConvergenceError(f"org slug {org_slug!r}: use 3-50 characters of [a-z0-9_], starting with a letter")
    metastore = MetastoreSpec.from_settings(settings).open()
    cipher = CipherSpec.from_settings(settings).open()
    try:
        metastore.upsert_org(org_slug, company_name=org_slug.replace("_", " ").title())
        api_key = generate_api_key()
        metastore.add_api_key(org_slug, hash_api_key(api_key), revoke_others=True)
        metastore.set_subscription(org_slug, subscription, trial_ends_at=trial_ends)
        if daily_quota is not None:
            metastore.set_daily_quota(org_slug, daily_quota)
        credentials = {
            "openai": openai_admin_key or simulator_admin_key("openai", org_slug),
            "anthropic": anthropic_admin_key or simulator_admin_key("anthropic", org_slug),
        }
        for provider, secret in credentials.items():
            ciphertext = cipher.encrypt(secret.encode(), credential_aad(org_slug, provider))
            metastore.put_credential(org_slug, provider, "admin_api_key", ciphertext, cipher.name)
    finally:
        metastore.close()
    return {"org_slug": org_slug, "api_key": api_key}
