"""Parse one Sigma detection-rule document into condition trees, with errors located by line.

pySigma parses each detection item (field, modifiers, values) and the condition;
this module calls it item by item so that every error points at the line of the
item or condition it concerns. Values with ``|expand`` placeholders are resolved
here from the configured placeholder values.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, time
from functools import lru_cache
from typing import Any

import jsonschema
from sigma.conditions import SigmaCondition
from sigma.exceptions import (SigmaConditionError, SigmaError, SigmaModifierError, SigmaRegularExpressionError,
                              SigmaTypeError)
from sigma.modifiers import SigmaWideModifier, modifier_mapping
from sigma.policy import SigmaPolicy
from sigma.policy.regex_engine import RE2RegexEngine
from sigma.rule.detection import SigmaDetection, SigmaDetectionItem, SigmaDetections
from sigma.types import Placeholder, SigmaExpansion, SigmaRegularExpression, SigmaString

from opmas.core.errors import Code, RuleError
from opmas.core.sigma.regex import re2_compile
from opmas.core.sigma.schemacheck import check
from opmas.core.sigma.yamldoc import Doc, Path
from opmas.paths import SCHEMAS_DIR

# Sigma 1.1: in an |expand value, a backslash-escaped percent sign (`\%plain%name%`) is a literal "%", and
# `\\%name%` is a backslash before a placeholder. pySigma's SigmaString folds `\\` into `\` and then sees no
# escape, so an escaped percent stands in as a private-use character while pySigma parses the value.
_ESCAPED_PERCENT = "\uf8ff"
_ESCAPED_PERCENT_RAW = re.compile(r"(?<!\\)((?:\\\\)*)\\%")

# The Sigma modifiers appendix names ``utf16le`` (alias of ``wide``); pySigma 2.0 only knows ``wide``.
modifier_mapping.setdefault("utf16le", SigmaWideModifier)
_MODIFIER_NAMES: dict[str, str] = {}
for _name, _cls in modifier_mapping.items():
    _MODIFIER_NAMES.setdefault(_cls.__name__, _name)
_INCOMPATIBLE = re.compile(r"Modifier (\w+) incompatible to value type of '(.*)'", re.DOTALL)


class _QuietRE2(RE2RegexEngine):
    """pySigma's RE2 validation of |re values, without RE2 printing parse errors to stderr."""

    def compile(self, pattern: str, flags: int = 0) -> Any:
        return re2_compile(pattern, flags)


_POLICY = SigmaPolicy(regex_engine=_QuietRE2())


@dataclass(slots=True)
class ParsedRule:
    """A detection rule after parsing: its metadata and one condition tree per condition."""

    id: str
    title: str
    name: str | None
    level: str | None
    tags: list[str]
    description: str
    logsource: dict[str, str]
    source: str
    line: int
    conditions: list[Any]  # pySigma condition trees
    finding: dict[str, str] = field(default_factory=dict)
    tests: dict[str, list[Any]] = field(default_factory=dict)
    detection_line: int = 0


@lru_cache(maxsize=1)
def rule_schema_text() -> str:
    """The text of schemas/rule.schema.json."""
    return (SCHEMAS_DIR / "rule.schema.json").read_text()


@lru_cache(maxsize=1)
def rule_validator() -> jsonschema.Draft202012Validator:
    """The jsonschema validator of schemas/rule.schema.json."""
    return jsonschema.Draft202012Validator(json.loads(rule_schema_text()))


# A rule id every component can address (an API path segment, a file name in the rule store): the Sigma
# spec's UUID, or a slug (letters, digits, '.', '_', '-'; starting with a letter or digit, so neither '.'
# nor '..'), at most 128 characters.
RULE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def rule_id_problem(rule_id: str) -> str | None:
    """Why ``rule_id`` cannot be a rule's id, or None."""
    if RULE_ID_PATTERN.fullmatch(rule_id):
        return None
    shown = rule_id if len(rule_id) <= 60 else rule_id[:57] + "..."
    return (f"rule id {shown!r} cannot be addressed: use a UUID, or letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)")


def rule_id_of(data: Any) -> str | None:
    """The id a rule is known by: Sigma ``id``, else ``name``."""
    if not isinstance(data, dict):
        return None
    for key in ("id", "name"):
        if isinstance(data.get(key), (str, int)) and data.get(key) != "":
            return str(data[key])
    return None


