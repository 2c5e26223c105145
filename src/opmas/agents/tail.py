"""The log-file agent: follows files through rotation and publishes each line as an event.

JSON lines are published as they are; syslog / auth.log lines are parsed to the OPMAS field
conventions (``opmas.agents.parse``); a line neither reads is published with its text in
``message``, never dropped. Every event carries ``log.file.path``.

Management may push other ``tail.paths``, but only files under the directories the agent was
given when it started (``allow_dirs``, by default those of the files it was given) are followed: a
pushed configuration naming another path is refused and reported in the heartbeat (as an invalid
one is), so that control of the API does not mean reading any file of the host.

Where a line was read up to is saved (``positions_file``) once its event is in JetStream, so a
restarted agent resumes there, even into a file rotated meanwhile. An event's id derives from
the file, offset and text, so lines read twice after a crash are the same events again.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

import orjson

from opmas.agents.follow import FileFollower, Line, Position
from opmas.agents.parse import parse_line
from opmas.agents.sdk import AgentSettings, SecurityAgent
from opmas.core.event import content_id

log = logging.getLogger("opmas.agent.tail")
TAIL_DEFAULTS = {"format": "auto", "poll_interval": 0.25, "from_beginning": False}


def line_event_id(agent_id: str, path: str, line: Line) -> str:
    """A line's event id: the same for the same line read again (a restart re-reading it), never
    the same for two agents (the engine takes event ids as unique across agents)."""
    return content_id([agent_id, path, line.end.inode, line.end.offset, line.text])


class TailAgent(SecurityAgent):
    """Tails the files of its configuration's ``tail.paths``; the paths and options it was given
    apply where management's configuration says nothing. Paths outside ``allow_dirs`` (default: the
    directories of ``paths``) are refused."""

    def __init__(self, settings: AgentSettings, paths: list[Path] | None = None,
                 positions_file: Path | None = None, allow_dirs: list[Path] | None = None, **options: Any):
        super().__init__(settings)
        self._local = {**TAIL_DEFAULTS, **options, "paths": [str(p) for p in paths or []]}
        self.allow_dirs = [Path(d).resolve() for d in
                           (allow_dirs if allow_dirs is not None else {Path(p).parent for p in paths or []})]
        self._followers: dict[str, asyncio.Task] = {}
        self.positions_file = positions_file or (
            settings.credentials_file.with_name(settings.credentials_file.stem + ".positions.json")
            if settings.credentials_file else None)
        self.positions: dict[str, Position] = self._load_positions()
        self._unsaved: deque[tuple[int, str, Position]] = deque()  # (queued count, path, position)
        self.unparsed = 0

    @property
    def tail(self) -> dict[str, Any]:
        return {**self._local, **self.config.get("tail", {})}

    async def on_start(self) -> None:
        self._sync_followers()

    async def _apply_config(self, config: Any, version: Any) -> None:
        """Refuse (and report, as the SDK does an invalid one) a configuration naming paths outside
        the allowed directories."""
        if outside := self._outside(config):
            self.config_problems = [f"tail/paths: {path} is outside the allowed directories "
                                    f"{[str(d) for d in self.allow_dirs]}" for path in outside]
            log.error("configuration refused", extra={"agent_id": self.agent_id, "errors": self.config_problems})
            return
        await super()._apply_config(config, version)

    def _outside(self, config: Any) -> list[str]:
        """The ``tail.paths`` of ``config`` under none of the allowed directories (symlinks resolved)."""
        tail = config.get("tail") if isinstance(config, dict) else None
        paths = tail.get("paths") if isinstance(tail, dict) else None
        if not isinstance(paths, list):
            return []  # none given, or invalid: the schema check reports it
        return [p for p in paths if isinstance(p, str)
                and not any(Path(p).resolve().is_relative_to(d) for d in self.allow_dirs)]

    async def on_config(self, config: dict[str, Any]) -> None:
        self._sync_followers()

    async def on_stop(self) -> None:
        for task in self._followers.values():
            task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)
        self._followers.clear()

    async def stop(self) -> None:
        await super().stop()
        self.save_positions()

    def _sync_followers(self) -> None:
        wanted = set(self.tail["paths"])
        for path in set(self._followers) - wanted:
            self._followers.pop(path).cancel()
        for path in wanted - set(self._followers):
            self._followers[path] = asyncio.create_task(self._follow(path), name=f"tail {path}")

    async def _follow(self, path: str) -> None:
        follower = FileFollower(Path(path), from_beginning=self.tail["from_beginning"],
                                resume=self.positions.get(path))
        try:
            while True:
                lines = await asyncio.to_thread(follower.poll)
                for line in lines:
                    if line.text.strip():
                        await self.publish(self._event(line, path), type="log",
                                           event_id=line_event_id(self.agent_id, path, line))
                if lines:
                    self._unsaved.append((self.stats.queued, path, lines[-1].end))
                self.save_positions()
                if not lines:
                    await asyncio.sleep(float(self.tail["poll_interval"]))
        finally:
            follower.close()

    def _event(self, line: Line, path: str) -> dict[str, Any]:
        data = parse_line(line.text, self.tail["format"])
        if data is None:
            self.unparsed += 1
            data = {"message": line.text}
        log_field = data.get("log") if isinstance(data.get("log"), dict) else {}
        return {**data, "log": {**log_field, "file": {"path": path}}}

    # -- positions -----------------------------------------------------------------------------

    def save_positions(self) -> None:
        """Record the positions whose events JetStream has stored (atomically replaced file)."""
        changed = False
        while self._unsaved and self._unsaved[0][0] <= self.settled:
            _, path, position = self._unsaved.popleft()
            self.positions[path] = position
            changed = True
        if changed and self.positions_file is not None:
            tmp = self.positions_file.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({p: [pos.inode, pos.offset] for p, pos in self.positions.items()}))
            os.replace(tmp, self.positions_file)

    def _load_positions(self) -> dict[str, Position]:
        if self.positions_file is None or not self.positions_file.exists():
            return {}
        try:
            saved = orjson.loads(self.positions_file.read_bytes())
            return {path: Position(int(inode), int(offset)) for path, (inode, offset) in saved.items()}
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable positions file", extra={"file": str(self.positions_file),
                                                                    "error": repr(exc)})
            return {}
