"""One process's CPU time, resident memory and age, read where it runs.

The usage sampler reads this machine's workers with it, and a Ray replica's actor reads its
model process on its own node. The age is what lets the sampler turn the CPU a process spent
before its first reading (its model load) into a rate it really reached: spread over how long
the process has lived, not over however short the interval it first shows up in.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

__all__ = ["ProcessUse", "process_age_s", "read_process"]

_MIB = float(1 << 20)
# Field 22 of /proc/PID/stat (starttime, clock ticks after boot), counted after the ")"
# that ends the command name (which may itself hold spaces and parentheses).
_STARTTIME_AFTER_COMM = 19


@dataclass(frozen=True, slots=True)
class ProcessUse:
    cpu_seconds: float
    """User and system CPU time since the process started."""
    rss_mib: float
    age_s: float | None
    """Seconds since the process started; ``None`` where the system does not say."""


def read_process(process: psutil.Process) -> ProcessUse:
    """Raises ``psutil.Error`` for a process that is gone or hidden."""
    with process.oneshot():
        times = process.cpu_times()
        rss = process.memory_info().rss
    return ProcessUse(times.user + times.system, rss / _MIB, process_age_s(process))


def process_age_s(process: psutil.Process) -> float | None:
    """How long ``process`` has run, to the clock tick on Linux.

    ``psutil.Process.create_time`` adds the start to the boot time, which the kernel gives in
    whole seconds, and compares it with a wall clock that may have been stepped since boot; an
    age a second short would double a start-up's rate. Both ends here are on the boot clock.
    The kernel counts the start in whole ticks, rounded down: the age is from the tick after,
    the latest the process can have started, so no span it is part of reads longer than it was.
    """
    try:
        with open(f"/proc/{process.pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        started = (int(fields[_STARTTIME_AFTER_COMM]) + 1) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux, or gone
        pass
    try:
        return max(0.0, time.time() - float(process.create_time()))
    except psutil.Error:
        return None
