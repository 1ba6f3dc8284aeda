"""An org's credential for a provider, opened inside the worker that uses it.

The row comes from ``org_integration_credentials`` as the onboarding service wrote it
(``provider`` is the integration name of ``configs/system/providers.yml``). Kinds:

- ``API_KEY``: an admin key (OpenAI, Anthropic);
- ``SERVICE_ACCOUNT_JSON``: a Google service-account key (customer billing export);
- ``WORKER_IDENTITY``: no secret at all: the worker's own Google identity reads the customer's
  export (the customer granted it ``roles/bigquery.dataViewer``), optionally impersonating a
  customer service account named in ``metadata.impersonate_service_account`` that granted ours
  ``roles/iam.serviceAccountTokenCreator``.

The decrypted value is registered for redaction the moment it exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from beam_pipelines.errors import CredentialError
from beam_pipelines.secrets.redaction import remember

SECRET_KINDS = ("API_KEY", "SERVICE_ACCOUNT_JSON")
KINDS = (*SECRET_KINDS, "WORKER_IDENTITY")


@dataclass(frozen=True)
class Credential:
    kind: str
    secret: str | None = field(default=None, repr=False)
    metadata: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # never show the secret
        return f"Credential(kind={self.kind!r})"


def open_credential(row: dict | None, cipher, aad: bytes, org_slug: str, provider: str) -> Credential:
    if row is None:
        raise CredentialError(f"org {org_slug!r} has no active {provider} credential")
    kind = str(row.get("credential_type") or "").upper()
    metadata = row.get("metadata") or {}
    if kind == "WORKER_IDENTITY":
        return Credential(kind, None, metadata)
    if kind not in SECRET_KINDS:
        raise CredentialError(f"org {org_slug!r}: {provider} credential type {kind or '(none)'!r} is not one of {KINDS}")
    secret = cipher.decrypt(bytes(row["encrypted_credential"]), aad).decode()
    remember(secret)
    return Credential(kind, secret, metadata)
