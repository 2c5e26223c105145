"""The package's layers (docs/architecture.md): data flows source -> processor -> sinks, and a layer
imports only the layers below it. Read from the code's import statements, so a new upward import
fails here."""
from __future__ import annotations

import ast
from pathlib import Path

from opmas.paths import PACKAGE_DIR

# package -> the opmas packages it may not import
FORBIDDEN = {
    "core": ("connectors", "runtime", "api", "cli", "agents", "config"),
    "connectors": ("runtime", "api", "cli", "agents"),
    "runtime": ("api", "cli", "agents"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_layer_imports_one_above_it() -> None:
    upward = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE_DIR / layer).rglob("*.py")):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "opmas" and len(parts) > 1 and parts[1] in forbidden:
                    upward.append(f"{path.relative_to(PACKAGE_DIR)} imports {name}")
    assert not upward, "\n".join(upward)
    assert len(list((PACKAGE_DIR / "core").rglob("*.py"))) > 20  # the walk saw the code
