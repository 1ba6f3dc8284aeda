"""The launcher for the benchmark: ``convergence serve`` as it runs (app, checks, JSON logs, uvicorn
options), with a backend that only queues.

Running real DirectRunner jobs while measuring would measure Beam, not the API, on a 2-core box;
runs are still reserved and recorded in the metastore exactly as in production.
"""
from __future__ import annotations

import argparse
import itertools

from beam_pipelines.metastore.base import lease_until
from beam_pipelines.settings import load_settings
from launcher.server import serve


class QueueOnlyBackend:
    name = "bench-queue"
    owner_id = "bench-queue"

    def __init__(self):
        self._ids = itertools.count(1)
        self.queued = []

    def start(self):
        pass

    def stop(self):
        pass

    def lease_until(self, now=None):
        return lease_until(now)

    def reconcile(self):
        return []

    def launch(self, spec):
        self.queued.append(spec)
        return f"queued-{next(self._ids)}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(load_settings(), "127.0.0.1", args.port, backend=QueueOnlyBackend())


if __name__ == "__main__":
    main()
