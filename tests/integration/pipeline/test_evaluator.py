"""The evaluator keeps going past a message it cannot evaluate: that message becomes a dead letter."""
from __future__ import annotations

from collections.abc import Sequence

import orjson

from opmas.connectors.source import SourceMessage
from opmas.core.event import Event
from opmas.core.processor import Processed, Processor
from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.runtime.evaluator import Evaluator, Layout
from tests.expected import sample_objects


class BrokenOnBoom(Processor):
    """Stands in for an engine bug: fails on the event with id ``boom``."""

    def process(self, events: Sequence[Event], now: float | None = None) -> Processed:
        if any(event.id == "boom" for event in events):
            raise RuntimeError("engine bug")
        return super().process(events, now)


def message(seq: int, objects: list[dict]) -> SourceMessage:
    return SourceMessage("opmas.events.web-1", b"\n".join(orjson.dumps(o) for o in objects), seq, 1764043200.0,
                         None, None)


def test_a_message_that_fails_evaluation_is_dead_lettered_and_the_batch_goes_on(rules_dir):
    ruleset, _ = load_ruleset(sources_from_paths([rules_dir]))
    evaluator = Evaluator(Layout(1, "agent", 1), 0, ruleset, None, 1 << 20)
    evaluator.processors[0] = BrokenOnBoom(ruleset)  # as the evaluator makes them
    sample = sample_objects()
    expected = Processor(ruleset).process([Event(str(i), o, agent_id="web-1") for i, o in enumerate(sample)]).findings
    assert expected

    result = evaluator.evaluate([message(1, [{"id": "ok", "message": "fine"}, {"id": "boom"}]),
                                 message(2, [o | {"id": str(i)} for i, o in enumerate(sample)])])

    assert [(d.seq, d.reason) for d in result.dead] == [(1, "evaluation failed: RuntimeError: engine bug")]
    assert result.dead[0].payload == message(1, [{"id": "ok", "message": "fine"}, {"id": "boom"}]).data
    assert result.events == len(sample)  # nothing of the failed message is kept
    assert {f.id for f in result.findings} == {f.id for f in expected}
