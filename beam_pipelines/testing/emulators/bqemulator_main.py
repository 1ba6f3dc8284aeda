"""Start PyPI ``bqemulator`` on loopback, offline. Runs inside the emulator's own virtualenv.

Standalone on purpose (it imports nothing of this project): ``.venv-bqemulator`` holds only the
emulator. Four facts of bqemulator 1.4.0 are handled here, at start-up, and nowhere else:

- its engine runs DuckDB ``INSTALL spatial`` at start, which downloads and fails offline: a failure
  now only disables GEOGRAPHY;
- google-cloud-bigquery sends small multipart uploads (``load_table_from_file`` under 5 MiB) with
  media type ``*/*``, which its upload route rejects with 400: it is allowed;
- BYTES query parameters arrive base64-encoded, as the REST API defines them, and it stored the
  base64 text itself: they are decoded to their bytes;
- its scripting interpreter drops a job's query parameters, which BigQuery binds in scripts too
  (``DECLARE days ARRAY<DATE> DEFAULT @days``): a script's scalar and array parameters of the
  types this project sends are declared as script variables first;
- its DuckDB pin is 1.5.6 (see bqemulator-requirements.txt).

Usage: python bqemulator_main.py PORT [PROJECT]
"""
from __future__ import annotations

import logging
import sys


def _patch() -> None:
    import base64

    from bqemulator.api.routes import upload
    from bqemulator.sql import parameters
    from bqemulator.storage import engine

    parameters._SCALAR_CONVERTERS["BYTES"] = lambda raw: base64.b64decode(str(raw))

    def load_spatial_if_present(self) -> None:
        try:
            self._connection.execute("LOAD spatial")
        except Exception:  # noqa: BLE001 - offline: GEOGRAPHY is simply unavailable
            logging.getLogger("bqemulator_main").info("spatial extension unavailable: GEOGRAPHY disabled")

    engine.DuckDBEngine._load_spatial = load_spatial_if_present
    if "*/*" not in upload._PERMITTED_MEDIA_CONTENT_TYPES:
        upload._PERMITTED_MEDIA_CONTENT_TYPES = (*upload._PERMITTED_MEDIA_CONTENT_TYPES, "*/*")


SCRIPT_PARAM_TYPES = {"DATE": "DATE", "STRING": "STRING", "INT64": "INT64", "TIMESTAMP": "TIMESTAMP"}


def _literal(kind: str, value) -> str:
    if value is None:
        return f"CAST(NULL AS {kind})"
    if kind == "INT64":
        return str(int(value))
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'" if kind == "STRING" else f"{kind} '{text}'"


def script_with_params(sql: str, params: list[dict]) -> str:
    """Bind a script's query parameters the way BigQuery does: each ``@name`` becomes a variable."""
    import re

    declarations = []
    for param in params:
        name, ptype, pvalue = param["name"], param["parameterType"], param.get("parameterValue") or {}
        if ptype["type"] == "ARRAY":
            kind = SCRIPT_PARAM_TYPES[ptype["arrayType"]["type"]]
            items = ", ".join(_literal(kind, v.get("value")) for v in pvalue.get("arrayValues") or [])
            declarations.append(f"DECLARE __param_{name} ARRAY<{kind}> DEFAULT ARRAY<{kind}>[{items}]")
        else:
            kind = SCRIPT_PARAM_TYPES[ptype["type"]]
            declarations.append(f"DECLARE __param_{name} {kind} DEFAULT {_literal(kind, pvalue.get('value'))}")
        sql = re.sub(rf"@{re.escape(name)}\b", f"__param_{name}", sql)
    return ";\n".join([*declarations, sql]) if declarations else sql


def _patch_script_params() -> None:
    from bqemulator.jobs import executor

    original = executor._run_query_body

    async def run_query_body(*, project_id, bq_sql, query_params, ctx, is_scripted, effective_caller):
        if is_scripted and query_params:
            bq_sql, query_params = script_with_params(bq_sql, query_params), None
        return await original(project_id=project_id, bq_sql=bq_sql, query_params=query_params, ctx=ctx,
                              is_scripted=is_scripted, effective_caller=effective_caller)

    executor._run_query_body = run_query_body


def main(argv: list[str]) -> None:
    port = int(argv[1])
    project = argv[2] if len(argv) > 2 else "convergence-local"
    _patch()
    _patch_script_params()
    from bqemulator.config import LogLevel, PersistenceMode, Settings
    from bqemulator.server import run_forever

    run_forever(Settings(rest_host="127.0.0.1", rest_port=port, grpc_host="127.0.0.1", grpc_port=0,
                         persistence_mode=PersistenceMode.EPHEMERAL, default_project_id=project,
                         log_level=LogLevel.WARNING))


if __name__ == "__main__":
    main(sys.argv)
