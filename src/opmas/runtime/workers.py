"""Evaluator processes: the partition processors spread over ``workers`` OS processes.

Python runs one thread at a time per process; with ``workers >= 1`` rule evaluation
runs in that many processes (spawned, each owning the partitions ``p % workers``),
while the engine process keeps NATS, the sinks and the in-process ClickHouse. With
``workers == 0`` one evaluator runs in the engine process (in a thread), which starts
faster and suits small loads and tests. Commands go over a pipe, one at a time per
worker, so a snapshot taken after a batch is exactly the state after that batch.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from opmas.connectors.source import SourceMessage
from opmas.core.ruleset import RuleSource
from opmas.runtime.gc_tuning import tune_gc_for_rules
from opmas.runtime.processes import die_with_parent
from opmas.runtime.evaluator import Evaluated, Evaluator, Layout, load_rules


class WorkerError(RuntimeError):
    """An evaluator process failed or went away."""


def _worker_main(conn: Connection, layout: Layout, index: int, sources: list[RuleSource],
                 mappings: list[str], lateness: float, state: dict[str, Any] | None, max_bytes: int,
                 max_future: float) -> None:
    # The engine process handles Ctrl-C and SIGTERM and stops its workers in order; a worker dies
    # with it, even in the middle of an evaluation.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    evaluator = Evaluator(layout, index, load_rules(sources, mappings, lateness), state, max_bytes, max_future)
    tune_gc_for_rules()
    conn.send(("ok", None))
    while True:
        try:
            command, arg = conn.recv()
        except EOFError:
            return
        try:
            if command == "evaluate":
                result = evaluator.evaluate(arg)
            elif command == "snapshot":
                result = evaluator.snapshot()
            elif command == "stats":
                result = evaluator.stats()
            elif command == "rules":
                evaluator.replace_rules(load_rules(*arg))
                result = None
            else:
                return
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class EvaluatorPool:
    """The evaluators of one engine; every method is called between batches, never concurrently."""

    def __init__(self, partitions: int, key: str, workers: int, sources: Sequence[RuleSource],
                 mappings: Sequence[str], lateness: float, state: dict[str, Any] | None,
                 max_message_bytes: int, max_future: float):
        self.layout = Layout(partitions, key, max(1, workers))
        self.in_process = workers == 0
        self._args = (list(sources), [str(m) for m in mappings], lateness, state, max_message_bytes, max_future)
        self._inline: Evaluator | None = None
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.Process] = []

    async def start(self) -> None:
        sources, mappings, lateness, state, max_bytes, max_future = self._args
        if self.in_process:
            ruleset = await asyncio.to_thread(load_rules, sources, mappings, lateness)
            self._inline = Evaluator(self.layout, 0, ruleset, state, max_bytes, max_future)
            return
        ctx = multiprocessing.get_context("spawn")
        for index in range(self.layout.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, name=f"opmas-evaluator-{index}", daemon=True,
                               args=(child, self.layout, index, sources, mappings, lateness, state, max_bytes,
                                     max_future))
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        await asyncio.gather(*(self._reply(i) for i in range(len(self._conns))))

    def _receive(self, index: int) -> Any:
        try:
            status, result = self._conns[index].recv()
        except (EOFError, OSError) as exc:
            raise WorkerError(f"evaluator process {index} exited "
                              f"(exit code {self._procs[index].exitcode})") from exc
        if status != "ok":
            raise WorkerError(f"evaluator process {index} failed:\n{result}")
        return result

    async def _reply(self, index: int) -> Any:
        """The next answer of worker ``index``; cancellable, so a stuck worker cannot hold its caller."""
        conn = self._conns[index]
        readable = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(conn.fileno())
        return await asyncio.to_thread(self._receive, index)

    async def _all(self, command: str, args: list[Any]) -> list[Any]:
        async def call(index: int) -> Any:
            try:
                await asyncio.to_thread(self._conns[index].send, (command, args[index]))
            except (BrokenPipeError, OSError) as exc:
                raise WorkerError(f"evaluator process {index} is gone") from exc
            return await self._reply(index)
        return await asyncio.gather(*(call(i) for i in range(len(self._conns))))

    async def evaluate(self, messages: Sequence[SourceMessage]) -> Evaluated:
        """Evaluate a batch; whole messages go to their partition's owner (or to all, see Layout)."""
        if self._inline is not None:
            return await asyncio.to_thread(self._inline.evaluate, messages)
        layout = self.layout
        shares: list[list[SourceMessage]] = [[] for _ in self._conns]
        for m in messages:
            plain = SourceMessage(m.subject, m.data, m.seq, m.time, m.headers, None)
            fixed = layout.partition_of_message(m.subject)
            if fixed is None:
                for share in shares:
                    share.append(plain)
            else:
                shares[layout.owner(fixed)].append(plain)
        merged = Evaluated()
        for result in await self._all("evaluate", shares):
            merged.merge(result)
        return merged

    async def snapshot(self) -> dict[str, Any]:
        if self._inline is not None:
            return self._inline.snapshot()
        state: dict[str, Any] = {}
        for part in await self._all("snapshot", [None] * len(self._conns)):
            state.update(part)
        return state

    async def stats(self) -> dict[int, dict[str, int]]:
        if self._inline is not None:
            return self._inline.stats()
        out: dict[int, dict[str, int]] = {}
        for part in await self._all("stats", [None] * len(self._conns)):
            out.update(part)
        return out

    async def replace_rules(self, sources: Sequence[RuleSource], mappings: Sequence[str], lateness: float) -> None:
        if self._inline is not None:
            ruleset = await asyncio.to_thread(load_rules, sources, mappings, lateness)
            self._inline.replace_rules(ruleset)
            return
        arg = (list(sources), [str(m) for m in mappings], lateness)
        await self._all("rules", [arg] * len(self._conns))

    def close(self, grace: float = 5.0) -> None:
        """Stop the worker processes (they hold no state the last checkpoint lacks): they exit when
        their pipe closes; those still running after ``grace`` seconds are killed."""
        if grace <= 0:
            for proc in self._procs:
                proc.kill()
        for conn in self._conns:
            conn.close()
        deadline = time.monotonic() + grace
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._conns.clear()
        self._procs.clear()
