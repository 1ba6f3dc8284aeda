"""Flex Template metadata (``templates/metadata/<provider>_<domain>_<pipeline>.json``) from each config.

Generated, never hand-edited: ``make templates`` writes them, a test fails when a file no longer
matches its config, and each is parsed as Dataflow's own ``TemplateMetadata`` message. A
template's ``pipeline`` parameter accepts only its own pipeline.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.pipeline.template import PARAMETERS


def template_metadata(loaded: LoadedPipeline) -> dict:
    description = " ".join(loaded.config.description.split()) or loaded.config.name
    parameters = []
    for p in PARAMETERS:
        regex = f"^{re.escape(loaded.pipeline_id)}$" if p.name == "pipeline" else p.regex
        parameters.append({"name": p.name, "label": p.label, "helpText": p.help_text, "isOptional": p.optional,
                           "regexes": [regex]})
    return {"name": f"Convergence {loaded.config.name}", "description": f"{description} (pipeline {loaded.pipeline_id})",
            "streaming": False, "parameters": parameters}


def render(loaded: LoadedPipeline) -> str:
    return json.dumps(template_metadata(loaded), indent=2) + "\n"


def write_all(pipelines: dict[str, LoadedPipeline], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for loaded in pipelines.values():
        path = folder / f"{loaded.template_name}.json"
        path.write_text(render(loaded))
        written.append(path)
    return written
