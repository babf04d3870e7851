"""Stage: find video inputs, probe them, and decode sampled frames in bounded segments with decord.

decord leaks native memory on long videos and raises on damaged stretches, so the reader is reopened
per segment and frames are fetched in small batches; a batch that fails is skipped and reported.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import re
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np

from fermon import storage
from fermon.errors import DataError, InputError, UsageError

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
SEGMENT_SAMPLES = 600  # sampled frames per VideoReader instance
BATCH_SAMPLES = 8  # frames per get_batch call: the unit that is skipped when decoding fails

# Codec tags searched in the container header; decord does not report the codec.
_CODEC_TAGS = {
    b"avc1": "h264",
    b"avc3": "h264",
    b"hvc1": "hevc",
    b"hev1": "hevc",
    b"mp4v": "mpeg4",
    b"vp09": "vp9",
    b"av01": "av1",
    b"V_MPEG4/ISO/AVC": "h264",
    b"V_MPEGH/ISO/HEVC": "hevc",
    b"V_VP9": "vp9",
    b"V_VP8": "vp8",
    b"V_AV1": "av1",
    b"H264": "h264",
    b"h264": "h264",
    b"XVID": "mpeg4",
    b"FMP4": "mpeg4",
    b"MJPG": "mjpeg",
}


# decord prefixes its messages with "[hh:mm:ss] /build/path/file.cc:123: ", sometimes twice.
_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


@dataclass(frozen=True)
class VideoFile:
    """A video found among the inputs: where it is, and its path relative to the input root."""

    path: Path | str  # a local path, or an fsspec URL (see fermon.storage)
    relative: str  # POSIX path relative to the input root: the only form written to outputs
    member: str | None = None  # inside the archive at ``path`` (fermon.archives): extracted when processed


@dataclass
class Session:
    """One timeline: one video, or a folder's videos as chunks of one time axis.

    A study manifest (``fermon.manifest``) adds the patient and, per video (by its relative path), when
    its recording started; chunks are then placed on the time axis by those starts (``fermon.clock``)."""

    session_id: str
    videos: list[VideoFile]
    patient_id: str | None = None
    starts: dict[str, datetime] = field(default_factory=dict)  # relative path -> start (with its UTC offset)
    scratch: str | None = None  # where its archive members are extracted (set by the run, under its lock)


@dataclass
class Inputs:
    sessions: list[Session]
    skipped: list[str] = field(default_factory=list)  # relative paths of files that are not videos
    refused: list[str] = field(default_factory=list)  # archive members not read, each a one-line reason


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


def looks_like_video(path: Path | str) -> bool:
    """Magic bytes of ISO-BMFF (mp4/mov/m4v), Matroska/WebM and AVI containers."""
    try:
        with storage.open_binary(path, block_size=4096) as handle:
            head = handle.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def is_video_candidate(path: Path | str) -> bool:
    """A video suffix, or video content under another name. A corrupt file with a video suffix stays a
    candidate so that it is reported as failed rather than silently skipped."""
    suffix = PurePosixPath(storage.name_of(path)).suffix if storage.is_url(path) else Path(path).suffix
    return suffix.lower() in VIDEO_SUFFIXES or looks_like_video(path)


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "__")).strip("._") or "session"


def session_id_for(relative: str) -> str:
    """A file-name-safe id from a relative path: 'ward 3/pt01.mp4' -> 'ward_3__pt01'."""
    path = PurePosixPath(relative)
    return _safe(path.with_suffix("").as_posix() if path.suffix else relative)


def _unique(ids: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in ids:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}-{count + 1}")
    return out


def find_inputs(paths: list[Path], session_by: str = "file") -> Inputs:
    """Video files among the given files and folders (searched recursively), grouped into sessions.
    A path may also be an fsspec URL string (a prefix or one object: see fermon.storage)."""
    if session_by not in ("file", "folder"):
        raise UsageError(f"--session-by must be 'file' or 'folder', not {session_by!r}")
    from fermon.archives import is_archive, list_archive

    videos: list[VideoFile] = []
    skipped: list[str] = []
    refused: list[str] = []
    for given in paths:
        if storage.is_url(given):
            _find_under_url(str(given), videos, skipped)
            continue
        if not given.exists():
            raise InputError(f"{given}: no such file or folder")
        root, files = (given, list(_walk(given))) if given.is_dir() else (given.parent, [given])
        for file in files:
            relative = file.relative_to(root).as_posix()
            if is_archive(file):  # read as a folder of its own name
                listing = list_archive(file, relative)
                videos += listing.videos
                skipped += listing.skipped
                refused += listing.refused
            elif is_video_candidate(file):
                videos.append(VideoFile(file, relative))
            else:
                skipped.append(relative)
    return Inputs(group_sessions(videos, session_by), skipped, refused)


def _find_under_url(url: str, videos: list[VideoFile], skipped: list[str]) -> None:
    _, files = storage.walk(url)
    for location, relative in files:
        if is_video_candidate(location):
            videos.append(VideoFile(location, relative))
        else:
            skipped.append(relative)


def _folder_of(video: VideoFile) -> Path | str | tuple[Path, str]:
    """The folder a video is in, as a grouping key: resolved for paths, as given for URLs; for an
    archive member (fermon.archives), the archive and the member's folder inside it."""
    if video.member is not None:
        return (Path(video.path).resolve(), _parent(video.relative))
    return storage.parent_of(video.path) if storage.is_url(video.path) else Path(video.path).parent.resolve()


