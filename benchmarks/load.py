"""How busy the rest of the machine was during a measurement.

The benchmark machine is shared: other processes' CPU use inflates wall times (and, through
spinning worker threads, CPU times) several-fold. Each measurement records the fraction of the
machine's CPU capacity that *other* processes used meanwhile: all busy time in /proc/stat minus
the time of the benchmark's own processes. Pairs where both sides ran on a quiet machine give
the absolute figures; all pairs still give ratios.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUIET = 0.10  # at most 10 % of the machine (0.2 of a core on 2 cores) used by others
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (not idle, iowait)


@dataclass(frozen=True)
class Mark:
    busy: int  # machine busy ticks
    own: int  # ticks of our processes
    total: int  # all ticks (busy + idle) of all CPUs


class ForeignLoad:
    """Measures what other processes used, given the pids that count as ours."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids

    def mark(self) -> Mark:
        busy, total = _machine_ticks()
        return Mark(busy, sum(_process_ticks(p) for p in self._pids()), total)

    def wait_quiet(self, timeout: float, probe: float = 1.0) -> float:
        """Wait (at most `timeout` s) until others used the machine lightly for a `probe`
        interval; returns the seconds waited. Raises the chance that a long run is quiet."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            mark = self.mark()
            time.sleep(probe)
            if self.since(mark) <= QUIET:
                break
        return time.monotonic() - started

    def since(self, start: Mark) -> float:
        """Fraction (0..1) of all CPUs' time that other processes used since `start`."""
        end = self.mark()
        total = end.total - start.total
        if total <= 0:
            return 0.0
        foreign = (end.busy - start.busy) - (end.own - start.own)
        return max(0.0, foreign / total)


def _machine_ticks() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields[i] for i in _BUSY_FIELDS), sum(fields)


def _process_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid` (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def own_pid() -> int:
    return os.getpid()


def is_quiet(*foreign: float) -> bool:
    return all(f <= QUIET for f in foreign)


Pair = tuple[dict[str, Any], ...]  # runs made back to back, each with a "foreign" fraction


def choose(pairs: Sequence[Pair], minimum: int = 3) -> tuple[list[Pair], str]:
    """The pairs where every run had a quiet machine, if there are enough of them (at least
    `minimum` and a quarter of all); otherwise all pairs. Also says which it took."""
    quiet = [p for p in pairs if is_quiet(*(run["foreign"] for run in p))]
    if len(quiet) >= max(minimum, len(pairs) // 4):
        return quiet, f"quiet pairs ({len(quiet)}/{len(pairs)})"
    return list(pairs), f"all pairs ({len(quiet)}/{len(pairs)} quiet)"
