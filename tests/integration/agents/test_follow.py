"""The file follower keeps every line through both rotation styles, partial lines and a late file."""
from __future__ import annotations

import os

from opmas.agents.follow import FileFollower, Line, Position
from opmas.agents.tail import line_event_id


def texts(follower: FileFollower) -> list[str]:
    return [line.text for line in follower.poll()]


def append(path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_starts_at_the_end_unless_asked(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("old 1\nold 2\n")
    tail = FileFollower(log)
    assert texts(tail) == []
    append(log, "new 1\n")
    assert texts(tail) == ["new 1"]
    assert texts(FileFollower(log, from_beginning=True)) == ["old 1", "old 2", "new 1"]


def test_partial_lines_wait_for_their_newline(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("")
    tail = FileFollower(log)
    append(log, "half")
    assert texts(tail) == []
    append(log, " and rest\r\nnext\n")
    assert texts(tail) == ["half and rest", "next"]


def test_rename_and_create_rotation_loses_nothing(tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("")
    tail = FileFollower(log)
    append(log, "before 1\n")
    assert texts(tail) == ["before 1"]
    append(log, "before 2\n")
    os.rename(log, tmp_path / "auth.log.1")
    append(tmp_path / "auth.log.1", "late write to the old file\nno newline at rotation")  # writer still has it
    assert texts(tail) == ["before 2", "late write to the old file"]  # no new file yet: the old one is read
    log.write_text("after 1\n")
    assert texts(tail) == ["no newline at rotation", "after 1"]
    assert tail.rotations == 1
    append(log, "after 2\n")
    assert texts(tail) == ["after 2"]


def test_copytruncate_rotation_restarts_at_zero(tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("")
    tail = FileFollower(log)
    append(log, "line 1\nline 2\n")
    assert texts(tail) == ["line 1", "line 2"]
    inode = os.stat(log).st_ino
    (tmp_path / "auth.log.1").write_bytes(log.read_bytes())
    with open(log, "r+") as f:
        f.truncate(0)
    append(log, "x\n")  # shorter than what was read before
    assert texts(tail) == ["x"]
    assert os.stat(log).st_ino == inode and tail.rotations == 1
    append(log, "y\n")
    assert texts(tail) == ["y"] and tail.position.offset == 4


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path):
    log = tmp_path / "later.log"
    tail = FileFollower(log)
    assert texts(tail) == []
    log.write_text("first\n")
    assert texts(tail) == ["first"]


def test_resume_from_a_saved_position(tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("one\ntwo\n")
    tail = FileFollower(log, from_beginning=True)
    first = tail.poll()[0]
    assert first.text == "one" and first.end == Position(os.stat(log).st_ino, 4)
    tail.close()
    append(log, "three\n")  # written while nobody was reading
    assert texts(FileFollower(log, resume=first.end)) == ["two", "three"]


def test_resume_into_the_rotated_file_then_the_new_one(tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("one\ntwo\n")
    saved = Position(os.stat(log).st_ino, 4)
    os.rename(log, tmp_path / "auth.log.1")  # rotated while the agent was down
    log.write_text("three\n")
    tail = FileFollower(log, resume=saved)
    assert texts(tail) == ["two", "three"]


def test_resume_when_the_saved_file_is_gone_reads_the_new_one_whole(tmp_path):
    log = tmp_path / "auth.log"
    log.write_text("new one\n")
    assert texts(FileFollower(log, resume=Position(inode=1, offset=999))) == ["new one"]


def test_line_event_ids_repeat_for_a_reread_line_and_differ_between_agents():
    line = Line("Accepted password for root from 10.0.0.1", Position(42, 128))
    assert line_event_id("web-1", "/var/log/auth.log", line) == line_event_id("web-1", "/var/log/auth.log", line)
    assert line_event_id("web-1", "/var/log/auth.log", line) != line_event_id("web-2", "/var/log/auth.log", line)
