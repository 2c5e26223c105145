"""Load rule files into a RuleSet: parse, validate, compile; bad rules become RuleErrors.

``load_ruleset`` never raises for a bad rule: it returns every good rule plus an
error (file, line, rule id, message) for each bad one. Sigma filter documents
(``filter: {rules, <selections>, condition}``) make the rules they apply to match
only where the filter's condition holds too (a filter excludes with ``not``). Documents with a
``correlation:`` key are handed to ``opmas.core.correlation.compile_correlations(docs,
ruleset) -> list[RuleError]`` when that module exists (also for detection rules with an
OPMAS ``suppress`` section); it adds its rules' metadata to
``ruleset.rules`` (kind "correlation") and sets ``ruleset.correlations``.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from opmas.core.errors import Code, RuleError, code_of
from opmas.core.logsource import Mapping, MappingError, builtin_mappings, load_mapping
from opmas.core.taxonomy import case_suggestion
from opmas.core.render import attack_from_tags
from opmas.core.rule_cache import RuleCache, code_version, default_cache_dir, encode
from opmas.core.sigma.compile import CompileError, Matcher, Requirement, compile_conditions, compile_ir
from opmas.core.sigma.ir import lower_conditions
from opmas.core.sigma.parse import (logsource_of, parse_detection, parse_rule, rule_id_of, rule_id_problem,
                                rule_schema_text, schema_errors)
from opmas.core.sigma.yamldoc import Doc, YamlError, rule_documents

DEFAULT_SEVERITY = "medium"


@dataclass(frozen=True, slots=True)
class RuleSource:
    """Rule text and where it came from (a file path or an API name), used in errors."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class RuleDoc:
    """One YAML document of a rule source, with the line of each key (for correlation rules)."""

    source: str
    doc: Doc


@dataclass(slots=True)
class RuleMeta:
    """What every component may know about a loaded rule."""

    id: str
    title: str
    level: str | None
    tags: list[str]
    source: str
    kind: str = "detection"  # "detection" | "correlation"
    enabled: bool = True
    line: int | None = None
    name: str | None = None
    logsource: dict[str, str] = field(default_factory=dict)
    description: str = ""
    tests: dict[str, list[Any]] = field(default_factory=dict)  # {match: [case...], no_match: [...]}
    attack: dict[str, list[str]] = field(default_factory=dict)  # {tactics: [...], techniques: [T1059...]}


@dataclass(slots=True)
class DetectionRule:
    """A compiled detection rule: metadata plus the matcher and its prefilter requirement."""

    meta: RuleMeta
    match: Matcher
    requirement: Requirement
    fields: frozenset[str]
    keywords: bool
    severity: str
    finding: dict[str, str]
    generate: bool = True  # False: matches only feed correlations (Sigma correlation ``generate``)
    suppress: Any = None  # OPMAS ``suppress`` section as written (checked by opmas.core.correlation)

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(slots=True)
class RuleSet:
    """Every good rule of a load, the mappings they run with, and the compiled correlations."""

    rules: list[RuleMeta]
    detections: list[DetectionRule]
    mappings: tuple[Mapping, ...]
    correlations: Any = None  # set by opmas.core.correlation.compile_correlations

    def detection(self, key: str) -> DetectionRule | None:
        """A detection rule by id or name."""
        for rule in self.detections:
            if rule.meta.id == key or rule.meta.name == key:
                return rule
        return None


