"""Finding text and ATT&CK metadata: ``{Field}`` templates and tags -> tactics/techniques."""
from __future__ import annotations

import re
from typing import Any

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")

TACTICS = frozenset({
    "reconnaissance", "resource_development", "initial_access", "execution", "persistence",
    "privilege_escalation", "defense_evasion", "credential_access", "discovery", "lateral_movement",
    "collection", "command_and_control", "exfiltration", "impact",
})


def field_value(name: str, flat: dict[str, Any], data: dict[str, Any]) -> Any:
    """An event field by Sigma name (``flat``, mapped names) or else by dotted path in ``data``."""
    if name in flat:
        return flat[name]
    node: Any = data
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def render_template(template: str, flat: dict[str, Any], data: dict[str, Any]) -> str:
    """Replace each ``{Name}`` by the event's field (Sigma name, else dotted path); missing -> ``-``."""
    def replace(match: re.Match[str]) -> str:
        value = field_value(match.group(1).strip(), flat, data)
        return "-" if value is None else str(value)
    return _PLACEHOLDER.sub(replace, template)


def attack_from_tags(tags: list[str]) -> dict[str, list[str]]:
    """MITRE ATT&CK tactics and technique ids (``T1059.001``) named by Sigma ``attack.*`` tags."""
    tactics: list[str] = []
    techniques: list[str] = []
    for tag in tags:
        namespace, _, name = tag.lower().partition(".")
        if namespace != "attack":
            continue
        if re.fullmatch(r"t\d{4}(\.\d{3})?", name):
            techniques.append(name.upper())
        elif name.replace("-", "_") in TACTICS:
            tactics.append(name.replace("-", "_"))
    return {"tactics": tactics, "techniques": techniques}
