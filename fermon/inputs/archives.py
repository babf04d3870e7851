"""Archives as input: ``.zip``, ``.tar``, ``.tar.gz`` (``.tgz``) under INPUT are read as folders.

Listing reads only the archive's index; a member is extracted right before its session is processed,
into a private folder under the output folder's hidden ``.fermon-tmp/`` that is removed when the
session ends (also on errors and interrupts; a killed run's leftovers are removed by the next run,
under the folder lock). Members are written under fermon's own names, never their stored ones.

Refused, each with a one-line reason and the rest of the archive kept: members whose names leave the
archive (``..``, absolute paths, drive letters), links and other non-regular members, encrypted
members, members over :data:`MAX_MEMBER_BYTES`, and members (zip) or whole archives (tar) whose
expansion ratio is over :data:`MAX_RATIO`. An archive with more than :data:`MAX_MEMBERS` members, or
that cannot be read, is refused whole. Extraction stops at the size a member declared, so an index
that lies cannot fill the disk.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from fermon.errors import DataError
from fermon.inputs.sessions import VIDEO_SUFFIXES, Refusal, Session, VideoFile

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
SCRATCH_DIR = ".fermon-tmp"
MAX_MEMBER_BYTES = 64 << 30  # 64 GiB: a day of hospital video at a generous bitrate
MAX_RATIO = 100.0  # video barely compresses (about 1:1); a hundredfold expansion is a bomb
RATIO_FROM_BYTES = 1 << 20  # small members (a 1 KiB file of zeros) may compress well
MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


@dataclass
class Listing:
    """What an archive holds: its video members, its other members (skipped) and refusals."""

    videos: list[VideoFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)  # one-line reasons, with their archive


@dataclass(frozen=True)
class _Member:
    name: str  # as stored
    size: int
    compressed: int | None  # zip only
    kind: str  # "file", or why it is not one (link, directory, device, encrypted)


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_name(name: str) -> str | None:
    """The member's POSIX name if it stays inside the archive, else None."""
    name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        return None
    return path.as_posix()


def _zip_members(path: Path) -> list[_Member]:
    with zipfile.ZipFile(path) as archive:
        members = []
        for info in archive.infolist():
            mode = info.external_attr >> 16
            kind = "file"
            if info.is_dir():
                kind = "directory"
            elif stat.S_ISLNK(mode):
                kind = "link"
            elif info.flag_bits & 0x1:
                kind = "encrypted"
            members.append(_Member(info.filename, info.file_size, info.compress_size, kind))
        return members


def _tar_members(path: Path) -> list[_Member]:
    with tarfile.open(path, "r:*") as archive:
        members = []
        for info in archive:
            if len(members) > MAX_MEMBERS:
                break
            kind = "file" if info.isfile() else "directory" if info.isdir() else "special file"
            if info.issym() or info.islnk():
                kind = "link"
            members.append(_Member(info.name, info.size, None, kind))
        return members


def _refusal(member: _Member, shown: str, archive_ratio: float | None) -> str | None:
    """Why a member is not extracted, or None."""
    if _safe_name(member.name) is None:
        return f"{shown}: refused: its name leaves the archive"
    if member.kind != "file":
        return f"{shown}: refused: a {member.kind}, not a regular file"
    if member.size > MAX_MEMBER_BYTES:
        return f"{shown}: refused: {member.size} bytes, over the limit of {MAX_MEMBER_BYTES}"
    ratio = member.size / max(member.compressed, 1) if member.compressed is not None else archive_ratio
    if ratio is not None and member.size >= RATIO_FROM_BYTES and ratio > MAX_RATIO:
        return f"{shown}: refused: expands {ratio:.0f} times (over {MAX_RATIO:.0f}): a compression bomb?"
    return None


