"""The data dir of ``opmas up``: one process at a time (an exclusive lock on ``<data dir>/opmas.lock``
held while it runs), and readable by its owner only."""
from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import IO


class DataDirBusy(RuntimeError):
    """Another process holds the data dir."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data dir's lock (released when the returned file is closed or the process dies)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = os.fdopen(os.open(data_dir / "opmas.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise DataDirBusy(f"data dir {data_dir} is in use by another `opmas up` (pid {holder}): stop it, "
                          "or give this one another data dir (--data-dir, OPMAS_DATA_DIR)") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def make_private(data_dir: Path, traversable: bool = False) -> None:
    """Take every permission of group and others from the data dir and everything beneath it that
    this user owns (directories 0700, files 0600 as created under umask 077; what an older version
    left open is closed). ``traversable``: others keep search permission (x) on the data dir itself,
    without read, so a server running as another user (embedded PostgreSQL started as root) reaches
    its own directory. Paths of another user (that server's) are its own to keep."""
    me = os.geteuid()
    for root, dirs, files in os.walk(data_dir):
        for name in [*dirs, *files]:
            _close(Path(root) / name, me, 0)
        dirs[:] = [d for d in dirs if _owned(Path(root) / d, me)]
    _close(data_dir, me, 0o011 if traversable else 0)


def _owned(path: Path, uid: int) -> bool:
    try:
        return path.lstat().st_uid == uid
    except OSError:
        return False


def _close(path: Path, uid: int, keep: int) -> None:
    """Drop group and other permissions of ``path`` but ``keep`` (not through symbolic links; sockets
    and others' paths are left)."""
    try:
        info = path.lstat()
    except OSError:  # gone meanwhile
        return
    if info.st_uid != uid or stat.S_ISLNK(info.st_mode) or stat.S_ISSOCK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    wanted = mode & ~0o077 | keep
    if wanted != mode:
        os.chmod(path, wanted)