def sources_from_paths(paths: Iterable[str | Path]) -> list[RuleSource]:
    """RuleSources of files and directories (``*.yml``/``*.yaml``, recursively, sorted).

    Files and folders under a directory whose name starts with a dot are skipped (a Kubernetes
    ConfigMap volume holds each file twice: ``x.yml -> ..data/x.yml`` and ``..2024_.../x.yml``).
    Raises FileNotFoundError for a path that does not exist.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such rule file or directory: {path}")
    return [RuleSource(str(f), f.read_text(encoding="utf-8", errors="replace")) for f in files]


def _compile_correlations() -> Any:
    try:
        module = importlib.import_module("opmas.core.correlation")
    except ModuleNotFoundError as exc:
        if exc.name not in ("opmas.core.correlation",):
            raise
        return None
    return getattr(module, "compile_correlations", None)


class _Default:
    """The type of :data:`DEFAULT_CACHE`."""


DEFAULT_CACHE = _Default()  # load_ruleset's cache_dir: opmas.core.rule_cache.default_cache_dir()


def load_ruleset(sources: Sequence[RuleSource], mappings: Sequence[str | Path] = (),
                 lateness: float | None = None, cache_dir: str | Path | None | _Default = DEFAULT_CACHE
                 ) -> tuple[RuleSet, list[RuleError]]:
    """Parse and compile every rule of ``sources``; user ``mappings`` take precedence over built-ins.

    ``lateness`` (seconds) is how far out of order events may arrive and still count in
    correlation windows (default ``opmas.core.correlation.DEFAULT_LATENESS``). ``cache_dir`` holds
    what parsing each source gave, keyed on its content (core/rule_cache.py): None for no
    cache; by default ``$OPMAS_CACHE_DIR`` (empty or "off": no cache), else the user's cache dir."""
    errors: list[RuleError] = []
    loaded: list[Mapping] = []
    for path in mappings:
        try:
            loaded.append(load_mapping(path))
        except MappingError as exc:
            errors.append(RuleError(exc.file, None, None, f"mapping: {exc}", code=exc.code))
    placeholders: dict[str, list[str]] = {}
    for mapping in reversed((*loaded, *builtin_mappings())):
        placeholders.update(mapping.placeholders)
    # a file with only placeholders (no recognize, no logsources) describes no events
    all_mappings = (*(m for m in loaded if not m.placeholders_only), *builtin_mappings())

    ruleset = RuleSet([], [], all_mappings)
    cache = _rule_cache(cache_dir, placeholders)
    correlation_docs: list[RuleDoc] = []
    filter_docs: list[RuleDoc] = []
    first_seen: dict[str, str] = {}
    covered: dict[tuple[tuple[str, str], ...], bool] = {}
    for source in sources:
        outcome = _source_outcome(source, placeholders, cache)
        if outcome.yaml_error is not None:
            errors.append(outcome.yaml_error)
        for doc in outcome.docs:
            errors.extend(doc.problems)
            if doc.kind == "refused":
                continue
            if doc.rule_id is not None:
                if doc.rule_id in first_seen:
                    errors.append(RuleError(source.name, doc.id_line, doc.rule_id,
                                            f"duplicate rule id (first defined at {first_seen[doc.rule_id]})",
                                            code=Code.DUPLICATE_RULE_ID))
                    continue
                first_seen[doc.rule_id] = f"{source.name}:{doc.line}"
            if doc.doc is not None:
                (correlation_docs if doc.kind == "correlation" else filter_docs).append(RuleDoc(source.name, doc.doc))
                continue
            errors.extend(doc.errors)
            if doc.rule is not None:
                errors.extend(_coverage_warning(doc.rule, doc.logsource_line, all_mappings, covered))
                errors.extend(_field_case_warnings(doc.rule, doc.field_lines))
                ruleset.detections.append(doc.rule)
                ruleset.rules.append(doc.rule.meta)
    if cache is not None:
        cache.prune()
    for filter_doc in filter_docs:
        errors.extend(_apply_filter(filter_doc, ruleset, placeholders))
    if correlation_docs or any(rule.suppress is not None for rule in ruleset.detections):
        compile_correlations = _compile_correlations()
        if compile_correlations is None:
            errors.extend(RuleError(d.source, d.doc.line, rule_id_of(d.doc.data),
                                    "correlation rules are not supported by this build",
                                    code=Code.CORRELATION_UNSUPPORTED) for d in correlation_docs)
        else:
            errors.extend(compile_correlations(correlation_docs, ruleset, lateness))
    return ruleset, errors


