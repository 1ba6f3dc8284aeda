"""The data tables an org's dataset holds, as the pipeline configs define them."""
from __future__ import annotations

from pathlib import Path

from beam_pipelines.config.schema import load_schema
from beam_pipelines.warehouse.base import TableSpec


def table_spec(configs_dir: Path, options) -> TableSpec:
    """The table a ``warehouse.load`` step writes (or ``warehouse.read`` reads), as its options describe it."""
    schema = load_schema(Path(configs_dir) / options.schema_file, options.schema_file)
    return TableSpec(options.table, schema, options.partition_field, tuple(getattr(options, "cluster_by", ())),
                     getattr(options, "scope_field", None))


def seed_spec(configs_dir: Path, table) -> TableSpec:
    """An unpartitioned table a seed step rebuilds whole (``SeedTable`` options)."""
    return TableSpec(table.table, load_schema(Path(configs_dir) / table.schema_file, table.schema_file), None)


def org_table_specs(configs_dir: Path, pipelines: dict) -> dict[str, TableSpec]:
    """Every table any pipeline writes into an org's dataset, by name (``convergence provision``)."""
    specs: dict[str, TableSpec] = {}
    for loaded in pipelines.values():
        for step in loaded.config.steps:
            options = loaded.options(step.step_id)
            if step.ps_type == "warehouse.load":
                specs.setdefault(options.table, table_spec(configs_dir, options))
            for table in getattr(options, "tables", ()):
                specs.setdefault(table.table, seed_spec(configs_dir, table))
    return dict(sorted(specs.items()))