def _parent(relative: str) -> str:
    return relative.rsplit("/", 1)[0] if "/" in relative else ""


def group_sessions(videos: list[VideoFile], session_by: str) -> list[Session]:
    """``file``: a session per video. ``folder``: a session per folder, its videos in name order."""
    if session_by == "file":
        ids = _unique([session_id_for(v.relative) for v in videos])
        return [Session(sid, [v]) for sid, v in zip(ids, videos, strict=True)]
    groups: dict[object, list[VideoFile]] = {}
    for video in videos:
        groups.setdefault(_folder_of(video), []).append(video)
    members = [sorted(group, key=_name_in_folder) for group in groups.values()]
    names = [_safe(_parent(group[0].relative) or storage.name_of(_folder_of(group[0]))) for group in members]
    return [Session(sid, group) for sid, group in zip(_unique(names), members, strict=True)]


def _name_in_folder(video: VideoFile) -> str:
    """A video's file name, which orders a folder's chunks (a member's own, not its archive's)."""
    return PurePosixPath(video.relative).name if video.member is not None else storage.name_of(video.path)


def codec_of(path: Path | str) -> str:
    """The video codec named in the container header (first and last MiB), or 'unknown'."""
    size = storage.size_of(path)
    with storage.open_binary(path) as handle:
        data = handle.read(1 << 20)
        if size > 2 << 20:
            handle.seek(size - (1 << 20))
            data += handle.read()
    positions = {tag: data.find(tag) for tag in _CODEC_TAGS}
    found = [(pos, tag) for tag, pos in positions.items() if pos >= 0]
    return _CODEC_TAGS[min(found)[1]] if found else "unknown"


# --------------------------------------------------------------------------- the recording's start

_MP4_EPOCH = datetime(1904, 1, 1, tzinfo=timezone.utc)  # ISO-BMFF times count seconds from here
_MKV_EPOCH = datetime(2001, 1, 1, tzinfo=timezone.utc)  # Matroska's DateUTC counts nanoseconds from here
_MKV_SEGMENT, _MKV_INFO, _MKV_DATE, _MKV_CLUSTER = 0x18538067, 0x1549A966, 0x4461, 0x1F43B675
_MAX_BOXES = 4096  # top-level boxes or elements walked before giving up on a strange file


def creation_time(path: Path | str) -> datetime | None:
    """When the recording started, from the container's own header (UTC), or None when it does not
    say: the mp4/mov ``mvhd`` box's creation time, or Matroska/WebM's ``DateUTC``. decord does not
    expose either. A zero (unset) creation time is None. Reads a few small ranges of an object at a
    URL, not the whole video."""
    try:
        with storage.open_binary(path, block_size=1 << 16) as handle:
            head = handle.read(12)
            handle.seek(0)
            if head[4:8] == b"ftyp" or head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
                return _mp4_creation_time(handle)
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return _matroska_date(handle)
    except (OSError, InputError, struct.error, ValueError, OverflowError):
        return None
    return None


