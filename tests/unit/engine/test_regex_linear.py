"""Rule regexes run in linear time (RE2, engine/sigma/regex.py) and answer exactly as Python's re.

* The patterns of issue 11 that backtrack catastrophically in re (over 60 s on 50 characters)
  evaluate at once, as ``|re`` values and as Sigma wildcards.
* Differential: every ``|re`` value of the SigmaHQ snapshot against re over the field values of
  generated events (benchmarks.generate, benchmarks.sigma_corpus), strings built to match each
  pattern and non-ASCII variants of all of them; and random patterns over a tricky alphabet
  (case folding special cases, Unicode digits and spaces, a final newline, lone surrogates).
* What RE2 cannot run with Python's meaning runs on re only with bounded backtracking; the
  rest is a located rule error.
"""
from __future__ import annotations

import random
import re
import time
from typing import Any

import pytest
import yaml

from benchmarks.generate import generate
from benchmarks.sigma_corpus import quiet_events, rule_documents, rule_events
from opmas.core.ruleset import RuleSource, load_ruleset
from opmas.core.sigma import regex as rx
from opmas.core.sigma.regex import compile_regex
from tests.unit.engine.conftest import matched_ids, rule_text
from tests.paths import SIGMA_DIR

SIGMA = SIGMA_DIR
REDOS = [r"(a{1,30}){1,30}$", r"a*a*a*a*a*a*a*a*b", r"(?:a{1,10}){1,10}b"]
FIFTY = "a" * 49 + "!"  # a near miss of each: the worst case of a backtracking engine


def _rule(pattern: str, modifier: str = "|re") -> Any:
    detection = f"  sel:\n    CommandLine{modifier}: '{pattern}'\n  condition: sel\n"
    ruleset, errors = load_ruleset([RuleSource("redos.yml", rule_text(detection))])
    assert not [e for e in errors if e.severity == "error"], [str(e) for e in errors]
    return ruleset


# what each pattern answers on FIFTY, "a" * 50, "b" * 50 and "a" * 5000 + "!"
REDOS_ANSWERS = {REDOS[0]: [False, True, False, False], REDOS[1]: [False, False, True, False],
                 REDOS[2]: [False, False, False, False]}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("pattern", REDOS)
def test_catastrophic_patterns_of_issue_11_evaluate_at_once(pattern: str) -> None:
    ruleset = _rule(pattern)
    started = time.monotonic()
    for line, answer in zip((FIFTY, "a" * 50, "b" * 50, "a" * 5000 + "!"), REDOS_ANSWERS[pattern], strict=True):
        assert matched_ids(ruleset, [{"CommandLine": line}]) == (["test-rule"] if answer else [])
    assert time.monotonic() - started < 2.0  # a hang guard: re takes over a minute on the first event


@pytest.mark.timeout(30)
@pytest.mark.parametrize("pattern", REDOS)
def test_catastrophic_patterns_answer_as_re_on_short_texts(pattern: str) -> None:
    test = compile_regex(pattern).test
    for length in range(12):  # short enough for re to answer quickly
        for text in ("a" * length, "a" * length + "b", "a" * length + "!", "x" + "a" * length + "b"):
            assert test(text) is (re.search(pattern, text) is not None), text


@pytest.mark.timeout(30)
def test_wildcards_that_would_backtrack_polynomially_evaluate_at_once() -> None:
    ruleset = _rule("*a*a*a*a*a*a*a*a*b", "")  # re: .*a.*a...b backtracks O(n^8) on a near miss
    started = time.monotonic()
    assert matched_ids(ruleset, [{"CommandLine": FIFTY}, {"CommandLine": "a" * 8 + "b"}]) == ["test-rule"]
    assert time.monotonic() - started < 2.0


@pytest.mark.timeout(30)
def test_what_re2_cannot_run_is_a_located_error_unless_bounded() -> None:
    # '$' followed by more pattern means "end or before a final newline" mid-pattern: re must run it
    text = rule_text("  sel:\n    CommandLine|re: '(?:a+$|b)+c'\n  condition: sel\n", rule_id="11111111-2222-3333-4444-555555555555")
    ruleset, errors = load_ruleset([RuleSource("rules/bad.yml", text)])
    assert not ruleset.rules and len(errors) == 1
    error = errors[0]
    assert (error.file, error.line, error.rule_id) == ("rules/bad.yml", 5, "11111111-2222-3333-4444-555555555555")
    assert "cannot run in RE2" in error.message and "backtrack badly" in error.message
    bounded = compile_regex(r"(?:ab$|c)d?")  # bounded: re runs it, exactly
    assert bounded.engine == "re" and bounded.test("xab\n") and bounded.test("cd") and not bounded.test("ab\nx")
    with pytest.raises(ValueError, match="could backtrack badly"):
        compile_regex(r"(a{1,30}){1,30}$x")


