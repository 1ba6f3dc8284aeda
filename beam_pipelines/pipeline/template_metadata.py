"""Flex Template metadata (``templates/metadata/<provider>_<domain>_<pipeline>.json``) from each config.

Generated, never hand-edited: ``make templates`` writes them and a test fails when a file no
longer matches its config.
"""
from __future__ import annotations

import json
from pathlib import Path

from beam_pipelines.config.models import LoadedPipeline
from beam_pipelines.pipeline.template import PARAMETERS


def template_metadata(loaded: LoadedPipeline) -> dict:
    description = " ".join(loaded.config.description.split()) or loaded.config.name
    return {
        "name": f"Convergence {loaded.config.name}",
        "description": f"{description} (pipeline {loaded.pipeline_id})",
        "streaming": False,
        "parameters": [
            {"name": name, "label": label, "helpText": help_text, "isOptional": optional, "regexes": [regex]}
            for name, label, help_text, optional, regex in PARAMETERS
        ],
    }


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
