"""Importing a rule pack (a SigmaHQ-layout tree or release zip) into a rules directory: each rule file
is filtered by its ``status`` and ``level``, loaded by the engine, and copied only if it loads;
every file left out is reported with why.

A pack is untrusted input: zip members with absolute or ``..`` paths, symbolic links, files over
MAX_FILE and packs over MAX_PACK uncompressed bytes are refused, never followed or expanded.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from opmas.core.errors import RuleError
from opmas.core.finding import SEVERITIES
from opmas.core.ruleset import RuleSource, load_ruleset
from opmas.core.sigma.yamldoc import YamlError, rule_documents

STATUSES = ("stable", "test", "experimental", "deprecated", "unsupported")
DEFAULT_STATUSES = ("stable", "test", "experimental")
SUFFIXES = (".yml", ".yaml")
MAX_FILE = 1 << 20  # bytes of one rule file
MAX_PACK = 256 << 20  # uncompressed bytes of all the rule files of a pack


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file of the pack that was not imported, and why (``kind``: status, level, error, refused)."""

    path: str
    kind: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did: files written (relative paths), files left out, warnings of the rules kept."""

    imported: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[RuleError] = field(default_factory=list)


def pack_files(pack: Path, report: ImportReport) -> Iterator[tuple[str, bytes]]:
    """(relative path, content) of each rule file of a folder or zip; refused files go to ``report``."""
    budget = MAX_PACK
    if pack.is_dir():
        for path in sorted(p for p in pack.rglob("*") if p.suffix in SUFFIXES):
            rel = path.relative_to(pack).as_posix()
            if any(part.startswith(".") for part in path.relative_to(pack).parts):
                continue
            if path.is_symlink() or not path.is_file():
                report.skipped.append(Skipped(rel, "refused", "not a regular file (symbolic link?)"))
                continue
            size = path.stat().st_size
            if size > MAX_FILE or size > budget:
                report.skipped.append(Skipped(rel, "refused", f"{size:,} bytes: over the {MAX_FILE:,}-byte limit"
                                              if size > MAX_FILE else "the pack is over its size limit"))
                continue
            budget -= size
            yield rel, path.read_bytes()
        return
    with zipfile.ZipFile(pack) as archive:
        for info in archive.infolist():
            name = PurePosixPath(info.filename)
            if info.is_dir() or name.suffix not in SUFFIXES:
                continue
            rel = name.as_posix()
            if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
                report.skipped.append(Skipped(rel, "refused", "unsafe path in the zip"))
                continue
            if any(part.startswith(".") for part in name.parts):
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                report.skipped.append(Skipped(rel, "refused", "a symbolic link"))
                continue
            if info.file_size > MAX_FILE or info.file_size > budget:
                report.skipped.append(Skipped(rel, "refused", f"{info.file_size:,} bytes: over the "
                                              f"{MAX_FILE:,}-byte limit" if info.file_size > MAX_FILE
                                              else "the pack is over its size limit"))
                continue
            with archive.open(info) as member:
                data = member.read(MAX_FILE + 1)  # the header's size may lie: never inflate past the limit
            if len(data) > MAX_FILE:
                report.skipped.append(Skipped(rel, "refused", f"over the {MAX_FILE:,}-byte limit"))
                continue
            budget -= len(data)
            yield rel, data


def _filtered(rel: str, text: str, statuses: Sequence[str], min_level: str | None) -> Skipped | None:
    """Why a file is left out by its rules' status and level (None: kept). A file is kept if any
    rule document in it passes; files without rule documents are left to the engine."""
    try:
        docs = [d.data for d in rule_documents(text) if isinstance(d.data, dict)]
    except YamlError as exc:
        return Skipped(rel, "error", f"line {exc.line}: {exc}" if exc.line else str(exc))
    rules = [d for d in docs if "detection" in d or "correlation" in d]
    if not rules:
        return None
    wanted_levels = SEVERITIES[SEVERITIES.index(min_level):] if min_level else None
    reasons = []
    for rule in rules:
        status, level = rule.get("status"), rule.get("level")
        if status is not None and status not in statuses:
            reasons.append(("status", f"status {status}"))
        elif wanted_levels is not None and level not in wanted_levels:
            reasons.append(("level", f"level {level or 'unset'}, below {min_level}"))
        else:
            return None
    kind, reason = reasons[0]
    return Skipped(rel, kind, reason)


def import_pack(pack: Path, into: Path, statuses: Sequence[str] = DEFAULT_STATUSES, min_level: str | None = None,
                mappings: Sequence[str | Path] = ()) -> ImportReport:
    """Copy the rule files of ``pack`` that pass the filters and load into ``into`` (same relative
    paths; an existing file is replaced). Nothing is written for a file that does not load."""
    report = ImportReport()
    candidates: dict[str, str] = {}
    for rel, data in pack_files(pack, report):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            report.skipped.append(Skipped(rel, "error", "not UTF-8 text"))
            continue
        skipped = _filtered(rel, text, statuses, min_level)
        if skipped is not None:
            report.skipped.append(skipped)
        else:
            candidates[rel] = text
    _, problems = load_ruleset([RuleSource(rel, text) for rel, text in candidates.items()], mappings)
    failed: dict[str, RuleError] = {}
    for problem in problems:
        if problem.severity == "error":
            failed.setdefault(problem.file, problem)
        else:
            report.warnings.append(problem)
    for rel, text in candidates.items():
        if rel in failed:
            error = failed[rel]
            where = f"line {error.line}: " if error.line else ""
            report.skipped.append(Skipped(rel, "error", f"{where}{error.message}"))
            continue
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.importing")
        temporary.write_text(text)
        os.replace(temporary, target)
        report.imported.append(rel)
    return report
