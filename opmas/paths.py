"""Where the project's shipped files live."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = PROJECT_ROOT / "rules"
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
SQL_DIR = SCHEMAS_DIR / "sql"
SAMPLES_DIR = PROJECT_ROOT / "samples"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
