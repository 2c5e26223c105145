"""Logsource mappings: which events a rule applies to, and how Sigma field names address them.

A mapping is a YAML file (built-in ones in core/mappings/; users pass their own,
which take precedence). Format (checked against schemas/mapping.schema.json)::

    name: windows-evtx
    recognize:                 # an event uses the first mapping that recognises it
      exists: [Event.System]   #   dotted paths that must exist in the raw event
      equals: {a.b: value}     #   optional: paths with a required value
                               # (an empty ``recognize`` matches every event: a fallback)
    flatten: evtx              # evtx | dotted: how an event becomes a flat field dict
    lift: [winlog.event_data]  # dotted only: the keys of these objects also as top-level fields
    copy: {EventID: [winlog.event_id, event.code]}  # dotted only: a flat field under another name
                               #   (the first of the paths present), before `when:` and rules read it
    join: [event.exec.args]    # dotted only: lists at these flat paths read as one space-joined text
    spread: {EXECVE.ARGV: a}   # dotted only: a list's items also as numbered fields (a0, a1, ...)
    present: {type: [SYSCALL, EXECVE]}  # dotted only: a field listing which of these top-level keys
                               #   the event has (laurel's records grouped by type -> Sigma's `type`)
    product: windows           # product of every event of this mapping (optional)
    time: [TimeCreated_SystemTime]   # flat fields holding the event time, first present wins
                                     #   (as the event names them: logsource renames do not apply)
    keywords: "*"              # fields searched by Sigma keywords; "*" = every string value
    placeholders:              # values of |expand placeholders, e.g. %Admins% (a file may hold
      Admins: [admin, "adm_*"] #   only name and placeholders: it then describes no events)
    logsources:                # (product/category/service) -> the events that belong to it; or
                               #   the file name of a built-in mapping whose logsources these events share
      - category: process_creation
        when: {Channel: Security, EventID: 4688}   # field: value | [values] | "*" (present);
                                                   # a list of such maps is an OR
        fields: {Image: NewProcessName}            # Sigma field -> event field for these events

``flatten: evtx`` turns EVTX-JSON (``{"Event": {"System", "EventData"|"UserData"}}``,
XML attributes as ``@Name``/``#attributes``, ``Data`` lists of ``@Name``/``#text``)
into Sigma's Windows field names: EventData/UserData names, System elements by name
and System attributes as ``Element_Attribute`` (``Provider_Name``, ``Execution_ProcessID``).
``flatten: dotted`` turns nested objects into dotted paths (``process.executable``).

A rule's logsource applies to an event when one entry the event satisfies (or the
mapping's ``product``) has every key the rule's logsource names, with equal values.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from opmas.core.errors import Code
from opmas.core.event import parse_time
from opmas.core.sigma.yamldoc import YamlError, load_yaml
from opmas.paths import SCHEMAS_DIR, resource

BUILTIN_DIR = resource(__package__, "mappings")
MAX_SPREAD = 64  # list items a ``spread`` numbers (a command line's arguments a0..a63)
_MISSING = object()
# recognition order: Windows first (the most events), vendor shapes (each recognised by a few
# top-level keys), the generic ECS-like fallback last
BUILTIN_MAPPINGS = tuple(BUILTIN_DIR / f"{name}.yml" for name in (
    "windows", "winlogbeat", "azure", "m365", "okta", "gcp", "github", "kubernetes", "bitbucket", "opencanary",
    "macos", "fortigate", "auditd", "laurel", "zeek", "generic"))


class MappingError(ValueError):
    """A mapping file that cannot be used; ``code``: MAPPING_UNREADABLE or MAPPING_INVALID."""

    def __init__(self, file: str, message: str, code: Code = Code.MAPPING_INVALID):
        self.file = file
        self.code = code
        super().__init__(message)


# --- flatteners ------------------------------------------------------------------

def _evtx_value(value: Any) -> Any:
    if value.__class__ is dict:
        return value.get("#text")
    return value


def _evtx_container(container: Any, flat: dict[str, Any]) -> None:
    """EventData / a UserData child: plain name->value, or Data as @Name/#text items."""
    if container.__class__ is not dict:
        return
    for key, value in container.items():
        if key == "Data" and value.__class__ in (list, dict):
            for item in value if value.__class__ is list else (value,):
                if item.__class__ is dict:
                    attrs = item.get("#attributes")
                    if attrs.__class__ is not dict:
                        attrs = item
                    name = attrs.get("@Name") or attrs.get("Name")
                    if name.__class__ is str and name:
                        flat[name] = item.get("#text")
        elif key and key[0] not in "@#":
            flat[key] = _evtx_value(value)


