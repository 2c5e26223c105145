"""Agent configuration: the JSON Schema both management (before pushing) and agents (before applying) check."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

from opmas.paths import SCHEMAS_DIR

SCHEMA_PATH = SCHEMAS_DIR / "agent_config.schema.json"


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def config_errors(config: Any) -> list[str]:
    """Human-readable problems of an agent configuration (empty when valid)."""
    errors = sorted(_validator().iter_errors(config), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
