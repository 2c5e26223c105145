"""A worker receives every record of the partitions it is assigned across rebalances.

aiokafka returns the records of every partition when Faust's set of active partitions is empty
(it is, for a moment, while a rebalance or the table recovery has them all paused): Faust dropped
those of paused partitions, and aiokafka's position had moved past them. After a rebalance a worker seeks its events partitions to their committed offsets (to their start
when none is committed) before it resumes them. Faust 0.15 resumes them first, with its Fetcher
already running: records fetched during the table recovery reached the agent during the seek, and
the records between those and the refetched ones were never delivered (the worker stalled on that
partition, or Faust committed past them); and it left a partition without a committed offset where
aiokafka's position was, past records that were never delivered."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka.consumer.fetcher import Fetcher, FetchResult
from faust.types import TP

from opmas.runtime.faust_worker import ActivePartitions, WorkerRuntime, WorkerSettings
from opmas.runtime.rules import RuleFiles

EVENTS = TP("opmas-events", 0)
UNCOMMITTED = TP("opmas-events", 1)  # its first owner was killed before its first commit
CHANGELOG = TP("opmas-workers-checkpoints-changelog", 0)


class FakeConsumer:
    """Records whether the events partition was paused when the seek ran."""

    def __init__(self) -> None:
        self.paused = {EVENTS, UNCOMMITTED}
        self.paused_at_seek: bool | None = None
        self._committed_offset = {EVENTS: 20}  # perform_seek's result, as Faust keeps it
        self.seeks: list[tuple[TP, int, bool]] = []  # (partition, offset, paused then)

    def assignment(self) -> set[TP]:
        return {EVENTS, UNCOMMITTED, CHANGELOG}

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset, tp in self.paused))

    def resume_partitions(self, tps) -> None:
        self.paused.difference_update(tps)

    async def perform_seek(self) -> None:
        self.paused_at_seek = EVENTS in self.paused
        await asyncio.sleep(0)  # the fetcher would deliver records here

    def resume_flow(self) -> None:
        pass


async def noop(*_args, **_kwargs) -> None:
    return None


def recovery_of(consumer: FakeConsumer, generation: int) -> SimpleNamespace:
    """The attributes on_recovery_completed uses, with the app's consumer replaced by ``consumer``."""
    app = SimpleNamespace(
        consumer=consumer, consumer_generation_id=generation, conf=SimpleNamespace(broker_request_timeout=5.0),
        on_rebalance_complete=SimpleNamespace(send=noop), flow_control=SimpleNamespace(resume=lambda: None),
        _fetcher=SimpleNamespace(maybe_start=noop), assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=lambda: None)

    async def wait(coro, timeout=None) -> None:
        await coro

    return SimpleNamespace(
        app=app, log=SimpleNamespace(info=lambda *a: None, warning=lambda *a: None, dev=lambda *a: None),
        _set_recovery_ended=lambda: None, actives_for_table={}, standbys_for_table={},
        tables=SimpleNamespace(values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None),
        _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"), _wait=wait, completed=asyncio.Event())


def test_worker_seeks_events_partitions_before_resuming_them():
    settings = WorkerSettings(kafka_url="127.0.0.1:1", topic="opmas-events", partitions=4, partition_key="agent",
                              nats_url="nats://127.0.0.1:1", db_url="postgresql://127.0.0.1:1/none")
    runtime = WorkerRuntime(settings, RuleFiles(()))
    recovery_class = type(runtime.app.tables.recovery)
    consumer = FakeConsumer()
    fake = recovery_of(consumer, generation=3)
    asyncio.run(recovery_class.on_recovery_completed(fake, 3))
    assert consumer.paused_at_seek is True  # nothing of the partition can reach the agent before the seek
    assert consumer.seeks == [(UNCOMMITTED, 0, True)]  # to its start (aiokafka's seek leaves it as it is)
    assert not consumer.paused & {EVENTS, UNCOMMITTED}  # both resumed after the seeks
    assert fake.completed.is_set()


class Records:
    """Stands for aiokafka's PartitionRecords: offsets, and the next offset to fetch."""

    def __init__(self, first: int, last: int) -> None:
        self.offsets = range(first, last + 1)
        self.next_fetch_offset = first

    def __iter__(self):
        for offset in self.offsets:
            self.next_fetch_offset = offset + 1
            yield offset


def fetcher_holding(tp: TP, first: int, last: int) -> tuple[SimpleNamespace, SimpleNamespace]:
    """An aiokafka fetcher (the attributes fetched_records uses) holding fetched records of ``tp``,
    and the partition's position."""
    state = SimpleNamespace(paused=False, position=first)
    state.consumed_to = lambda offset: setattr(state, "position", offset)
    assignment = SimpleNamespace(active=True, state_value=lambda _tp: state)
    fetcher = SimpleNamespace(_subscriptions=SimpleNamespace(reassignment_in_progress=False,
                                                             is_assigned=lambda _tp: True),
                              _records={tp: FetchResult(tp, assignment=assignment,
                                                        partition_records=Records(first, last), backoff=0)},
                              _notify=lambda _future: None, _wait_consume_future=None)
    return fetcher, state


def test_no_records_of_paused_partitions_are_taken_from_aiokafka():
    active: set[TP] = set()  # Faust's active partitions: none, all are paused
    fetcher, state = fetcher_holding(EVENTS, 20, 59)
    taken = asyncio.run(Fetcher.fetched_records(fetcher, active, timeout=0))
    assert taken == {EVENTS: list(range(20, 60))} and state.position == 60  # aiokafka: an empty set is all
    fetcher, state = fetcher_holding(EVENTS, 20, 59)
    assert asyncio.run(Fetcher.fetched_records(fetcher, ActivePartitions(active), timeout=0)) == {}
    assert state.position == 20 and EVENTS in fetcher._records  # kept for when the partition is resumed
    active.add(EVENTS)  # Faust resumes it: the same set, read live
    assert asyncio.run(Fetcher.fetched_records(fetcher, ActivePartitions(active), timeout=0)) == {
        EVENTS: list(range(20, 60))}
