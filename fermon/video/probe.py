"""Probe a video with decord: open it (a one-line reason when it does not open), its container facts
and every frame's start time, read from its index without decoding the frames.

decord reads a file's whole packet index on opening, which gives exact frame times cheaply; for an
object in a store it reads through fermon's loopback relay (:mod:`fermon.inputs.relay`).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fermon.errors import DataError, InputError
from fermon.inputs import relay, storage
from fermon.inputs.containers import codec_of
from fermon.inputs.sessions import VideoFile

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
    raw = first_line(error, video)
    return DataError(f"{video.relative}: not a readable video: {decoder_reason(raw, head)}", detail=raw)


def first_line(error: BaseException, video: VideoFile) -> str:
    """The first line of a decoder's error, without the absolute path it embeds."""
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
            raise storage.read_failure(video.relative, error) from error
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
            raise storage.read_failure(video.relative, source.error) from error
        raise _unreadable(video, error) from error
    reader.fermon_source = source  # served for as long as the reader lives
    if len(reader) == 0:
        raise DataError(f"{video.relative}: no video frames")
    return reader


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
            raise storage.read_failure(video.relative, failure) from error
        raise
    failure = _store_error(reader)
    del reader
    if failure is not None:  # read through a failing store: the index may be incomplete
        raise storage.read_failure(video.relative, failure)
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
