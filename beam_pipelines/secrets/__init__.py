"""Encryption of org credentials. A decrypted secret lives only inside the worker that uses it."""
from beam_pipelines.secrets.cipher import Cipher, CipherSpec, credential_aad

__all__ = ["Cipher", "CipherSpec", "credential_aad"]
