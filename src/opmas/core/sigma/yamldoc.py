"""YAML documents with the line of every key and list item, and Sigma multi-document actions.

YAML aliases (``*name``, merge keys ``<<: *name`` included) are refused with the line they are on,
in rule files as in mapping and configuration files (:func:`load_yaml`): a few hundred bytes of
nested aliases (a "billion laughs") expand to billions of nodes for anything that walks the data.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from opmas.core.errors import Code

Path = tuple[str | int, ...]
_STR_TAG = "tag:yaml.org,2002:str"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # libyaml when available
    """yaml's safe loader (libyaml's parser when available: same nodes and marks, faster), building
    strings, most of a rule's values, without the generic per-node bookkeeping: the same values."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node.__class__ is yaml.ScalarNode and node.tag == _STR_TAG:
            return node.value
        return super().construct_object(node, deep)


@dataclass(slots=True)
class Doc:
    """One rule document: plain data, the line of each path in it, and where it starts."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    line: int = 1
    duplicates: list[tuple[Path, int]] = field(default_factory=list)

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor the document knows."""
        while path:
            found = self.lines.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.line


class YamlError(Exception):
    """Bad YAML, with the line it was found on and its diagnostic code (YAML_PARSE, YAML_ALIAS)."""

    def __init__(self, line: int | None, message: str, code: Code = Code.YAML_PARSE):
        self.line = line
        self.code = code
        super().__init__(message)


def refuse_aliases(text: str) -> None:
    """Raise YamlError at the first YAML alias of ``text`` (bad YAML is left to the loader)."""
    if "&" not in text:  # an alias needs an anchor, and an anchor needs "&"
        return
    loader = _Loader(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                raise YamlError(event.start_mark.line + 1,
                                f"YAML alias *{event.anchor} is not allowed (aliases can expand without bound)",
                                Code.YAML_ALIAS)
    except yaml.YAMLError:
        return  # the loader reports it
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """The one YAML document of ``text``, as yaml.safe_load reads it, aliases refused; raises
    YamlError (with the line where known) on bad YAML."""
    refuse_aliases(text)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlError(mark.line + 1 if mark else None, f"bad YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(None, f"bad YAML: {exc}") from None


def _walk(node: yaml.Node, path: Path, doc: Doc) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            sub = (*path, key)
            if key in seen:
                doc.duplicates.append((sub, key_node.start_mark.line + 1))
            seen.add(key)
            doc.lines[sub] = key_node.start_mark.line + 1
            _walk(value_node, sub, doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            sub = (*path, index)
            doc.lines[sub] = item.start_mark.line + 1
            _walk(item, sub, doc)


def iter_documents(text: str) -> Iterator[Doc]:
    """Each YAML document of ``text`` with line information; raises YamlError on bad YAML or an alias."""
    refuse_aliases(text)
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = Doc(loader.construct_document(node), line=node.start_mark.line + 1)
            _walk(node, (), doc)
            yield doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlError(line, f"bad YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(None, f"bad YAML: {exc}") from None
    finally:
        loader.dispose()


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return copy.deepcopy(over)


def _combine(base: Doc, over: Doc) -> Doc:
    merged = Doc(_merge(base.data, over.data), {**base.lines, **over.lines}, over.line, list(over.duplicates))
    if isinstance(merged.data, dict):
        merged.data.pop("action", None)
    return merged


def rule_documents(text: str) -> Iterator[Doc]:
    """Documents of a rule file after Sigma's multi-document actions.

    ``action: global`` documents are merged into every following document,
    ``action: reset`` forgets the global part, ``action: repeat`` re-uses the previous
    rule document with the given changes (as pySigma's SigmaCollection does).
    """
    empty = Doc({}, {}, 1)
    global_doc = empty
    previous: Doc | None = None
    for doc in iter_documents(text):
        action = doc.data.get("action") if isinstance(doc.data, dict) else None
        if action == "global":
            global_doc = _combine(empty, doc)
        elif action == "reset":
            global_doc = empty
        elif action == "repeat" and previous is not None:
            previous = _combine(previous, doc)
            yield previous
        elif doc.data is not None:
            previous = _combine(global_doc, doc) if isinstance(doc.data, dict) else doc
            yield previous
