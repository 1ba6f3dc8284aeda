"""Static rules for every SQL text this project sends to BigQuery.

The emulator forgives what BigQuery refuses, so each statement is checked before it is sent
(:class:`~beam_pipelines.bigquery.client.BigQueryRunner` calls :func:`check_statement` on every
run), and a test checks the whole catalog of statements:

- ``DECLARE`` only at the start of a script, before any other statement (BigQuery's procedural
  language: "variable declarations must appear at the start of a block or script");
- values only as query parameters: no quoted literals in the text;
- every table named after ``FROM``, ``JOIN``, ``INTO``, ``UPDATE``, ``MERGE`` or ``TABLE`` is a
  backquoted ``project.dataset.table`` (or ``UNNEST(...)``, or a subquery).
"""
from __future__ import annotations

import re

from beam_pipelines.errors import ConvergenceError

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_TABLE_KEYWORD = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|MERGE|TABLE)\s+(\S+)", re.I)
_QUALIFIED = re.compile(r"`[a-z][a-z0-9-]{0,62}\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_$]{1,1024}`")


class UnsafeSqlError(ConvergenceError):
    pass


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def check_statement(sql: str) -> None:
    text = _COMMENT.sub(" ", sql)
    literal = _LITERAL.search(text)
    if literal:
        raise UnsafeSqlError(f"SQL carries a literal {literal.group(0)[:40]!r}: pass values as query parameters")
    seen_other = False
    for statement in _statements(text):
        if re.match(r"DECLARE\b", statement, re.I):
            if seen_other:
                raise UnsafeSqlError("SQL script declares a variable after another statement:"
                                     " declarations must come first")
        else:
            seen_other = True
    for keyword, target in _TABLE_KEYWORD.findall(text):
        if target.startswith("(") or target.upper().startswith("UNNEST(") or target.upper() == "UNNEST":
            continue
        if (keyword.upper(), target.upper()) in (("TABLE", "IF"), ("UPDATE", "SET")):  # MERGE's UPDATE SET
            continue
        if not _QUALIFIED.match(target):
            raise UnsafeSqlError(f"SQL names table {target!r} after {keyword.upper()}: use a backquoted"
                                 " `project.dataset.table`")


def table_ref(project: str, dataset: str, table: str) -> str:
    """The backquoted name of a table, from validated parts only."""
    ref = f"`{project}.{dataset}.{table}`"
    if not _QUALIFIED.fullmatch(ref):
        raise UnsafeSqlError(f"invalid table name {project}.{dataset}.{table}")
    return ref
