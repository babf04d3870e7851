"""Stage: find the video inputs and group them into sessions (one per video, or one per folder).

Inputs are local files and folders (searched recursively), fsspec URLs (see fermon.inputs.storage) and
archives read as folders (fermon.inputs.archives). Only names relative to what the user named reach outputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from fermon.errors import InputError, UsageError
from fermon.inputs import storage
from fermon.inputs.archives import is_archive, list_archive
from fermon.inputs.sessions import VIDEO_SUFFIXES, Inputs, Refusal, Session, VideoFile


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
    A path may also be an fsspec URL string (a prefix or one object: see fermon.inputs.storage)."""
    if session_by not in ("file", "folder"):
        raise UsageError(f"--session-by must be 'file' or 'folder', not {session_by!r}")
    videos: list[VideoFile] = []
    skipped: list[str] = []
    refused: list[Refusal] = []
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
    archive member (fermon.inputs.archives), the archive and the member's folder inside it."""
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
