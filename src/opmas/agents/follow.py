"""Follow a growing file through rotation, as ``tail -F`` does, resumable from a saved position.

Both rotation styles are handled: rename + create (logrotate's default: the path gets a new
inode; the old file is read to its end first) and copytruncate (the same inode shrinks below
the read offset: reading restarts at 0). A file that is missing is waited for. A saved
``Position`` (inode, offset) resumes where reading stopped, in the rotated file too when it
still sits beside the path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Position:
    """The next unread byte of a file (identified by inode)."""

    inode: int
    offset: int


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    end: Position  # just after this line


class FileFollower:
    """Non-blocking follower: each ``poll()`` returns the complete lines written since the last one."""

    def __init__(self, path: Path, from_beginning: bool = False, resume: Position | None = None):
        """Start at ``resume``, else the file's current end (or its beginning); a file that
        appears later is read from its start."""
        self.path = Path(path)
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._partial = b""
        self._consumed = 0  # offset of the first byte of ``_partial``
        self.rotations = 0
        if resume is None or not self._resume(resume):
            self._open(self.path, at_end=not from_beginning)

    @property
    def position(self) -> Position | None:
        """Where reading stands (the first byte not yet returned as part of a line)."""
        return None if self._file is None else Position(self._inode, self._consumed)

    def poll(self) -> list[Line]:
        """Lines completed since the last call (newline stripped), across a rotation if one happened."""
        if self._file is None and not self._open(self.path, at_end=False):
            return []
        lines = self._read_available()
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return lines  # rotated away, not re-created yet: keep the old file open
        if stat.st_ino != self._inode:
            lines += self._read_available()  # what was written to the old file before the rename
            if self._partial:
                self._consumed += len(self._partial)
                lines.append(Line(self._partial.decode(errors="replace"), Position(self._inode, self._consumed)))
                self._partial = b""
            self._file.close()
            self.rotations += 1
            if self._open(self.path, at_end=False):
                lines += self._read_available()
        elif stat.st_size < self._consumed + len(self._partial):
            self.rotations += 1  # copytruncate: the file was emptied under us
            self._file.seek(0)
            self._partial, self._consumed = b"", 0
            lines += self._read_available()
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _resume(self, at: Position) -> bool:
        """Reopen the file that has ``at.inode`` (the path, or its rotated sibling) at ``at.offset``."""
        candidates = [self.path] + sorted(p for p in self.path.parent.glob(self.path.name + "*") if p != self.path)
        for candidate in candidates:
            try:
                stat = os.stat(candidate)
            except FileNotFoundError:
                continue
            if stat.st_ino == at.inode:
                if not self._open(candidate, at_end=False):
                    return False
                if stat.st_size >= at.offset:
                    self._file.seek(at.offset)
                    self._consumed = at.offset
                return True
        # the saved file is gone: what the path holds now was written after it, read it all
        self._open(self.path, at_end=False)
        return True

    def _open(self, path: Path, at_end: bool) -> bool:
        try:
            self._file = open(path, "rb")
        except FileNotFoundError:
            self._file = None
            return False
        self._inode = os.fstat(self._file.fileno()).st_ino
        self._consumed = self._file.seek(0, os.SEEK_END) if at_end else 0
        self._partial = b""
        return True

    def _read_available(self) -> list[Line]:
        lines: list[Line] = []
        while chunk := self._file.read(CHUNK):
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                self._consumed += len(raw) + 1
                lines.append(Line(raw.rstrip(b"\r").decode(errors="replace"), Position(self._inode, self._consumed)))
        return lines
