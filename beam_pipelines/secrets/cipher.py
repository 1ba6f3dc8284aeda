"""The cipher interface and the serialisable spec that names one.

Pipelines carry a :class:`CipherSpec` (a key file path or a KMS key *name*, never key material)
into the job graph; workers open the cipher from it in ``setup``. Ciphertexts are bound to their
org and provider through AES-GCM / KMS associated data, so a ciphertext copied to another org's
row does not decrypt.
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

    @classmethod
    def from_settings(cls, settings) -> CipherSpec:
        if settings.cipher == "kms":
            if not settings.kms_key_name:
                raise ConfigError("KMS_KEY_NAME: required when CONVERGENCE_CIPHER=kms")
            return cls(kind="kms", kms_key_name=settings.kms_key_name)
        return cls(kind="local", key_path=str(settings.local_key_path))

    def open(self) -> Cipher:
        if self.kind == "kms":
            from beam_pipelines.secrets.kms import KmsCipher

            return KmsCipher(self.kms_key_name)
        from beam_pipelines.secrets.local import LocalAesGcmCipher

        return LocalAesGcmCipher(Path(self.key_path))
