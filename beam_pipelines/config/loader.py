"""Find, parse and validate pipeline configs.

Errors read ``file: field: problem`` so the one line printed by the CLI points straight at the
mistake. Lookups by name never build a filesystem path from user input: a reference is matched
against the set of discovered pipeline ids.
"""
from __future__ import annotations

import csv
from pathlib import Path

import yaml
from pydantic import ValidationError

from beam_pipelines.config.models import SEGMENT, LoadedPipeline, PipelineConfig
from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import ConfigError, NotFoundError
from beam_pipelines.registry import lookup

PIPELINE_GLOB = "*/*/*.yml"
RESERVED = {"config.yml"}  # a domain folder's own settings (gcp/bq_etl/config.yml), not a pipeline


def _loc(parts: tuple) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def format_validation_error(source: str, exc: ValidationError, prefix: str = "") -> str:
    problems = []
    for err in exc.errors():
        loc = _loc(tuple(err["loc"]))
        if prefix:
            loc = prefix + ("" if loc == "(root)" else "." + loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{source}: {loc}: {msg}")
    return "; ".join(problems)


def resolve_in(configs_dir: Path, relative: str, source: str, field: str) -> Path:
    """A file named by a config, which must stay inside the configs folder."""
    path = (configs_dir / relative).resolve()
    if not path.is_relative_to(configs_dir.resolve()):
        raise ConfigError(f"{source}: {field}: {relative!r} points outside the configs folder")
    if not path.is_file():
        raise ConfigError(f"{source}: {field}: file {relative!r} not found under {configs_dir}")
    return path


def _check_csv(path: Path, source: str, field: str) -> None:
    try:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: {field}: cannot read {path.name}: {exc}") from None
    if not header:
        raise ConfigError(f"{source}: {field}: {path.name} is empty")


def validate_steps(configs_dir: Path, source: str, config: PipelineConfig) -> dict:
    """Registry and file checks: known ps_type, valid options, referenced files present and valid.

    Returns each step's validated options (step_id → model), so nothing parses them again."""
    kinds = {}
    parsed = {}
    for index, step in enumerate(config.steps):
        where = f"steps[{index}]"
        entry = lookup(step.ps_type)
        if entry is None:
            raise ConfigError(f"{source}: {where}.ps_type: unknown ps_type {step.ps_type!r}")
        kinds[step.step_id] = entry.kind
        try:
            options = entry.options.model_validate(step.options)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(source, exc, f"{where}.options")) from None
        parsed[step.step_id] = options
        for t, table in enumerate(getattr(options, "tables", ())):  # seed tables name files too
            resolve_in(configs_dir, table.csv, source, f"{where}.options.tables[{t}].csv")
            schema = load_schema(resolve_in(configs_dir, table.schema_file, source,
                                            f"{where}.options.tables[{t}].schema_file"), table.schema_file)
            unknown = [k for k in table.key if k not in schema.names]
            if unknown:
                raise ConfigError(f"{source}: {where}.options.tables[{t}].key: {unknown} not in {table.schema_file}")
        if entry.kind == "extract" and step.input is not None:
            raise ConfigError(f"{source}: {where}.input: an extract step reads the org work items")
        if entry.kind == "notify" and step.input is not None:
            raise ConfigError(f"{source}: {where}.input: a notify step reads the run's outcome, not a step")
        if entry.kind not in ("extract", "notify") and step.input is None:
            raise ConfigError(f"{source}: {where}.input: a {entry.kind} step needs an input step")
        if step.input is not None and kinds.get(step.input) == "load":
            raise ConfigError(f"{source}: {where}.input: cannot read the output of load step")
        for field_name in ("schema_file", "staged_schema_file", "pricing_file", "suite", "config", "etl_config"):
            relative = getattr(options, field_name, None)
            if relative is None:
                continue
            path = resolve_in(configs_dir, relative, source, f"{where}.options.{field_name}")
            if field_name == "config":
                channel = (yaml.safe_load(path.read_text()) or {}).get("channel")
                expected = "email" if step.ps_type.endswith("email_notification") else "slack"
                if channel != expected:
                    raise ConfigError(f"{source}: {where}.options.config: {relative} is not a {expected} channel")
            elif field_name == "etl_config":
                from beam_pipelines.gcp.config import load_bq_etl_config

                etl = load_bq_etl_config(path, relative)
                if etl.trailing_days != config.trailing_days:
                    raise ConfigError(f"{source}: trailing_days: {config.trailing_days} differs from {relative}"
                                      f" trailing_days {etl.trailing_days}")
            elif field_name == "suite":
                from beam_pipelines.quality.suite import load_suite

                load_suite(path, relative)
            elif field_name == "schema_file":
                schema = load_schema(path, relative)
                names = set(schema.names)
                for col in (options.partition_field, *getattr(options, "cluster_by", ()), getattr(options, "scope_field", None),
                            getattr(options, "total_column", None)):
                    if col is None:
                        continue
                    if col not in names:
                        raise ConfigError(
                            f"{source}: {where}.options: column {col!r} is not in {relative}"
                        )
            else:
                _check_csv(path, source, f"{where}.options.{field_name}")
    if "extract" not in kinds.values():
        raise ConfigError(f"{source}: steps: a pipeline needs one extract step")
    loaded_tables = {o.table for sid, o in parsed.items() if kinds[sid] == "load"}
    for index, step in enumerate(config.steps):
        options = parsed[step.step_id]
        if getattr(options, "scope_value", None) is not None and not options.scope_field:
            raise ConfigError(f"{source}: steps[{index}].options.scope_value: needs scope_field")
        days_like = getattr(options, "days_like", None)
        if days_like is not None and (days_like not in loaded_tables or days_like == options.table):
            raise ConfigError(f"{source}: steps[{index}].options.days_like: {days_like!r} is not another table this"
                              f" pipeline loads")
        if days_like is not None and options.scope_field and options.scope_value is None:
            raise ConfigError(f"{source}: steps[{index}].options.days_like: a shared table also needs scope_value")
    return parsed


