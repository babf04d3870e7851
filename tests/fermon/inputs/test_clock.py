"""Wall-clock time: container creation times read from the file, chunks placed by their own starts
(gaps kept), a night across the daylight-saving change, and the footer's clock. Real clips, real runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fermon.inputs.clock import CONTAINER, FOLLOWS, MANIFEST, place_chunks
from fermon.inputs.containers import creation_time
from fermon.run.process import ProcessOptions, run_process
from fermon.run.timeline import read_metadata
from tests.videos import astronaut_face, blank_frames, moving_face_frames, write_video

UTC = timezone.utc


@pytest.fixture(scope="module")
def options(untrained_checkpoint: Path) -> ProcessOptions:
    return ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_creation_time_is_read_from_the_container(tmp_path: Path, suffix: str) -> None:
    path = write_video(tmp_path / f"clip{suffix}", blank_frames(0.5, 10), creation_time="2026-03-29T00:59:58Z")
    assert creation_time(path) == datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC)


def test_no_creation_time_is_none(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", blank_frames(0.5, 10))
    assert creation_time(path) is None
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x08ftyp" + bytes(50))
    assert creation_time(tmp_path / "junk.mp4") is None
    assert creation_time(Path("samples/demo-session.mp4")) is None


def test_chunks_are_placed_by_their_starts_and_gaps_are_kept() -> None:
    t0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    clock = place_chunks([t0, None, t0 + timedelta(seconds=100)], [10.0, 20.0, 5.0], MANIFEST)
    assert clock.offsets_s == [0.0, 10.0, 100.0]
    assert clock.sources == [MANIFEST, FOLLOWS, MANIFEST]
    # Before the first known start, a chunk ends where the next begins; the axis starts at the earliest.
    clock = place_chunks([None, t0], [10.0, 5.0], CONTAINER)
    assert clock.offsets_s == [0.0, 10.0] and clock.starts[0] == t0 - timedelta(seconds=10)
    unknown = place_chunks([None, None], [10.0, 5.0], None)
    assert unknown.offsets_s == [0.0, 10.0] and unknown.starts == [None, None] and unknown.source is None


def _wall_seconds(frame: pd.DataFrame) -> np.ndarray:
    return (frame["wall_time"] - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy()


def test_daylight_saving_night_from_container_times(
    tmp_path: Path, astronaut: np.ndarray, options: ProcessOptions
) -> None:
    """Two chunks of one session, 01:59:58 CET and 03:00:01 CEST on 2026-03-29: 3 s apart in UTC, not
    an hour; the gap of 1 s between the 2-s chunks is kept."""
    face = astronaut_face(astronaut)
    night = tmp_path / "in" / "bed3"
    write_video(night / "a.mp4", moving_face_frames(face, 2, 10), creation_time="2026-03-29T00:59:58Z")
    write_video(night / "b.mp4", moving_face_frames(face, 2, 10), creation_time="2026-03-29T01:00:01Z")
    out = tmp_path / "out"
    summary = run_process([tmp_path / "in"], out, ProcessOptions(**{**options.__dict__, "session_by": "folder"}))
    assert [r.session_id for r in summary.done] == ["bed3"]
    path = out / "timelines" / "bed3.parquet"
    assert pq.read_schema(path).field("wall_time").type == pa.timestamp("us", tz="UTC")
    names = pq.read_schema(path).names
    assert names.index("wall_time") == names.index("timestamp_s") + 1
    frame = pd.read_parquet(path)
    second = frame[frame["video"] == "bed3/b.mp4"]
    assert second["timestamp_s"].min() == pytest.approx(3.0, abs=0.01)  # not 2.0 (closed up), not 3603
    start = datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC).timestamp()
    np.testing.assert_allclose(_wall_seconds(frame), start + frame["timestamp_s"].to_numpy(), atol=0.05)
    meta = read_metadata(path)
    assert meta["clock"] == {"source": "container", "start": "2026-03-29T00:59:58.000000Z", "utc_offset": None}
    assert [v["offset_s"] for v in meta["videos"]] == pytest.approx([0.0, 3.0])
    assert [v["start_source"] for v in meta["videos"]] == ["container", "container"]


def test_unknown_start_leaves_wall_time_null(tmp_path: Path, astronaut: np.ndarray, options: ProcessOptions) -> None:
    write_video(tmp_path / "in" / "plain.mp4", moving_face_frames(astronaut_face(astronaut), 1, 10))
    out = tmp_path / "out"
    run_process([tmp_path / "in"], out, options)
    frame = pd.read_parquet(out / "timelines" / "plain.parquet")
    assert frame["wall_time"].isna().all() and frame["patient_id"].isna().all()
    assert read_metadata(out / "timelines" / "plain.parquet")["clock"]["source"] is None


@pytest.mark.slow
def test_creation_time_of_an_object_in_a_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs at URLs (fermon.inputs.storage) get their start from their header too, read in small ranges."""
    from tests.s3server import fresh_s3, s3_server

    with s3_server() as environment:
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        fs = fresh_s3()
        fs.mkdir("fermon-clock", exist_ok=True)
        for suffix in (".mp4", ".mkv"):
            clip = write_video(tmp_path / f"c{suffix}", blank_frames(0.5, 10), creation_time="2026-03-29T00:59:58Z")
            fs.pipe_file(f"fermon-clock/c{suffix}", clip.read_bytes())
            assert creation_time(f"s3://fermon-clock/c{suffix}") == datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC)
        assert creation_time("s3://fermon-clock/missing.mp4") is None