def _event_of(data: dict[str, Any]) -> dict[str, Any]:
    event = data.get("Event")
    return event if event.__class__ is dict else {}


def flatten_evtx(data: dict[str, Any]) -> dict[str, Any]:
    """Sigma Windows field names for an EVTX-JSON event (EventData/UserData win over System)."""
    event = _event_of(data)
    flat: dict[str, Any] = {}
    system = event.get("System")
    if system.__class__ is dict:
        for key, value in system.items():
            if value.__class__ is dict:
                text = value.get("#text")
                if text is not None:
                    flat[key] = text
                attrs = value.get("#attributes")
                for attr, attr_value in (attrs if attrs.__class__ is dict else value).items():
                    if attr != "#text" and attr != "#attributes":
                        flat[f"{key}_{attr.lstrip('@')}"] = attr_value
            else:
                flat[key] = value
    event_data = event.get("EventData")
    if _plain_event_data(event_data):
        flat.update(event_data)
    else:
        _evtx_container(event_data, flat)
    user_data = event.get("UserData")
    if user_data.__class__ is dict:
        for child in user_data.values():
            _evtx_container(child, flat)
    return flat


def _plain_event_data(event_data: Any) -> bool:
    """EventData in the common converter layout (name -> value), no XML-style Data items."""
    return event_data.__class__ is dict and "Data" not in event_data and "#attributes" not in event_data


