"""Load rule files into a RuleSet: parse, validate, compile; bad rules become RuleErrors.

``load_ruleset`` never raises for a bad rule: it returns every good rule plus an
error (file, line, rule id, message) for each bad one. Sigma filter documents
(``filter: {rules, <selections>, condition}``) make the rules they apply to match
only where the filter's condition holds too (a filter excludes with ``not``). Documents with a
``correlation:`` key are handed to ``engine.correlation.compile_correlations(docs,
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

from engine.errors import RuleError
from engine.render import attack_from_tags
from engine.logsource import Mapping, MappingError, builtin_mappings, load_mapping
from engine.sigma.compile import CompileError, Matcher, Requirement, compile_conditions
from engine.sigma.parse import logsource_of, parse_detection, parse_rule, rule_id_of, schema_errors
from engine.sigma.yamldoc import Doc, YamlError, rule_documents

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
    suppress: Any = None  # OPMAS ``suppress`` section as written (checked by engine.correlation)

    @property
    def id(self) -> str:
        return self.meta.id


@dataclass(slots=True)
class RuleSet:
    """Every good rule of a load, the mappings they run with, and the compiled correlations."""

    rules: list[RuleMeta]
    detections: list[DetectionRule]
    mappings: tuple[Mapping, ...]
    correlations: Any = None  # set by engine.correlation.compile_correlations

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
        module = importlib.import_module("engine.correlation")
    except ModuleNotFoundError as exc:
        if exc.name not in ("engine.correlation",):
            raise
        return None
    return getattr(module, "compile_correlations", None)


def load_ruleset(sources: Sequence[RuleSource], mappings: Sequence[str | Path] = (),
                 lateness: float | None = None) -> tuple[RuleSet, list[RuleError]]:
    """Parse and compile every rule of ``sources``; user ``mappings`` take precedence over built-ins.

    ``lateness`` (seconds) is how far out of order events may arrive and still count in
    correlation windows (default ``engine.correlation.DEFAULT_LATENESS``)."""
    errors: list[RuleError] = []
    loaded: list[Mapping] = []
    for path in mappings:
        try:
            loaded.append(load_mapping(path))
        except MappingError as exc:
            errors.append(RuleError(exc.file, None, None, f"mapping: {exc}"))
    placeholders: dict[str, list[str]] = {}
    for mapping in reversed((*loaded, *builtin_mappings())):
        placeholders.update(mapping.placeholders)
    # a file with only placeholders (no recognize, no logsources) describes no events
    all_mappings = (*(m for m in loaded if not m.placeholders_only), *builtin_mappings())

    ruleset = RuleSet([], [], all_mappings)
    correlation_docs: list[RuleDoc] = []
    filter_docs: list[RuleDoc] = []
    first_seen: dict[str, str] = {}
    for source in sources:
        for doc in _documents(source, errors):
            if not isinstance(doc.data, dict):
                errors.append(RuleError(source.name, doc.line, None, "a rule document must be a mapping"))
                continue
            problems = schema_errors(doc, source.name)
            errors.extend(problems)
            if any(p.severity == "error" for p in problems):
                continue
            rule_id = rule_id_of(doc.data)
            if rule_id is not None:
                where = f"{source.name}:{doc.line}"
                if rule_id in first_seen:
                    errors.append(RuleError(source.name, doc.line_of(("id",)), rule_id,
                                            f"duplicate rule id (first defined at {first_seen[rule_id]})"))
                    continue
                first_seen[rule_id] = where
            if "correlation" in doc.data:
                correlation_docs.append(RuleDoc(source.name, doc))
                continue
            if "filter" in doc.data:
                filter_docs.append(RuleDoc(source.name, doc))
                continue
            rule = _detection_rule(doc, source.name, placeholders, errors)
            if rule is None:
                continue
            if rule.meta.logsource and not any(m.covers(rule.meta.logsource) for m in all_mappings):
                errors.append(RuleError(source.name, doc.line_of(("logsource",)), rule.id,
                                        f"logsource {rule.meta.logsource} is not covered by any mapping: "
                                        "the rule never matches (add a mapping file)", severity="warning"))
            ruleset.detections.append(rule)
            ruleset.rules.append(rule.meta)
    for filter_doc in filter_docs:
        errors.extend(_apply_filter(filter_doc, ruleset, placeholders))
    if correlation_docs or any(rule.suppress is not None for rule in ruleset.detections):
        compile_correlations = _compile_correlations()
        if compile_correlations is None:
            errors.extend(RuleError(d.source, d.doc.line, rule_id_of(d.doc.data),
                                    "correlation rules are not supported by this build") for d in correlation_docs)
        else:
            errors.extend(compile_correlations(correlation_docs, ruleset, lateness))
    return ruleset, errors


def _documents(source: RuleSource, errors: list[RuleError]) -> list[Doc]:
    """The documents of ``source`` before its first YAML error, which is added to ``errors``."""
    docs: list[Doc] = []
    try:
        for doc in rule_documents(source.text):
            docs.append(doc)
    except YamlError as exc:
        errors.append(RuleError(source.name, exc.line, None, str(exc)))
    return docs


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
        return [RuleError(source, doc.line_of(("filter",)), filter_id, f"filter: {exc}")]
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
                errors.append(RuleError(source, line, filter_id, f"filter references unknown rule '{ref}'"))
            elif not applies(rule):
                errors.append(RuleError(source, line, filter_id, f"filter logsource {logsource} differs from rule "
                                        f"'{ref}' logsource {rule.meta.logsource}: not applied", severity="warning"))
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


def _detection_rule(doc: Doc, source: str, placeholders: dict[str, list[str]],
                    errors: list[RuleError]) -> DetectionRule | None:
    parsed, problems = parse_rule(doc, source, placeholders)
    errors.extend(problems)
    if parsed is None:
        return None
    try:
        compiled = compile_conditions(parsed.conditions)
    except (CompileError, ValueError) as exc:
        errors.append(RuleError(source, parsed.detection_line, parsed.id, f"detection: {exc}"))
        return None
    meta = RuleMeta(
        id=parsed.id, title=parsed.title, level=parsed.level, tags=parsed.tags, source=source,
        line=parsed.line, name=parsed.name, logsource=parsed.logsource, description=parsed.description,
        tests=parsed.tests, attack=attack_from_tags(parsed.tags),
    )
    return DetectionRule(
        meta=meta,
        match=compiled.match,
        requirement=compiled.requirement,
        fields=frozenset(compiled.fields),
        keywords=compiled.keywords,
        severity=parsed.level or DEFAULT_SEVERITY,
        finding=parsed.finding,
        suppress=doc.data.get("suppress"),
    )
