"""Study manifests: sessions, patients and starts from a CSV file; every problem is one clear line."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fermon.cli import app
from fermon.errors import DataError, UsageError
from fermon.inputs.manifest import apply_manifest, read_manifest
from fermon.inputs.sessions import VideoFile
from fermon.run.timeline import read_metadata
from tests.videos import astronaut_face, moving_face_frames, write_video

HEADER = "video,patient_id,session_id,start\n"


def _manifest(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "study.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def _videos(*names: str) -> list[VideoFile]:
    return [VideoFile(Path("/nowhere") / name, name) for name in names]


def test_rows_set_sessions_patients_and_starts(tmp_path: Path) -> None:
    manifest = read_manifest(
        _manifest(
            tmp_path,
            "night/a.mp4,P01,p01-night,2026-03-29T01:59:58+01:00\n"
            "night/b.mp4,P01,p01-night,2026-03-29T03:00:01+02:00\n"
            "day/*.mp4,P02,p02-day,\n",
        )
    )
    sessions, warnings = apply_manifest(manifest, _videos("night/a.mp4", "night/b.mp4", "day/x.mp4", "day/y.mp4"))
    assert warnings == []
    night, day = sessions
    assert (night.session_id, night.patient_id) == ("p01-night", "P01")
    assert [v.relative for v in night.videos] == ["night/a.mp4", "night/b.mp4"]
    a, b = night.starts["night/a.mp4"], night.starts["night/b.mp4"]
    assert b - a == timedelta(seconds=3)  # across the 02:00 -> 03:00 change, in UTC
    assert a.utcoffset() == timedelta(hours=1)  # the study's own offset is kept for display
    assert [v.relative for v in day.videos] == ["day/x.mp4", "day/y.mp4"] and day.starts == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a.mp4,P01,s1,2026-03-29T01:30:00\n", "study.csv:2: '2026-03-29T01:30:00' has no UTC offset"),
        ("a.mp4,P01,s1,yesterday\n", "study.csv:2: 'yesterday' is not an ISO 8601 time"),
        ("a.mp4,P01,s1,\na.mp4,P01,s1,\n", "study.csv:3: video 'a.mp4' is also on line 2"),
        ("a.mp4,P01,s1,\nb.mp4,P02,s1,\n", "study.csv:3: session 's1' is patient 'P02' here but 'P01' on line 2"),
        ("a.mp4,,s1,\n", "study.csv:2: empty patient_id"),
        ("../a.mp4,P01,s1,\n", "study.csv:2: video '../a.mp4' must be relative to the input folder"),
        ("a.mp4,P01,s 1/x,\n", "study.csv:2: session_id 's 1/x' may hold only"),
    ],
)
def test_bad_rows_are_errors_naming_the_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(DataError) as error:
        read_manifest(_manifest(tmp_path, body))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_missing_columns_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"study.csv:1: missing column\(s\) session_id"):
        read_manifest(_manifest(tmp_path, "a.mp4,P01\n", header="video,patient_id\n"))
    with pytest.raises(UsageError, match="cannot read the manifest"):
        read_manifest(tmp_path / "absent.csv")


def test_matching_problems(tmp_path: Path) -> None:
    manifest = read_manifest(_manifest(tmp_path, "a.mp4,P01,s1,\nlost.mp4,P01,s1,\n"))
    sessions, warnings = apply_manifest(manifest, _videos("a.mp4", "extra.mp4"))
    assert [s.session_id for s in sessions] == ["s1"] and [v.relative for v in sessions[0].videos] == ["a.mp4"]
    assert warnings == [
        "study.csv:3: 'lost.mp4' matches no video under the input; row skipped",
        "extra.mp4: not in study.csv; skipped",
    ]
    overlapping = read_manifest(_manifest(tmp_path, "*.mp4,P01,s1,\na.mp4,P01,s2,\n"))
    with pytest.raises(DataError, match=r"study.csv:3: a.mp4 is also matched by line 2"):
        apply_manifest(overlapping, _videos("a.mp4"))
    one_start = read_manifest(_manifest(tmp_path, "*.mp4,P01,s1,2026-01-01T00:00:00Z\n"))
    with pytest.raises(DataError, match="has a start but matches 2 videos"):
        apply_manifest(one_start, _videos("a.mp4", "b.mp4"))


def test_daylight_saving_night_through_the_cli(
    tmp_path: Path, astronaut: np.ndarray, untrained_checkpoint: Path
) -> None:
    """Berlin, 2026-03-29: chunk one starts 01:59:58 CET, chunk two 03:00:01 CEST (3 s later in UTC).
    The manifest's times win over the containers' (which say otherwise here)."""
    face = astronaut_face(astronaut)
    videos = tmp_path / "in"
    write_video(videos / "bed" / "a.mp4", moving_face_frames(face, 2, 10), creation_time="2020-01-01T00:00:00Z")
    write_video(videos / "bed" / "b.mp4", moving_face_frames(face, 2, 10))
    write_video(videos / "other.mp4", moving_face_frames(face, 1, 10))
    manifest = _manifest(
        tmp_path,
        "bed/a.mp4,P01,p01-night,2026-03-29T01:59:58+01:00\nbed/b.mp4,P01,p01-night,2026-03-29T03:00:01+02:00\n",
    )
    out = tmp_path / "out"
    args = ["process", str(videos), "--out", str(out), "--manifest", str(manifest), "--checkpoint"]
    args += [str(untrained_checkpoint), "--detector", "centerface", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fermon: warning: other.mp4: not in study.csv; skipped" in result.output
    assert sorted(p.name for p in (out / "timelines").iterdir()) == ["p01-night.parquet"]
    frame = pd.read_parquet(out / "timelines" / "p01-night.parquet")
    assert set(frame["patient_id"]) == {"P01"}
    starts = {
        "bed/a.mp4": datetime(2026, 3, 29, 1, 59, 58, tzinfo=timezone(timedelta(hours=1))),
        "bed/b.mp4": datetime(2026, 3, 29, 3, 0, 1, tzinfo=timezone(timedelta(hours=2))),
    }
    for video, rows in frame.groupby("video"):
        local = rows["timestamp_s"] - rows["timestamp_s"].min()  # each chunk's own seconds
        expected = pd.Timestamp(starts[video]) + pd.to_timedelta(local, unit="s")
        assert (rows["wall_time"] - expected).abs().max() <= pd.Timedelta(milliseconds=50), video
    assert frame.loc[frame["video"] == "bed/b.mp4", "timestamp_s"].min() == pytest.approx(3.0, abs=0.01)
    meta = read_metadata(out / "timelines" / "p01-night.parquet")
    assert meta["clock"] == {"source": "manifest", "start": "2026-03-29T00:59:58.000000Z", "utc_offset": "+01:00"}
    assert meta["config"]["manifest"] == "study.csv" and str(tmp_path) not in str(meta)
    summary = pd.read_parquet(out / "summary.parquet")
    assert summary["patient_id"].tolist() == ["P01"]
    assert summary["start_time"].tolist() == [pd.Timestamp("2026-03-29T00:59:58Z")]
    # The manifest is part of what a session is: a changed start reprocesses it, an unchanged one does not.
    again = CliRunner().invoke(app, args)
    assert "0 done, 1 up to date" in again.output
    manifest.write_text(manifest.read_text().replace("01:59:58+01:00", "01:59:57+01:00"))
    changed = CliRunner().invoke(app, args)
    assert "1 done, 0 up to date" in changed.output


def test_manifest_sets_the_sessions_even_with_session_by_folder(
    tmp_path: Path, astronaut: np.ndarray, untrained_checkpoint: Path
) -> None:
    write_video(tmp_path / "in" / "bed" / "a.mp4", moving_face_frames(astronaut_face(astronaut), 1, 10))
    write_video(tmp_path / "in" / "bed" / "b.mp4", moving_face_frames(astronaut_face(astronaut), 1, 10))
    manifest = _manifest(tmp_path, "bed/a.mp4,P01,s1,\nbed/b.mp4,P02,s2,\n")
    args = ["process", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--manifest", str(manifest)]
    args += ["--session-by", "folder", "--checkpoint", str(untrained_checkpoint), "--detector", "centerface"]
    result = CliRunner().invoke(app, [*args, "--no-report"])
    assert result.exit_code == 0, result.output
    assert "warning: --session-by is not used with --manifest" in result.output
    assert sorted(p.stem for p in (tmp_path / "o" / "timelines").iterdir()) == ["s1", "s2"]


def test_a_manifest_that_matches_no_video_is_an_error(tmp_path: Path, astronaut: np.ndarray) -> None:
    write_video(tmp_path / "in" / "bed1.mp4", moving_face_frames(astronaut_face(astronaut), 1, 10))
    manifest = tmp_path / "study.csv"
    manifest.write_text("video,patient_id,session_id,start\nbed9.mp4,P9,p9-night,2026-03-29T01:00:00+01:00\n")
    args = ["process", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--manifest", str(manifest), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 66, result.output
    assert "study.csv: no row matches a video under the inputs" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "timelines").exists()
