"""What a container says about itself without decoding: the codec tag and the recording's creation
time (the mp4/mov ``mvhd`` box, Matroska's DateUTC), read from a few bytes of the file."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fermon.errors import InputError
from fermon.inputs import storage

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
