"""Stage: probe videos and decode sampled frames in bounded segments with decord.

decord leaks native memory on long videos and raises on damaged stretches, so the reader is reopened
per segment and frames are fetched in small batches; a batch that fails is skipped and reported.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from fermon.errors import DataError, InputError, StorageError
from fermon.inputs import relay, storage
from fermon.inputs.containers import codec_of
from fermon.inputs.sessions import VideoFile

SEGMENT_SAMPLES = 600  # sampled frames per VideoReader instance
BATCH_SAMPLES = 8  # frames per get_batch call: the unit that is skipped when decoding fails

# decord prefixes its messages with "[hh:mm:ss] /build/path/file.cc:123: ", sometimes twice.
_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


@dataclass
class VideoInfo:
    fps: float
    frame_count: int
    duration_s: float
    codec: str
    width: int
    height: int
    size_bytes: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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


def decoder_reason(raw: str, head: bytes = b"") -> str:
    """A decoder's failure in plain words; ``head`` is the file's first bytes, where they can be read
    (decord reports a damaged file and a file that is no video alike)."""
    text = raw.lower()
    if "cannot find video stream" in text or "no video stream" in text:
        return "no video stream (sound only?)"
    if "codec" in text and ("not found" in text or "unsupported" in text or "not supported" in text):
        return "unsupported codec"
    if "buffer source" in text or "avfilter_graph_create_filter" in text:
        return "unsupported or damaged video stream"
    if head[4:8] == b"ftyp":  # an MP4/MOV that starts right and cannot be read: cut short
        return "truncated or unfinished recording (no index)"
    if head[:4] in (b"\x1aE\xdf\xa3", b"RIFF"):
        return "damaged video container"
    if "error reading" in text or "invalid data" in text or "error opening" in text:
        return "not a video file"
    return "cannot be decoded"


def _unreadable(video: VideoFile, error: BaseException) -> DataError:
    """The DataError for a video the decoder cannot open: plain words, the raw text as its detail."""
    head = b""
    if not storage.is_url(video.path):
        with open(video.path, "rb") as handle:
            head = handle.read(12)
    raw = _first_line(error, video)
    return DataError(f"{video.relative}: not a readable video: {decoder_reason(raw, head)}", detail=raw)


def _first_line(error: BaseException, video: VideoFile) -> str:
    """The first line of a decord error, without the absolute path it embeds."""
    text = _LOG_PREFIX.sub("", str(error)).strip().splitlines()
    line = (text[0] if text else type(error).__name__).replace(str(video.path), video.relative)
    if not storage.is_url(video.path):
        line = line.replace(str(Path(video.path).resolve()), video.relative)
    return relay.RELAY_URL.sub(video.relative, line)[:200]


_STDERR_LOCK = threading.Lock()
_stderr_silencers = 0
_saved_stderr: int | None = None


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null while a C++ library runs.

    decord's C++ layer writes ``ERROR opening: <absolute path>`` straight to fd 2 when a file does
    not open, past Python and its own log level; fermon says the same in its own one-line message.
    Kept to the moment of opening (counted, for threads), so Python's own errors still show.
    """
    global _stderr_silencers, _saved_stderr
    with _STDERR_LOCK:
        if _stderr_silencers == 0:
            sys.stderr.flush()
            _saved_stderr = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _stderr_silencers += 1
    try:
        yield
    finally:
        with _STDERR_LOCK:
            _stderr_silencers -= 1
            if _stderr_silencers == 0 and _saved_stderr is not None:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = None


def open_reader(video: VideoFile):
    """A decord VideoReader, or DataError naming the file with a one-line reason."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its ffmpeg log lines would name absolute paths
    if storage.is_url(video.path):
        return storage.retrying(lambda: _open_remote_reader(video))
    if not video.path.is_file():
        raise InputError(f"{video.relative}: no such file")
    if video.path.stat().st_size == 0:
        raise DataError(f"{video.relative}: empty file")
    try:
        with native_stderr_silenced():
            reader = decord.VideoReader(str(video.path), ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as error:
        raise _unreadable(video, error) from error
    if len(reader) == 0:
        raise DataError(f"{video.relative}: no video frames")
    return reader


def _open_remote_reader(video: VideoFile):
    """A VideoReader of a video in an object store, streamed through fermon's loopback relay
    (``relay.relayed``): the store serves only the ranges decoding reads, never a full copy."""
    import decord

    try:
        size = storage.size_of(video.path)
    except FileNotFoundError as error:
        raise InputError(f"{video.relative}: no such file") from error
    except OSError as error:
        if storage.is_transient(error):
            raise _store_failed(video, f"{type(error).__name__}: {error}".splitlines()[0][:200]) from error
        raise InputError(f"{video.relative}: unreadable ({error})") from error
    if size == 0:
        raise DataError(f"{video.relative}: empty file")
    source = relay.relayed(video.path, size)
    try:
        with native_stderr_silenced():
            reader = decord.VideoReader(source.url, ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as error:
        source.close()
        if source.error is not None:  # the store failed, not the video
            raise _store_failed(video, source.error) from error
        raise _unreadable(video, error) from error
    reader.fermon_source = source  # served for as long as the reader lives
    if len(reader) == 0:
        raise DataError(f"{video.relative}: no video frames")
    return reader


def _store_failed(video: VideoFile, reason: str) -> StorageError:
    tries = len(storage.RETRY_DELAYS_S) + 1
    return StorageError(
        f"{video.relative}: the store failed while reading ({reason}); tried {tries} times, the next run tries again"
    )


def _store_error(reader) -> str | None:
    """The store's failure behind a remote reader's last read, if any (None on local files)."""
    source = getattr(reader, "fermon_source", None)
    return source.error if source is not None else None


def probe(video: VideoFile) -> tuple[VideoInfo, np.ndarray]:
    """Container facts and every frame's start time in seconds (read from the index, not decoded)."""
    return storage.retrying(lambda: _probe_once(video))


