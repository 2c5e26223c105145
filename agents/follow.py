"""Follow a growing file through rotation, as ``tail -F`` does.

Both rotation styles are handled: rename + create (logrotate's default: the path gets a new
inode; the old file is read to its end first) and copytruncate (the same inode shrinks below
the read offset: reading restarts at 0). A file that is missing is waited for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 16


@dataclass
class Position:
    inode: int
    offset: int


class FileFollower:
    """Non-blocking follower: each ``poll()`` returns the complete lines written since the last one."""

    def __init__(self, path: Path, from_beginning: bool = False):
        """Start at the file's current end (or its beginning); a file that appears later is read
        from its start."""
        self.path = Path(path)
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._partial = b""
        self.rotations = 0
        self._open(at_end=not from_beginning)  # "the end" is the end as of now

    @property
    def position(self) -> Position | None:
        """Where reading stands (inode and offset of the next unread byte)."""
        if self._file is None:
            return None
        return Position(self._inode, self._file.tell() - len(self._partial))

    def poll(self) -> list[str]:
        """Lines completed since the last call (newline stripped), across a rotation if one happened."""
        if self._file is None and not self._open(at_end=False):
            return []
        lines = self._read_available()
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return lines  # rotated away, not re-created yet: keep the old file open
        if stat.st_ino != self._inode:
            lines += self._read_available()  # what was written to the old file before the rename
            if self._partial:
                lines.append(self._partial.decode(errors="replace"))
                self._partial = b""
            self._file.close()
            self.rotations += 1
            if self._open(at_end=False):
                lines += self._read_available()
        elif stat.st_size < self._file.tell():
            self.rotations += 1  # copytruncate: the file was emptied under us
            self._file.seek(0)
            self._partial = b""
            lines += self._read_available()
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, at_end: bool) -> bool:
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            self._file = None
            return False
        self._inode = os.fstat(self._file.fileno()).st_ino
        if at_end:
            self._file.seek(0, os.SEEK_END)
        return True

    def _read_available(self) -> list[str]:
        lines: list[str] = []
        while chunk := self._file.read(CHUNK):
            data = self._partial + chunk
            *complete, self._partial = data.split(b"\n")
            lines.extend(line.rstrip(b"\r").decode(errors="replace") for line in complete)
        return lines