def _coverage_warning(rule: DetectionRule, line: int, mappings: Sequence[Mapping],
                      covered: dict[tuple[tuple[str, str], ...], bool]) -> list[RuleError]:
    """A warning if no mapping covers the rule's logsource (the rule then never matches);
    ``covered`` remembers the answer per logsource."""
    logsource = rule.meta.logsource
    if not logsource:
        return []
    key = tuple(sorted(logsource.items()))
    if key not in covered:
        covered[key] = any(m.covers(logsource) for m in mappings)
    if covered[key]:
        return []
    return [RuleError(rule.meta.source, line, rule.id, f"logsource {rule.meta.logsource} is not covered by any "
                      "mapping: the rule never matches (add a mapping file)", severity="warning",
                      code=Code.LOGSOURCE_NOT_COVERED)]


def _field_case_warnings(rule: DetectionRule, field_lines: dict[str, int]) -> list[RuleError]:
    """A warning for each field the rule names that its logsource's known fields (core/taxonomy.yml)
    have only with another case: it never matches."""
    warnings = []
    for name in sorted(rule.fields):
        suggestion = case_suggestion(rule.meta.logsource, name)
        if suggestion is not None:
            warnings.append(RuleError(rule.meta.source, field_lines.get(name, rule.meta.line), rule.id,
                                      f"field '{name}' is not a field of {rule.meta.logsource} events: did you mean "
                                      f"'{suggestion}'? (field names are case-sensitive; this one never matches)",
                                      severity="warning", code=Code.FIELD_NAME_CASE))
    return warnings


# --- one source: parsed into plain records (cached), then into rules -------------------------

@dataclass(slots=True)
class _DocOutcome:
    """What one document of a source gives, before the load checks rule ids across sources."""

    kind: str  # "refused" (a problem is an error) | "detection" | "correlation" | "filter"
    line: int
    rule_id: str | None
    id_line: int
    problems: list[RuleError]  # schema problems, or why the document is no rule document
    errors: list[RuleError]  # why a detection rule is refused
    rule: DetectionRule | None = None
    logsource_line: int = 0
    field_lines: dict[str, int] = field(default_factory=dict)  # where each detection field is first named
    doc: Doc | None = None  # a correlation or filter document: handled once every source is loaded


@dataclass(slots=True)
class _SourceOutcome:
    yaml_error: RuleError | None  # bad YAML: the documents before it are kept
    docs: list[_DocOutcome]


def _rule_cache(cache_dir: str | Path | None | _Default, placeholders: dict[str, list[str]]) -> RuleCache | None:
    """The cache of this load, None for none (also where the engine code cannot be read to key entries)."""
    directory = default_cache_dir() if isinstance(cache_dir, _Default) else cache_dir
    code = code_version()
    if directory is None or code is None:
        return None
    context = orjson.dumps({"placeholders": placeholders, "schema": rule_schema_text()}, option=orjson.OPT_SORT_KEYS)
    return RuleCache(directory, context, code)


def _source_outcome(source: RuleSource, placeholders: dict[str, list[str]], cache: RuleCache | None
                    ) -> _SourceOutcome:
    """The outcome of ``source``: from the cache, else parsed (and cached unless it holds correlation
    or filter documents, or values JSON cannot hold)."""
    key = cache.key(source.name, source.text) if cache is not None else ""
    cached = _cached_outcome(cache.get(key), source.name) if cache is not None else None
    if cached is not None:
        return cached
    record, docs = _source_record(source, placeholders)
    if cache is not None and all(doc["kind"] not in ("correlation", "filter") for doc in record["docs"]):
        value_json = encode(record)
        if value_json is not None:
            cache.put(key, value_json)
    return _outcome(record, source.name, docs)


def _cached_outcome(value: Any, name: str) -> _SourceOutcome | None:
    """The outcome of a cached record, or None if there is none or it is not one this code writes."""
    if value is None:
        return None
    try:
        return _outcome(value, name, None)
    except Exception:  # any malformed entry is a miss: the source is parsed again
        return None


def _source_record(source: RuleSource, placeholders: dict[str, list[str]]) -> tuple[dict[str, Any], list[Doc]]:
    """The plain-data record of every document of ``source``, and the documents."""
    docs: list[Doc] = []
    yaml_error = None
    try:
        for doc in rule_documents(source.text):
            docs.append(doc)
    except YamlError as exc:
        yaml_error = _error_record(RuleError(source.name, exc.line, None, str(exc), code=exc.code))
    return {"yaml_error": yaml_error, "docs": [_doc_record(doc, source.name, placeholders) for doc in docs]}, docs