def _probe_once(video: VideoFile) -> tuple[VideoInfo, np.ndarray]:
    import decord

    reader = open_reader(video)
    count = len(reader)
    try:
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        height, width = _frame_size(reader)
        fps = float(reader.get_avg_fps())
    except (RuntimeError, decord.DECORDError) as error:
        if (failure := _store_error(reader)) is not None:
            raise _store_failed(video, failure) from error
        raise
    failure = _store_error(reader)
    del reader
    if failure is not None:  # read through a failing store: the index may be incomplete
        raise _store_failed(video, failure)
    starts = stamps[:, 0]
    duration = float(stamps[-1, 1]) if count else 0.0
    size = storage.size_of(video.path)
    info = VideoInfo(fps, count, duration, codec_of(video.path), width, height, size)
    return info, starts


def quick_duration(video: VideoFile) -> float | None:
    """A video's length in seconds from its frame count and mean rate, without reading timestamps:
    enough to size a progress bar. None when the file does not open, and for a URL: decord reads a
    whole object to open it, which the client should not do just for a progress bar."""
    if storage.is_url(video.path):
        return None
    try:
        reader = open_reader(video)
        seconds = len(reader) / max(float(reader.get_avg_fps()), 1e-6)
    except (InputError, OSError):
        return None
    del reader
    return seconds


def _frame_size(reader) -> tuple[int, int]:
    # decord decodes the first frame to learn its shape; that is cheap and happens once per video.
    shape = reader[0].shape
    reader.seek(0)
    return int(shape[0]), int(shape[1])


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


def sample_indices(starts: np.ndarray, fps: float) -> np.ndarray:
    """Frames to sample: every frame for fps 0, else the first frame at or after each multiple of 1/fps."""
    if fps <= 0:
        return np.arange(len(starts), dtype=np.int64)
    # decord gives times as float32 (1.8 s reads 1.79999995; an hour in, the step is ~0.2 ms), and
    # containers round them to their time base: 1 ms of tolerance absorbs both.
    tolerance = 1e-3
    count = int(np.floor((float(starts[-1]) + tolerance) * fps)) + 1
    times = np.arange(count, dtype=np.float64) / fps
    indices = np.searchsorted(starts, times - tolerance, side="left")
    indices = indices[indices < len(starts)]
    return np.unique(indices).astype(np.int64)


def iter_batches(
    video: VideoFile,
    indices: np.ndarray,
    starts: np.ndarray,
    gaps: list[DecodeGap],
    segment: int = SEGMENT_SAMPLES,
    batch: int = BATCH_SAMPLES,
) -> Iterator[FrameBatch]:
    """Decode the sampled frames in order; memory is bounded by one batch and one reader."""
    for seg_start in range(0, len(indices), segment):
        reader = open_reader(video)  # a fresh reader per segment: decord's native memory grows otherwise
        segment_indices = indices[seg_start : seg_start + segment]
        failed_before = False
        for start in range(0, len(segment_indices), batch):
            chunk = segment_indices[start : start + batch]
            reader, frames, error = _decode_chunk(video, reader, chunk)
            if error is not None:
                if failed_before:  # one gap record per damaged stretch, not per batch
                    gaps[-1].last_frame, gaps[-1].end_s = int(chunk[-1]), float(starts[chunk[-1]])
                else:
                    first, last = int(chunk[0]), int(chunk[-1])
                    reason = _first_line(error, video)
                    gaps.append(DecodeGap(first, last, float(starts[first]), float(starts[last]), reason))
                failed_before = True
                del reader
                reader = open_reader(video)  # the reader may be left mid-seek after an error
                continue
            failed_before = False
            yield FrameBatch(chunk.astype(np.int64), starts[chunk].astype(np.float64), frames)
        del reader
        release_freed_memory()


def _decode_chunk(video: VideoFile, reader, chunk: np.ndarray):
    """(reader, frames, None), or (reader, None, the decoder's error) for a damaged stretch. A store's
    failure is no damage: the chunk is read again on a fresh reader with backoff, and a failure that
    persists raises StorageError (the session fails, to be retried), never a silent decode gap."""
    import decord

    for delay in (*storage.RETRY_DELAYS_S, None):
        frames, error = None, None
        try:
            frames = reader.get_batch(chunk.tolist()).asnumpy()
        except (decord.DECORDError, RuntimeError) as caught:
            error = caught
        failure = _store_error(reader)
        if failure is None:
            return reader, frames, error
        if delay is None:
            raise _store_failed(video, failure)
        time.sleep(delay)
        reader = open_reader(video)  # the failed one is dropped, and its relay source with it
    raise AssertionError("unreachable")


Item = TypeVar("Item")
_END = object()


def read_ahead(items: Iterator[Item], depth: int = 2) -> Iterator[Item]:
    """Run ``items`` in a background thread, at most ``depth`` ahead of the consumer.

    decord decodes with the GIL released, so decoding the next batches overlaps detection of this
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
