"""The file follower keeps every line through both rotation styles, partial lines and a late file."""
from __future__ import annotations

import os

from agents.follow import FileFollower


def append(path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_starts_at_the_end_unless_asked(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("old 1\nold 2\n")
    tail = FileFollower(log)
    assert tail.poll() == []
    append(log, "new 1\n")
    assert tail.poll() == ["new 1"]
    assert FileFollower(log, from_beginning=True).poll() == ["old 1", "old 2", "new 1"]


def test_partial_lines_wait_for_their_newline(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("")
    tail = FileFollower(log)
    append(log, "half")
    assert tail.poll() == []
    append(log, " and rest\r\nnext\n")
    assert tail.poll() == ["half and rest", "next"]


def test_rename_and_create_rotation_loses_nothing(tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("")
    tail = FileFollower(log)
    append(log, "before 1\n")
    assert tail.poll() == ["before 1"]
    append(log, "before 2\n")
    os.rename(log, tmp_path / "auth.log.1")
    append(tmp_path / "auth.log.1", "late write to the old file\nno newline at rotation")  # writer still has it
    assert tail.poll() == ["before 2", "late write to the old file"]  # no new file yet: the old one is read
    log.write_text("after 1\n")
    assert tail.poll() == ["no newline at rotation", "after 1"]
    assert tail.rotations == 1
    append(log, "after 2\n")
    assert tail.poll() == ["after 2"]


def test_copytruncate_rotation_restarts_at_zero(tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("")
    tail = FileFollower(log)
    append(log, "line 1\nline 2\n")
    assert tail.poll() == ["line 1", "line 2"]
    inode = os.stat(log).st_ino
    (tmp_path / "auth.log.1").write_bytes(log.read_bytes())
    with open(log, "r+") as f:
        f.truncate(0)
    append(log, "x\n")  # shorter than what was read before
    assert tail.poll() == ["x"]
    assert os.stat(log).st_ino == inode and tail.rotations == 1
    append(log, "y\n")
    assert tail.poll() == ["y"] and tail.position.offset == 4


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path):
    log = tmp_path / "later.log"
    tail = FileFollower(log)
    assert tail.poll() == []
    log.write_text("first\n")
    assert tail.poll() == ["first"]