SEMANTICS = [  # (pattern, flags, text, what re answers): Python's meaning where RE2's differs
    (r"abc$", 0, "abc\n", True), (r"abc$", 0, "abc\n\n", False), (r"abc\Z", 0, "abc\n", False),
    (r"(?m)^b$", 0, "a\nb\nc", True), (r"(?P<name>ab)c", 0, "xabc", True), (r"\d+", 0, "\u0663\u0664", True),
    (r"\w", 0, "\u00e9", True), (r"(?a)\w", 0, "\u00e9", False), (r"\s", 0, "\x1c", True), (r"\s", 0, "\x0b", True),
    (r"\s", 0, "\u00a0", True), (r"(?i)i", 0, "\u0130", True), (r"(?i)i", 0, "\u0131", True),
    (r"(?i)k", 0, "\u212a", True), (r"(?i)s", 0, "\u017f", True), (r"(?i)\u00df", 0, "\u1e9e", True),
    (r"(?ai)k", 0, "\u212a", False), (r"\bx", 0, "\u00e9x", False), (r"\bx", 0, "-x", True),
    (r"x\B", 0, "x\u00e9", True), (r"\B", 0, "", False), (r"a.c", 0, "a\nc", False), (r"a.c", re.S, "a\nc", True),
    (r"a.c", 0, "a\ud800c", True), (r"[^a]", 0, "\udfff", True), (r"A", re.I, "a", True),
]


@pytest.mark.parametrize(("pattern", "flags", "text", "expected"), SEMANTICS)
def test_python_semantics_where_re2_differs(pattern: str, flags: int, text: str, expected: bool) -> None:
    assert (re.search(pattern, text, flags) is not None) is expected  # the reference
    regex = compile_regex(pattern, flags)
    assert regex.engine == "re2" and regex.test(text) is expected


@pytest.mark.parametrize("atom", [r"(?i)k", r"(?i)[a-z]", r"(?i)[^\W\d]", r"(?i)\u1e9e", r"(?i)[\u0100-\u2000]",
                                  r"(?ia)[^k]", r"(?i)[k-\U00010500]", r"\S"])
def test_character_sets_are_those_re_matches_over_all_of_unicode(atom: str) -> None:
    parsed = rx._p.parse(atom, 0)
    everything = rx._all_chars()
    assert rx._full_set(parsed.data[0], parsed.state.flags) == rx._of_points(
        m.start() for m in re.finditer(atom, everything))


# --- differential: the SigmaHQ snapshot's regexes ---------------------------------------------------

def _sigma_regexes() -> list[tuple[str, int]]:
    found: dict[tuple[str, int], None] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                name, *modifiers = str(key).split("|")
                if "re" in modifiers:
                    flags = 0
                    for letter, flag in (("i", re.I), ("m", re.M), ("s", re.S)):
                        flags |= flag if letter in modifiers else 0
                    for pattern in item if isinstance(item, list) else [item]:
                        found[(str(pattern), flags)] = None
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in sorted(SIGMA.glob("rules*/**/*.yml")):
        text = path.read_text(encoding="utf-8")
        if "|re" in text:
            for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                walk(doc.get("detection") if isinstance(doc, dict) else None)
    return list(found)


