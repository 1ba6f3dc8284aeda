"""Case `fleet`: 1,000 orgs × 1 day of OpenAI usage, the simulator answering every page after 50 ms.

Project: `convergence run openai/cost/usage_cost --all-orgs` on the FnApiRunner (admit, decrypt,
fetch, price, FOCUS, stage, one commit per org, run log), the simulator in its own process.
Baseline: the fetching alone, in a plain script: the same pages of every org through one session of
the same size (64 connections), nothing else, which is the floor a pipeline that only waits could reach. Every
org's totals are checked against the simulator's data. The job is spread over as many local worker
processes as it would be by default (one per core, ``CONVERGENCE_LOCAL_WORKERS`` caps them). Where the
time goes: a timeline of the run (when each step and the commits happened, from the run log), the
pipeline's CPU seconds per org (all its processes) beside the simulator's, and a profile of a smaller run
(100 orgs: one process). Orgs via ``BENCH_FLEET_ORGS`` (default 1,000).
"""
from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import requests

from beam_pipelines.testing.emulators.process import free_port

DAY = date(2026, 11, 20)
LATENCY = 0.05
POOL = 64


def _simulator(port: int, workdir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "beam_pipelines.cli.main", "simulate", "--port", str(port),
                             "--latency", str(LATENCY)], env={**os.environ, "CONVERGENCE_HOME": str(workdir / "sim")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
            return proc
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("simulator did not start")


def _baseline(base_url: str, keys: list[str]) -> float:
    from beam_pipelines.providers.http import RetryPolicy, provider_session
    from beam_pipelines.providers.openai import OpenAIUsageClient

    async def fetch_all() -> None:
        session = provider_session(base_url, POOL)
        try:
            async def fetch(key: str) -> int:
                client = OpenAIUsageClient(key, base_url, RetryPolicy(3, 0.5, 4, 30), session=session)
                return sum([len(b.results) async for page in client.iter_pages(client.completions_query(DAY, DAY))
                            for b in page.data])

            await asyncio.gather(*(fetch(key) for key in keys))
        finally:
            await session.close()

    started = time.perf_counter()
    asyncio.run(fetch_all())
    return time.perf_counter() - started


def _cpu() -> float:
    """CPU seconds of this process and of its joined children (the job's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds of a running process (the simulator), from /proc; 0 where there is none."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _profile(settings, orgs: list[str]) -> str:
    from beam_pipelines.pipeline.run import RunRequest, run_pipeline

    profile = cProfile.Profile()
    profile.enable()
    run_pipeline(settings, RunRequest("openai/cost/usage_cost", orgs=orgs, start_date=DAY, end_date=DAY))
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("cumulative")
    stats.print_stats(r"beam_pipelines/(transforms|pricing|focus|warehouse|metastore)/", 12)
    return out.getvalue()


def _timeline(steps: list[dict], runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Each step's first start and last end, and the commits' span, relative to the first fetch.

    A step's end is when its event was made; fused steps run inside one another, so the spans overlap
    and show when each kind of work happened rather than its exclusive cost (the profile shows that).
    """
    zero = min(s["started_at"] for s in steps)
    spans = {}
    for step in steps:
        first, last = spans.get(step["step_id"], (step["started_at"], step["ended_at"]))
        spans[step["step_id"]] = (min(first, step["started_at"]), max(last, step["ended_at"]))
    ended = [r["ended_at"] for r in runs]
    spans["commit (runs closed)"] = (min(ended), max(ended))
    return {name: (round((a - zero).total_seconds(), 2), round((b - zero).total_seconds(), 2))
            for name, (a, b) in sorted(spans.items(), key=lambda kv: kv[1])}


def run(workdir: Path, orgs: int | None = None) -> dict:
    orgs = orgs or int(os.environ.get("BENCH_FLEET_ORGS", "1000"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    sim = _simulator(port, workdir)
    os.environ.update(CONVERGENCE_HOME=str(workdir / "home"), OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    try:
        from beam_pipelines.dev.seed import seed_org
        from beam_pipelines.metastore import MetastoreSpec
        from beam_pipelines.pipeline.local_workers import worker_count
        from beam_pipelines.pipeline.run import LOCAL_RUNNER, RunRequest, run_pipeline
        from beam_pipelines.settings import load_settings
        from beam_pipelines.testing.simulator import openai_data
        from beam_pipelines.warehouse.local import LocalWarehouse

        settings = load_settings()
        slugs = [f"fleet{i:04d}" for i in range(orgs)]
        print(f"[fleet] seeding {orgs:,} orgs ...", flush=True)
        for slug in slugs:
            seed_org(settings, slug)
        print(f"[fleet] baseline: fetch every org's pages, {POOL} at once ...", flush=True)
        baseline = _baseline(settings.openai_base_url, [f"sk-admin-sim-{s}" for s in slugs])
        print(f"[fleet] pipeline: {orgs:,} orgs ...", flush=True)
        cpu, sim_cpu = _cpu(), _process_cpu(sim.pid)
        started = time.perf_counter()
        result = run_pipeline(settings, RunRequest("openai/cost/usage_cost", all_orgs=True, start_date=DAY, end_date=DAY))
        seconds = time.perf_counter() - started
        cpu_seconds, sim_cpu = _cpu() - cpu, _process_cpu(sim.pid) - sim_cpu
        workers = worker_count(settings, LOCAL_RUNNER, orgs)
        failed = [r["org_slug"] for r in result.runs if r["status"] != "COMPLETED"]
        warehouse = LocalWarehouse(settings.warehouse_dir)
        wrong = []
        for slug in slugs[:: max(1, orgs // 50)]:  # every org's totals would take as long as the run: 50 spread out
            expected = sum(r["output_tokens"] for r in openai_data.day_results(f"sk-admin-sim-{slug}", DAY))
            got = warehouse.query(f"SELECT SUM(output_tokens) FROM {slug}_dev.openai_cost_daily")[1][0][0]
            if got != expected:
                wrong.append(slug)
        store = MetastoreSpec.from_settings(settings).open()
        steps = [s for r in result.runs for s in store.list_steps(r["pipeline_logging_id"])]
        fetch_ms = [s["duration_ms"] for s in steps if s["step_id"] == "extract_usage"]
        timeline = _timeline(steps, [store.get_run(r["pipeline_logging_id"]) for r in result.runs])
        print("[fleet] where the time went (seconds after the first fetch started):", flush=True)
        for name, (first, last) in timeline.items():
            print(f"[fleet]   {name:20s} {first:7.2f} .. {last:7.2f}", flush=True)
        print("[fleet] profile of 100 more orgs (cumulative seconds per step function):", flush=True)
        extra = [f"prof{i:03d}" for i in range(100)]
        for slug in extra:
            seed_org(settings, slug)
        print(_profile(settings, extra), flush=True)
    finally:
        sim.terminate()
    out = {
        "orgs": orgs, "seconds": round(seconds, 2), "orgs_per_s": round(orgs / seconds, 1),
        "fetch_p50_ms": round(float(np.percentile(fetch_ms, 50)), 1), "fetch_p99_ms": round(float(np.percentile(fetch_ms, 99)), 1),
        "baseline_fetch_seconds": round(baseline, 2), "ratio_to_fetch_floor": round(seconds / baseline, 2),
        "goal_seconds": 10, "failed_orgs": len(failed), "orgs_with_wrong_totals": len(wrong),
        "processes": workers, "cpu_seconds": round(cpu_seconds, 2), "cpu_ms_per_org": round(cpu_seconds / orgs * 1000, 1),
        "simulator_cpu_seconds": round(sim_cpu, 2),
        "fetch_done_s": timeline["extract_usage"][1], "last_commit_s": timeline["commit (runs closed)"][1],
    }
    print(f"[fleet] {out}", flush=True)
    return out
