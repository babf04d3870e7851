"""Where a session's time goes: CPU seconds per stage of the loop, and each core's idle share.

Stages are timed in the CPU time of the thread that runs them (decoding in its read-ahead thread,
detection in the pool's threads, the rest in the session's thread), so the table adds up to the CPU
the run used, not to wall time. Off unless a caller opens :func:`profiling` (the end-to-end
benchmark does): a nightly run pays one ``if`` per stage for it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

STAGES = ("decode", "detection", "crops", "tracking", "identity", "classifier", "parquet")
Item = TypeVar("Item")


@dataclass
class StageProfile:
    cpu_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wall_s: float = 0.0
    core_idle: list[float] = field(default_factory=list)  # each core's idle share over the profile
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.cpu_s[stage] += seconds

    def table(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": {name: round(self.cpu_s.get(name, 0.0), 3) for name in STAGES},
            "core_idle": [round(share, 3) for share in self.core_idle],
        }


_ACTIVE: StageProfile | None = None


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the CPU time this thread spends inside the block to stage ``name``."""
    profile = _ACTIVE
    if profile is None:
        yield
        return
    started = time.thread_time()
    try:
        yield
    finally:
        profile.add(name, time.thread_time() - started)


def timed(name: str, function: Callable[..., Item]) -> Callable[..., Item]:
    """``function``, its calls counted to stage ``name`` (in the thread that makes them)."""

    def call(*args: object, **kwargs: object) -> Item:
        with stage(name):
            return function(*args, **kwargs)

    return call


def timed_items(name: str, items: Iterator[Item]) -> Iterator[Item]:
    """``items``, the work of producing each counted to stage ``name`` (in the consuming thread, which
    for :func:`fermon.video.read_ahead` is its read-ahead thread)."""
    while True:
        with stage(name):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


@contextmanager
def profiling() -> Iterator[StageProfile]:
    """Profile everything this process runs until the block ends (one profile at a time)."""
    global _ACTIVE
    profile = StageProfile()
    before, started = _core_times(), time.perf_counter()
    _ACTIVE = profile
    try:
        yield profile
    finally:
        _ACTIVE = None
        profile.wall_s = time.perf_counter() - started
        profile.core_idle = _idle_shares(before, _core_times())


def _core_times() -> list[tuple[int, int]]:
    """(idle, total) clock ticks of each core since boot, from Linux's /proc/stat; empty elsewhere."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return []
    cores = []
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(value) for value in values[:8]]
            cores.append((ticks[3] + ticks[4], sum(ticks)))  # idle + iowait, of user..steal
    return cores


def _idle_shares(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    return [
        (idle_after - idle_before) / max(total_after - total_before, 1)
        for (idle_before, total_before), (idle_after, total_after) in zip(before, after, strict=False)
    ]
