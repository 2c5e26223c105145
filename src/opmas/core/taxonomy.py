"""Known field names of common logsources (opmas/core/taxonomy.yml), to catch a rule field written with
the wrong case: Sigma field names are case-sensitive, so ``commandline`` never matches ``CommandLine``."""
from __future__ import annotations

from functools import cache

from opmas.core.sigma.yamldoc import load_yaml
from opmas.paths import resource

TAXONOMY = resource(__package__, "taxonomy.yml")


@cache
def _by_logsource() -> dict[tuple[tuple[str, str], ...], dict[str, str]]:
    """Logsource -> {lower-cased field name: field name}."""
    entries = load_yaml(TAXONOMY.read_text())
    return {tuple(sorted(entry["logsource"].items())): {name.lower(): name for name in entry["fields"]}
            for entry in entries}


def case_suggestion(logsource: dict[str, str], field: str) -> str | None:
    """The known field that ``field`` equals but for case, where the logsource's fields are known and
    ``field`` is not one of them; else None."""
    known = _by_logsource().get(tuple(sorted(logsource.items())))
    if known is None:
        return None
    name = known.get(field.lower())
    return None if name is None or name == field else name
