"""Study manifests: which videos are which patient's sessions, and when each recording started.

A manifest is a CSV file with the columns ``video`` (a path or glob relative to the input folder),
``patient_id``, ``session_id`` and ``start`` (optional; ISO 8601 with a UTC offset or ``Z``). Rows that
share a ``session_id`` are chunks of one session. Problems that would make fermon guess (a start
without an offset, one video claimed by two rows, one session given two patients) are errors naming
the file and its line; rows that match nothing and videos that no row names are warnings, and such
videos are not processed.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

from fermon.errors import DataError, UsageError
from fermon.inputs.sessions import Inputs, Session, VideoFile

REQUIRED_COLUMNS = ("video", "patient_id", "session_id")
OPTIONAL_COLUMNS = ("start",)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # session ids name files: nothing to escape
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ManifestRow:
    """One row, with its line in the file (for messages)."""

    line: int
    video: str  # a path or glob relative to the input folder, POSIX separators
    patient_id: str
    session_id: str
    start: datetime | None  # aware: its own UTC offset kept, for showing times in the study's zone

    def matches(self, relative: str) -> bool:
        if _GLOB.search(self.video):
            return fnmatch.fnmatchcase(relative, self.video)  # '*' also crosses '/'
        return relative == self.video


@dataclass
class Manifest:
    name: str  # the file's name, for messages
    rows: list[ManifestRow] = field(default_factory=list)


def parse_start(text: str, where: str) -> datetime | None:
    """An ISO 8601 time with a UTC offset; empty is None. A time without an offset is an error: local
    times repeat or vanish at daylight-saving changes."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise DataError(f"{where}: {text!r} is not an ISO 8601 time (e.g. 2026-03-29T01:30:00+01:00)") from None
    if moment.utcoffset() is None:
        raise DataError(f"{where}: {text!r} has no UTC offset (add e.g. +01:00 or Z): local times are ambiguous")
    return moment


def read_manifest(path: Path) -> Manifest:
    """Read and check a manifest. Raises UsageError when it cannot be read and DataError (naming the
    file and line) for bad content."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read the manifest ({getattr(error, 'strerror', None) or error})") from None
    manifest = Manifest(path.name)
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{path.name}:1: missing column(s) {', '.join(missing)} (needs video, patient_id, session_id)")
    for record in reader:
        values = {(k or "").strip(): (v or "").strip() for k, v in record.items() if k is not None}
        manifest.rows.append(_row(values, reader.line_num, path.name))
    _check_rows(manifest)
    return manifest


def _row(values: dict[str, str], line: int, name: str) -> ManifestRow:
    where = f"{name}:{line}"
    for column in REQUIRED_COLUMNS:
        if not values.get(column):
            raise DataError(f"{where}: empty {column}")
    video = values["video"].replace("\\", "/")
    if video.startswith("/") or ".." in PurePosixPath(video).parts:
        raise DataError(f"{where}: video {video!r} must be relative to the input folder, inside it")
    if not _SAFE_ID.match(values["session_id"]):
        raise DataError(f"{where}: session_id {values['session_id']!r} may hold only letters, digits, '.', '_', '-'")
    start = parse_start(values.get("start", ""), where)
    return ManifestRow(line, video, values["patient_id"], values["session_id"], start)


def _check_rows(manifest: Manifest) -> None:
    """The same video twice, or a session with two patients: errors, never a guess."""
    videos: dict[str, int] = {}
    patients: dict[str, ManifestRow] = {}
    for row in manifest.rows:
        if row.video in videos:
            raise DataError(f"{manifest.name}:{row.line}: video {row.video!r} is also on line {videos[row.video]}")
        videos[row.video] = row.line
        first = patients.setdefault(row.session_id, row)
        if first.patient_id != row.patient_id:
            raise DataError(
                f"{manifest.name}:{row.line}: session {row.session_id!r} is patient {row.patient_id!r} here "
                f"but {first.patient_id!r} on line {first.line}"
            )


def apply_manifest(manifest: Manifest, videos: list[VideoFile]) -> tuple[list[Session], list[str]]:
    """Sessions as the manifest sets them, and one-line warnings (rows that match nothing, videos that
    no row names: those are not processed). Raises DataError when two rows match one video or a row
    with a start matches several (a start belongs to one recording)."""
    claimed: dict[str, ManifestRow] = {}
    warnings: list[str] = []
    members: dict[str, list[VideoFile]] = {}
    for row in manifest.rows:
        matched = [video for video in videos if row.matches(video.relative)]
        if not matched:
            warnings.append(f"{manifest.name}:{row.line}: {row.video!r} matches no video under the input; row skipped")
        if row.start is not None and len(matched) > 1:
            raise DataError(
                f"{manifest.name}:{row.line}: {row.video!r} has a start but matches {len(matched)} videos; "
                "give each recording its own row"
            )
        for video in matched:
            if video.relative in claimed:
                other = claimed[video.relative]
                raise DataError(
                    f"{manifest.name}:{row.line}: {video.relative} is also matched by line {other.line}; "
                    "each video belongs to one row"
                )
            claimed[video.relative] = row
            members.setdefault(row.session_id, []).append(video)
    for video in videos:
        if video.relative not in claimed:
            warnings.append(f"{video.relative}: not in {manifest.name}; skipped")
    sessions = []
    for session_id, chunks in members.items():
        chunks = sorted(chunks, key=lambda video: video.relative)
        rows = [claimed[video.relative] for video in chunks]
        starts = {video.relative: row.start for video, row in zip(chunks, rows) if row.start is not None}
        sessions.append(Session(session_id, chunks, patient_id=rows[0].patient_id, starts=starts))
    return sessions, warnings


def inputs_from_manifest(found: Inputs, path: Path) -> tuple[Inputs, list[str]]:
    """The inputs regrouped by the manifest at ``path``, and its warnings."""
    manifest = read_manifest(path)
    videos = [video for session in found.sessions for video in session.videos]
    sessions, warnings = apply_manifest(manifest, videos)
    return Inputs(sessions, found.skipped), warnings
