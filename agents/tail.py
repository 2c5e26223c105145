"""The log-file agent: follows files through rotation and publishes each line as an event.

JSON lines are published as they are; syslog / auth.log lines are parsed to the OPMAS field
conventions (``agents.parse``); a line neither reads is published with its text in
``message``, never dropped. Every event carries ``log.file.path``.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from agents.follow import FileFollower
from agents.parse import parse_line
from agents.sdk import AgentSettings, SecurityAgent

log = logging.getLogger("opmas.agent.tail")
TAIL_DEFAULTS = {"format": "auto", "poll_interval": 0.25, "from_beginning": False}


class TailAgent(SecurityAgent):
    """Tails the files of its configuration's ``tail.paths``; the paths and options it was given
    apply where management's configuration says nothing."""

    def __init__(self, settings: AgentSettings, paths: list[Path] | None = None, **options: Any):
        super().__init__(settings)
        self._local = {**TAIL_DEFAULTS, **options, "paths": [str(p) for p in paths or []]}
        self._followers: dict[str, asyncio.Task] = {}
        self.unparsed = 0

    @property
    def tail(self) -> dict[str, Any]:
        return {**self._local, **self.config.get("tail", {})}

    async def on_start(self) -> None:
        self._sync_followers()

    async def on_config(self, config: dict[str, Any]) -> None:
        self._sync_followers()

    async def on_stop(self) -> None:
        for task in self._followers.values():
            task.cancel()
        await asyncio.gather(*self._followers.values(), return_exceptions=True)
        self._followers.clear()

    def _sync_followers(self) -> None:
        wanted = set(self.tail["paths"])
        for path in set(self._followers) - wanted:
            self._followers.pop(path).cancel()
        for path in wanted - set(self._followers):
            self._followers[path] = asyncio.create_task(self._follow(Path(path)), name=f"tail {path}")

    async def _follow(self, path: Path) -> None:
        follower = FileFollower(path, from_beginning=self.tail["from_beginning"])
        try:
            while True:
                lines = await asyncio.to_thread(follower.poll)
                for line in lines:
                    if line.strip():
                        await self.publish(self._event(line, str(path)), type="log")
                if not lines:
                    await asyncio.sleep(float(self.tail["poll_interval"]))
        finally:
            follower.close()

    def _event(self, line: str, path: str) -> dict[str, Any]:
        data = parse_line(line, self.tail["format"])
        if data is None:
            self.unparsed += 1
            data = {"message": line}
        log_field = data.get("log") if isinstance(data.get("log"), dict) else {}
        return {**data, "log": {**log_field, "file": {"path": path}}}