def evtx_parts(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What evtx plans read: (EventData, System) in the common layout, else (flatten_evtx(data), {})."""
    event = _event_of(data)
    event_data = event.get("EventData")
    system = event.get("System")
    if _plain_event_data(event_data) and not event.get("UserData") and system.__class__ is dict:
        return event_data, system
    return flatten_evtx(data), {}


def evtx_plan(names: tuple[str, ...]) -> Callable[[tuple[dict[str, Any], dict[str, Any]]], dict[str, Any]]:
    """A reader of ``{name: value}`` of flatten_evtx(data) for ``names`` only, from evtx_parts(data).

    A name is looked up in EventData first, then as a System element (its ``#text``), then as
    ``Element_Attribute`` (``Provider_Name``: ``@Name`` or ``Name`` of Provider or of its ``#attributes``).
    """
    steps = []
    for name in names:
        element, _, attr = name.partition("_")
        steps.append((name, element, "@" + attr if attr else None, attr))
    wanted = len(names)

    def read(parts: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        event_data, system = parts
        get = event_data.get
        out = {name: value for name in names if (value := get(name, _MISSING)) is not _MISSING}
        if len(out) == wanted:
            return out
        for name, element, at_attr, attr in steps:
            if name in out:
                continue
            value = system.get(name, _MISSING)
            if value is _MISSING:
                if at_attr is None:
                    continue
                value = system.get(element)
                if value.__class__ is not dict:
                    continue
                attrs = value.get("#attributes")
                if attrs.__class__ is dict:
                    value = attrs
                value = value.get(at_attr, _MISSING) if at_attr in value else value.get(attr, _MISSING)
                if value is _MISSING:
                    continue
            elif value.__class__ is dict:
                value = value.get("#text", _MISSING)
                if value is _MISSING:
                    continue
            out[name] = value
        return out
    return read


def flatten_dotted(data: dict[str, Any]) -> dict[str, Any]:
    """Nested objects as dotted paths; keys that already contain dots are kept as they are.

    An object is also kept under its own name (``a`` of ``{"a": {"b": 1}}`` exists; string
    tests never match an object). Objects inside lists are flattened too: ``a.b`` of ``{"a": [{"b": 1}, {"b": 2}]}`` is
    the list ``[1, 2]`` (a rule value matches if it matches any element).
    """
    flat: dict[str, Any] = {}
    _flatten_into(data, "", flat, False)
    return flat


def _flatten_into(node: dict[str, Any], prefix: str, flat: dict[str, Any], in_list: bool) -> None:
    for key, value in node.items():
        name = prefix + key
        if value.__class__ is dict and value:
            _flatten_into(value, name + ".", flat, in_list)
        elif value.__class__ is list:
            for item in value:
                if item.__class__ is dict:
                    _flatten_into(item, name + ".", flat, True)
        if in_list and name in flat:
            previous = flat[name]
            merged = previous if previous.__class__ is list else [previous]
            flat[name] = merged + (value if value.__class__ is list else [value])
        else:
            flat[name] = value


@dataclass(frozen=True, slots=True)
class Reshape:
    """What a dotted mapping does to a flattened event: ``lift`` objects' keys to the top, ``copy`` fields
    under Sigma names (first present path), ``join`` lists into one space-separated text, ``spread`` a
    list's items into numbered fields, ``present``: a field listing which of some top-level keys exist."""

    lift: tuple[str, ...] = ()
    copy: tuple[tuple[str, tuple[str, ...]], ...] = ()
    join: tuple[str, ...] = ()
    spread: tuple[tuple[str, str], ...] = ()
    present: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def around(self, flatten: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """``flatten`` followed by this reshaping."""
        lift, copy, join, spread, present = self.lift, self.copy, self.join, self.spread, self.present

        def flat(data: dict[str, Any]) -> dict[str, Any]:
            out = flatten(data)
            for name, keys in present:
                found = [key for key in keys if key in data]
                if found:
                    out[name] = found
            for path, prefix in spread:
                value = out.get(path)
                if value.__class__ is list:
                    for index, item in enumerate(value[:MAX_SPREAD]):
                        out.setdefault(f"{prefix}{index}", item)
            for path in lift:
                value = out.get(path)
                if value.__class__ is dict:
                    for key, item in value.items():
                        out.setdefault(key, item)
            for name, paths in copy:
                for path in paths:
                    value = out.get(path)
                    if value is not None:
                        out[name] = value
                        break
            for path in join:
                value = out.get(path)
                if value.__class__ is list:
                    out[path] = " ".join(map(str, value))
            return out
        return flat


FLATTENERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "evtx": flatten_evtx,
    "dotted": flatten_dotted,
}


@dataclass(frozen=True, slots=True)
class Selector:
    """A cheaper way to read only some fields of a flattener's output (same values as the full
    flatten): ``read = plan(names)`` once, then ``read(parts(data))`` per event, where one
    ``parts(data)`` serves every plan."""

    parts: Callable[[dict[str, Any]], Any]
    plan: Callable[[tuple[str, ...]], Callable[[Any], dict[str, Any]]]


SELECTORS: dict[str, Selector] = {
    "evtx": Selector(evtx_parts, evtx_plan),
}


# --- mapping model ---------------------------------------------------------------

def _get_path(data: Any, path: str, parts: tuple[str, ...] | None = None) -> Any:
    """Value at a dotted path (a key containing the dots wins), None if absent."""
    if data.__class__ is dict and path in data:
        return data[path]
    for part in parts or path.split("."):
        if data.__class__ is not dict:
            return None
        data = data.get(part)
        if data is None:
            return None
    return data


def disc_value(value: Any) -> str | None:
    """A field value as compared by ``when`` conditions: lower-case text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


@dataclass(frozen=True, slots=True)
class LogsourceEntry:
    """One logsource of a mapping: its (product, category, service) and the events that belong to it."""

    product: str | None = None
    category: str | None = None
    service: str | None = None
    when: tuple[tuple[tuple[str, frozenset[str] | None], ...], ...] = ()  # OR of ANDs; None = present
    fields: tuple[tuple[str, str], ...] = ()

    def satisfied(self, values: dict[str, str | None]) -> bool:
        """True where the discriminator values satisfy ``when`` (no ``when``: always)."""
        if not self.when:
            return True
        for conjunction in self.when:
            if all(values.get(f) is not None and (allowed is None or values[f] in allowed)
                   for f, allowed in conjunction):
                return True
        return False

    def covers(self, logsource: dict[str, str]) -> bool:
        """True where this entry names every key of ``logsource`` with the same value."""
        return all(getattr(self, key) == value for key, value in logsource.items())


@dataclass(slots=True)
class Mapping:
    """A loaded mapping (see the module docstring for the file format)."""

    name: str
    file: str
    flatten: Callable[[dict[str, Any]], dict[str, Any]]
    selector: Selector | None = None  # flatteners that can read some fields cheaply
    exists: tuple[str, ...] = ()
    equals: tuple[tuple[str, Any], ...] = ()
    product: str | None = None
    time_fields: tuple[str, ...] = ()
    keywords: tuple[str, ...] | None = None  # None: every string value
    placeholders: dict[str, list[str]] = field(default_factory=dict)
    entries: tuple[LogsourceEntry, ...] = ()
    discriminator_fields: tuple[str, ...] = ()
    placeholders_only: bool = False  # neither recognize nor logsources: only supplies placeholders
    _exists_parts: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        self._exists_parts = tuple((path, tuple(path.split("."))) for path in self.exists)

    def recognizes(self, data: dict[str, Any]) -> bool:
        """True where the raw event has this mapping's shape."""
        for path, parts in self._exists_parts:
            if _get_path(data, path, parts) is None:
                return False
        for path, value in self.equals:
            if disc_value(_get_path(data, path)) != value:
                return False
        return True

    def discriminator(self, flat: dict[str, Any]) -> tuple[str | None, ...]:
        """The values that decide which logsource entries an event satisfies."""
        return tuple(disc_value(flat.get(f)) for f in self.discriminator_fields)

    def entries_for(self, key: tuple[str | None, ...]) -> list[LogsourceEntry]:
        """Entries satisfied by an event with discriminator ``key`` (plus the product entry)."""
        values = dict(zip(self.discriminator_fields, key))
        found = [entry for entry in self.entries if entry.satisfied(values)]
        if self.product:
            found.append(LogsourceEntry(product=self.product))
        return found

    def covers(self, logsource: dict[str, str]) -> bool:
        """True where some event of this mapping can belong to ``logsource``."""
        return any(e.covers(logsource) for e in self.entries) or \
            (self.product is not None and LogsourceEntry(product=self.product).covers(logsource))

    def time_of(self, flat: dict[str, Any]) -> float | None:
        """Event time (epoch s) from the first time field present."""
        for name in self.time_fields:
            value = flat.get(name)
            if value is not None:
                parsed = parse_time(value)
                if parsed is not None:
                    return parsed
        return None

    def keyword_texts(self, flat: dict[str, Any]) -> list[str]:
        """The texts Sigma keywords search in this event."""
        if self.keywords is None:
            values = flat.values()
        else:
            values = [flat.get(name) for name in self.keywords]
        texts: list[str] = []
        for value in values:
            if value.__class__ is str:
                texts.append(value)
            elif value.__class__ is list:
                texts.extend(v for v in value if v.__class__ is str)
        return texts


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS_DIR / "mapping.schema.json").read_text()))


