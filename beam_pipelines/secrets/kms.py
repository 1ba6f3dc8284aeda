"""Cloud KMS cipher: symmetric encrypt/decrypt with a key *name*; the key never leaves KMS.

CRC32C checksums are sent and verified both ways, as Google recommends, so corruption in
transit is an error rather than a wrong credential.
"""
from __future__ import annotations

import google_crc32c

from beam_pipelines.errors import CredentialError


def _crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


class KmsCipher:
    name = "kms"

    def __init__(self, key_name: str, client=None):
        if not key_name.startswith("projects/") or "/cryptoKeys/" not in key_name:
            raise CredentialError(
                "KMS_KEY_NAME must look like projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )
        self.key_name = key_name
        if client is None:
            from google.cloud import kms

            client = kms.KeyManagementServiceClient()
        self._client = client

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        request = {"name": self.key_name, "plaintext": plaintext, "plaintext_crc32c": _crc(plaintext)}
        if aad:
            request.update(additional_authenticated_data=aad, additional_authenticated_data_crc32c=_crc(aad))
        response = self._client.encrypt(request=request)
        if not response.verified_plaintext_crc32c or (aad and not response.verified_additional_authenticated_data_crc32c):
            raise CredentialError("KMS encrypt: request corrupted in transit (CRC32C not verified)")
        if _crc(response.ciphertext) != int(response.ciphertext_crc32c):
            raise CredentialError("KMS encrypt: response corrupted in transit (CRC32C mismatch)")
        return bytes(response.ciphertext)

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            request = {"name": self.key_name, "ciphertext": ciphertext, "ciphertext_crc32c": _crc(ciphertext)}
            if aad:
                request.update(additional_authenticated_data=aad, additional_authenticated_data_crc32c=_crc(aad))
            response = self._client.decrypt(request=request)
        except Exception as exc:  # google.api_core exceptions: report the class, not the payload
            raise CredentialError(f"KMS decrypt failed: {type(exc).__name__}") from None
        if _crc(response.plaintext) != int(response.plaintext_crc32c):
            raise CredentialError("KMS decrypt: response corrupted in transit (CRC32C mismatch)")
        return bytes(response.plaintext)
