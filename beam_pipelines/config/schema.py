"""BigQuery JSON schema files: the one definition of every table's columns.

The same file creates the BigQuery table in production, the Arrow schema of the local warehouse
and the SQLite tables of the embedded metastore.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from beam_pipelines.config.files import read_json
from beam_pipelines.errors import ConfigError

BQ_TYPES = {
    "STRING", "BYTES", "INTEGER", "INT64", "FLOAT", "FLOAT64", "NUMERIC", "BIGNUMERIC",
    "BOOLEAN", "BOOL", "TIMESTAMP", "DATE", "TIME", "DATETIME", "JSON", "RECORD", "STRUCT",
}
MODES = {"NULLABLE", "REQUIRED", "REPEATED"}
ALLOWED_KEYS = {"name", "type", "mode", "description", "fields", "policyTags", "defaultValueExpression"}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    mode: str = "NULLABLE"
    description: str = ""
    fields: tuple[Field, ...] = ()

    @property
    def required(self) -> bool:
        return self.mode == "REQUIRED"

    def to_json(self) -> dict:
        out = {"name": self.name, "type": self.type, "mode": self.mode}
        if self.description:
            out["description"] = self.description
        if self.fields:
            out["fields"] = [f.to_json() for f in self.fields]
        return out


@dataclass(frozen=True)
class TableSchema:
    source: str
    fields: tuple[Field, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_json(self) -> list[dict]:
        return [f.to_json() for f in self.fields]

    def __getstate__(self) -> dict:
        """Only the fields: what a process derives and keeps on the schema (its Arrow schema) stays there."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def _parse_fields(raw: object, where: str, source: str) -> tuple[Field, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: {where}: must be a non-empty list of fields")
    seen: set[str] = set()
    fields = []
    for i, item in enumerate(raw):
        loc = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: {loc}: must be an object")
        unknown = set(item) - ALLOWED_KEYS
        if unknown:
            raise ConfigError(f"{source}: {loc}: unknown key(s) {sorted(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{source}: {loc}.name: must be an identifier, got {name!r}")
        if name.lower() in seen:
            raise ConfigError(f"{source}: {loc}.name: duplicate field {name!r}")
        seen.add(name.lower())
        ftype = str(item.get("type", "")).upper()
        if ftype not in BQ_TYPES:
            raise ConfigError(f"{source}: {loc}.type: unknown BigQuery type {item.get('type')!r}")
        mode = str(item.get("mode", "NULLABLE")).upper()
        if mode not in MODES:
            raise ConfigError(f"{source}: {loc}.mode: must be one of {sorted(MODES)}, got {mode!r}")
        children: tuple[Field, ...] = ()
        if ftype in ("RECORD", "STRUCT"):
            children = _parse_fields(item.get("fields"), f"{loc}.fields", source)
        elif "fields" in item:
            raise ConfigError(f"{source}: {loc}.fields: only RECORD fields have sub-fields")
        fields.append(Field(name, ftype, mode, str(item.get("description", "")), children))
    return tuple(fields)


def load_schema(path: Path, display: str | None = None) -> TableSchema:
    """Read and validate a BigQuery JSON schema file (a list of field objects)."""
    source = display or str(path)
    raw = read_json(path, source, "schema file")
    return TableSchema(source, _parse_fields(raw, "fields", source))
