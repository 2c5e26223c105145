"""Peak memory of a process, as the benchmarks report it (Linux ``/proc``)."""
from __future__ import annotations

from pathlib import Path


def peak_rss_mib(pid: int) -> float:
    """Peak RSS (VmHWM) of a running process so far, MiB (nan once it is gone).

    Unlike a child's rusage maximum, VmHWM counts only the process's own address space, not the
    parent's pages it holds between fork and exec."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak(pid: int) -> None:
    """Start a new VmHWM for ``pid`` (Linux: "5" to clear_refs), so a second run reports its own."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
