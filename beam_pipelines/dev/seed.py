"""``convergence dev seed-org``: a local org with an API key, a subscription and credentials.

Onboarding belongs to a sibling service in production; this exists so every case can be set up
locally, and refuses to run with ENVIRONMENT=production. Re-seeding an org rotates its API key
(the old one is revoked) and replaces its subscription and credentials.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from beam_pipelines.errors import ConvergenceError
from beam_pipelines.gcp.sources import EXPORT_TABLE
from beam_pipelines.metastore import MetastoreSpec
from beam_pipelines.orgs import check_org_slug
from beam_pipelines.secrets import CipherSpec
from beam_pipelines.secrets.api_keys import generate_api_key, hash_api_key
from beam_pipelines.settings import Settings


def simulator_admin_key(provider: str, org_slug: str) -> str:
    """The default credential: a key the local simulator accepts, deterministic per org."""
    prefixes = {"openai": "sk-admin-sim-", "anthropic": "sk-ant-admin01-sim-"}
    return prefixes[provider] + org_slug


def placeholder_service_account(org_slug: str) -> dict:
    """A service-account-shaped credential for a local export; it signs nothing and reaches nothing."""
    return {"type": "service_account", "project_id": f"{org_slug.replace('_', '-')}-billing",
            "client_email": f"billing-reader@{org_slug.replace('_', '-')}-billing.iam.gserviceaccount.com",
            "private_key_id": "local-placeholder", "private_key": "local-placeholder"}


def gcp_export_metadata(export: str) -> dict:
    """A BigQuery export table id, or a local Parquet file/folder standing in for one."""
    if EXPORT_TABLE.match(export):
        return {"billing_export_table": export}
    path = Path(export).resolve()
    if not path.exists():
        raise ConvergenceError(f"--gcp-billing-export {export!r}: neither project.dataset.gcp_billing_export_v1_* nor an existing file")
    return {"billing_export_path": str(path)}


def seed_org(settings: Settings, org_slug: str, subscription: str = "ACTIVE",
             openai_admin_key: str | None = None, trial_ends: date | None = None,
             daily_quota: int | None = None, anthropic_admin_key: str | None = None,
             gcp_billing_export: str | None = None, gcp_service_account_key: str | None = None,
             gcp_worker_identity: bool = False, gcp_impersonate: str | None = None) -> dict:
    if settings.is_production:
        raise ConvergenceError("dev seed-org is refused when ENVIRONMENT=production")
    check_org_slug(org_slug)
    system = settings.system
    spec = CipherSpec.from_settings(settings)
    metastore = MetastoreSpec.from_settings(settings).open()
    cipher = spec.open()
    try:
        metastore.upsert_org(org_slug, company_name=org_slug.replace("_", " ").title())
        api_key = generate_api_key()
        metastore.add_api_key(org_slug, hash_api_key(api_key), revoke_others=True)
        metastore.set_subscription(org_slug, subscription, trial_end_date=trial_ends)
        if daily_quota is not None:
            metastore.set_daily_quota(org_slug, daily_quota)
        credentials = {
            "openai": openai_admin_key or simulator_admin_key("openai", org_slug),
            "anthropic": anthropic_admin_key or simulator_admin_key("anthropic", org_slug),
        }
        for provider, secret in credentials.items():
            ciphertext = cipher.encrypt(secret.encode(), spec.aad(org_slug, provider))
            metastore.put_credential(org_slug, system.integration(provider), "API_KEY", ciphertext)
        if gcp_billing_export:
            metadata = gcp_export_metadata(gcp_billing_export)
            if gcp_worker_identity:
                if gcp_impersonate:
                    metadata["impersonate_service_account"] = gcp_impersonate
                metastore.put_credential(org_slug, system.integration("gcp"), "WORKER_IDENTITY", b"", metadata)
            else:
                key = gcp_service_account_key or json.dumps(placeholder_service_account(org_slug))
                ciphertext = cipher.encrypt(key.encode(), spec.aad(org_slug, "gcp"))
                metastore.put_credential(org_slug, system.integration("gcp"), "SERVICE_ACCOUNT_JSON", ciphertext,
                                         metadata)
    finally:
        metastore.close()
    return {"org_slug": org_slug, "api_key": api_key}
