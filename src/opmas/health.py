"""What runs in this process and whether it is up: supervisors report, the API's /health reads."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass
class Component:
    """One supervised part: the engine, an embedded server."""

    up: bool
    since: float  # epoch seconds of the last change
    restarts: int = 0
    error: str | None = None


COMPONENTS: dict[str, Component] = {}


def report(name: str, up: bool, error: str | None = None) -> None:
    """Record that ``name`` is up, or down (with why); coming back up counts a restart."""
    current = COMPONENTS.get(name)
    if current is not None and current.up == up and current.error == error:
        return
    restarts = (current.restarts + (up and not current.up)) if current is not None else 0
    COMPONENTS[name] = Component(up, time.time(), restarts, error)


def snapshot() -> dict[str, dict]:
    return {name: asdict(c) for name, c in COMPONENTS.items()}