def test_a_pause_between_chunks_is_in_the_span_not_in_the_recorded_seconds(
    tmp_path: Path, astronaut: np.ndarray, options: ProcessOptions
) -> None:
    """Two 2-s chunks 29 minutes apart: 4 s recorded, a span of 29 min 2 s, and the session ends at its
    last sample, in summary.parquet, in fermon.summarize, in patients.parquet and on the page."""
    import fermon
    from fermon.report.build import build_reports
    from fermon.report.clinical import ClinicalOptions

    face = astronaut_face(astronaut)
    bed = tmp_path / "in" / "bed4"
    write_video(bed / "a.mp4", moving_face_frames(face, 2, 10), creation_time="2026-03-29T20:00:00Z")
    write_video(bed / "b.mp4", moving_face_frames(face, 2, 10), creation_time="2026-03-29T20:29:00Z")
    manifest = tmp_path / "study.csv"
    manifest.write_text("video,patient_id,session_id,start\nbed4/*.mp4,P4,bed4,\n")
    out = tmp_path / "out"
    run_process([tmp_path / "in"], out, ProcessOptions(**{**options.__dict__, "manifest": str(manifest)}))
    build_reports(out, clinical=ClinicalOptions(timezone="UTC"))
    for summary in (pd.read_parquet(out / "summary.parquet"), fermon.summarize(fermon.read_timelines(out))):
        row = summary.iloc[0]
        assert row["duration_s"] == pytest.approx(4.0, abs=0.15)  # the seconds recorded, as before
        assert row["span_s"] == pytest.approx(29 * 60 + 1.8, abs=0.15)  # first to last sample
        assert row["start_time"] == pd.Timestamp("2026-03-29T20:00:00Z")
        assert abs(row["end_time"] - pd.Timestamp("2026-03-29T20:29:01.800Z")) < pd.Timedelta("1ms")
    patients = pd.read_parquet(out / "patients.parquet").set_index("period")
    assert patients.loc["day", "span_s"] == pytest.approx(29 * 60 + 1.8, abs=0.15)  # 20:00 UTC is day
    assert abs(patients.loc["day", "end_time"] - pd.Timestamp("2026-03-29T20:29:01.800Z")) < pd.Timedelta("1ms")
    assert pd.isna(patients.loc["night", "span_s"])  # no night samples: no span, not zero
    page = (out / "reports" / "sessions" / "bed4.html").read_text()
    assert "recording end</th><td>2026-03-29 20:29:01" in page and "first to last sample" in page
