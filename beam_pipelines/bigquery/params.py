"""Query parameters typed from the tables' BigQuery JSON schemas (``configs/``), never guessed.

Batches of rows travel as one ``ARRAY<STRUCT<...>>`` parameter, so a stage of a run writes all its
rows with one ``MERGE ... USING UNNEST(@rows)`` instead of one statement per row.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

PARAM_TYPES = {"STRING": "STRING", "JSON": "JSON", "DATE": "DATE", "TIMESTAMP": "TIMESTAMP", "INTEGER": "INT64",
               "INT64": "INT64", "BOOLEAN": "BOOL", "BOOL": "BOOL", "FLOAT": "FLOAT64", "FLOAT64": "FLOAT64",
               "BYTES": "BYTES", "NUMERIC": "NUMERIC", "BIGNUMERIC": "BIGNUMERIC", "DATETIME": "DATETIME"}


def _value(kind: str, value):
    if kind == "JSON" and isinstance(value, str):  # the client serialises JSON parameters itself
        return json.loads(value)
    if kind == "BYTES" and value is not None:
        return bytes(value)
    return value


def scalar(name: str | None, bq_type: str, value):
    from google.cloud import bigquery

    kind = PARAM_TYPES[bq_type.upper()]
    return bigquery.ScalarQueryParameter(name, kind, _value(kind, value))


def array(name: str, bq_type: str, values: Iterable):
    from google.cloud import bigquery

    kind = PARAM_TYPES[bq_type.upper()]
    return bigquery.ArrayQueryParameter(name, kind, [_value(kind, v) for v in values])


def field(name: str | None, bq_type: str, value):
    """A scalar, or an array for a REPEATED column (its type written ``STRING[]``)."""
    if bq_type.endswith("[]"):
        return array(name, bq_type[:-2], value or [])
    return scalar(name, bq_type, value)


def struct_rows(name: str, rows: list[Mapping], types: Mapping[str, str]):
    """``ARRAY<STRUCT<col type, ...>>`` of ``rows``; every row carries every column of ``types``."""
    from google.cloud import bigquery

    structs = [bigquery.StructQueryParameter(None, *(field(col, kind, row.get(col)) for col, kind in types.items()))
               for row in rows]
    return bigquery.ArrayQueryParameter(name, "STRUCT", structs)