def _doc_record(doc: Doc, source: str, placeholders: dict[str, list[str]]) -> dict[str, Any]:
    """One document as plain data: what it is, its problems and, for a detection rule, the rule or its errors."""
    if isinstance(doc.data, dict):
        problems = schema_errors(doc, source)
        rule_id, id_line = rule_id_of(doc.data), doc.line_of(("id",))
        why = None if rule_id is None else rule_id_problem(rule_id)
        if why is not None:
            problems.append(RuleError(source, id_line, None, why, code=Code.RULE_ID_INVALID))
    else:
        problems = [RuleError(source, doc.line, None, "a rule document must be a mapping",
                              code=Code.SCHEMA_NOT_MAPPING)]
        rule_id, id_line = None, doc.line
    errors: list[list[Any]] = []
    rule = None
    if any(p.severity == "error" for p in problems):
        kind = "refused"
    elif "correlation" in doc.data or "filter" in doc.data:
        kind = "correlation" if "correlation" in doc.data else "filter"
    else:
        kind = "detection"
        errors, rule = _rule_record(doc, source, placeholders)
    return {"kind": kind, "line": doc.line, "id": rule_id, "id_line": id_line,
            "problems": [_error_record(p) for p in problems], "errors": errors, "rule": rule}


def _rule_record(doc: Doc, source: str, placeholders: dict[str, list[str]]
                 ) -> tuple[list[list[Any]], dict[str, Any] | None]:
    """A detection rule document as plain data (metadata and condition IR), or its errors."""
    parsed, problems = parse_rule(doc, source, placeholders)
    if parsed is None:
        return [_error_record(p) for p in problems], None
    try:
        ir = lower_conditions(parsed.conditions)
    except (CompileError, ValueError) as exc:
        return [_error_record(RuleError(source, parsed.detection_line, parsed.id, f"detection: {exc}",
                                        code=code_of(exc, Code.DETECTION_VALUE_INVALID)))], None
    return [], {
        "id": parsed.id, "title": parsed.title, "level": parsed.level, "tags": parsed.tags, "name": parsed.name,
        "logsource": parsed.logsource, "description": parsed.description, "tests": parsed.tests,
        "finding": parsed.finding, "suppress": doc.data.get("suppress"), "ir": ir,
        "detection_line": parsed.detection_line, "logsource_line": doc.line_of(("logsource",)),
        "field_lines": _field_lines(doc),
    }


def _field_lines(doc: Doc) -> dict[str, int]:
    """The line where each field the detection names first appears (``CommandLine|contains`` -> CommandLine)."""
    lines: dict[str, int] = {}
    for path, line in sorted(doc.lines.items(), key=lambda item: item[1]):
        if len(path) > 2 and path[0] == "detection" and isinstance(path[-1], str):
            lines.setdefault(path[-1].split("|", 1)[0], line)
    return lines


def _error_record(error: RuleError) -> list[Any]:
    """A RuleError of a source without its file name (the source's own); :func:`_error_of` reads it."""
    return [error.line, error.rule_id, error.message, error.severity, str(error.code)]


def _error_of(record: list[Any], source: str) -> RuleError:
    """The RuleError of a record of :func:`_error_record` (ValueError for a code this code does not know)."""
    line, rule_id, message, severity, code = record
    return RuleError(source, line, rule_id, message, severity, code=code)


def _outcome(record: dict[str, Any], source: str, docs: list[Doc] | None) -> _SourceOutcome:
    """The outcome of a source's record (``docs``: its documents, None for a cached record)."""
    yaml_error = record["yaml_error"]
    outcomes = []
    for index, doc_record in enumerate(record["docs"]):
        outcomes.append(_doc_outcome(doc_record, source, docs[index] if docs is not None else None))
    return _SourceOutcome(_error_of(yaml_error, source) if yaml_error is not None else None, outcomes)


