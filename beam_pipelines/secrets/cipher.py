"""The cipher interface and the serialisable spec that names one.

Pipelines carry a :class:`CipherSpec` (a key file path or a KMS key *name*, never key material)
into the job graph; workers open the cipher from it in ``setup``.

Associated data: the local AES-GCM cipher binds each ciphertext to its org and provider, so a
ciphertext copied to another org's row does not decrypt. Cloud KMS ciphertexts are written by the
onboarding service, which encrypts without associated data; so KMS decryption uses none unless
``KMS_CREDENTIAL_AAD=org_provider`` says that onboarding binds them the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from beam_pipelines.errors import ConfigError


class Cipher(Protocol):
    name: str

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes: ...


def credential_aad(org_slug: str, provider: str) -> bytes:
    return f"convergence:credential:{org_slug}:{provider}".encode()


@dataclass(frozen=True)
class CipherSpec:
    kind: str  # "local" | "kms"
    key_path: str = ""
    kms_key_name: str = ""
    kms_aad: str = "none"  # none | org_provider

    def aad(self, org_slug: str, provider: str) -> bytes:
        """The associated data a credential of this org and provider is bound to."""
        if self.kind == "kms" and self.kms_aad == "none":
            return b""
        return credential_aad(org_slug, provider)

    @classmethod
    def from_settings(cls, settings) -> CipherSpec:
        if settings.cipher == "kms":
            if not settings.kms_key_name:
                raise ConfigError("KMS_KEY_NAME: required when CONVERGENCE_CIPHER=kms")
            return cls(kind="kms", kms_key_name=settings.kms_key_name, kms_aad=settings.kms_credential_aad)
        return cls(kind="local", key_path=str(settings.local_key_path))

    def open(self) -> Cipher:
        if self.kind == "kms":
            from beam_pipelines.secrets.kms import KmsCipher

            return KmsCipher(self.kms_key_name)
        from beam_pipelines.secrets.local import LocalAesGcmCipher

        return LocalAesGcmCipher(Path(self.key_path))
