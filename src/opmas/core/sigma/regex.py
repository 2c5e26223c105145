"""Compile a regular expression of a rule into a linear-time test that answers as Python's ``re`` does.

Every ``|re`` value (and every Sigma wildcard pattern, which becomes a regex) is evaluated by
RE2, whose running time is linear in the text: no pattern can make an event take exponential
(or polynomial) time, as ``(a{1,30}){1,30}$`` or ``a*a*a*a*a*a*a*a*b`` do with a backtracking
engine. The pattern is read with Python's own parser (``re._parser``) and written out again for
RE2, so Python's syntax and semantics hold, not RE2's:

- every character class, literal, ``.`` and ``\\d \\w \\s`` (and their negations) is written as the
  explicit set of characters Python's ``re`` matches with the flags in force there (Unicode
  classes, ``re.I`` case folding with Python's special cases such as ``(?i)i`` matching ``İ``
  and ``ı``, ``re.S``, ``re.A``), computed by asking ``re`` itself;
- ``\\Z`` is RE2's ``\\z``; ``$`` without ``re.M`` (end, or before a final newline) is ``\\n?\\z``
  where nothing follows it in the pattern; ``^``/``$`` with ``re.M`` are RE2's multi-line ones;
- groups (named or not) do not capture: only whether the text matches is asked;
- Python's ``\\B`` never matches an empty text (RE2's does): that one answer is taken from re.

Two RE2 programs serve the two kinds of text. An ASCII text (``str.isascii``, O(1)) runs the
*ASCII program*, where each set is cut down to its ASCII members; RE2's ``\\b`` is then Python's.
Any other text is first mapped character by character onto representatives of the classes of
characters the pattern cannot tell apart (words and non-words kept apart where ``\\b``/``\\B``
is used, ``\\n`` kept as itself) and runs the *class program*, written over the
representatives: exact for every text, lone surrogates included, still linear. It is made on the
pattern's first such text (at load for a pattern with ``\\b``/``\\B``, which it may not fit:
more kinds of word characters than RE2 has, an error then).

What cannot be written for RE2 (back-references, look-arounds, conditionals, possessive repeats
and atomic groups, a ``$`` something follows) runs on ``re`` only where its backtracking is
bounded: no unbounded repeat and at most :data:`MAX_PATHS` ways to match from one position
(so nested or stacked repeats are refused); anything else is refused with a ValueError that
names the pattern. (pySigma, which checks ``|re`` values with RE2's parser, already refuses
the first three.)
"""
from __future__ import annotations

import _sre
import re
import sys
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from re import _casefix  # Python >= 3.11
from re import _compiler as _rc
from re import _constants as _c
from re import _parser as _p
from typing import Any

import re2

from opmas.core.errors import Code

try:  # the compiled core of google-re2: one call per match, no Match objects or offset decoding
    from re2 import _re2
except ImportError:  # pragma: no cover - the wrapper's layout changed
    _re2 = None

__all__ = ["MAX_PATHS", "Regex", "backtrack_paths", "compile_regex", "compile_search", "re2_compile"]

MAXCHAR = 0x10FFFF
MAX_PATHS = 1000  # backtracking paths from one position allowed where re must run a pattern
Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent inclusive code point ranges

_REPEATS = (_c.MAX_REPEAT, _c.MIN_REPEAT)
_SET_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE  # the flags that change what one character matches
_INLINE = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))
_WORD_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"  # RE2's \w
_NEWLINE: Ranges = ((10, 10),)
_EMPTY_CLASS = r"[^\x00-\x{10FFFF}]"


class RegexError(ValueError):
    """A pattern that cannot be run safely; ``code``: REGEX_INVALID or REGEX_UNSAFE."""

    def __init__(self, message: str, code: Code):
        self.code = code
        super().__init__(message)


class _Untranslatable(Exception):
    """The pattern holds something RE2 cannot run with Python's meaning."""


# --- character sets as ranges ----------------------------------------------------------

def _normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def _of_points(points: Iterable[int]) -> Ranges:
    """The ranges of code points given in increasing order (as re finds them in an ordered alphabet)."""
    out: list[tuple[int, int]] = []
    start = end = -2
    for point in points:
        if point != end + 1:
            if end >= 0:
                out.append((start, end))
            start = point
        end = point
    if end >= 0:
        out.append((start, end))
    return tuple(out)


def _complement(ranges: Ranges) -> Ranges:
    out, start = [], 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAXCHAR:
        out.append((start, MAXCHAR))
    return tuple(out)


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    return _complement(_normalize(_complement(a) + _complement(b)))


