"""Poison messages (issue 11, item 1): a dead letter always fits in a NATS message, a finding too big
for one is published bounded, and an error a retry cannot mend is never retried (before: a message
just under 1 MiB made a dead letter over the server's max payload, retried forever)."""
from __future__ import annotations

import asyncio
import hashlib

import nats
import nats.errors
import orjson
import pytest

from opmas.connectors.nats.publishers import DeadLetter, PublishRefused, publish_dead_letters, publish_findings
from opmas.connectors.nats.subjects import (DEADLETTER_STREAM, DEADLETTER_SUBJECT, FINDINGS_STREAM, PAYLOAD_BUCKET,
                                      ensure_streams)
from opmas.connectors.records import FindingRecord
from opmas.core.finding import Finding
from opmas.connectors.nats.client import NATS_ERRORS
from opmas.runtime.retry import retry, retryable

POISON = bytes(range(0x80, 0x100)) * (900_000 // 128) + bytes(range(0x80, 0x80 + 900_000 % 128))


async def stored(js, stream: str, subject: str) -> list[bytes]:
    sub = await js.pull_subscribe(subject, stream=stream)
    return [msg.data for msg in await sub.fetch(10, timeout=5)]


@pytest.mark.parametrize("payload, encoding", [(POISON, "base64"), ("é".encode() * 450_000, "utf-8"),
                                               (b'"\x01' * 450_000, "utf-8")], ids=["binary", "utf-8", "escaped"])
async def test_a_dead_letter_always_fits_and_its_payload_is_kept_whole(nats_server, payload, encoding):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    letter = DeadLetter(reason="malformed JSON: unexpected character", subject="opmas.events.poison",
                        payload=payload, headers={"h": "v"}, seq=7)
    await publish_dead_letters(js, [letter])
    await publish_dead_letters(js, [letter])  # redelivered: one dead letter, one kept payload
    [data] = await stored(js, DEADLETTER_STREAM, DEADLETTER_SUBJECT)
    assert len(data) <= nc.max_payload
    out = orjson.loads(data)
    digest = hashlib.sha256(payload).hexdigest()
    assert (out["reason"], out["seq"], out["headers"]) == (letter.reason, 7, {"h": "v"})
    assert (out["payload_size"], out["payload_sha256"], out["payload_truncated"]) == (len(payload), digest, True)
    assert out["payload_encoding"] == encoding and 0 < len(out["payload"]) < len(payload)
    assert out["payload_object"] == {"bucket": PAYLOAD_BUCKET, "name": digest}
    kept = await (await js.object_store(PAYLOAD_BUCKET)).get(digest)
    assert kept.data == payload
    await nc.close()


def test_a_small_dead_letter_is_whole():
    out = orjson.loads(DeadLetter(reason="schema: x", subject="s", payload=b'{"a": 1}').to_json(1 << 20)[0])
    assert (out["payload"], out["payload_encoding"], out["payload_truncated"], out["payload_object"]) == (
        '{"a": 1}', "utf-8", False, None)
    assert (out["payload_size"], out["payload_sha256"]) == (8, hashlib.sha256(b'{"a": 1}').hexdigest())


def test_a_dead_letter_fits_a_small_max_payload():
    letter = DeadLetter(reason="r" * 5000, subject="s", payload=POISON, headers={"k": "v" * 5000})
    data, truncated = letter.to_json(4096)
    out = orjson.loads(data)
    assert len(data) <= 4096 and truncated and out["payload_size"] == len(POISON)
    assert out["reason"].startswith("rrr") and len(out["reason"]) < 5000


def finding(n: int, details: dict) -> FindingRecord:
    return FindingRecord.of(Finding(id=f"0d0d0d0d-0000-4000-8000-00000000000{n}", rule_id="big", rule_title="Big",
                                    severity="high", tags=[], event_ids=["e1"], timestamp=1764043200.0,
                                    title="big", details=details))


async def test_a_finding_too_big_for_nats_is_published_bounded(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    big, small = finding(1, {"event": {"blob": "x" * (2 << 20)}}), finding(2, {"n": 1})
    await publish_findings(js, [big, small])
    data, whole = await stored(js, FINDINGS_STREAM, "opmas.findings.high")
    assert whole == small.json
    out = orjson.loads(data)
    assert (out["id"], out["rule_id"], out["event_ids"]) == (big.id, "big", ["e1"])
    assert out["details"] == {"truncated": True, "size": len(big.details),
                              "sha256": hashlib.sha256(big.details).hexdigest()}
    await nc.close()


def test_a_finding_whose_head_alone_is_too_big_keeps_its_id_rule_and_severity():
    record = finding(3, {"n": 1})
    assert record.bounded(len(record.json)) == record.json
    out = orjson.loads(record.bounded(200))
    assert out == {"id": record.id, "rule_id": "big", "severity": "high", "details": {
        "truncated": True, "size": len(record.details), "sha256": hashlib.sha256(record.details).hexdigest()}}


@pytest.mark.parametrize("exc, expected", [
    (nats.errors.MaxPayloadError(), False), (nats.errors.BadSubjectError(), False),
    (nats.errors.TimeoutError(), True), (nats.errors.NoServersError(), True), (asyncio.TimeoutError(), True),
    (PublishRefused("stream full"), True)])
def test_errors_are_classified_once(exc, expected):
    assert retryable(exc) is expected


async def test_a_non_retryable_error_is_raised_at_once():
    calls = 0

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise nats.errors.MaxPayloadError
        return "retried"

    with pytest.raises(nats.errors.MaxPayloadError):
        await retry(op, "nats-test", NATS_ERRORS, 0.01)
    assert calls == 1