def _when(spec: Any) -> tuple[tuple[tuple[str, frozenset[str] | None], ...], ...]:
    conjunctions = spec if isinstance(spec, list) else [spec] if spec else []
    out = []
    for conjunction in conjunctions:
        terms = []
        for name, value in conjunction.items():
            if value == "*":
                terms.append((name, None))
            else:
                values = value if isinstance(value, list) else [value]
                terms.append((name, frozenset(disc_value(v) for v in values)))
        out.append(tuple(terms))
    return tuple(out)


def mapping_from_dict(data: Any, file: str) -> Mapping:
    """Build a Mapping from the parsed YAML of a mapping file; MappingError if invalid."""
    problems = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if problems:
        first = problems[0]
        where = "/".join(str(p) for p in first.absolute_path) or "document"
        raise MappingError(file, f"{where}: {first.message}")
    product = str(data["product"]).lower() if data.get("product") else None
    shared = data.get("logsources")
    entries = _shared_entries(shared, file) if isinstance(shared, str) else tuple(
        LogsourceEntry(
            product=str(e["product"]).lower() if e.get("product") else product,
            category=str(e["category"]).lower() if e.get("category") else None,
            service=str(e["service"]).lower() if e.get("service") else None,
            when=_when(e.get("when")),
            fields=tuple((str(k), str(v)) for k, v in (e.get("fields") or {}).items()),
        )
        for e in shared or []
    )
    disc: list[str] = []
    for entry in entries:
        for conjunction in entry.when:
            for name, _ in conjunction:
                if name not in disc:
                    disc.append(name)
    recognize = data.get("recognize") or {}
    keywords = data.get("keywords", "*")
    flatten, selector = FLATTENERS[data.get("flatten", "dotted")], SELECTORS.get(data.get("flatten", "dotted"))
    reshape = Reshape(
        lift=tuple(data.get("lift") or ()),
        copy=tuple((name, tuple(p if isinstance(p, list) else [p])) for name, p in (data.get("copy") or {}).items()),
        join=tuple(data.get("join") or ()),
        spread=tuple((str(k), str(v)) for k, v in (data.get("spread") or {}).items()),
        present=tuple((str(k), tuple(map(str, v))) for k, v in (data.get("present") or {}).items()))
    if reshape != Reshape():
        if selector is not None:
            raise MappingError(file, "lift, copy, join, spread and present are for flatten: dotted, "
                                     f"not {data['flatten']}")
        flatten = reshape.around(flatten)
    return Mapping(
        name=data["name"],
        file=file,
        flatten=flatten,
        selector=selector,
        exists=tuple(recognize.get("exists") or ()),
        equals=tuple((k, disc_value(v)) for k, v in (recognize.get("equals") or {}).items()),
        product=product,
        time_fields=tuple(data.get("time") or ()),
        keywords=None if keywords == "*" else tuple(keywords),
        placeholders={k: [str(v) for v in (vs if isinstance(vs, list) else [vs])]
                      for k, vs in (data.get("placeholders") or {}).items()},
        entries=entries,
        discriminator_fields=tuple(disc),
        placeholders_only="recognize" not in data and "logsources" not in data,
    )


