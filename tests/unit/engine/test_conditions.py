"""Condition forms: and, or, not, parentheses, x of pattern, x of them, precedence, condition lists."""
from __future__ import annotations

import pytest

DETECTIONS = (
    "  selection_a:\n    A: 'a'\n"
    "  selection_b:\n    B: 'b'\n"
    "  filter_c:\n    C: 'c'\n"
    "  _private:\n    D: 'd'\n"
)


@pytest.mark.parametrize("condition,event,expected", [
    ("selection_a and selection_b", {"A": "a", "B": "b"}, True),
    ("selection_a and selection_b", {"A": "a"}, False),
    ("selection_a or selection_b", {"B": "b"}, True),
    ("selection_a or selection_b", {"C": "c"}, False),
    ("selection_a and not filter_c", {"A": "a"}, True),
    ("selection_a and not filter_c", {"A": "a", "C": "c"}, False),
    ("not selection_a", {}, True),
    ("selection_a and (selection_b or filter_c)", {"A": "a", "C": "c"}, True),
    ("selection_a and (selection_b or filter_c)", {"A": "a"}, False),
    # precedence: not > and > or
    ("selection_a or selection_b and filter_c", {"A": "a"}, True),
    ("selection_a or selection_b and filter_c", {"B": "b"}, False),
    ("not selection_a and selection_b", {"B": "b"}, True),
    ("not selection_a and selection_b", {"A": "a", "B": "b"}, False),
    ("1 of selection_*", {"B": "b"}, True),
    ("1 of selection_*", {"C": "c"}, False),
    ("all of selection_*", {"A": "a", "B": "b"}, True),
    ("all of selection_*", {"A": "a"}, False),
    ("any of selection_*", {"A": "a"}, True),
    ("1 of selection_* and not 1 of filter_*", {"A": "a", "C": "c"}, False),
    ("1 of selection_* and not 1 of filter_*", {"A": "a"}, True),
    ("1 of them", {"C": "c"}, True),
    ("1 of them", {"D": "d"}, False),  # identifiers starting with _ are not part of "them"
    ("all of them", {"A": "a", "B": "b", "C": "c"}, True),
    ("all of them", {"A": "a", "B": "b"}, False),
    ("all of them", {"A": "a", "B": "b", "C": "c", "D": "x"}, True),
    ("_private", {"D": "d"}, True),
    ("1 of sel*_a", {"A": "a"}, True),
])
def test_condition(matcher, condition: str, event: dict, expected: bool) -> None:
    assert matcher(DETECTIONS + f"  condition: {condition}\n")(event) is expected


def test_list_of_conditions_is_or(matcher) -> None:
    m = matcher(DETECTIONS + "  condition:\n    - selection_a and filter_c\n    - selection_b\n")
    assert m({"A": "a", "C": "c"}) and m({"B": "b"}) and not m({"A": "a"})


def test_sigma_spec_example_selection_and_not_filter(matcher) -> None:
    m = matcher(
        "  selection:\n    EventID: 4738\n  filter:\n    PasswordLastSet: null\n"
        "  condition: selection and not filter\n"
    )
    assert m({"EventID": 4738, "PasswordLastSet": "2024-01-01"})
    assert not m({"EventID": 4738})
    assert not m({"EventID": 4624, "PasswordLastSet": "2024-01-01"})
