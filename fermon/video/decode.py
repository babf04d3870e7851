"""Decode a video's sampled frames with FFmpeg through PyAV, and hand them on in batches.

Every frame is decoded (a frame is predicted from those before it), on one thread, but only the
sampled ones are converted to RGB: a third of the CPU that decord spends on the same frames, the
same pixels (reports/performance.md). On two cores that is the difference between detection waiting
for decoding and not. Decoding runs one thread ahead of its consumer (:func:`read_ahead`).
"""

from __future__ import annotations

import ctypes
import functools
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fermon.inputs import storage
from fermon.inputs.sessions import VideoFile
from fermon.video.probe import first_line

BATCH_SAMPLES = 8  # sampled frames handed on together
TRIM_SAMPLES = 600  # hand freed memory back to the OS after this many sampled frames
# decord gives times as float32 (1.8 s reads 1.79999995; an hour in, the step is ~0.2 ms), and
# containers round them to their time base: 1 ms of tolerance absorbs both.
TIME_TOLERANCE_S = 1e-3
_ERRNO = re.compile(r"^\[Errno -?\d+\] ")  # PyAV's prefix to FFmpeg's own words


@dataclass
class FrameBatch:
    """Sampled frames decoded together: indices into the video, container timestamps, RGB pixels."""

    frame_indices: np.ndarray  # int64 (B,)
    timestamps_s: np.ndarray  # float64 (B,), seconds from the video's start
    frames: np.ndarray  # uint8 (B, H, W, 3)


@dataclass
class DecodeGap:
    """A stretch of sampled frames that could not be decoded and was skipped."""

    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    reason: str


def sample_indices(starts: np.ndarray, fps: float) -> np.ndarray:
    """Frames to sample: every frame for fps 0, else the first frame at or after each multiple of 1/fps."""
    if fps <= 0:
        return np.arange(len(starts), dtype=np.int64)
    count = int(np.floor((float(starts[-1]) + TIME_TOLERANCE_S) * fps)) + 1
    times = np.arange(count, dtype=np.float64) / fps
    indices = np.searchsorted(starts, times - TIME_TOLERANCE_S, side="left")
    indices = indices[indices < len(starts)]
    return np.unique(indices).astype(np.int64)


def iter_batches(
    video: VideoFile, indices: np.ndarray, starts: np.ndarray, gaps: list[DecodeGap], batch: int = BATCH_SAMPLES
) -> Iterator[FrameBatch]:
    """The sampled frames ``indices`` in order, ``batch`` at a time; memory is bounded by one batch.

    Sampled frames that do not decode (a damaged stretch) are skipped, and appended to ``gaps`` as
    one record per stretch before any frame after them is handed on. A store's failure is retried
    with backoff and raises StorageError when it persists: it is never taken for damage."""
    wanted = np.asarray(indices, np.int64)
    position, handed = 0, 0  # into wanted: the next sampled frame not yet handed on or given up
    pending: list[tuple[int, np.ndarray]] = []
    last_error: str | None = None
    for index, pixels, error in _decoded(video, starts, wanted):
        if error is not None:
            last_error = error
            continue
        place = int(np.searchsorted(wanted, index))
        if place > position:  # sampled frames before this one never came out of the decoder
            gaps.append(_gap(wanted[position:place], starts, last_error))
            last_error = None  # the decoder reports a damaged packet before the frames it costs
        position = place + 1
        pending.append((index, pixels))
        if len(pending) == batch:
            yield _batch(pending, starts)
            pending, handed = [], handed + batch
            if handed % TRIM_SAMPLES < batch:
                release_freed_memory()
    if position < len(wanted):
        gaps.append(_gap(wanted[position:], starts, last_error or "the video ends before its index says"))
    if pending:
        yield _batch(pending, starts)
    release_freed_memory()


