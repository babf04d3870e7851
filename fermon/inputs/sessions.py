"""What an input is: a video file, a session of videos (one timeline), and what a search found."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


@dataclass(frozen=True)
class VideoFile:
    """A video found among the inputs: where it is, and its path relative to the input root."""

    path: Path | str  # a local path, or an fsspec URL (see fermon.inputs.storage)
    relative: str  # POSIX path relative to the input root: the only form written to outputs
    member: str | None = None  # inside the archive at ``path`` (fermon.inputs.archives): extracted when processed


@dataclass
class Session:
    """One timeline: one video, or a folder's videos as chunks of one time axis.

    A study manifest (``fermon.inputs.manifest``) adds the patient and, per video (by its relative path), when
    its recording started; chunks are then placed on the time axis by those starts (``fermon.inputs.clock``)."""

    session_id: str
    videos: list[VideoFile]
    patient_id: str | None = None
    starts: dict[str, datetime] = field(default_factory=dict)  # relative path -> start (with its UTC offset)
    scratch: str | None = None  # where its archive members are extracted (set by the run, under its lock)


@dataclass
class Inputs:
    sessions: list[Session]
    skipped: list[str] = field(default_factory=list)  # relative paths of files that are not videos
    refused: list[Refusal] = field(default_factory=list)  # archive members not read, each a one-line reason


class Refusal(str):
    """An archive member fermon will not read (a name that leaves the archive, a link, a bomb), as
    its one-line reason; ``archive`` is the file it is in and ``member`` the member as shown (relative
    to the input root), so that the refusal is recorded as a failed input of that archive."""

    archive: Path
    member: str

    def __new__(cls, reason: str, archive: Path, member: str) -> Refusal:
        refusal = super().__new__(cls, reason)
        refusal.archive, refusal.member = archive, member
        return refusal

    def __getnewargs__(self) -> tuple[str, Path, str]:  # type: ignore[override]
        return str(self), self.archive, self.member
