"""Compile a ``|re`` value: Python's ``re``, or RE2 where backtracking could take exponential time.

RE2 runs in linear time but costs several times more per call than ``re`` on typical
patterns, so it is used only for patterns with a repeat around another unbounded
repeat or an alternation (``(a+)+``, ``(a|aa)+``), the shapes that make a
backtracking engine explode on a near-miss. Such a pattern that RE2 cannot compile
(back-references, look-arounds) is rejected.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from re import _constants as _c  # Python >= 3.11
from re import _parser as _p
from typing import Any

import re2

_REPEATS = (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT)
_INLINE = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))


def _has_choice(items: Any) -> bool:
    """Whether parsed ``items`` contain an unbounded repeat or an alternation."""
    for op, arg in items:
        if op is _c.BRANCH or (op in _REPEATS and arg[1] == _c.MAXREPEAT):
            return True
        if _has_choice(_children(op, arg)):
            return True
    return False


def _children(op: Any, arg: Any) -> list[Any]:
    """The sub-sequences of one parsed node, flattened into one item list."""
    if op is _c.SUBPATTERN:
        return list(arg[-1])
    if op in _REPEATS:
        return list(arg[2])
    if op is _c.BRANCH:
        return [item for branch in arg[1] for item in branch]
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return list(arg[1])
    if op is _c.ATOMIC_GROUP:
        return list(arg)
    if op is _c.GROUPREF_EXISTS:
        return [item for branch in arg[1:] if branch is not None for item in branch]
    return []


def _nested(items: Any) -> bool:
    for op, arg in items:
        if op in _REPEATS and arg[1] > 1 and _has_choice(arg[2]):
            return True
        if _nested(_children(op, arg)):
            return True
    return False


def backtracks_badly(source: str, flags: int = 0) -> bool:
    """Whether a valid Python regex repeats an unbounded repeat or an alternation (star height >= 2)."""
    return _nested(_p.parse(source, flags).data)


def re2_compile(source: str, flags: int = 0) -> Any:
    """``source`` compiled by RE2 with ``re`` flags as inline flags; an error raises re2.error with a text
    message, without RE2 logging it to stderr."""
    inline = "".join(letter for flag, letter in _INLINE if flags & flag)
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(f"(?{inline}){source}" if inline else source, options)
    except re2.error as exc:  # RE2 gives bytes, shown as b'...'
        raise re2.error(*(a.decode(errors="replace") if isinstance(a, bytes) else a for a in exc.args)) from None


def compile_search(source: str, flags: int = 0) -> Callable[[str], Any]:
    """The ``search`` of ``source``: ``re``, or RE2 (with inline flags) if it backtracks badly.

    Raises ValueError naming the pattern if neither engine may run it."""
    try:
        compiled = re.compile(source, flags)
    except re.error as exc:  # pySigma validates with RE2, whose dialect differs (\z, \pL, \x{41})
        raise ValueError(f"regular expression '{source}' is not supported by Python's re: {exc}") from None
    if not backtracks_badly(source, flags):
        return compiled.search
    try:
        return re2_compile(source, flags).search
    except re2.error as exc:
        raise ValueError(f"regular expression '{source}' nests repeats (exponential backtracking) "
                         f"and RE2 cannot run it: {exc}") from None
