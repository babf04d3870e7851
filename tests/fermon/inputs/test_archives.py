"""Archives as input: members read as a folder's files, extracted only while their session runs and
always cleaned up; members that try to leave the archive, links and compression bombs are refused."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fermon.inputs.archives import MAX_RATIO, SCRATCH_DIR, extracted, list_archive
from fermon.inputs.discover import find_inputs, session_id_for
from fermon.report.build import build_reports
from fermon.run.ledger import Ledger
from fermon.run.process import ProcessOptions, run_process
from tests.videos import astronaut_face, moving_face_frames, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "face.mp4"
    return write_video(path, moving_face_frames(astronaut_face(astronaut), 1, 10)).read_bytes()


@pytest.fixture(scope="module")
def options(untrained_checkpoint: Path) -> ProcessOptions:
    return ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")


def _zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def _tar(path: Path, members: dict[str, bytes], mode: str = "w", links: dict[str, bytes] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, kind in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            archive.addfile(info)
    return path


def test_members_are_listed_as_a_folder(tmp_path: Path, clip: bytes) -> None:
    _zip(tmp_path / "in" / "ward.zip", {"bed1/a.mp4": clip, "bed1/b.mp4": clip, "notes.txt": b"x"})
    _tar(tmp_path / "in" / "night.tar.gz", {"c.mp4": clip}, "w:gz")
    _tar(tmp_path / "in" / "day.tar", {"d.mp4": clip})
    (tmp_path / "in" / "plain.mp4").write_bytes(clip)
    found = find_inputs([tmp_path / "in"])
    assert sorted(v.relative for s in found.sessions for v in s.videos) == [
        "day.tar/d.mp4", "night.tar.gz/c.mp4", "plain.mp4", "ward.zip/bed1/a.mp4", "ward.zip/bed1/b.mp4"
    ]  # fmt: skip
    assert found.skipped == ["ward.zip/notes.txt"] and found.refused == []
    by_folder = {
        s.session_id: [v.relative for v in s.videos] for s in find_inputs([tmp_path / "in"], "folder").sessions
    }
    assert by_folder["ward.zip__bed1"] == ["ward.zip/bed1/a.mp4", "ward.zip/bed1/b.mp4"]
    assert by_folder["night.tar.gz"] == ["night.tar.gz/c.mp4"]


def test_attacks_are_refused_with_one_line_each(tmp_path: Path, clip: bytes) -> None:
    bomb = bytes(4 << 20)  # 4 MiB of zeros: deflates about a thousandfold
    zipped = _zip(
        tmp_path / "evil.zip",
        {"../slip.mp4": clip, "/etc/absolute.mp4": clip, "C:/windows.mp4": clip, "bomb.mp4": bomb, "ok.mp4": clip},
        links={"link.mp4": "/etc/passwd"},
    )
    listing = list_archive(zipped, "evil.zip")
    assert [v.relative for v in listing.videos] == ["evil.zip/ok.mp4"]
    reasons = sorted(listing.refused)
    assert any(r.startswith("evil.zip/../slip.mp4: refused: its name leaves the archive") for r in reasons)
    assert any(r.startswith("evil.zip/etc/absolute.mp4: refused: its name leaves the archive") for r in reasons)
    assert any(r.startswith("evil.zip/C:/windows.mp4: refused: its name leaves") for r in reasons)
    assert any(r.startswith("evil.zip/link.mp4: refused: a link") for r in reasons)
    assert any(r.startswith("evil.zip/bomb.mp4: refused: expands") and f"over {MAX_RATIO:.0f}" in r for r in reasons)
    assert len(reasons) == 5 and all("\n" not in r for r in reasons)
    tarred = _tar(tmp_path / "evil.tar", {"../up.mp4": clip}, links={"sym.mp4": tarfile.SYMTYPE,
                                                                      "hard.mp4": tarfile.LNKTYPE})  # fmt: skip
    assert sorted(r.split(": refused: ")[1] for r in list_archive(tarred, "evil.tar").refused) == [
        "a link, not a regular file", "a link, not a regular file", "its name leaves the archive"
    ]  # fmt: skip
    tar_bomb = _tar(tmp_path / "bomb.tar.gz", {"zeros.mp4": bomb}, "w:gz")
    (reason,) = list_archive(tar_bomb, "bomb.tar.gz").refused
    assert reason.startswith("bomb.tar.gz/zeros.mp4: refused: expands")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    assert list_archive(tmp_path / "broken.zip", "broken.zip").refused == [
        "broken.zip: refused: not a readable archive (BadZipFile)"
    ]


def test_extraction_is_private_and_always_cleaned_up(tmp_path: Path, clip: bytes) -> None:
    _zip(tmp_path / "in" / "a.zip", {"x.mp4": clip})
    (session,) = find_inputs([tmp_path / "in"]).sessions
    scratch = tmp_path / "out" / SCRATCH_DIR
    session.scratch = str(scratch)
    with pytest.raises(RuntimeError), extracted(session) as local:
        (video,) = local.videos
        assert video.path.read_bytes() == clip and video.path.parent.parent == scratch
        assert video.relative == "a.zip/x.mp4" and video.member is None
        raise RuntimeError("the session failed half way")
    assert not scratch.exists()


@pytest.mark.slow
def test_a_run_reads_archives_and_leaves_nothing_behind(tmp_path: Path, clip: bytes, options: ProcessOptions) -> None:
    _zip(tmp_path / "in" / "study.zip", {"ward/p01.mp4": clip, "../evil.mp4": clip})
    _tar(tmp_path / "in" / "p02.tar.gz", {"p02.mp4": clip}, "w:gz")
    out = tmp_path / "out"
    (out / SCRATCH_DIR / "killed-run").mkdir(parents=True)  # what a kill -9 left
    events: list[dict] = []
    summary = run_process([tmp_path / "in"], out, options, on_event=events.append)
    assert sorted(r.session_id for r in summary.done) == ["p02.tar.gz__p02", "study.zip__ward__p01"]
    assert summary.refused == ["study.zip/../evil.mp4: refused: its name leaves the archive"]
    # A refused member is a failed input, named and counted, not a warning.
    (refused,) = summary.failed
    assert refused.error == summary.refused[0] and refused.failure_kind == "input"
    assert any(e["event"] == "session_failed" and e["error"] == summary.refused[0] for e in events)
    frame = pd.read_parquet(out / "timelines")
    assert set(frame["video"]) == {"study.zip/ward/p01.mp4", "p02.tar.gz/p02.mp4"}
    assert frame["face_detected"].any()
    assert not (out / SCRATCH_DIR).exists()
    assert not (tmp_path / "evil.mp4").exists() and not (tmp_path / "in" / "evil.mp4").exists()
    again = run_process([tmp_path / "in"], out, options)
    assert len(again.up_to_date) == 2  # the archive's fingerprint stands for its members
    evil = session_id_for("study.zip/../evil.mp4")
    assert again.known_bad == [evil] and not again.failed  # refused once, known bad since
    with Ledger(out, read_only=True) as ledger:
        rows = {row["session_id"]: row for row in ledger.all()}
    assert rows[evil]["error"] == summary.refused[0]
    build_reports(out)
    assert "study.zip/../evil.mp4: refused" in (out / "reports" / "index.html").read_text()  # on the cohort page