def _class_text(ranges: Ranges) -> str:
    """RE2 syntax for a set of characters: one escaped character, a class, or a class matching nothing."""
    if not ranges:
        return _EMPTY_CLASS
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return f"\\x{{{ranges[0][0]:X}}}"
    return "[" + "".join(f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges) + "]"


# --- what one character-matching item matches, asked of re ------------------------------

def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _single(node: tuple[Any, Any], flags: int) -> re.Pattern[str]:
    """``re``'s own compilation of one parsed item, as it is compiled inside the whole pattern."""
    state = _p.State()
    state.flags = flags
    return _rc.compile(_p.SubPattern(state, [node]), flags)


def _all_chars() -> str:
    """Every code point in order (4 MiB: made for the few category tables, not kept)."""
    return array("I", range(MAXCHAR + 1)).tobytes().decode("utf-32-le" if sys.byteorder == "little"
                                                           else "utf-32-be", "surrogatepass")


_ESCAPES = {_c.CATEGORY_DIGIT: r"\d", _c.CATEGORY_WORD: r"\w", _c.CATEGORY_SPACE: r"\s"}
_NEGATED = {_c.CATEGORY_NOT_DIGIT: _c.CATEGORY_DIGIT, _c.CATEGORY_NOT_WORD: _c.CATEGORY_WORD,
            _c.CATEGORY_NOT_SPACE: _c.CATEGORY_SPACE}


@lru_cache(maxsize=None)
def _category(category: Any, flags: int) -> Ranges:
    """Every character ``re`` matches with one class escape (``\\d``, ``\\W``...) under ``flags``."""
    if category in _NEGATED:
        return _complement(_category(_NEGATED[category], flags))
    runs = re.compile(f"[{_ESCAPES[category]}]+", flags)
    return tuple((run.start(), run.end() - 1) for run in runs.finditer(_all_chars()))  # code point = position


@lru_cache(maxsize=1)
def _fold_alphabet() -> str:
    """Every character case folding can concern: those with another case, their lower-case forms,
    and ``re``'s extra folds. Outside it, a character matches a class with re.I as without."""
    cased = [c for c in range(MAXCHAR + 1) if _sre.unicode_iscased(c)]
    chars = set(cased) | {_sre.unicode_tolower(c) for c in cased}
    for key, others in _casefix._EXTRA_CASES.items():
        chars.add(key)
        chars.update(others)
    return "".join(map(chr, sorted(chars)))


@lru_cache(maxsize=1)
def _outside_fold_alphabet() -> Ranges:
    return _complement(_of_points(map(ord, _fold_alphabet())))


def _raw_set(node: tuple[Any, Any], flags: int) -> Ranges:
    """What an item matches without case folding (re's class semantics)."""
    op, av = node
    if op is _c.ANY:
        return ((0, MAXCHAR),) if flags & re.DOTALL else _complement(_NEWLINE)
    if op is _c.LITERAL:
        return ((av, av),)
    if op is _c.NOT_LITERAL:
        return _complement(((av, av),))
    if op is _c.IN:
        parts: list[tuple[int, int]] = []
        negate = False
        for item_op, item_av in av:
            if item_op is _c.NEGATE:
                negate = True
            elif item_op is _c.LITERAL:
                parts.append((item_av, item_av))
            elif item_op is _c.RANGE:
                parts.append(item_av)
            elif item_op is _c.CATEGORY:
                parts.extend(_category(item_av, flags & (re.ASCII | re.UNICODE)))
            else:  # pragma: no cover - the parser gives no other class items
                raise _Untranslatable(f"class item {item_op}")
        members = _normalize(parts)
        return _complement(members) if negate else members
    raise _Untranslatable(f"item {op}")  # pragma: no cover


_FULL_SETS: dict[tuple[Any, int], Ranges] = {}
_ASCII_SETS: dict[tuple[Any, int], Ranges] = {}


def _full_set(node: tuple[Any, Any], flags: int) -> Ranges:
    """Every character (0..U+10FFFF, surrogates included) that one item matches under ``flags``."""
    flags &= _SET_FLAGS
    key = (_freeze(node), flags)
    found = _FULL_SETS.get(key)
    if found is None:
        found = _raw_set(node, flags)
        if flags & re.IGNORECASE and node[0] is not _c.ANY:
            alphabet = _fold_alphabet()
            folded = _of_points(map(ord, _single(node, flags).findall(alphabet)))
            outside = _intersect(found, _outside_fold_alphabet())
            found = _normalize(folded + outside)
        _FULL_SETS[key] = found
    return found