def _doc_outcome(record: dict[str, Any], source: str, doc: Doc | None) -> _DocOutcome:
    kind = record["kind"]
    if kind not in ("refused", "detection", "correlation", "filter"):
        raise ValueError(f"unknown document kind {kind!r}")
    outcome = _DocOutcome(
        kind, record["line"], record["id"], record["id_line"],
        problems=[_error_of(p, source) for p in record["problems"]],
        errors=[_error_of(e, source) for e in record["errors"]],
    )
    if kind in ("correlation", "filter"):
        if doc is None:
            raise ValueError(f"a {kind} document is never cached")
        outcome.doc = doc
    rule_record = record["rule"]
    if rule_record is not None:
        outcome.logsource_line = rule_record["logsource_line"]
        outcome.field_lines = rule_record["field_lines"]
        try:
            outcome.rule = _detection_rule(rule_record, source, record["line"])
        except CompileError as exc:
            outcome.errors.append(RuleError(source, rule_record["detection_line"], rule_record["id"],
                                            f"detection: {exc}", code=exc.code))
    return outcome


def _detection_rule(record: dict[str, Any], source: str, line: int) -> DetectionRule:
    """The detection rule of a rule record (see :func:`_rule_record`)."""
    compiled = compile_ir(record["ir"])
    meta = RuleMeta(
        id=record["id"], title=record["title"], level=record["level"], tags=record["tags"], source=source,
        line=line, name=record["name"], logsource=record["logsource"], description=record["description"],
        tests=record["tests"], attack=attack_from_tags(record["tags"]),
    )
    return DetectionRule(
        meta=meta,
        match=compiled.match,
        requirement=compiled.requirement,
        fields=frozenset(compiled.fields),
        keywords=compiled.keywords,
        severity=record["level"] or DEFAULT_SEVERITY,
        finding=record["finding"],
        suppress=record["suppress"],
    )


def _apply_filter(rule_doc: RuleDoc, ruleset: RuleSet, placeholders: dict[str, list[str]]) -> list[RuleError]:
    """A Sigma filter (pySigma ``SigmaFilter.apply_on_rule``): each rule it applies to matches only where
    its own condition and the filter's condition hold. It applies to the listed rules (``rules: any`` or
    an empty list: every rule) whose logsource has every logsource field the filter specifies."""
    doc, source = rule_doc.doc, rule_doc.source
    filter_id = rule_id_of(doc.data)
    trees, errors = parse_detection(doc, source, "filter", placeholders)
    if errors:
        return errors
    try:
        compiled = compile_conditions(trees)
    except (CompileError, ValueError) as exc:
        return [RuleError(source, doc.line_of(("filter",)), filter_id, f"filter: {exc}",
                          code=code_of(exc, Code.DETECTION_VALUE_INVALID))]
    logsource = logsource_of(doc.data)

    def applies(rule: DetectionRule) -> bool:
        return all(rule.meta.logsource.get(key) == value for key, value in logsource.items())
    refs = doc.data["filter"]["rules"]
    if refs == [] or (isinstance(refs, str) and refs.lower() == "any"):
        targets = [rule for rule in ruleset.detections if applies(rule)]
    else:
        targets = []
        for index, ref in enumerate(refs if isinstance(refs, list) else [refs]):
            line = doc.line_of(("filter", "rules", index) if isinstance(refs, list) else ("filter", "rules"))
            rule = ruleset.detection(str(ref))
            if rule is None:
                errors.append(RuleError(source, line, filter_id, f"filter references unknown rule '{ref}'",
                                        code=Code.FILTER_UNKNOWN_RULE))
            elif not applies(rule):
                errors.append(RuleError(source, line, filter_id, f"filter logsource {logsource} differs from rule "
                                        f"'{ref}' logsource {rule.meta.logsource}: not applied", severity="warning",
                                        code=Code.FILTER_LOGSOURCE_MISMATCH))
            else:
                targets.append(rule)
    for rule in targets:
        def filtered(flat: dict[str, Any], low: dict[str, Any], keep: Matcher = rule.match,
                     also: Matcher = compiled.match) -> bool:
            return keep(flat, low) and also(flat, low)
        rule.match = filtered
        rule.fields = rule.fields | compiled.fields
        rule.keywords = rule.keywords or compiled.keywords
    return errors
