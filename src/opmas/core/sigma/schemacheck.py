"""A quick answer to "does this JSON value satisfy this JSON Schema?" for a subset of draft 2020-12.

jsonschema takes about a millisecond per rule document, most of it bookkeeping for error
reports that a valid document never needs. :func:`check` interprets the schema keywords
rule.schema.json uses (type, enum, required, properties, additionalProperties, items,
minItems, minLength, maxLength, pattern, oneOf, if/then/else; annotations are ignored)
with jsonschema's semantics, and answers ``None`` for anything else (another keyword, an
enum of a non-string value...). Only where it answers True may jsonschema be skipped: it
would report nothing.
"""
from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from typing import Any

Result = bool | None  # True: valid, False: invalid, None: not known here

# keywords that never fail by themselves (annotations; "then" and "else" are read by "if")
_PASSIVE = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples", "then", "else"})
_TYPES: dict[str, Callable[[Any], bool]] = {  # as jsonschema's default type checker
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, numbers.Number) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def check(instance: Any, schema: Any) -> Result:
    """Whether ``instance`` satisfies ``schema`` (None: not known here)."""
    if isinstance(schema, bool):
        return schema
    result: Result = True
    for keyword, value in schema.items():
        if keyword in _PASSIVE:
            continue
        rule = _KEYWORDS.get(keyword)
        found = rule(instance, value, schema) if rule is not None else None
        if found is False:
            return False
        if found is None:
            result = None
    return result


def _all(results: Any) -> Result:
    """False if any result is False, else None if any is None, else True."""
    result: Result = True
    for found in results:
        if found is False:
            return False
        if found is None:
            result = None
    return result


def _type(instance: Any, types: Any, schema: Any) -> Result:
    names = types if isinstance(types, list) else [types]
    if any(name not in _TYPES for name in names):
        return None
    return any(_TYPES[name](instance) for name in names)


def _enum(instance: Any, values: Any, schema: Any) -> Result:
    if not isinstance(instance, str):  # jsonschema's equality of other values (1 vs True...) is its own
        return None
    return instance in values  # a string equals only an equal string


def _required(instance: Any, names: Any, schema: Any) -> Result:
    return not isinstance(instance, dict) or all(name in instance for name in names)


def _properties(instance: Any, properties: Any, schema: Any) -> Result:
    if not isinstance(instance, dict):
        return True
    return _all(check(instance[name], sub) for name, sub in properties.items() if name in instance)


def _additional_properties(instance: Any, sub: Any, schema: Any) -> Result:
    if not isinstance(instance, dict):
        return True
    if "patternProperties" in schema:
        return None
    known = schema.get("properties", {})
    return _all(check(value, sub) for name, value in instance.items() if name not in known)


def _items(instance: Any, sub: Any, schema: Any) -> Result:
    if "prefixItems" in schema:
        return None
    if not isinstance(instance, list):
        return True
    return _all(check(item, sub) for item in instance)


def _min_items(instance: Any, least: Any, schema: Any) -> Result:
    return not isinstance(instance, list) or len(instance) >= least


def _min_length(instance: Any, least: Any, schema: Any) -> Result:
    return not isinstance(instance, str) or len(instance) >= least


def _max_length(instance: Any, most: Any, schema: Any) -> Result:
    return not isinstance(instance, str) or len(instance) <= most


def _pattern(instance: Any, pattern: Any, schema: Any) -> Result:
    return not isinstance(instance, str) or re.search(pattern, instance) is not None


def _one_of(instance: Any, subs: Any, schema: Any) -> Result:
    results = [check(instance, sub) for sub in subs]
    if None in results:
        return None
    return results.count(True) == 1


def _if(instance: Any, condition: Any, schema: Any) -> Result:
    holds = check(instance, condition)
    if holds is None:
        return None
    return check(instance, schema.get("then" if holds else "else", True))


_KEYWORDS: dict[str, Callable[[Any, Any, Any], Result]] = {
    "type": _type, "enum": _enum, "required": _required, "properties": _properties,
    "additionalProperties": _additional_properties, "items": _items, "minItems": _min_items,
    "minLength": _min_length, "maxLength": _max_length, "pattern": _pattern, "oneOf": _one_of, "if": _if,
}
