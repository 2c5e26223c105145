"""Publishing batches through JetStream: every message stored once, a refusal raised (and retried by the caller)."""
from __future__ import annotations

import nats
import pytest

from opmas.connectors.nats.publishers import PublishRefused, publish_batch, publish_findings
from opmas.connectors.nats.subjects import FINDINGS_STREAM, ensure_streams
from opmas.connectors.records import FindingRecord
from opmas.core.finding import Finding, finding_id


def findings(n: int) -> list[FindingRecord]:
    return [FindingRecord.of(Finding(id=finding_id("r1", [f"e{i}"]), rule_id="r1", rule_title="Rule", severity=("high", "low")[i % 2],
                    tags=[], event_ids=[f"e{i}"], timestamp=1764043200.0 + i, title=f"t{i}",
                                    details={"n": i})) for i in range(n)]


async def test_a_batch_is_stored_once_even_when_published_again(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    batch = findings(3000)
    await publish_findings(js, batch)
    await publish_findings(js, batch[1000:2000])  # re-sent after a crash: deduplicated by Nats-Msg-Id
    await publish_findings(js, [])
    assert (await js.stream_info(FINDINGS_STREAM)).state.messages == 3000
    sub = await js.subscribe("opmas.findings.>", ordered_consumer=True)
    first = await sub.next_msg(5)
    assert (first.subject, first.headers["Nats-Msg-Id"]) == ("opmas.findings.high", batch[0].id)
    await nc.close()


async def test_a_subject_no_stream_takes_is_refused(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    with pytest.raises(PublishRefused):
        await publish_batch(js, [("opmas.findings.high", b"{}", "a"), ("nowhere.at.all", b"{}", "b")], timeout=5)
    assert (await js.stream_info(FINDINGS_STREAM)).state.messages == 1
    await nc.close()