def _strings(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
    elif isinstance(value, str):
        out.add(value)


_SAMPLE = {_c: chars for _c, chars in ((rx._c.CATEGORY_DIGIT, "07\u0663"), (rx._c.CATEGORY_WORD, "aZ_\u00e9"),
                                        (rx._c.CATEGORY_SPACE, " \t\n"), (rx._c.CATEGORY_NOT_DIGIT, "a-"),
                                        (rx._c.CATEGORY_NOT_WORD, "-. "), (rx._c.CATEGORY_NOT_SPACE, "a\\"))}


def _example(items: Any, rng: random.Random) -> str:
    """A string built to match parsed ``items`` (most of the time: anchors and classes are approximate)."""
    out = []
    for op, av in items:
        if op is rx._c.LITERAL:
            out.append(chr(av))
        elif op is rx._c.ANY or op is rx._c.NOT_LITERAL:
            out.append(rng.choice("x.\\ 1"))
        elif op is rx._c.IN:
            choices = []
            for item_op, item_av in av:
                if item_op is rx._c.LITERAL:
                    choices.append(chr(item_av))
                elif item_op is rx._c.RANGE:
                    choices.append(chr(rng.randint(*item_av)))
                elif item_op is rx._c.CATEGORY:
                    choices.extend(_SAMPLE.get(item_av, "a"))
            out.append(rng.choice(choices or ["x"]))
        elif op is rx._c.SUBPATTERN:
            out.append(_example(av[3], rng))
        elif op is rx._c.BRANCH:
            out.append(_example(rng.choice(av[1]), rng))
        elif op in (rx._c.MAX_REPEAT, rx._c.MIN_REPEAT):
            low, high, body = av
            count = rng.randint(low, min(high, low + 3))
            out.append("".join(_example(body, rng) for _ in range(count)))
    return "".join(out)


def _variants(text: str) -> list[str]:
    return [text, text.upper(), text + "\n", "\u00e9" + text, text + "\u0130", text.replace("k", "\u212a"),
            text.replace("i", "\u0131"), "\u0663" + text + "\u00a0"]


@pytest.mark.timeout(300)
@pytest.mark.skipif(not SIGMA.is_dir(), reason=f"no SigmaHQ snapshot at {SIGMA}")
def test_sigmahq_regexes_match_as_python_re_does_over_generated_events() -> None:
    patterns = _sigma_regexes()
    assert len(patterns) > 100
    corpus: set[str] = set()
    for kind in ("windows", "linux", "web"):
        for event in generate(kind, 300, seed=11):
            _strings(event, corpus)
    for event in quiet_events(600, seed=12):
        _strings(event, corpus)
    for event in rule_events(rule_documents(SIGMA / "rules" / "windows" / "process_creation")[:400]):
        _strings(event, corpus)
    rng = random.Random(13)
    texts = sorted(corpus)
    ascii_texts, other_texts = texts, [v for t in rng.sample(texts, 300) for v in _variants(t)[1:]]
    matched = compared = 0
    mismatches = []
    for pattern, flags in patterns:
        reference = re.compile(pattern, flags).search
        test = compile_regex(pattern, flags).test
        built = [_example(rx._p.parse(pattern, flags).data, rng) for _ in range(6)]
        own = [v for b in built for v in _variants(b)] + [f"x {b} y" for b in built]
        hits = 0
        for text in ascii_texts + other_texts + own:
            expected = reference(text) is not None
            compared += 1
            hits += expected
            if test(text) is not expected:
                mismatches.append((pattern, flags, text, expected))
        matched += hits > 0
    assert not mismatches, mismatches[:10]
    assert compared > 500_000 and matched > len(patterns) * 0.8  # most patterns were seen to match


# --- differential: random patterns over a tricky alphabet -------------------------------------------

_CHARS = ["a", "A", "k", "K", "\u212a", "i", "I", "\u0130", "\u0131", "s", "\u017f", "\u00e9", "\u00c9", "\n", " ",
          "1", "\u0663", "_", "-", ".", "\u00df", "\u1e9e", "\t", "\x0b", "\x1c", "\u00a0", "\u03a3", "\u03c3",
          "\u03c2", "\u2028", "z", "0"]


def _random_pattern(rng: random.Random, depth: int = 0) -> str:
    def atom() -> str:
        roll = rng.random()
        if roll < 0.35:
            return re.escape(rng.choice(_CHARS))
        if roll < 0.5:
            members = "".join(rng.choice([r"\d", r"\w", r"\s", r"\W", "a-f", "\u00c0-\u017f", re.escape(rng.choice(_CHARS))])
                              for _ in range(rng.randint(1, 3)))
            return f"[{'^' if rng.random() < 0.3 else ''}{members}]"
        if roll < 0.6:
            return rng.choice([r"\d", r"\w", r"\s", r"\W", r"\S", r"\D", "."])
        if roll < 0.7:
            return rng.choice(["^", "$", r"\b", r"\B", r"\A", r"\Z"])
        if depth < 2:
            inner = _random_pattern(rng, depth + 1)
            return f"(?:{inner}|{_random_pattern(rng, depth + 1)})" if roll < 0.8 else f"({inner})"
        return "x"

    def repeat(item: str) -> str:
        if rng.random() < 0.6 or item in ("^", "$", r"\b", r"\B", r"\A", r"\Z"):
            return item
        return item + rng.choice(["*", "+", "?", "{2}", "{1,3}", "*?"])
    return "".join(repeat(atom()) for _ in range(rng.randint(1, 4)))


@pytest.mark.timeout(300)
def test_random_patterns_match_as_python_re_does() -> None:
    rng = random.Random(2026)
    checked = 0
    for _ in range(600):
        flags = "".join(f for f in "ims" if rng.random() < 0.3) + ("a" if rng.random() < 0.1 else "")
        pattern = (f"(?{flags})" if flags else "") + _random_pattern(rng)
        full = rng.random() < 0.3
        try:
            compiled = compile_regex(pattern, 0, full)
        except ValueError:
            continue  # refused: '$' mid-pattern where re could backtrack badly
        reference = re.compile(pattern)
        run = reference.fullmatch if full else reference.search
        for _ in range(25):
            text = "".join(rng.choice(_CHARS + ["\ud800"]) for _ in range(rng.randint(0, 8)))
            assert compiled.test(text) is (run(text) is not None), (pattern, full, text)
            checked += 1
    assert checked > 10_000
