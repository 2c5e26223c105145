"""Necessary literals of a regular expression, for the prefilter.

``regex_literals(source, flags)`` returns a set of lower-case strings such that any
string the regex matches (searching) contains at least one of them, or ``None``
where no useful set is found. Only constructs that must match are used: literal
runs of the top-level sequence, groups, mandatory repeats and alternations whose
every branch yields a set.

Case-insensitive regexes match some characters that ``str.lower()`` (how the prefilter
folds event text) keeps apart: ``ı``/``İ`` match ``i``, ``ſ`` matches ``s``, ``ς``
matches ``σ`` (``re._casefix``). Literal runs of such regexes are split at those
characters, so every literal is still necessary.
"""
from __future__ import annotations

import re
from typing import Any

from re import _casefix
from re import _constants as _c  # Python >= 3.11
from re import _parser as _p

_MIN_LEN = 2
NUMBER = "\x01"  # a prefilter literal that starts with it is a number the field must equal (as Sigma compares numbers)


def number_literal(number: float) -> str:
    """The prefilter literal of "the field's value is the number ``number``" (1, 1.0 and "0x1" alike)."""
    return NUMBER + repr(float(number))
# lower-case characters that case-insensitive matching equates with a character str.lower() does not map to them
_FOLDED = frozenset(chr(c) for key, extra in _casefix._EXTRA_CASES.items() for c in (key, *extra))


def _folds_safely(char: str) -> bool:
    """Whether ``char`` matches, ignoring case, only what lower-cases to ``char.lower()``."""
    lowered = char.lower()
    return len(lowered) == 1 and lowered not in _FOLDED


def _score(literals: set[str]) -> tuple[int, int]:
    return (min(len(lit) for lit in literals), -len(literals))


def _best(candidates: list[set[str]]) -> set[str] | None:
    good = [c for c in candidates if c and all(len(lit) >= _MIN_LEN for lit in c)]
    return max(good, key=_score) if good else None


def _sequence(items: Any, fold: bool) -> set[str] | None:
    candidates: list[set[str]] = []
    run: list[str] = []

    def close() -> None:
        if run:
            candidates.append({"".join(run).lower()})
            run.clear()

    for op, arg in items:
        if op is _c.LITERAL:
            if fold and not _folds_safely(chr(arg)):
                close()
            else:
                run.append(chr(arg))
            continue
        close()
        if op is _c.SUBPATTERN:
            found = _sequence(arg[-1], (fold or bool(arg[1] & re.IGNORECASE)) and not arg[2] & re.IGNORECASE)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT) and arg[0] >= 1:
            found = _sequence(arg[2], fold)
        elif op is _c.BRANCH:
            branches = [_sequence(branch, fold) for branch in arg[1]]
            found = None if any(b is None for b in branches) else set().union(*branches)  # type: ignore[arg-type]
        elif op is _c.ATOMIC_GROUP:
            found = _sequence(arg, fold)
        else:
            found = None
        if found:
            candidates.append(found)
    close()
    return _best(candidates)


def regex_literals(source: str, flags: int = 0) -> set[str] | None:
    """Lower-case literals one of which every match of the regex contains, or None."""
    try:
        parsed = _p.parse(source, flags & ~re.IGNORECASE)
    except re.error:
        return None
    return _sequence(parsed.data, bool((flags | parsed.state.flags) & re.IGNORECASE))
