"""Wall-clock time: where each chunk of a session sits on its time axis, and when the session began.

A video's start comes from the study manifest, else from its container's creation time
(:func:`fermon.video.creation_time`). One session takes its starts from one source: with a manifest
start for any of its videos, from the manifest only. Chunks with a known start are placed by it, so a
pause between two chunks stays a gap on the axis; a chunk without one follows the chunk before it
end to end (or, before the first known start, precedes the next one). ``timestamp_s`` counts from the
earliest chunk's start. All arithmetic is in UTC, so a recording across a daylight-saving change stays
continuous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from fermon.inputs.containers import creation_time
from fermon.inputs.sessions import Session, VideoFile

MANIFEST, CONTAINER, FOLLOWS = "manifest", "container", "follows"
# Cameras with an unset clock write 1970 or 2000; such a creation time says nothing about the recording.
_EARLIEST_PLAUSIBLE = datetime(1990, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class SessionClock:
    """Per good video, its offset on the session's axis and its start (UTC) and where that came from."""

    offsets_s: list[float]
    starts: list[datetime | None]
    sources: list[str | None]
    source: str | None  # manifest, container or None (start unknown)

    def video_facts(self, number: int) -> dict[str, Any]:
        """What the footer's per-video entry says about the clock."""
        return {"start": iso_utc(self.starts[number]), "start_source": self.sources[number]}


def iso_utc(moment: datetime | None) -> str | None:
    """An ISO 8601 UTC time with microseconds and a ``Z``; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso_utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _container_start(video: VideoFile) -> datetime | None:
    moment = creation_time(video.path)
    return moment if moment is not None and moment >= _EARLIEST_PLAUSIBLE else None


def known_starts(session: Session, videos: Sequence[VideoFile]) -> tuple[list[datetime | None], str | None]:
    """Each video's own start from the session's one source, and which source that is."""
    from_manifest = [session.starts.get(video.relative) for video in videos]
    if any(start is not None for start in from_manifest):
        return from_manifest, MANIFEST
    from_container = [_container_start(video) for video in videos]
    if any(start is not None for start in from_container):
        return from_container, CONTAINER
    return [None] * len(videos), None


def place_chunks(starts: Sequence[datetime | None], durations_s: Sequence[float], source: str | None) -> SessionClock:
    """Offsets (seconds from the earliest chunk's start) of chunks with these own starts and durations."""
    count = len(durations_s)
    if source is None or all(start is None for start in starts):
        offsets = [float(sum(durations_s[:k])) for k in range(count)]  # end to end, as before wall clocks
        return SessionClock(offsets, [None] * count, [None] * count, None)
    placed: list[datetime | None] = list(starts)
    for k in range(1, count):  # after a known start: end to end
        if placed[k] is None and placed[k - 1] is not None:
            placed[k] = placed[k - 1] + timedelta(seconds=durations_s[k - 1])
    for k in range(count - 2, -1, -1):  # before the first known start: ending where the next begins
        if placed[k] is None:
            placed[k] = placed[k + 1] - timedelta(seconds=durations_s[k])
    origin = min(placed)
    offsets = [(moment - origin).total_seconds() for moment in placed]
    sources = [source if start is not None else FOLLOWS for start in starts]
    return SessionClock(offsets, placed, sources, source)


def footer_clock(session: Session, infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The footer's ``clock``: the source, the session's start (UTC) and the manifest's UTC offset,
    which the reports use to show wall-clock times in the study's own zone."""
    starts = [parse_iso_utc(info.get("start")) for info in infos]
    known = [start for start in starts if start is not None]
    sources = {info.get("start_source") for info in infos} - {None, FOLLOWS}
    offset = next((start.utcoffset() for start in session.starts.values() if start is not None), None)
    return {
        "source": next(iter(sources)) if known and sources else None,
        "start": iso_utc(min(known)) if known else None,
        "utc_offset": _format_offset(offset),
    }


def _format_offset(offset: timedelta | None) -> str | None:
    if offset is None:
        return None
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
