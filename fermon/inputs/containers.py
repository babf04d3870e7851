"""What a container says about itself without decoding the video: its codec and the recording's
creation time (the mp4/mov ``mvhd`` box, Matroska's ``DateUTC``). decord exposes neither, so the
header is read by FFmpeg's own demuxers through PyAV, the maintained binding, not by searching bytes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fermon.errors import InputError
from fermon.inputs import storage

UNKNOWN_CODEC = "unknown"
# Enough for the demuxer to read a header; a header-only open must not decode seconds of video.
_PROBE_OPTIONS = {"probesize": "1048576", "analyzeduration": "0"}


@dataclass(frozen=True)
class ContainerFacts:
    codec: str  # FFmpeg's short codec name of the first video stream (h264, hevc, ...), or 'unknown'
    created: datetime | None  # the recording's start in UTC, None when the header does not say


def container_facts(path: Path | str) -> ContainerFacts:
    """Codec and creation time from the container header; a file FFmpeg cannot open says neither.
    On an object store only the header's ranges are fetched, never the whole video, and a store
    that fails is retried (StorageError when it persists): a timeout must not lose the clock."""
    return storage.retrying(lambda: _read_header(path))


def _read_header(path: Path | str) -> ContainerFacts:
    import av

    logging.getLogger("libav").setLevel(logging.ERROR)  # FFmpeg's warnings name absolute paths
    try:
        with storage.open_binary(path, block_size=1 << 16) as handle, av.open(handle, options=_PROBE_OPTIONS) as found:
            stream = next(iter(found.streams.video), None)
            codec = stream.codec_context.name if stream is not None else UNKNOWN_CODEC
            return ContainerFacts(codec or UNKNOWN_CODEC, _parse_creation_time(found.metadata))
    except OSError as error:
        if storage.is_url(path) and storage.is_transient(error) and not isinstance(error, av.FFmpegError):
            raise storage.read_failure(storage.shown(str(path)), error) from error
        return ContainerFacts(UNKNOWN_CODEC, None)
    except (av.FFmpegError, InputError, ValueError):
        return ContainerFacts(UNKNOWN_CODEC, None)


def codec_of(path: Path | str) -> str:
    """The video codec the container declares, or 'unknown'."""
    return container_facts(path).codec


def creation_time(path: Path | str) -> datetime | None:
    """When the recording started, from the container's own header (UTC), or None when it does not
    say. FFmpeg leaves out a zero (unset) creation time, as cameras without a clock write it."""
    return container_facts(path).created


def _parse_creation_time(metadata: dict[str, str]) -> datetime | None:
    """FFmpeg writes ``creation_time`` as ISO 8601 in UTC, e.g. ``2026-03-29T00:59:58.000000Z``."""
    text = metadata.get("creation_time")
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
