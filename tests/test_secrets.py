"""Ciphers: local AES-GCM (key file, AAD binding) and Cloud KMS through a fake REST endpoint."""
from __future__ import annotations

import base64
import json
import multiprocessing
import stat

import google_crc32c
import pytest
from google.auth.credentials import AnonymousCredentials

from beam_pipelines.errors import CredentialError
from beam_pipelines.secrets import credential_aad
from beam_pipelines.secrets.api_keys import generate_api_key, hash_api_key, hashes_match
from beam_pipelines.secrets.kms import KmsCipher
from beam_pipelines.secrets.local import LocalAesGcmCipher
from tests.http_fakes import JsonHandler, serve

KEY_NAME = "projects/p1/locations/europe-west1/keyRings/convergence/cryptoKeys/credentials"


def test_local_roundtrip_and_key_file_mode(tmp_path):
    key_path = tmp_path / "keys" / "local.key"
    cipher = LocalAesGcmCipher(key_path)
    aad = credential_aad("acme", "openai")
    ciphertext = cipher.encrypt(b"sk-admin-secret", aad)
    assert b"sk-admin-secret" not in ciphertext
    assert LocalAesGcmCipher(key_path).decrypt(ciphertext, aad) == b"sk-admin-secret"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert cipher.encrypt(b"x", aad) != cipher.encrypt(b"x", aad), "fresh nonce each time"


def test_ciphertext_is_bound_to_org_and_provider(tmp_path):
    cipher = LocalAesGcmCipher(tmp_path / "k")
    ciphertext = cipher.encrypt(b"secret", credential_aad("acme", "openai"))
    with pytest.raises(CredentialError, match="does not decrypt"):
        cipher.decrypt(ciphertext, credential_aad("globex", "openai"))
    with pytest.raises(CredentialError, match="does not decrypt"):
        LocalAesGcmCipher(tmp_path / "other").decrypt(ciphertext, credential_aad("acme", "openai"))
    with pytest.raises(CredentialError, match="malformed"):
        cipher.decrypt(b"\x01short", credential_aad("acme", "openai"))


def test_group_readable_key_file_is_refused(tmp_path):
    path = tmp_path / "k"
    LocalAesGcmCipher(path)
    path.chmod(0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        LocalAesGcmCipher(path)


def _encrypt_in_child(path, queue):
    queue.put(LocalAesGcmCipher(path).encrypt(b"shared", b"aad"))


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    path = tmp_path / "race" / "k"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_encrypt_in_child, args=(str(path), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    ciphertexts = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    cipher = LocalAesGcmCipher(path)
    assert all(cipher.decrypt(c, b"aad") == b"shared" for c in ciphertexts)


def test_api_keys_are_hashed_and_compared_in_constant_time():
    key = generate_api_key()
    digest = hash_api_key(key)
    assert len(digest) == 64 and key not in digest
    assert hashes_match(digest, key)
    assert not hashes_match(digest, key + "x")


class FakeKms(JsonHandler):
    """Cloud KMS's REST surface (v1 encrypt/decrypt), reversible with a fixed XOR 'key'."""

    calls: list = []


    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = self.path.split("?")[0]
        FakeKms.calls.append((path, body))
        name, _, method = path.removeprefix("/v1/").partition(":")
        aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
        if method == "encrypt":
            data = base64.b64decode(body["plaintext"])
            out = bytes(b ^ 0x5A for b in data) + aad
            reply = {"name": name, "ciphertext": base64.b64encode(out).decode(),
                     "ciphertextCrc32c": str(google_crc32c.value(out)),
                     "verifiedPlaintextCrc32c": True, "verifiedAdditionalAuthenticatedDataCrc32c": True}
        else:
            data = base64.b64decode(body["ciphertext"])
            if not data.endswith(aad):
                self.send_json({"error": {"code": 400, "message": "Decryption failed", "status": "INVALID_ARGUMENT"}}, 400)
                return
            out = bytes(b ^ 0x5A for b in data[: len(data) - len(aad)])
            reply = {"plaintext": base64.b64encode(out).decode(), "plaintextCrc32c": str(google_crc32c.value(out))}
        self.send_json(reply)


@pytest.fixture
def kms_client():
    from google.cloud import kms

    FakeKms.calls = []
    with serve(FakeKms) as url:
        yield kms.KeyManagementServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                             client_options={"api_endpoint": url})


def test_kms_cipher_sends_key_name_aad_and_checksums(kms_client):
    cipher = KmsCipher(KEY_NAME, client=kms_client)
    aad = credential_aad("acme", "openai")
    ciphertext = cipher.encrypt(b"sk-admin-kms", aad)
    assert cipher.decrypt(ciphertext, aad) == b"sk-admin-kms"
    (enc_path, enc_body), (dec_path, dec_body) = FakeKms.calls
    assert enc_path == f"/v1/{KEY_NAME}:encrypt"
    assert base64.b64decode(enc_body["plaintext"]) == b"sk-admin-kms"
    assert base64.b64decode(enc_body["additionalAuthenticatedData"]) == aad
    assert int(enc_body["plaintextCrc32c"]) == google_crc32c.value(b"sk-admin-kms")
    assert dec_path == f"/v1/{KEY_NAME}:decrypt"
    assert int(dec_body["ciphertextCrc32c"]) == google_crc32c.value(ciphertext)


def test_kms_decrypt_failure_is_one_line_without_payload(kms_client):
    cipher = KmsCipher(KEY_NAME, client=kms_client)
    ciphertext = cipher.encrypt(b"sk-admin-kms", credential_aad("acme", "openai"))
    with pytest.raises(CredentialError) as exc:
        cipher.decrypt(ciphertext, credential_aad("globex", "openai"))
    assert str(exc.value) == "KMS decrypt failed: BadRequest"


def test_kms_key_name_is_validated():
    with pytest.raises(CredentialError, match="KMS_KEY_NAME"):
        KmsCipher("my-key", client=object())


def test_kms_credentials_written_by_onboarding_decrypt_without_associated_data(kms_client):
    """The onboarding service encrypts with KMS and no AAD: by default, so does our decryption."""
    from beam_pipelines.secrets import CipherSpec

    spec = CipherSpec(kind="kms", kms_key_name=KEY_NAME)
    assert spec.aad("acme", "openai") == b""
    assert CipherSpec(kind="kms", kms_key_name=KEY_NAME, kms_aad="org_provider").aad("acme", "openai") == \
        credential_aad("acme", "openai")
    assert CipherSpec(kind="local", key_path="k").aad("acme", "openai") == credential_aad("acme", "openai")
    cipher = KmsCipher(KEY_NAME, client=kms_client)
    ciphertext = cipher.encrypt(b"sk-admin-onboarded", spec.aad("acme", "openai"))
    assert cipher.decrypt(ciphertext, spec.aad("acme", "openai")) == b"sk-admin-onboarded"
    assert all("additionalAuthenticatedData" not in body for _, body in FakeKms.calls)
