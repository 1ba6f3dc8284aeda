"""The package's shape: every module imports alone; the SQL the BigQuery twin sends follows BigQuery's rules."""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from beam_pipelines.bigquery.sql import check_statement
from beam_pipelines.metastore.bigquery import BigQueryMetastore
from tests.conftest import CONFIGS

REPO = Path(__file__).resolve().parents[1]


def modules() -> list[str]:
    paths = sorted(REPO.glob("beam_pipelines/**/*.py")) + sorted(REPO.glob("launcher/**/*.py"))
    return [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in paths]


def test_every_module_imports_alone_in_a_fresh_interpreter():
    def fails(module: str):
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120,
                              cwd=REPO)
        return None if proc.returncode == 0 else (module, proc.stderr.strip().splitlines()[-1])

    with ThreadPoolExecutor(4) as pool:
        failures = [f for f in pool.map(fails, modules()) if f]
    assert len(modules()) > 60 and failures == []


def test_every_metastore_statement_follows_bigquerys_rules():
    class NoClient:
        def __getattr__(self, name):
            raise AssertionError("the catalog sends nothing")

    from beam_pipelines.bigquery.client import BigQueryRunner

    runner = BigQueryRunner.__new__(BigQueryRunner)
    runner.client = NoClient()
    statements = BigQueryMetastore("proj", CONFIGS, runner=runner).statement_catalog()
    assert len(statements) >= 20
    for _, sql, params in statements:
        check_statement(sql)
        assert "@" in sql or "SELECT" in sql, sql
    kinds = {kind for kind, _, _ in statements}
    assert {"SELECT", "MERGE", "INSERT", "UPDATE"} <= kinds
