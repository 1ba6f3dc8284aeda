"""A Cloud Storage emulator for tests: PyPI ``gcp-storage-emulator``, in memory, on a free loopback port.

google-cloud-storage reaches it through ``STORAGE_EMULATOR_HOST`` (anonymous credentials), so code
under test uses the real client library unchanged; Beam's ``gs://`` filesystem does not, which is why
staging cleanup is tested through the same client the code uses.
"""
from __future__ import annotations

from beam_pipelines.testing.emulators.process import free_port


class StorageEmulator:
    def __init__(self, default_bucket: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._default_bucket = default_bucket
        self._server = None

    def start(self) -> StorageEmulator:
        from gcp_storage_emulator.server import create_server

        self._server = create_server("127.0.0.1", self.port, in_memory=True, default_bucket=self._default_bucket)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> StorageEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
