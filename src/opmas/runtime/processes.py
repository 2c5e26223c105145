"""Child servers that die with their parent, and finding and stopping the ones a crash left behind.

On Linux a server started with :func:`spawn` gets a parent-death signal (``PR_SET_PDEATHSIG``):
when the process that started it dies, even by SIGKILL, the kernel signals the server. The
kernel ties that signal to the *thread* that forked the child, so every spawn happens in one
thread that lives as long as the process.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opmas-spawner")
try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
    _PRCTL: Callable[..., int] | None = _LIBC.prctl
except (OSError, AttributeError):  # not Linux: leftovers are stopped on the next start instead
    _PRCTL = None


def die_with_parent(sig: int) -> None:
    """Have the kernel send ``sig`` to this process when its parent (thread) ends (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, sig)


def spawn(args: Sequence[str], sig: int, **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, **popen)`` whose child gets ``sig`` when this process dies."""
    parent = os.getpid()

    def preexec() -> None:
        die_with_parent(sig)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return _SPAWNER.submit(subprocess.Popen, list(args), preexec_fn=preexec, **popen).result()


def cmdline(pid: int) -> list[str] | None:
    """The arguments of process ``pid``, or None if there is no such process (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] or None


def find(program: str, flag: str, value: str) -> list[int]:
    """Pids of running ``program`` processes started with ``flag value``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = cmdline(int(entry.name))
        if args and Path(args[0]).name == program and _has_option(args, flag, value):
            found.append(int(entry.name))
    return found


def _has_option(args: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(args, args[1:]))


def stop_pid(pid: int, signals: Sequence[tuple[int, float]]) -> bool:
    """Send each ``(signal, seconds to wait)`` in turn until ``pid`` is gone; True if it went."""
    for sig, wait in signals:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if cmdline(pid) is None:
                return True
            time.sleep(0.05)
    return cmdline(pid) is None


STOP_SIGNALS = ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0))
