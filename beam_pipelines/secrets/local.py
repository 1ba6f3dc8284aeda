"""Local AES-256-GCM cipher: the embedded default's stand-in for Cloud KMS.

The key file is created on first use with mode 0600. Creation is atomic (write a temp file, then
``os.link`` it into place, which fails if another process won the race), so concurrent first uses
agree on one key.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from beam_pipelines.errors import CredentialError

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32


def _load_or_create_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, AESGCM.generate_key(bit_length=KEY_BYTES * 8))
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first; use theirs
        finally:
            os.unlink(tmp)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise CredentialError(f"{path}: local key file is corrupt (expected {KEY_BYTES} bytes)")
    if path.stat().st_mode & 0o077:
        raise CredentialError(f"{path}: local key file must not be readable by group/others (chmod 600)")
    return key


class LocalAesGcmCipher:
    name = "local-aes-gcm"

    def __init__(self, key_path: Path):
        self._aead = AESGCM(_load_or_create_key(Path(key_path)))

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        if len(ciphertext) < 1 + NONCE_BYTES + 16 or ciphertext[:1] != FORMAT_VERSION:
            raise CredentialError("credential ciphertext is malformed")
        nonce, body = ciphertext[1 : 1 + NONCE_BYTES], ciphertext[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise CredentialError(
                "credential does not decrypt with this key (wrong key file, or ciphertext of another org)"
            ) from None