def list_archive(path: Path, relative: str) -> Listing:
    """The members of the archive at ``path`` (``relative`` to the input root) as inputs."""
    listing = Listing()
    try:
        members = _zip_members(path) if path.name.lower().endswith(".zip") else _tar_members(path)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as error:
        reason = f"{relative}: refused: not a readable archive ({type(error).__name__})"
        listing.refused.append(Refusal(reason, path, relative))
        return listing
    if len(members) > MAX_MEMBERS:
        listing.refused.append(Refusal(f"{relative}: refused: more than {MAX_MEMBERS} members", path, relative))
        return listing
    archive_ratio = None
    if not path.name.lower().endswith(".zip"):  # a compressed tar has one stream: judge it whole
        archive_ratio = sum(m.size for m in members if m.kind == "file") / max(path.stat().st_size, 1)
    for member in members:
        if member.kind == "directory" and _safe_name(member.name) is not None:
            continue
        shown = f"{relative}/{member.name.lstrip('/')}"
        reason = _refusal(member, shown, archive_ratio)
        if reason:
            listing.refused.append(Refusal(reason, path, shown))
        elif PurePosixPath(member.name).suffix.lower() in VIDEO_SUFFIXES:
            name = _safe_name(member.name)
            listing.videos.append(VideoFile(path, f"{relative}/{name}", member=member.name))
        elif not PurePosixPath(member.name).name.startswith("."):
            listing.skipped.append(shown)
    return listing


# --------------------------------------------------------------------------- extraction

_LIVE: set[Path] = set()  # scratch folders of sessions in progress, removed at exit whatever happens
_LIVE_LOCK = threading.Lock()


def _remove_live() -> None:
    with _LIVE_LOCK:
        for folder in list(_LIVE):
            shutil.rmtree(folder, ignore_errors=True)
        _LIVE.clear()


atexit.register(_remove_live)


def remove_scratch(out_dir: Path) -> None:
    """A killed run's extracted members (call only while holding the folder lock)."""
    shutil.rmtree(out_dir / SCRATCH_DIR, ignore_errors=True)


def _copy_limited(source, target: Path, limit: int, shown: str) -> None:
    """Copy at most ``limit`` bytes (the member's declared size); more is a lying index: refused."""
    written = 0
    with open(target, "wb") as handle:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise DataError(f"{shown}: refused: holds more bytes than its archive index says")
            handle.write(chunk)


def _extract(video: VideoFile, folder: Path, number: int) -> VideoFile:
    """One member, written under a name of fermon's own in ``folder``."""
    target = folder / f"{number:04d}{PurePosixPath(video.member or '').suffix.lower()}"
    try:
        if video.path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(video.path) as archive:
                info = archive.getinfo(video.member)
                with archive.open(info) as source:
                    _copy_limited(source, target, info.file_size, video.relative)
        else:
            with tarfile.open(video.path, "r:*") as archive:
                info = archive.getmember(video.member)
                source = archive.extractfile(info)
                if source is None:
                    raise DataError(f"{video.relative}: refused: not a regular file")
                with source:
                    _copy_limited(source, target, info.size, video.relative)
    except (OSError, KeyError, zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        target.unlink(missing_ok=True)
        raise DataError(f"{video.relative}: cannot extract from its archive ({type(error).__name__})") from error
    return VideoFile(target, video.relative)


@contextmanager
def extracted(session: Session) -> Iterator[Session]:
    """The session with its archive members extracted to a private scratch folder, removed on exit.
    A session without archive members is given back as it is. Raises DataError (one line, naming the
    member) when a member cannot be extracted."""
    if not any(v.member for v in session.videos) or session.scratch is None:
        yield session
        return
    root = Path(session.scratch)
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{session.session_id[:40]}-", dir=root))
    with _LIVE_LOCK:
        _LIVE.add(folder)
    try:
        videos = []
        for number, video in enumerate(session.videos):
            if video.member is None:
                videos.append(video)
                continue
            videos.append(_extract(video, folder, number))  # DataError: the session fails with its reason
        yield replace(session, videos=videos)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(folder)
        with suppress(OSError):
            os.rmdir(root)  # the last session out removes the scratch folder itself
