"""One ``opmas up`` per data dir: an exclusive lock on ``<data dir>/opmas.lock`` held while it runs."""
from __future__ import annotations

import fcntl
import os
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
