"""Rule errors that point at file, line and rule, each with a stable machine-readable code.

Every problem the rule loader reports (an error refuses the rule, a warning keeps it) is a
:class:`RuleError` carrying a :class:`Code`: a short UPPER_SNAKE name that stays the same while
the message's wording may change, so API clients and CI can match on it. :data:`CODE_DOCS` says
what each code means (its group, usual severity and a one-line description);
:func:`codes_markdown` renders it as the table of docs/diagnostics.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum, auto
from typing import Any


class Code(StrEnum):
    """The code of a rule diagnostic; its value is its name. Documented in :data:`CODE_DOCS`."""

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[Any]) -> str:
        return name

    # YAML
    YAML_PARSE = auto()
    YAML_ALIAS = auto()
    YAML_DUPLICATE_KEY = auto()
    # schema
    SCHEMA_NOT_MAPPING = auto()
    SCHEMA_REQUIRED = auto()
    SCHEMA_TYPE = auto()
    SCHEMA_ENUM = auto()
    SCHEMA_UNKNOWN_KEY = auto()
    SCHEMA_VALUE = auto()
    # rule ids
    RULE_ID_INVALID = auto()
    DUPLICATE_RULE_ID = auto()
    # detection
    DETECTION_NO_SEARCH = auto()
    DETECTION_EMPTY_SEARCH = auto()
    DETECTION_FIELD_NAME = auto()
    DETECTION_VALUE_TYPE = auto()
    DETECTION_VALUE_INVALID = auto()
    DETECTION_UNSUPPORTED = auto()
    UNKNOWN_MODIFIER = auto()
    MODIFIER_INVALID = auto()
    MODIFIER_VALUE_MISMATCH = auto()
    PLACEHOLDER_UNDEFINED = auto()
    # condition
    CONDITION_SYNTAX = auto()
    CONDITION_EMPTY = auto()
    UNDEFINED_SEARCH = auto()
    # regular expressions
    REGEX_INVALID = auto()
    REGEX_UNSAFE = auto()
    # filters
    FILTER_UNKNOWN_RULE = auto()
    FILTER_LOGSOURCE_MISMATCH = auto()
    # correlations and suppression
    CORRELATION_UNSUPPORTED = auto()
    CORRELATION_MISSING_FIELD = auto()
    CORRELATION_UNKNOWN_KEY = auto()
    CORRELATION_TYPE = auto()
    CORRELATION_VALUE = auto()
    CORRELATION_TIMESPAN = auto()
    CORRELATION_CONDITION = auto()
    CORRELATION_UNKNOWN_RULE = auto()
    CORRELATION_AMBIGUOUS_REFERENCE = auto()
    CORRELATION_SELF_REFERENCE = auto()
    CORRELATION_REPEATED_RULE = auto()
    CORRELATION_DUPLICATE_NAME = auto()
    CORRELATION_ALIAS = auto()
    CORRELATION_CYCLE = auto()
    CORRELATION_REFUSED_INPUT = auto()
    SUPPRESS_INVALID = auto()
    # mappings and logsources
    MAPPING_UNREADABLE = auto()
    MAPPING_INVALID = auto()
    LOGSOURCE_NOT_COVERED = auto()
    FIELD_NAME_CASE = auto()
    # rule tests and the API's rule check
    RULE_TEST_FAILED = auto()
    RULE_CHECK_TIMEOUT = auto()
    RULE_CHECK_FAILED = auto()


@dataclass(frozen=True, slots=True)
class CodeDoc:
    """What a code means: its group, the severity it is reported with and a one-line description."""

    group: str
    severity: str  # "error" | "warning"
    description: str


def _error(group: str, description: str) -> CodeDoc:
    return CodeDoc(group, "error", description)


def _warning(group: str, description: str) -> CodeDoc:
    return CodeDoc(group, "warning", description)


_YAML, _SCHEMA, _ID = "YAML", "Schema", "Rule ids"
_DETECTION, _CONDITION, _REGEX = "Detection", "Condition", "Regular expressions"
_FILTER, _CORRELATION = "Filters", "Correlations and suppression"
_MAPPING, _TESTS = "Mappings, logsources and fields", "Rule tests"

CODE_DOCS: dict[Code, CodeDoc] = {
    Code.YAML_PARSE: _error(_YAML, "the text is not valid YAML (the documents before the bad one are kept)"),
    Code.YAML_ALIAS: _error(_YAML, "a YAML alias (`*name`, `<<: *name`): refused, aliases can expand without bound"),
    Code.YAML_DUPLICATE_KEY: _warning(_YAML, "a key appears twice in one mapping: the last one wins"),
    Code.SCHEMA_NOT_MAPPING: _error(_SCHEMA, "a rule document is not a mapping (a list or a scalar)"),
    Code.SCHEMA_REQUIRED: _error(_SCHEMA, "a required key is missing (title, logsource, detection, condition...)"),
    Code.SCHEMA_TYPE: _error(_SCHEMA, "a value has the wrong type (e.g. a list where text is expected)"),
    Code.SCHEMA_ENUM: _error(_SCHEMA, "a value is not one of the allowed ones (e.g. level, status)"),
    Code.SCHEMA_UNKNOWN_KEY: _error(_SCHEMA, "a key the schema does not allow in that section"),
    Code.SCHEMA_VALUE: _error(_SCHEMA, "a value breaks another schema constraint (pattern, length, count, form)"),
    Code.RULE_ID_INVALID: _error(_ID, "the rule id cannot be addressed: not a UUID nor a slug of letters, digits, "
                                      "'.', '_' and '-' of at most 128 characters"),
    Code.DUPLICATE_RULE_ID: _error(_ID, "another rule of the rule set already has this id (the first one is kept)"),
    Code.DETECTION_NO_SEARCH: _error(_DETECTION, "the detection (or filter) section has no search identifier"),
    Code.DETECTION_EMPTY_SEARCH: _error(_DETECTION, "a search identifier is an empty map or list"),
    Code.DETECTION_FIELD_NAME: _error(_DETECTION, "a field name is not text (e.g. a number: quote it)"),
    Code.DETECTION_VALUE_TYPE: _error(_DETECTION, "a value of a type a detection cannot hold (a nested map, an "
                                                  "unquoted date, a null or boolean keyword)"),
    Code.DETECTION_VALUE_INVALID: _error(_DETECTION, "a value pySigma refuses (e.g. a modifier combination that "
                                                     "does not apply to it)"),
    Code.DETECTION_UNSUPPORTED: _error(_DETECTION, "a detection construct or value type the engine cannot evaluate"),
    Code.UNKNOWN_MODIFIER: _error(_DETECTION, "a field modifier (`field|modifier`) Sigma does not define"),
    Code.MODIFIER_INVALID: _error(_DETECTION, "a modifier that cannot be used as written (another modifier error)"),
    Code.MODIFIER_VALUE_MISMATCH: _error(_DETECTION, "a modifier cannot be applied to the value (wrong value type, "
                                                     "or a malformed value such as an invalid CIDR)"),
    Code.PLACEHOLDER_UNDEFINED: _error(_DETECTION, "an `|expand` placeholder has no value in any mapping file"),
    Code.CONDITION_SYNTAX: _error(_CONDITION, "the condition cannot be parsed"),
    Code.CONDITION_EMPTY: _error(_CONDITION, "the condition is empty"),
    Code.UNDEFINED_SEARCH: _error(_CONDITION, "the condition names a search identifier (or a `1 of x*` pattern "
                                              "matches none) the detection does not define"),
    Code.REGEX_INVALID: _error(_REGEX, "a `|re` value is not a valid regular expression (RE2 or Python's re)"),
    Code.REGEX_UNSAFE: _error(_REGEX, "a `|re` value RE2 cannot run and that could backtrack without bound in "
                                      "Python's re"),
    Code.FILTER_UNKNOWN_RULE: _error(_FILTER, "a Sigma filter lists a rule the rule set does not have"),
    Code.FILTER_LOGSOURCE_MISMATCH: _warning(_FILTER, "a Sigma filter's logsource differs from a listed rule's: "
                                                      "not applied to it"),
    Code.CORRELATION_UNSUPPORTED: _error(_CORRELATION, "correlation rules are not supported by this build"),
    Code.CORRELATION_MISSING_FIELD: _error(_CORRELATION, "a correlation rule lacks its title, id (or name) or "
                                                         "timespan"),
    Code.CORRELATION_UNKNOWN_KEY: _error(_CORRELATION, "the correlation section has a key Sigma does not define"),
    Code.CORRELATION_TYPE: _error(_CORRELATION, "the correlation type is not event_count, value_count, temporal "
                                                "or temporal_ordered"),
    Code.CORRELATION_VALUE: _error(_CORRELATION, "a correlation value is malformed (the section, rules, group-by, "
                                                 "aliases, generate, level or finding)"),
    Code.CORRELATION_TIMESPAN: _error(_CORRELATION, "the timespan is not a positive count and unit such as '5m'"),
    Code.CORRELATION_CONDITION: _error(_CORRELATION, "the correlation condition is missing, malformed or can "
                                                     "never hold"),
    Code.CORRELATION_UNKNOWN_RULE: _error(_CORRELATION, "a correlation references a rule no rule of the set has "
                                                        "as id or name"),
    Code.CORRELATION_AMBIGUOUS_REFERENCE: _error(_CORRELATION, "a correlation references a name several rules "
                                                               "have"),
    Code.CORRELATION_SELF_REFERENCE: _error(_CORRELATION, "a correlation references itself"),
    Code.CORRELATION_REPEATED_RULE: _error(_CORRELATION, "a correlation references the same rule more than once"),
    Code.CORRELATION_DUPLICATE_NAME: _error(_CORRELATION, "a correlation has the name of an earlier rule"),
    Code.CORRELATION_ALIAS: _error(_CORRELATION, "an alias names a rule outside the correlation, or gives no "
                                                 "field for one of its rules"),
    Code.CORRELATION_CYCLE: _error(_CORRELATION, "correlations reference each other in a cycle"),
    Code.CORRELATION_REFUSED_INPUT: _error(_CORRELATION, "a correlation references a correlation that was refused"),
    Code.SUPPRESS_INVALID: _error(_CORRELATION, "a `suppress` section is malformed (needs `for`, a duration, and "
                                                "optional `by` fields)"),
    Code.MAPPING_UNREADABLE: _error(_MAPPING, "a logsource mapping file cannot be read (missing, or bad YAML)"),
    Code.MAPPING_INVALID: _error(_MAPPING, "a logsource mapping file is not a valid mapping"),
    Code.LOGSOURCE_NOT_COVERED: _warning(_MAPPING, "no mapping covers the rule's logsource: the rule never matches"),
    Code.FIELD_NAME_CASE: _warning(_MAPPING, "a field is known for the logsource only with another case (did you "
                                             "mean ...?): it never matches"),
    Code.RULE_TEST_FAILED: _error(_TESTS, "a `tests:` case of the rule did not give the expected outcome"),
    Code.RULE_CHECK_TIMEOUT: _error(_TESTS, "checking a rule (loading it and running its cases) did not finish in "
                                            "time and was stopped"),
    Code.RULE_CHECK_FAILED: _error(_TESTS, "the process checking a rule failed or ended"),
}


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem in a rule file: where it is, what is wrong, and its :class:`Code`."""

    file: str
    line: int | None
    rule_id: str | None
    message: str
    severity: str = "error"  # "error" refuses the rule; "warning" keeps it
    code: str = field(kw_only=True)  # a Code (raises ValueError for any other text)

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", Code(self.code))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        rule = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{where}:{rule} {self.severity}: {self.message} [{self.code}]"

    def to_dict(self) -> dict[str, Any]:
        """As JSON: file, line, rule_id, severity, code and message."""
        return {"file": self.file, "line": self.line, "rule_id": self.rule_id, "severity": self.severity,
                "code": str(self.code), "message": self.message}


