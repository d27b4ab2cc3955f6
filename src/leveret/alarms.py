"""Resource alarms: free disk space and memory, checked once a second.

When free space on the data directory's disk falls below `disk_free_limit`, or the broker's
resident memory passes `memory_high_watermark` (a fraction of physical memory), the alarm
goes on: every connection is told with connection.blocked and stops being read at its next
publish, while consumers keep consuming, so queues drain and memory or disk comes back. When
every alarm has cleared, connections get connection.unblocked and carry on. Nothing is lost:
blocked publishes wait in the socket buffers. This is RabbitMQ's model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0


def resident_memory() -> int:
    """This process's resident set size in bytes (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class ResourceMonitor:
    """Checks the limits periodically and reports when the set of active alarms changes."""

    def __init__(self, on_change: Callable[[frozenset[str]], None], *, data_dir: Path | None,
                 disk_free_limit: int, memory_limit: int) -> None:
        self._on_change = on_change
        self.data_dir = data_dir
        self.disk_free_limit = disk_free_limit
        self.memory_limit = memory_limit
        self.alarms: frozenset[str] = frozenset()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.check()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def check(self) -> None:
        """Measure now; report a change; run again in a second."""
        alarms = set()
        if self.data_dir is not None:
            free = shutil.disk_usage(self.data_dir).free
            if free < self.disk_free_limit:
                alarms.add(f"disk: {free // 2**20} MiB free, below the limit of "
                           f"{self.disk_free_limit // 2**20} MiB")
        rss = resident_memory()
        if rss > self.memory_limit:
            alarms.add(f"memory: {rss // 2**20} MiB in use, above the watermark of "
                       f"{self.memory_limit // 2**20} MiB")
        current = frozenset(alarms)
        if {a.split(":")[0] for a in current} != {a.split(":")[0] for a in self.alarms}:
            if current:
                log.warning("resource alarm, publishers are blocked: %s", "; ".join(current))
            else:
                log.info("resource alarms cleared, publishers are unblocked")
            self.alarms = current
            self._on_change(current)
        self._timer = asyncio.get_running_loop().call_later(CHECK_INTERVAL, self.check)
