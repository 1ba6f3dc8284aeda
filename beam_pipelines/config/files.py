"""Reading the JSON files a config names, with errors that name the file and the line."""
from __future__ import annotations

import json
from pathlib import Path

from beam_pipelines.errors import ConfigError


def read_json(path: Path, display: str, what: str) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{display}: {what} not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{display}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
