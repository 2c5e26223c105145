"""Input the API refuses before it reaches PostgreSQL, NATS or a log: NUL characters, numbers JSON
cannot hold (NaN, infinities), offsets beyond any table, rule ids no URL can address; and error
answers that quote their input only as a short excerpt.

- Request bodies are ``ApiModel``s: a NUL character in any string (or key), or a non-finite
  number, anywhere in the body is a 422 (``raw_fields`` lists fields whose strings may hold NUL,
  such as an event's ``data``, which the pipeline stores without them).
- ``refuse_nul``, a dependency of every route, answers 422 to a path or query parameter holding NUL.
- ``validation_errors`` is what a 422 lists: pydantic's errors with ``input``, ``msg``, ``ctx``
  and ``loc`` cut to an excerpt, so that a large or odd body is never echoed back.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

EXCERPT_CHARS = 100   # at most this much of an input is quoted back in an error
MESSAGE_CHARS = 300   # and of an error message
MAX_OFFSET = 1_000_000_000  # paging: rows to skip (PostgreSQL's bigint and ClickHouse's UInt64 hold it)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> Any:
    """``value`` if it is a short scalar JSON can hold, else at most ``limit`` characters of its text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) < 2 ** 53:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list, tuple)):
        try:
            text = orjson.dumps(value, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = repr(value)
    else:
        text = str(value)
    text = text.replace("\x00", "\\u0000")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a 422 lists for ``errors`` (pydantic's or FastAPI's): ``loc``, ``msg``, ``type`` and,
    cut to excerpts, ``input`` and ``ctx``."""
    out = []
    for error in errors[:50]:
        item = {"loc": [part if isinstance(part, int) else excerpt(str(part), 64) for part in error.get("loc", ())],
                "msg": excerpt(str(error.get("msg", "")), MESSAGE_CHARS),
                "type": str(error.get("type", "value_error"))}
        if "input" in error:
            item["input"] = excerpt(error["input"])
        if error.get("ctx"):
            item["ctx"] = {str(k): excerpt(v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                           for k, v in error["ctx"].items()}
        out.append(item)
    return out


_ISO_DATE = re.compile(r"\s*[+-]?\d{4,}-")


def _iso_only(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 time, e.g. 2026-01-31T12:00:00Z")
    return value


# A query parameter's time: ISO 8601 only (pydantic alone also reads a number as epoch seconds, which
# the OpenAPI's date-time format does not allow)
IsoTime = Annotated[datetime, BeforeValidator(_iso_only)]


def as_pipeline_reads(value: Any) -> Any:
    """``value`` with integers beyond 64 bits as floats, as the pipeline's JSON parser (orjson) reads
    them; ValueError for one beyond any float."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < (1 << 64):
        try:
            return float(value)
        except OverflowError:
            raise ValueError("an integer beyond the range of a 64-bit float") from None
    if isinstance(value, dict):
        return {key: as_pipeline_reads(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_pipeline_reads(item) for item in value]
    return value


def _unclean(value: Any, where: tuple, allow_nul: bool) -> Iterator[tuple[tuple, str]]:
    """Where ``value`` holds a NUL character or a non-finite number, and which."""
    if isinstance(value, str):
        if not allow_nul and "\x00" in value:
            yield where, "NUL characters are not allowed"
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield where, "numbers must be finite (no NaN or infinity)"
    elif isinstance(value, dict):
        for key, item in value.items():
            if not allow_nul and isinstance(key, str) and "\x00" in key:
                yield (*where, key), "NUL characters are not allowed in keys"
            yield from _unclean(item, (*where, key), allow_nul)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unclean(item, (*where, index), allow_nul)


class ApiModel(BaseModel):
    """A request body: no NUL character in any string and no NaN or infinity anywhere in it; values of
    the types the OpenAPI names (strict: ``false`` is no number, ``"1"`` no float)."""

    model_config = ConfigDict(strict=True)

    raw_fields: ClassVar[frozenset[str]] = frozenset()  # fields whose strings may hold NUL

    @field_validator("*", mode="before")
    @classmethod
    def _clean(cls, value: Any, info: ValidationInfo) -> Any:
        for where, problem in _unclean(value, (), info.field_name in cls.raw_fields):
            inside = ".".join(excerpt(str(part), 40) for part in where)
            raise ValueError(f"{problem} (at {inside})" if inside else problem)
        return value


def _query_names(dependant: Any) -> Iterator[str]:
    for param in getattr(dependant, "query_params", ()):
        yield param.alias
    for sub in getattr(dependant, "dependencies", ()):
        yield from _query_names(sub)


def _declared_query(route: Any) -> frozenset[str]:
    """The query parameters ``route`` reads (its own and its dependencies'), remembered on it."""
    names = getattr(route, "_opmas_query_names", None)
    if names is None:
        names = frozenset(_query_names(route.dependant))
        route._opmas_query_names = names
    return names


def _nul_errors(request: Request) -> Iterable[dict[str, Any]]:
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            yield {"loc": ("path", name), "msg": "NUL characters are not allowed", "type": "value_error",
                   "input": value}
    route = request.scope.get("route")
    declared = _declared_query(route) if route is not None and hasattr(route, "dependant") else None
    for name, value in request.query_params.multi_items():
        if (declared is None or name in declared) and "\x00" in value:
            yield {"loc": ("query", name), "msg": "NUL characters are not allowed", "type": "value_error",
                   "input": value}


async def refuse_nul(request: Request) -> None:
    """Dependency of every route: 422 for a path or (declared) query parameter holding NUL, which
    PostgreSQL text cannot hold."""
    errors = list(_nul_errors(request))
    if errors:
        raise RequestValidationError(errors)


NO_NUL_PATTERN = "^[^\\u0000]*$"  # JSON Schema (ECMA-262) for "no NUL character"
RAW = {"x-nul-allowed": True}  # json_schema_extra of a field whose strings may hold NUL (``raw_fields``)


def _document_no_nul(schema: Any, components: Mapping[str, Any], seen: set[str]) -> None:
    """Give every string of ``schema`` (and the components it refers to) that has no pattern, enum or
    format of its own the pattern that says it may not hold NUL, and every open object that pattern
    for its keys; skips what ``RAW`` marks."""
    if not isinstance(schema, dict) or schema.get("x-nul-allowed"):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name not in seen and name in components:
            seen.add(name)
            _document_no_nul(components[name], components, seen)
        return
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "string" in types and not {"pattern", "enum", "const", "format"} & schema.keys():
        schema["pattern"] = NO_NUL_PATTERN
    if "additionalProperties" in schema and schema["additionalProperties"] is not False:  # a free-form object
        schema.setdefault("propertyNames", {"pattern": NO_NUL_PATTERN})  # (a model's extra fields are ignored)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key, ()):
            _document_no_nul(sub, components, seen)
    for key in ("items", "additionalProperties"):
        _document_no_nul(schema.get(key), components, seen)
    for sub in schema.get("properties", {}).values():
        _document_no_nul(sub, components, seen)


def document_nul_refusal(openapi: dict[str, Any]) -> dict[str, Any]:
    """Say in ``openapi`` what ``refuse_nul`` and ``ApiModel`` refuse: NUL in the parameters and
    request bodies of every operation (response schemas are left as they are)."""
    components = openapi.get("components", {}).get("schemas", {})
    seen: set[str] = set()
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", ()):
                _document_no_nul(parameter.get("schema"), components, seen)
            for media in operation.get("requestBody", {}).get("content", {}).values():
                _document_no_nul(media.get("schema"), components, seen)
    return openapi
