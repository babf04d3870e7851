"""Detection over batches of frames on several threads, results in input order."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from fermon.faces.geometry import Detections


class Frames(Protocol):
    """Anything carrying a batch of frames, such as :class:`fermon.video.FrameBatch`."""

    frames: np.ndarray


def detect_in_parallel(
    detect: Callable[[Sequence[np.ndarray]], list[Detections]], batches: Iterable[Frames], threads: int
) -> Iterator[tuple[Frames, list[Detections]]]:
    """Run ``detect`` over batches of frames on ``threads`` threads, yielding results in input order.

    Each ONNX Runtime session runs single-threaded and whole batches go to a thread pool: on a few
    cores that keeps every core busy where one session's intra-op threads wait on each other
    (measured in reports/performance.md). ONNX Runtime releases the GIL while it runs.
    """
    if threads <= 1:
        for batch in batches:
            yield batch, detect(batch.frames)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="fermon-detect") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.submit(detect, batch.frames)))
            if len(pending) > threads:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def available_cores() -> int:
    """Cores this process may run on (a container's or a taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