_CODE_AT_END = re.compile(r" \[([A-Z][A-Z0-9_]*)\]\Z")


def code_in(text: str) -> str | None:
    """The code at the end of a diagnostic's str() form (as the engine's reload answer lists them), or None."""
    found = _CODE_AT_END.search(text)
    return found[1] if found and found[1] in Code.__members__ else None


def code_of(exc: BaseException, default: Code) -> Code:
    """The ``code`` an exception carries, else ``default``."""
    code = getattr(exc, "code", None)
    return Code(code) if isinstance(code, str) and code in Code.__members__ else default


def codes_markdown() -> str:
    """docs/diagnostics.md: every code with its group, severity and description, as markdown."""
    lines = ["# Rule diagnostic codes", "",
             "<!-- generated from opmas.core.errors.CODE_DOCS by opmas.core.errors.codes_markdown(); do not edit -->",
             "",
             "Every problem the rule loader reports (in `opmas rules validate`, the management API's 422 answers",
             "and the engine's logs) has a stable code besides its message: match on the code, not on the",
             "wording. An error refuses the rule; a warning keeps it.", ""]
    groups: dict[str, list[Code]] = {}
    for code in Code:
        groups.setdefault(CODE_DOCS[code].group, []).append(code)
    for group, codes in groups.items():
        lines += [f"## {group}", "", "| Code | Severity | Meaning |", "| --- | --- | --- |"]
        for code in codes:
            doc = CODE_DOCS[code]
            lines.append(f"| `{code}` | {doc.severity} | {doc.description.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)


class RuleLoadError(Exception):
    """Raised where a whole rule set is refused; carries every error found."""

    def __init__(self, errors: list[RuleError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


if __name__ == "__main__":  # python -m opmas.core.errors > docs/diagnostics.md
    print(codes_markdown(), end="")
