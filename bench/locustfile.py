"""Locust users for the launcher benchmark; BENCH_CASE picks health, reject_401 or accept_202."""
from __future__ import annotations

import itertools
import json
import os
from datetime import date, timedelta

from locust import FastHttpUser, constant, task

CASE = os.environ.get("BENCH_CASE", "health")
ORG_KEYS = json.loads(os.environ.get("BENCH_ORG_KEYS", "{}"))
_combos = itertools.count()
_orgs = sorted(ORG_KEYS)
_pipelines = ("openai/cost/usage_cost", "anthropic/cost/usage_cost")
DAYS = 2000  # every request a new (org, pipeline, day): 48 x 2 x 2000 runs before one repeats (and gets 409)


def next_combo():
    n = next(_combos)
    org = _orgs[n % len(_orgs)]
    rest = n // len(_orgs)
    pipeline = _pipelines[rest % 2]
    day = date.today() - timedelta(days=1 + (rest // 2) % DAYS)
    return org, pipeline, day


class LauncherUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def call(self):
        if CASE == "health":
            self.client.get("/health", name="health")
        elif CASE == "reject_401":
            with self.client.post("/api/v1/pipelines/run/acme/openai/cost/usage_cost", name="reject_401",
                                  headers={"X-API-Key": "cvg_forged_key_value"}, catch_response=True) as r:
                r.success() if r.status_code == 401 else r.failure(f"expected 401, got {r.status_code}")
        else:
            org, pipeline, day = next_combo()
            with self.client.post(f"/api/v1/pipelines/run/{org}/{pipeline}", name="accept_202",
                                  headers={"X-API-Key": ORG_KEYS[org]}, json={"date": day.isoformat()},
                                  catch_response=True) as r:
                r.success() if r.status_code == 202 else r.failure(f"expected 202, got {r.status_code}")
