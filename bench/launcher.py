"""Case `launcher`: requests/s and p50/p99 latency under 32 concurrent clients (Locust, headless).

Measured: a rejected request (401: key hashed and looked up, constant-time compare) and an accepted
one (202: every check, atomic reservation in the metastore, queued launch). Baseline: `GET /health`
through the same server and middleware, so the ratio is what the checks cost. The server's CPU time
per request of each case is read from /proc. Then the same app runs in this process, without
sockets, and each request's time is broken down by phase (:mod:`bench.launcher_phases`).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from beam_pipelines.dev.seed import seed_org
from beam_pipelines.settings import load_settings
from beam_pipelines.testing.emulators.process import free_port
from bench import launcher_phases

USERS = 32
SECONDS = 10
ORGS = 48


def _locust(url: str, case: str, env: dict, workdir: Path) -> dict:
    prefix = workdir / case
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")), "--headless",
         "-u", str(USERS), "-r", str(USERS), "-t", f"{SECONDS}s", "--host", url, "--csv", str(prefix),
         "--only-summary", "--loglevel", "ERROR"],
        env={**env, "BENCH_CASE": case}, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
    )
    with open(f"{prefix}_stats.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == case)
    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
            "requests_per_s": round(float(row["Requests/s"]), 1), "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"])}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux /proc), or None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _in_process(env: dict, keys: dict[str, str]) -> dict:
    """The phase breakdown, on the app the server ran (same settings and backend), called in this process."""
    from bench.launcher_server import QueueOnlyBackend
    from launcher.app import create_app
    from launcher.settings import LauncherSettings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        app = create_app(LauncherSettings.from_env(load_settings()), backend=QueueOnlyBackend())
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return launcher_phases.breakdown(app, keys)


def run(workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CONVERGENCE_HOME": str(workdir / "home"), "RATE_LIMIT_PER_KEY": "1000000/minute",
           "RATE_LIMIT_PER_IP": "1000000/minute", "AUTH_FAILURES_PER_IP": "1000000/minute",
           "DEFAULT_DAILY_QUOTA": "1000000"}
    os.environ["CONVERGENCE_HOME"] = env["CONVERGENCE_HOME"]
    print(f"[launcher] seeding {ORGS} orgs ...", flush=True)
    settings = load_settings()
    keys = {f"org_{i:03d}": seed_org(settings, f"org_{i:03d}")["api_key"] for i in range(ORGS)}
    env["BENCH_ORG_KEYS"] = json.dumps(keys)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.launcher_server", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/health", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("launcher did not start") from None
                time.sleep(0.2)
        results, server_cpu_us = {}, {}
        for case in ("health", "reject_401", "accept_202"):
            print(f"[launcher] {case}: {USERS} clients for {SECONDS}s ...", flush=True)
            cpu = _cpu_seconds(server.pid)
            results[case] = _locust(url, case, env, workdir)
            if cpu is not None and results[case]["requests"]:
                server_cpu_us[case] = round((_cpu_seconds(server.pid) - cpu) / results[case]["requests"] * 1e6, 1)
            print(f"[launcher] {case}: {results[case]}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    base = results["health"]["requests_per_s"]
    out = {"clients": USERS}
    for case in ("reject_401", "accept_202"):
        for metric, value in results[case].items():
            out[f"{case}_{metric}"] = value
    out["health_requests_per_s"] = base
    out["health_p99_ms"] = results["health"]["p99_ms"]
    out["ratio"] = round(results["accept_202"]["requests_per_s"] / base, 3) if base else None
    out["reject_401_ratio"] = round(results["reject_401"]["requests_per_s"] / base, 3) if base else None
    for case in ("reject_401", "accept_202"):
        rate, p99 = results[case]["requests_per_s"], results[case]["p99_ms"]
        print(f"[launcher] {case}: {rate} req/s beside /health {base} ({rate / base if base else 0:.3f}x),"
              f" p99 {p99} ms beside {results['health']['p99_ms']} ms", flush=True)
    out["server_cpu_us_per_request"] = server_cpu_us
    print("[launcher] phases: requests through the app in this process ...", flush=True)
    phases = _in_process(env, keys)
    print(launcher_phases.table(phases["per_request_us"], server_cpu_us), flush=True)
    print("[launcher] accept_202, own time by function (cProfile):\n  " + "\n  ".join(phases["accept_202_profile_tottime"]),
          flush=True)
    out.update(phases)
    return out