def _ascii_set(node: tuple[Any, Any], flags: int) -> Ranges:
    """The ASCII characters one item matches under ``flags``, asked of ``re`` one by one."""
    flags &= _SET_FLAGS
    key = (_freeze(node), flags)
    found = _ASCII_SETS.get(key)
    if found is None:
        match = _single(node, flags).match
        found = _ASCII_SETS[key] = _of_points(c for c in range(128) if match(chr(c)))
    return found


# --- writing the pattern for RE2 ---------------------------------------------------------

_CHAR_OPS = (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN)


def _walk_chars(items: Any, flags: int, visit: Callable[[tuple[Any, Any], int], None]) -> None:
    """Call ``visit(item, flags)`` for every character-matching item, with the flags in force there."""
    for op, av in items:
        if op in _CHAR_OPS:
            visit((op, av), flags)
        elif op is _c.SUBPATTERN:
            _walk_chars(av[3], (flags | av[1]) & ~av[2], visit)
        elif op in _REPEATS:
            _walk_chars(av[2], flags, visit)
        elif op is _c.BRANCH:
            for branch in av[1]:
                _walk_chars(branch, flags, visit)


class _Writer:
    """Writes parsed items as RE2 source; ``charset(item, flags)`` gives each character item's set."""

    def __init__(self, charset: Callable[[tuple[Any, Any], int], Ranges]):
        self.charset = charset
        self.boundary_flags: set[bool] = set()  # re.ASCII in force at each \b / \B

    def sequence(self, items: Sequence[Any], flags: int, tail: bool) -> str:
        last = len(items) - 1
        return "".join(self.item(op, av, flags, tail and i == last) for i, (op, av) in enumerate(items))

    def item(self, op: Any, av: Any, flags: int, tail: bool) -> str:
        if op in _CHAR_OPS:
            return _class_text(self.charset((op, av), flags))
        if op is _c.SUBPATTERN:
            _group, add, remove, items = av
            return f"(?:{self.sequence(items, (flags | add) & ~remove, tail)})"
        if op is _c.BRANCH:
            return "(?:" + "|".join(self.sequence(branch, flags, tail) for branch in av[1]) + ")"
        if op in _REPEATS:
            low, high, items = av
            body = self.sequence(items, flags, tail and high <= 1)
            if high == _c.MAXREPEAT:
                count = "*" if low == 0 else "+" if low == 1 else f"{{{low},}}"
            else:
                count = f"{{{low}}}" if low == high else f"{{{low},{high}}}"
            return f"(?:{body}){count}"
        if op is _c.AT:
            return self.anchor(av, flags, tail)
        raise _Untranslatable(str(op).lower())

    def anchor(self, at: Any, flags: int, tail: bool) -> str:
        multiline = bool(flags & re.MULTILINE)
        if at is _c.AT_BEGINNING:
            return "(?m:^)" if multiline else r"\A"
        if at is _c.AT_BEGINNING_STRING:
            return r"\A"
        if at is _c.AT_END_STRING:
            return r"\z"
        if at is _c.AT_END:
            if multiline:
                return "(?m:$)"
            if tail:  # the end, or a final newline: nothing follows, so taking the newline along is the same
                return r"(?:\n?\z)"
            raise _Untranslatable("'$' followed by more of the pattern")
        if at in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY):
            self.boundary_flags.add(bool(flags & re.ASCII))
            return r"\b" if at is _c.AT_BOUNDARY else r"\B"
        raise _Untranslatable(f"anchor {at}")  # pragma: no cover


RE2_MAX_MEM = 1 << 20  # per pattern: RE2's lazily built DFA grows up to it (default 8 MiB, times hundreds of
# rules), then RE2 runs its slower, still linear-time, engines


def _options() -> Any:
    options = _re2.RE2.Options()
    options.log_errors = False
    options.never_capture = True
    options.max_mem = RE2_MAX_MEM
    return options


def _re2_program(source: str) -> Any:
    program = _re2.RE2(source.encode(), _options())
    if not program.ok():
        raise _Untranslatable(f"RE2: {program.error().decode(errors='replace')}")
    return program


class _Translator(dict):  # type: ignore[type-arg]
    """Code point -> code point of its class's representative (``str.translate`` table), filled on use."""

    __slots__ = ("cuts", "reps")

    def __init__(self, cuts: list[int], reps: list[int]):
        super().__init__((c, reps[bisect_right(cuts, c) - 1]) for c in range(128))
        self.cuts = cuts
        self.reps = reps

    def __missing__(self, char: int) -> int:
        rep = self.reps[bisect_right(self.cuts, char) - 1]
        if len(self) < 1024:  # bounded: texts may hold any number of distinct characters
            self[char] = rep
        return rep