def _batch(pending: list[tuple[int, np.ndarray]], starts: np.ndarray) -> FrameBatch:
    indices = np.array([index for index, _ in pending], np.int64)
    return FrameBatch(indices, starts[indices].astype(np.float64), np.stack([pixels for _, pixels in pending]))


def _gap(skipped: np.ndarray, starts: np.ndarray, reason: str | None) -> DecodeGap:
    first, last = int(skipped[0]), int(skipped[-1])
    return DecodeGap(first, last, float(starts[first]), float(starts[last]), reason or "frames missing from the stream")


def _decoded(video: VideoFile, starts: np.ndarray, wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray, str | None]]:
    """(index, RGB pixels, None) for each sampled frame that decodes, in order, and (-1, None, reason)
    for each packet that does not. A store's failure reopens the video at the keyframe before the next
    sampled frame, after ``storage.RETRY_DELAYS_S``; frames already handed on are not handed on again."""
    after, failures = -1, 0  # the last frame handed on; store failures since then
    while len(wanted):
        resume = int(wanted[np.searchsorted(wanted, after, side="right")]) if after < wanted[-1] else None
        if resume is None:
            return
        try:
            for index, pixels, error in _decode_from(video, starts, wanted, float(starts[resume])):
                if error is None and index <= after:
                    continue
                if error is None:
                    after, failures = index, 0
                yield index, pixels, error
            return
        except OSError as error:
            if not (storage.is_url(video.path) and storage.is_transient(error)):
                raise
            if failures == len(storage.RETRY_DELAYS_S):
                raise storage.read_failure(video.relative, error) from error
            time.sleep(storage.RETRY_DELAYS_S[failures])
            failures += 1


def _decode_from(
    video: VideoFile, starts: np.ndarray, wanted: np.ndarray, from_s: float
) -> Iterator[tuple[int, np.ndarray, str | None]]:
    import av

    sampled = set(wanted.tolist())
    with ExitStack() as stack:
        source = stack.enter_context(storage.open_binary(video.path)) if storage.is_url(video.path) else str(video.path)
        container = stack.enter_context(av.open(source))
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "NONE", 1  # the other stages have the other cores
        if from_s > 0:
            container.seek(round(from_s / stream.time_base) + (stream.start_time or 0), stream=stream, backward=True)
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
                frames = packet.decode()
            except StopIteration:
                return
            except av.FFmpegError as error:  # a damaged packet: its frames are lost, the rest go on
                yield -1, None, f"damaged video data ({_ERRNO.sub('', first_line(error, video))})"
                if isinstance(error, av.EOFError):
                    return
                continue
            for frame in frames:
                index = _index_of(frame.time, starts)
                if index in sampled:
                    yield index, frame.to_ndarray(format="rgb24"), None


def _index_of(seconds: float | None, starts: np.ndarray) -> int:
    """The frame of the index (decord's) that starts at ``seconds``, or -1 for a frame it does not list."""
    if seconds is None:
        return -1
    index = int(np.searchsorted(starts, seconds - TIME_TOLERANCE_S, side="left"))
    return index if index < len(starts) and abs(starts[index] - seconds) <= TIME_TOLERANCE_S else -1


def release_freed_memory() -> None:
    """Hand memory that is already free back to the OS (glibc's malloc_trim; nothing elsewhere).

    Frames are allocated by the decoding thread and freed by others, which leaves glibc's per-thread
    arenas holding freed pages: over an hour the resident size wanders upwards without a leak."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, loaded once; None where there is no glibc."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


Item = TypeVar("Item")
_END = object()


def read_ahead(items: Iterator[Item], depth: int = 2) -> Iterator[Item]:
    """Run ``items`` in a background thread, at most ``depth`` ahead of the consumer.

    FFmpeg decodes with the GIL released, so decoding the next batches overlaps detection of this
    one. An exception in the producer is raised in the consumer; a consumer that stops early stops
    the producer at its next item, so no thread outlives the loop.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)

    thread = threading.Thread(target=produce, name="fermon-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