def load_pipeline_file(configs_dir: Path, path: Path) -> LoadedPipeline:
    configs_dir = configs_dir.resolve()
    rel = path.resolve().relative_to(configs_dir)
    source = str(rel)
    parts = rel.with_suffix("").parts
    if len(parts) != 3 or not all(SEGMENT.match(p) for p in parts):
        raise ConfigError(f"{source}: path must be {{provider}}/{{domain}}/{{pipeline}}.yml in snake_case")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"{source}: {line}invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: (root): must be a mapping of pipeline settings")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
    if (config.provider, config.domain) != parts[:2]:
        raise ConfigError(
            f"{source}: provider/domain: {config.provider}/{config.domain} does not match the path"
        )
    options = validate_steps(configs_dir, source, config)
    return LoadedPipeline(pipeline_id="/".join(parts), path=str(path), config=config, step_options=options)


def pipeline_files(configs_dir: Path) -> list[Path]:
    return sorted(p for p in Path(configs_dir).glob(PIPELINE_GLOB) if p.name not in RESERVED)


def discover_pipelines(configs_dir: Path) -> dict[str, LoadedPipeline]:
    """Every pipeline config under the folder, validated; the first invalid one raises."""
    pipelines = {}
    for path in pipeline_files(configs_dir):
        loaded = load_pipeline_file(configs_dir, path)
        pipelines[loaded.pipeline_id] = loaded
    return pipelines


def resolve_pipeline_ref(ref: str, known: list[str] | set[str]) -> str:
    """``provider/domain/pipeline`` or, when unique, ``provider/pipeline`` → the pipeline id."""
    parts = ref.strip("/").split("/")
    if not 2 <= len(parts) <= 3 or not all(SEGMENT.match(p) for p in parts):
        raise NotFoundError(f"pipeline {ref!r}: expected provider/domain/pipeline in [a-z0-9_]")
    if len(parts) == 3:
        if ref.strip("/") in known:
            return ref.strip("/")
        raise NotFoundError(f"pipeline {ref!r}: no such pipeline")
    provider, name = parts
    matches = [p for p in known if p.split("/")[0] == provider and p.split("/")[2] == name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(f"pipeline {ref!r}: no such pipeline")
    raise NotFoundError(f"pipeline {ref!r}: ambiguous, use one of {sorted(matches)}")


def load_pipeline(configs_dir: Path, ref: str) -> LoadedPipeline:
    known = {
        "/".join(p.resolve().relative_to(configs_dir.resolve()).with_suffix("").parts)
        for p in pipeline_files(configs_dir)
    }
    pipeline_id = resolve_pipeline_ref(ref, known)
    return load_pipeline_file(configs_dir, configs_dir / f"{pipeline_id}.yml")