def _class_program(parsed: Any, flags: int) -> tuple[Any, _Translator]:
    """The class program (see the module's doc) and the table mapping a text onto it."""
    sets: list[Ranges] = []
    index: dict[tuple[Any, int], int] = {}

    def collect(node: tuple[Any, Any], node_flags: int) -> None:
        key = (_freeze(node), node_flags & _SET_FLAGS)
        if key not in index:
            index[key] = len(sets)
            sets.append(_full_set(node, node_flags))

    _walk_chars(parsed.data, flags, collect)
    probe = _Writer(lambda node, node_flags: ())
    probe.sequence(parsed.data, flags, True)  # which \b kinds there are
    if len(probe.boundary_flags) > 1:
        raise _Untranslatable("both ASCII and Unicode word boundaries")
    splitters = [_NEWLINE]
    words = None
    if probe.boundary_flags:
        ascii_words = probe.boundary_flags.pop()
        words = _category(_c.CATEGORY_WORD, re.ASCII if ascii_words else re.UNICODE)
        splitters.append(words)
    every = sets + splitters
    cuts = sorted({0} | {lo for s in every for lo, _ in s} | {hi + 1 for s in every for _, hi in s if hi < MAXCHAR})
    signatures: list[int] = []  # per elementary interval: bit i set where set i holds it
    for cut in cuts:
        bits = 0
        for i, ranges in enumerate(every):
            pos = bisect_right(ranges, (cut, MAXCHAR + 1)) - 1
            if pos >= 0 and ranges[pos][0] <= cut <= ranges[pos][1]:
                bits |= 1 << i
        signatures.append(bits)
    word_bit = 1 << (len(sets) + 1) if words is not None else 0
    newline_bit = 1 << len(sets)
    word_pool = iter(map(ord, _WORD_CHARS))
    other_pool = iter([c for c in range(128) if chr(c) not in _WORD_CHARS and c != 10] +
                      list(range(0x100, 0xD800)))
    rep_of: dict[int, int] = {}
    for bits in dict.fromkeys(signatures):
        if bits & newline_bit:
            rep_of[bits] = 10
        elif word_bit and bits & word_bit:
            rep = next(word_pool, None)
            if rep is None:
                raise _Untranslatable("more kinds of word characters than RE2 has")
            rep_of[bits] = rep
        else:
            rep_of[bits] = next(other_pool) if word_bit else next(word_pool, None) or next(other_pool)
    reps = [rep_of[bits] for bits in signatures]
    members: list[list[int]] = [[] for _ in sets]
    for bits, rep in rep_of.items():
        for i in range(len(sets)):
            if bits >> i & 1:
                members[i].append(rep)
    member_sets = [_of_points(sorted(m)) for m in members]
    writer = _Writer(lambda node, node_flags: member_sets[index[(_freeze(node), node_flags & _SET_FLAGS)]])
    source = writer.sequence(parsed.data, flags, True)
    return _re2_program(source), _Translator(cuts, reps)


# --- bounded backtracking, for what only re can run ---------------------------------------

_INFINITE = float("inf")


def _paths(items: Any) -> float:
    total = 1.0
    for op, av in items:
        if op is _c.SUBPATTERN:
            total *= _paths(av[3])
        elif op is _c.BRANCH:
            total *= sum(_paths(branch) for branch in av[1])
        elif op in _REPEATS or op is _c.POSSESSIVE_REPEAT:
            low, high, body = av
            if high == _c.MAXREPEAT:
                return _INFINITE
            inner, ways, power = _paths(body), 0.0, 1.0
            for k in range(high + 1):  # sum of inner ** k for k in low..high, stopping once it is too many
                if k >= low:
                    ways += power
                power *= inner
                if ways > 1e18 or power > 1e18:
                    return _INFINITE
            total *= ways
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            total *= _paths(av[1])
        elif op is _c.ATOMIC_GROUP:
            total *= _paths(av)
        elif op is _c.GROUPREF_EXISTS:
            total *= sum(_paths(branch) for branch in av[1:] if branch is not None) or 1
        if total > 1e18:
            return _INFINITE
    return total


def backtrack_paths(source: str, flags: int = 0) -> float:
    """An upper bound on the ways a backtracking engine can match a valid Python regex from one
    position (``inf`` with an unbounded repeat): nested or stacked repeats multiply."""
    return _paths(_p.parse(source, flags).data)


