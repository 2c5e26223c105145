"""Rule errors that point at file, line and rule."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem in a rule file: where it is and what is wrong."""

    file: str
    line: int | None
    rule_id: str | None
    message: str
    severity: str = "error"  # "error" refuses the rule; "warning" keeps it

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        rule = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{where}:{rule} {self.severity}: {self.message}"


class RuleLoadError(Exception):
    """Raised where a whole rule set is refused; carries every error found."""

    def __init__(self, errors: list[RuleError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