def _mp4_boxes(handle, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes from the handle's position up to ``end``."""
    for _ in range(_MAX_BOXES):
        start = handle.tell()
        header = handle.read(8)
        if len(header) < 8 or start >= end:
            return
        size, kind = struct.unpack(">I4s", header)
        payload = start + 8
        if size == 1:  # a 64-bit size follows
            size = struct.unpack(">Q", handle.read(8))[0]
            payload += 8
        elif size == 0:  # to the end of the file
            size = end - start
        if size < payload - start:
            return
        yield kind, payload, min(start + size, end)
        handle.seek(start + size)


def _mp4_creation_time(handle) -> datetime | None:
    end = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    for kind, payload, box_end in _mp4_boxes(handle, end):
        if kind != b"moov":
            continue
        handle.seek(payload)
        for child, child_payload, _ in _mp4_boxes(handle, box_end):
            if child == b"mvhd":
                handle.seek(child_payload)
                version = handle.read(4)[0]
                seconds = struct.unpack(">Q" if version == 1 else ">I", handle.read(8 if version == 1 else 4))[0]
                return _MP4_EPOCH + timedelta(seconds=seconds) if seconds else None
        return None
    return None


def _ebml_vint(handle, keep_marker: bool) -> tuple[int, bool]:
    """An EBML variable-size integer, and whether it is the all-ones 'unknown size'."""
    first = handle.read(1)
    if not first:
        raise ValueError("end of file")
    length = 9 - first[0].bit_length()
    if not 1 <= length <= 8:
        raise ValueError("bad EBML number")
    raw = first + handle.read(length - 1)
    value = int.from_bytes(raw, "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, value == (1 << (7 * length)) - 1


def _matroska_date(handle) -> datetime | None:
    """Walk EBML header, Segment, Info to DateUTC; stop at the first Cluster (media data)."""
    end = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    for _ in range(_MAX_BOXES):
        if handle.tell() >= end:
            return None
        element, _ = _ebml_vint(handle, keep_marker=True)
        size, unknown = _ebml_vint(handle, keep_marker=False)
        if element in (_MKV_SEGMENT, _MKV_INFO):
            continue  # descend: their children follow
        if element == _MKV_CLUSTER or unknown:
            return None
        if element == _MKV_DATE:
            nanoseconds = int.from_bytes(handle.read(size), "big", signed=True)
            return _MKV_EPOCH + timedelta(microseconds=nanoseconds // 1000)
        handle.seek(size, os.SEEK_CUR)
    return None


def _first_line(error: BaseException, video: VideoFile) -> str:
    """The first line of a decord error, without the absolute path it embeds."""
    text = _LOG_PREFIX.sub("", str(error)).strip().splitlines()
    line = (text[0] if text else type(error).__name__).replace(str(video.path), video.relative)
    if not storage.is_url(video.path):
        line = line.replace(str(Path(video.path).resolve()), video.relative)
    return storage.RELAY_URL.sub(video.relative, line)[:200]


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
        return _open_remote_reader(video)
    if not video.path.is_file():
        raise InputError(f"{video.relative}: no such file")
    if video.path.stat().st_size == 0:
        raise DataError(f"{video.relative}: empty file")
    try:
        with native_stderr_silenced():
            reader = decord.VideoReader(str(video.path), ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as error:
        raise DataError(f"{video.relative}: not a readable video ({_first_line(error, video)})") from error
    if len(reader) == 0:
        raise DataError(f"{video.relative}: no video frames")
    return reader


def _open_remote_reader(video: VideoFile):
    """A VideoReader of a video in an object store, streamed through fermon's loopback relay
    (``storage.relayed``): the store serves only the ranges decoding reads, never a full copy."""
    import decord

    try:
        size = storage.size_of(video.path)
    except FileNotFoundError as error:
        raise InputError(f"{video.relative}: no such file") from error
    except OSError as error:
        raise InputError(f"{video.relative}: unreadable ({error})") from error
    if size == 0:
        raise DataError(f"{video.relative}: empty file")
    source = storage.relayed(video.path, size)
    try:
        with native_stderr_silenced():
            reader = decord.VideoReader(source.url, ctx=decord.cpu(0), num_threads=1)
    except (RuntimeError, decord.DECORDError) as error:
        source.close()
        raise DataError(f"{video.relative}: not a readable video ({_first_line(error, video)})") from error
    reader.fermon_source = source  # served for as long as the reader lives
    if len(reader) == 0:
        raise DataError(f"{video.relative}: no video frames")
    return reader


def probe(video: VideoFile) -> tuple[VideoInfo, np.ndarray]:
    """Container facts and every frame's start time in seconds (read from the index, not decoded)."""
    reader = open_reader(video)
    count = len(reader)
    try:
        stamps = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        height, width = _frame_size(reader)
        fps = float(reader.get_avg_fps())
    finally:
        del reader
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
    import decord

    for seg_start in range(0, len(indices), segment):
        reader = open_reader(video)  # a fresh reader per segment: decord's native memory grows otherwise
        segment_indices = indices[seg_start : seg_start + segment]
        failed_before = False
        for start in range(0, len(segment_indices), batch):
            chunk = segment_indices[start : start + batch]
            try:
                frames = reader.get_batch(chunk.tolist()).asnumpy()
            except (decord.DECORDError, RuntimeError) as error:
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