# --- the compiled test -----------------------------------------------------------------------

class Regex:
    """A compiled pattern: ``test(text) -> bool`` (search, or the whole text with ``full``);
    ``engine`` is "re2" or "re" (only for what RE2 cannot run, with bounded backtracking)."""

    __slots__ = ("source", "flags", "full", "engine", "test", "_parsed", "_unicode")

    def __init__(self, source: str, flags: int, full: bool):
        self.source, self.flags, self.full = source, flags, full
        try:
            compiled = re.compile(source, flags)
        except re.error as exc:  # pySigma validates with RE2, whose dialect differs (\z, \pL, \x{41})
            raise RegexError(f"regular expression '{source}' is not supported by Python's re: {exc}",
                             Code.REGEX_INVALID) from None
        parsed = _p.parse(source, flags)
        flags = parsed.state.flags
        self._parsed = parsed
        self._unicode: Callable[[str], bool] | None = None
        try:
            if _re2 is None:
                raise _Untranslatable("google-re2 without its _re2 module")
            writer = _Writer(_ascii_set)
            ascii_program = _re2_program(writer.sequence(parsed.data, flags, True))
            self.engine = "re2"
            # Python's \B never matches in an empty text, RE2's does: that one answer is re's
            on_empty = (compiled.fullmatch if full else compiled.search)("") is not None
            self.test = self._re2_test(ascii_program.Match, _re2.RE2.Anchor.ANCHOR_BOTH if full
                                       else _re2.RE2.Anchor.UNANCHORED, on_empty)
            if writer.boundary_flags:  # \b may need more kinds of word characters than RE2 has: known now
                self._class_test()  # (the others' class programs are made on their first non-ASCII text)
        except _Untranslatable as why:
            paths = backtrack_paths(source, flags)
            if paths > MAX_PATHS:
                bound = "an unbounded repeat" if paths == _INFINITE else f"up to {paths:.3g} ways to match"
                raise RegexError(f"regular expression '{source}' cannot run in RE2 ({why}) and could backtrack "
                                 f"badly in Python's re ({bound} from one position; at most {MAX_PATHS}, "
                                 "no unbounded repeats, for what only re can run)", Code.REGEX_UNSAFE) from None
            self.engine = "re"
            run = compiled.fullmatch if full else compiled.search
            self.test = lambda text: run(text) is not None

    def _re2_test(self, match: Any, anchor: Any, on_empty: bool) -> Callable[[str], bool]:
        def test(text: str) -> bool:
            if not text:
                return on_empty
            if text.isascii():
                data = text.encode()
                return match(anchor, data, 0, len(data))[0][0] >= 0
            return self._class_test()(text)
        return test

    def _class_test(self) -> Callable[[str], bool]:
        if self._unicode is None:
            program, table = _class_program(self._parsed, self._parsed.state.flags)
            match = program.Match
            anchor = _re2.RE2.Anchor.ANCHOR_BOTH if self.full else _re2.RE2.Anchor.UNANCHORED

            def test(text: str) -> bool:
                data = text.translate(table).encode()
                return match(anchor, data, 0, len(data))[0][0] >= 0
            self._unicode = test
        return self._unicode

    def __repr__(self) -> str:
        return f"Regex({self.source!r}, flags={self.flags}, full={self.full}, engine={self.engine!r})"


@lru_cache(maxsize=4096)
def compile_regex(source: str, flags: int = 0, full: bool = False) -> Regex:
    """``source`` (Python syntax and meaning, ``re`` flags) compiled to a linear-time test; see the
    module's doc. Raises RegexError (a ValueError) naming the pattern if it cannot be run safely."""
    return Regex(source, int(flags), full)


def compile_search(source: str, flags: int = 0) -> Callable[[str], bool]:
    """Whether ``source`` occurs in a text: :func:`compile_regex`'s test."""
    return compile_regex(source, flags).test


def re2_compile(source: str, flags: int = 0) -> Any:
    """``source`` compiled by RE2 with ``re`` flags as inline flags; an error raises re2.error with a text
    message, without RE2 logging it to stderr. (pySigma's validation of ``|re`` values.)"""
    inline = "".join(letter for flag, letter in _INLINE if flags & flag)
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(f"(?{inline}){source}" if inline else source, options)
    except re2.error as exc:  # RE2 gives bytes, shown as b'...'
        raise re2.error(*(a.decode(errors="replace") if isinstance(a, bytes) else a for a in exc.args)) from None
