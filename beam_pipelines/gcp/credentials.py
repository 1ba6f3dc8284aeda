"""Google credentials for reading a customer's billing export, from the org's credential row.

- ``SERVICE_ACCOUNT_JSON``: the customer's service-account key (decrypted in the worker);
- ``WORKER_IDENTITY``: no key. The worker's own identity (Application Default Credentials: the
  Dataflow worker service account) reads the export the customer shared with it through
  ``roles/bigquery.dataViewer``; or, when ``metadata.impersonate_service_account`` names a customer
  service account that granted ours ``roles/iam.serviceAccountTokenCreator``, short-lived tokens of
  that account are minted through the IAM Credentials API and used instead.
"""
from __future__ import annotations

import json

from beam_pipelines.errors import CredentialError
from beam_pipelines.secrets.credentials import Credential

BIGQUERY_READONLY = "https://www.googleapis.com/auth/bigquery.readonly"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_LIFETIME_SECONDS = 3600


def service_account_info(secret: str) -> dict:
    try:
        info = json.loads(secret)
    except ValueError:
        raise CredentialError("gcp credential is not a service-account JSON key") from None
    if not isinstance(info, dict) or info.get("type") != "service_account" or not info.get("client_email"):
        raise CredentialError("gcp credential is not a service-account JSON key (type/client_email)")
    return info


def google_credentials(credential: Credential, scopes=(BIGQUERY_READONLY,),
                       iam_endpoint: str | None = None) -> tuple[object, str | None]:
    """(google.auth credentials, the project they belong to, if known).

    ``iam_endpoint`` overrides the IAM Credentials ``generateAccessToken`` URL (private endpoints)."""
    if credential.kind == "SERVICE_ACCOUNT_JSON":
        from google.oauth2 import service_account

        info = service_account_info(credential.secret or "")
        return service_account.Credentials.from_service_account_info(info, scopes=list(scopes)), info.get("project_id")
    if credential.kind == "WORKER_IDENTITY":
        import google.auth

        source, project = google.auth.default(scopes=[CLOUD_PLATFORM])
        target = (credential.metadata or {}).get("impersonate_service_account")
        if not target:
            return source, project
        from google.auth import impersonated_credentials

        return impersonated_credentials.Credentials(source_credentials=source, target_principal=target,
                                                    target_scopes=list(scopes), lifetime=TOKEN_LIFETIME_SECONDS,
                                                    iam_endpoint_override=iam_endpoint), project
    raise CredentialError(f"gcp credential type {credential.kind!r} cannot read a billing export")
