"""Where OPMAS's shipped files are, and where its data goes by default.

Shipped files (rules, schemas, mappings, SQL) are package resources, found with
``importlib.resources`` so that an installed wheel has them as a source checkout does."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource(package: str, *parts: str) -> Path:
    """A directory or file shipped inside ``package`` (installed as files, not zipped)."""
    return Path(str(files(package).joinpath(*parts)))


PACKAGE_DIR = resource("opmas")
RULES_DIR = PACKAGE_DIR / "rules"
SCHEMAS_DIR = PACKAGE_DIR / "schemas"
# A source checkout (src/ layout) keeps its data in the project's own data folder; an installed
# package keeps it in ./data of the directory it is started from.
_CHECKOUT = PACKAGE_DIR.parent.parent
SOURCE_CHECKOUT: Path | None = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else None
DEFAULT_DATA_DIR = (SOURCE_CHECKOUT or Path.cwd()) / "data"
