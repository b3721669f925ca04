"""The CPU time a process has used, to the nanosecond where the system says so."""

from __future__ import annotations

from pathlib import Path

import psutil


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of `process` so far.

    On Linux, the sum of each live thread's `schedstat` run time, which counts nanoseconds: the usual
    counters (`cpu_times`) count clock ticks of 10 ms, and a short phase's agents can use less than
    one tick (they then read 0). A thread that ended takes its time with it, so this is meant for
    differences across a phase of long-lived threads. Elsewhere, `cpu_times`.
    """
    try:
        return _schedstat_seconds(process.pid)
    except OSError:
        times = process.cpu_times()
        return times.user + times.system


def _schedstat_seconds(pid: int) -> float:
    total_ns = 0
    threads = list(Path(f"/proc/{pid}/task").iterdir())
    for thread in threads:
        try:
            total_ns += int((thread / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # the thread ended since the listing
            continue
    return total_ns / 1e9