def schema_errors(doc: Doc, source: str) -> list[RuleError]:
    """Every JSON Schema violation of the document, each at the line of the offending key."""
    rule_id = rule_id_of(doc.data)
    errors = []
    instance = _jsonable(doc.data)
    validator = rule_validator()
    found = [] if check(instance, validator.schema) else validator.iter_errors(instance)  # check: the quick way
    for error in sorted(found, key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        where = "/".join(str(p) for p in path) or "document"
        errors.append(RuleError(source, doc.line_of(path), rule_id, f"schema: {where}: {error.message}",
                                code=_SCHEMA_CODES.get(error.validator, Code.SCHEMA_VALUE)))
    for path, line in doc.duplicates:
        errors.append(RuleError(source, line, rule_id, f"duplicate key {'/'.join(map(str, path))}",
                                severity="warning", code=Code.YAML_DUPLICATE_KEY))
    return errors


# the code of a JSON Schema violation, by the schema keyword that failed (others: SCHEMA_VALUE)
_SCHEMA_CODES = {"required": Code.SCHEMA_REQUIRED, "type": Code.SCHEMA_TYPE, "enum": Code.SCHEMA_ENUM,
                 "additionalProperties": Code.SCHEMA_UNKNOWN_KEY}


def _jsonable(value: Any) -> Any:
    """YAML dates become strings so the schema sees JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class _Located(Exception):
    def __init__(self, line: int, message: str, code: Code):
        self.line = line
        self.code = code
        super().__init__(message)


class _DetectionParser:
    def __init__(self, doc: Doc, placeholders: dict[str, list[str]]):
        self.doc = doc
        self.placeholders = placeholders

    def detection(self, definition: Any, path: Path) -> SigmaDetection:
        """SigmaDetection.from_definition, item by item, errors located."""
        if isinstance(definition, dict):
            if not definition:
                raise _Located(self.doc.line_of(path), "search identifier is empty", Code.DETECTION_EMPTY_SEARCH)
            items: list[Any] = [self.item(key, value, (*path, key)) for key, value in definition.items()]
        elif isinstance(definition, list):
            if not definition:
                raise _Located(self.doc.line_of(path), "search identifier is empty", Code.DETECTION_EMPTY_SEARCH)
            if all(not isinstance(v, (dict, list)) for v in definition):
                items = [self.item(None, definition, path)]
            else:
                items = [self.detection(v, (*path, i)) for i, v in enumerate(definition)]
        else:
            items = [self.item(None, definition, path)]
        return SigmaDetection(detection_items=items)

    def item(self, key: Any, value: Any, path: Path) -> SigmaDetectionItem:
        line = self.doc.line_of(path)
        if key is not None and not isinstance(key, str):  # the document knows keys by their YAML text
            raise _Located(self.doc.line_of((*path[:-1], str(key))), f"field name {key!r} must be text (quote it)",
                           Code.DETECTION_FIELD_NAME)
        if isinstance(value, (dict, list)) and (isinstance(value, dict) or any(isinstance(v, (dict, list)) for v in value)):
            raise _Located(line, f"value of '{key}' must be a scalar or a list of scalars", Code.DETECTION_VALUE_TYPE)
        for index, scalar in enumerate(value if isinstance(value, list) else [value]):
            where = self.doc.line_of((*path, index)) if isinstance(value, list) else line
            if isinstance(scalar, (date, time)):
                raise _Located(where, f"value {scalar} of '{key}' is a YAML date or time: quote it to match it as text",
                               Code.DETECTION_VALUE_TYPE)
            if key is None and (scalar is None or isinstance(scalar, bool)):
                raise _Located(where, f"keyword {json.dumps(scalar)} is not supported: keywords are text or numbers",
                               Code.DETECTION_VALUE_TYPE)
        if key is not None and "expand" in key.split("|")[1:]:
            value = _escape_percents(value)
        try:
            item = SigmaDetectionItem.from_mapping(key, value, policy=_POLICY)
        except SigmaError as exc:
            raise _Located(line, _message(exc), _item_code(exc)) from None
        except Exception as exc:  # pySigma raises plain errors for some malformed values
            raise _Located(line, f"{key}: {exc}", Code.DETECTION_VALUE_INVALID) from None
        try:
            item.value = [v for value_ in item.value for v in self.expand(value_)]
        except KeyError as exc:
            raise _Located(line, f"placeholder %{exc.args[0]}% has no configured value "
                                 "(define it under placeholders: in a mapping file)",
                           Code.PLACEHOLDER_UNDEFINED) from None
        return item

    def expand(self, value: Any) -> list[Any]:
        _restore_percents(value.regexp if isinstance(value, SigmaRegularExpression) else value)
        if isinstance(value, (SigmaString, SigmaRegularExpression)) and value.contains_placeholder():
            def replace(placeholder: Placeholder) -> Any:
                return iter([SigmaString(v) for v in self.placeholders[placeholder.name]])
            values = value.replace_placeholders(replace)
            return [values[0]] if len(values) == 1 else [SigmaExpansion(values)]
        if isinstance(value, SigmaExpansion):
            value.values = [v for inner in value.values for v in self.expand(inner)]
        return [value]


def _escape_percents(value: Any) -> Any:
    """A raw |expand value (or list) with each escaped "%" replaced by its stand-in."""
    if isinstance(value, list):
        return [_escape_percents(v) for v in value]
    return _ESCAPED_PERCENT_RAW.sub(lambda m: m[1] + _ESCAPED_PERCENT, value) if isinstance(value, str) else value


def _restore_percents(value: Any) -> None:
    """The stand-ins of escaped percent signs in a parsed SigmaString become "%" again."""
    if isinstance(value, SigmaString):
        value.s = [p.replace(_ESCAPED_PERCENT, "%") if isinstance(p, str) else p for p in value.s]


def _item_code(exc: SigmaError) -> Code:
    """The code of pySigma's error about a detection item."""
    if isinstance(exc, SigmaRegularExpressionError):
        return Code.REGEX_INVALID
    if isinstance(exc, SigmaTypeError):  # (a SigmaModifierError): the value does not suit the modifier
        return Code.MODIFIER_VALUE_MISMATCH
    if isinstance(exc, SigmaModifierError):
        return Code.UNKNOWN_MODIFIER if str(exc.args[0] if exc.args else exc).startswith("Unknown modifier") \
            else Code.MODIFIER_INVALID
    return Code.DETECTION_VALUE_INVALID


_UNDEFINED = re.compile(r"Detection '.*' not defined in detections|Selector '.*' doesn't match any detection",
                        re.DOTALL)


def _condition_code(exc: Exception) -> Code:
    """The code of pySigma's (or pyparsing's) error about a condition."""
    if isinstance(exc, SigmaConditionError) and _UNDEFINED.match(str(exc.args[0] if exc.args else exc)):
        return Code.UNDEFINED_SEARCH
    return Code.CONDITION_SYNTAX


def _message(exc: SigmaError) -> str:
    """pySigma's message, with modifier class names replaced by the modifier names rules use."""
    text = str(exc.args[0] if exc.args else exc)
    found = _INCOMPATIBLE.fullmatch(text)
    if found and found[1] in _MODIFIER_NAMES:
        return f"modifier '{_MODIFIER_NAMES[found[1]]}' cannot be applied to the value '{found[2]}' (wrong value type)"
    return text


# Keys of a detection section that are not search identifiers: the condition, Sigma 1's
# ``timeframe`` (now a correlation attribute) and a filter's ``rules`` list.
NOT_IDENTIFIERS = frozenset({"condition", "timeframe", "rules"})


def parse_detection(doc: Doc, source: str, section: str, placeholders: dict[str, list[str]] | None = None
                    ) -> tuple[list[Any], list[RuleError]]:
    """Condition trees of a detection-like section (``detection``, a filter's ``filter``), or errors."""
    rule_id = rule_id_of(doc.data)
    errors: list[RuleError] = []
    parser = _DetectionParser(doc, placeholders or {})
    detection = doc.data[section]
    detections: dict[str, SigmaDetection] = {}
    for name, definition in detection.items():
        if name in NOT_IDENTIFIERS:
            continue
        try:
            detections[name] = parser.detection(definition, (section, name))
        except _Located as exc:
            errors.append(RuleError(source, exc.line, rule_id, f"{section} '{name}': {exc}", code=exc.code))
    conditions = detection["condition"]
    conditions = conditions if isinstance(conditions, list) else [conditions]
    if errors:
        return [], errors
    if not detections:
        return [], [RuleError(source, doc.line_of((section,)), rule_id, f"no search identifiers in {section}",
                              code=Code.DETECTION_NO_SEARCH)]
    trees: list[Any] = []
    sigma_detections = SigmaDetections(detections, conditions)
    for index, condition in enumerate(conditions):
        path = (section, "condition", index) if isinstance(detection["condition"], list) else (section, "condition")
        try:
            tree = SigmaCondition(condition, sigma_detections).parse()
        except SigmaError as exc:
            errors.append(RuleError(source, doc.line_of(path), rule_id, f"condition '{condition}': {_message(exc)}",
                                    code=_condition_code(exc)))
            continue
        except Exception as exc:  # pyparsing and other parse failures
            errors.append(RuleError(source, doc.line_of(path), rule_id, f"condition '{condition}': {exc}",
                                    code=Code.CONDITION_SYNTAX))
            continue
        if tree is None:
            errors.append(RuleError(source, doc.line_of(path), rule_id, f"condition '{condition}' is empty",
                                    code=Code.CONDITION_EMPTY))
        else:
            trees.append(tree)
    return trees, errors


def logsource_of(data: dict[str, Any]) -> dict[str, str]:
    """The (product, category, service) of a rule document, lower-cased."""
    return {k: str(v).lower() for k, v in (data.get("logsource") or {}).items()
            if k in ("product", "category", "service") and v is not None}


def parse_rule(doc: Doc, source: str, placeholders: dict[str, list[str]] | None = None
               ) -> tuple[ParsedRule | None, list[RuleError]]:
    """Parse a detection-rule document (already schema-checked); None plus errors if it is broken."""
    data = doc.data
    trees, errors = parse_detection(doc, source, "detection", placeholders)
    if errors:
        return None, errors
    rule = ParsedRule(
        id=rule_id_of(data) or _fallback_id(source, doc),
        title=data["title"],
        name=data.get("name"),
        level=data.get("level"),
        tags=[str(t) for t in data.get("tags") or []],
        description=str(data.get("description") or ""),
        logsource=logsource_of(data),
        source=source,
        line=doc.line,
        conditions=trees,
        finding=dict(data.get("finding") or {}),
        tests={k: list(v) for k, v in (data.get("tests") or {}).items()},
        detection_line=doc.line_of(("detection",)),
    )
    return rule, []


def _fallback_id(source: str, doc: Doc) -> str:
    return f"{source}:{doc.line}"