def _shared_entries(name: str, file: str) -> tuple[LogsourceEntry, ...]:
    """The logsource entries of the built-in mapping file ``name`` (``logsources: windows.yml``)."""
    path = BUILTIN_DIR / name
    if path not in BUILTIN_MAPPINGS or path.resolve() == Path(file).resolve():
        raise MappingError(file, f"logsources: {name!r} is no other built-in mapping file")
    return load_mapping(path).entries


def load_mapping(path: str | Path) -> Mapping:
    """Load a mapping file; MappingError with the file name (and line) if it is unreadable or invalid.
    YAML aliases are refused (core/sigma/yamldoc.py: a few hundred bytes of them expand to gigabytes)."""
    try:
        data = load_yaml(Path(path).read_text())
    except OSError as exc:
        raise MappingError(str(path), f"cannot read mapping: {exc}", Code.MAPPING_UNREADABLE) from None
    except YamlError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise MappingError(str(path), f"cannot read mapping: {where}{exc}", Code.MAPPING_UNREADABLE) from None
    return mapping_from_dict(data, str(path))


@lru_cache(maxsize=1)
def builtin_mappings() -> tuple[Mapping, ...]:
    """The shipped mappings, in recognition order (BUILTIN_MAPPINGS)."""
    return tuple(load_mapping(p) for p in BUILTIN_MAPPINGS)
