"""Pipeline configs: strict pydantic models, YAML loading, schema files. No apache_beam here."""
from beam_pipelines.config.loader import discover_pipelines, load_pipeline, resolve_pipeline_ref
from beam_pipelines.config.models import PipelineConfig, StepConfig

__all__ = [
    "PipelineConfig",
    "StepConfig",
    "discover_pipelines",
    "load_pipeline",
    "resolve_pipeline_ref",
]
