"""``fermon process`` end to end: real decoding, real CenterFace detection, a real (untrained) model,
real Parquet and SQLite. Nothing under test is mocked."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fermon.cli import app
from fermon.errors import BusyError
from fermon.ledger import LEDGER_NAME, FolderLock, Ledger
from fermon.process import ProcessOptions, run_process
from fermon.timeline import read_metadata
from tests.videos import write_bad_files, write_clip_set


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("clips")
    write_clip_set(root / "clinic", astronaut)
    write_bad_files(root / "clinic" / "bad")
    return root / "clinic"


@pytest.fixture(scope="module")
def options(untrained_checkpoint: Path) -> ProcessOptions:
    return ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")


@pytest.fixture(scope="module")
def first_run(clips: Path, options: ProcessOptions, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    events: list[dict] = []
    summary = run_process([clips], out, options, workers=0, on_event=events.append)
    return out, summary, events


def frame(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "timelines")


def test_failed_files_are_recorded_and_the_rest_go_on(first_run) -> None:
    out, summary, events = first_run
    assert summary.exit_code == 65
    assert sorted(r.session_id for r in summary.done) == ["blank", "face", "leaves", "two"]
    reasons = {r.session_id: r.error for r in summary.failed}
    assert reasons["bad__corrupt"].startswith("bad/corrupt.mp4: not a readable video")
    assert reasons["bad__empty"] == "bad/empty.mp4: empty file"
    assert summary.not_videos == ["bad/notes.txt"]
    ledger = {row["session_id"]: row for row in Ledger(out).all()}
    assert ledger["bad__corrupt"]["status"] == "failed" and "corrupt.mp4" in ledger["bad__corrupt"]["error"]
    assert ledger["face"]["status"] == "done" and ledger["face"]["output"] == "timelines/face.parquet"
    assert [e["event"] for e in events][-1] == "run_end"
    assert sorted(p.name for p in (out / "timelines").iterdir()) == [
        f"{s}.parquet" for s in ("blank", "face", "leaves", "two")
    ]


def test_schema_and_footer(first_run, options: ProcessOptions, clips: Path) -> None:
    out, _, _ = first_run
    path = out / "timelines" / "face.parquet"
    schema = pq.read_schema(path)
    expected = {
        "session_id": pa.string(),
        "video": pa.string(),
        "frame_index": pa.int64(),
        "timestamp_s": pa.float64(),
        "face_detected": pa.bool_(),
        "track_id": pa.int32(),
        "is_target": pa.bool_(),
        "det_score": pa.float32(),
        "bbox_x1": pa.float32(),
        "bbox_y2": pa.float32(),
        "label": pa.dictionary(pa.int32(), pa.string()),
        "confidence": pa.float32(),
    }
    for name, kind in expected.items():
        assert schema.field(name).type == kind, name
    meta = read_metadata(path)
    classes = meta["class_names"]
    assert [n for n in schema.names if n.startswith("prob_")] == [f"prob_{c}" for c in classes]
    assert meta["model"]["checkpoint_sha256"] and meta["detector"] == {
        "name": "centerface",
        "weights_sha256": meta["detector"]["weights_sha256"],
    }
    assert len(meta["detector"]["weights_sha256"]) == 64
    assert meta["sampling_fps"] == 5.0 and meta["fermon_version"]
    (video,) = meta["videos"]
    assert video["video"] == "face.mp4" and video["codec"] == "h264" and video["frame_count"] == 30
    assert video["fps"] == 10.0 and video["width"] == 320 and video["duration_s"] == pytest.approx(3.0, abs=0.11)
    assert meta["config"]["checkpoint"] == "untrained.safetensors"
    # No absolute path anywhere in the file (footer or data).
    assert str(clips).encode() not in path.read_bytes()
    assert str(Path(options.checkpoint).parent).encode() not in path.read_bytes()


def test_rows_timestamps_and_faces(first_run) -> None:
    out, _, _ = first_run
    df = frame(out)
    assert set(df["video"]) == {"face.mp4", "leaves.mp4", "two.mp4", "blank.mp4"}
    for _, rows in df.groupby("session_id"):
        stamps = rows.drop_duplicates("frame_index")["timestamp_s"].to_numpy()
        assert np.all(np.diff(stamps) > 0)
        assert stamps[0] >= 0 and stamps[-1] < 3.0
    face = df[df.session_id == "face"]
    assert len(face) == 15 and face["face_detected"].all() and face["is_target"].all()
    assert face["track_id"].nunique() == 1
    probs = face[[c for c in df.columns if c.startswith("prob_")]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert (
        face["label"].astype(str) == face[[c for c in df.columns if c.startswith("prob_")]].idxmax(axis=1).str[5:]
    ).all()
    blank = df[df.session_id == "blank"]
    assert len(blank) == 10 and not blank["face_detected"].any() and not blank["is_target"].any()
    assert blank["track_id"].isna().all() and blank["label"].isna().all() and blank["confidence"].isna().all()
    leaves = df[df.session_id == "leaves"]
    assert leaves.loc[leaves.timestamp_s < 1.95, "face_detected"].all()
    assert not leaves.loc[leaves.timestamp_s > 2.05, "face_detected"].any()


def test_two_faces_tracked_and_largest_is_target(first_run) -> None:
    out, _, _ = first_run
    two = frame(out).query("session_id == 'two'")
    assert (two.groupby("frame_index").size() == 2).all()
    assert two["track_id"].nunique() == 2
    target = two[two.is_target]
    assert target["track_id"].nunique() == 1 and len(target) == 10
    assert (target["bbox_x1"] < 100).all()  # the large face on the left


def test_rerun_skips_done_and_retries_failed(first_run, clips: Path, options: ProcessOptions) -> None:
    out, _, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "timelines").iterdir()}
    summary = run_process([clips], out, options, workers=0)
    assert sorted(summary.up_to_date) == ["blank", "face", "leaves", "two"]
    assert not summary.done and len(summary.failed) == 2
    assert {p.name: p.stat().st_mtime_ns for p in (out / "timelines").iterdir()} == before


def test_changed_option_video_or_force_reprocess(clips: Path, options: ProcessOptions, tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(clips / "face.mp4", source / "face.mp4")
    out = tmp_path / "out"
    assert [r.session_id for r in run_process([source], out, options, workers=0).done] == ["face"]
    assert run_process([source], out, options, workers=0).up_to_date == ["face"]
    slower = ProcessOptions(**{**options.__dict__, "fps": 2.0})
    assert [r.rows for r in run_process([source], out, slower, workers=0).done] == [6]
    assert len(frame(out)) == 6
    # Device and batch size do not change the rows: still up to date.
    assert run_process([source], out, ProcessOptions(**{**slower.__dict__, "batch_size": 3}), workers=0).up_to_date
    shutil.copy(clips / "leaves.mp4", source / "face.mp4")  # same name, new content
    assert [r.session_id for r in run_process([source], out, slower, workers=0).done] == ["face"]
    assert [r.session_id for r in run_process([source], out, slower, workers=0, force=True).done] == ["face"]


def test_second_run_on_the_same_folder_is_refused(clips: Path, options: ProcessOptions, tmp_path: Path) -> None:
    with FolderLock(tmp_path), pytest.raises(BusyError, match="another fermon run"):
        run_process([clips / "face.mp4"], tmp_path, options, workers=0)
    args = ["process", str(clips / "face.mp4"), "--out", str(tmp_path), "--workers", "0"]
    with FolderLock(tmp_path):
        result = CliRunner().invoke(app, [*args, "--checkpoint", options.checkpoint, "--device", "cpu"])
    assert result.exit_code == 75


def test_cli_exit_codes_and_json_log(clips: Path, untrained_checkpoint: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = [
        "--checkpoint",
        str(untrained_checkpoint),
        "--device",
        "cpu",
        "--detector",
        "centerface",
        "--workers",
        "0",
    ]
    log = tmp_path / "log.jsonl"
    ok = runner.invoke(
        app, ["process", str(clips / "face.mp4"), "--out", str(tmp_path / "a"), *common, "--log-json", str(log)]
    )
    assert ok.exit_code == 0, ok.output
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[-1]["event"] == "run_end" and any(e["event"] == "session_done" for e in events)
    bad = runner.invoke(
        app, ["process", str(clips / "bad"), str(clips / "face.mp4"), "--out", str(tmp_path / "b"), *common]
    )
    assert bad.exit_code == 65
    assert "fermon: failed: corrupt.mp4: not a readable video" in bad.output  # relative to its input root
    missing = runner.invoke(app, ["process", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "c"), *common])
    assert missing.exit_code == 66
    usage = runner.invoke(
        app, ["process", str(clips / "face.mp4"), "--out", str(tmp_path / "d"), *common, "--fps", "-1"]
    )
    assert usage.exit_code == 64
    assert (tmp_path / "a" / LEDGER_NAME).is_file()


@pytest.mark.slow
def test_dask_workers_match_in_process(first_run, clips: Path, options: ProcessOptions, tmp_path: Path) -> None:
    out, _, _ = first_run
    summary = run_process([clips], tmp_path, options, workers=2)
    assert sorted(r.session_id for r in summary.done) == ["blank", "face", "leaves", "two"]
    assert len(summary.failed) == 2
    key = ["session_id", "frame_index", "track_id"]
    local = frame(out).sort_values(key).reset_index(drop=True)
    dask = frame(tmp_path).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(local, dask, check_exact=False, atol=1e-5)


def _sessions_done(out: Path) -> int:
    """Sessions the ledger records as done, read from outside the running process (0 before it exists)."""
    try:
        with sqlite3.connect(f"file:{out / LEDGER_NAME}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM sessions WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_killed_run_leaves_no_partial_timeline_and_rerun_finishes(
    first_run, clips: Path, options: ProcessOptions, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for copy in range(3):
        for name in ("face", "leaves", "two", "blank"):
            shutil.copy(clips / f"{name}.mp4", source / f"{name}{copy}.mp4")
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from fermon.cli import main; main()", "process", str(source), "--out", str(out)]
    command += ["--checkpoint", options.checkpoint, "--device", "cpu", "--workers", "0", "--quiet"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill once the ledger records a finished session, not when a timeline appears: a timeline is
    # renamed into place just before its ledger row is written, and a kill between the two (a rerun
    # then redoes that session, correctly) would make the counts below depend on timing.
    while not _sessions_done(out) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    written = list((out / "timelines").glob("*.parquet"))
    assert 0 < len(written) < 12, "the kill should land mid-run"
    for path in written:  # every visible timeline is complete
        assert pq.read_metadata(path).num_rows > 0
    summary = run_process([source], out, options, workers=0)
    assert len(summary.up_to_date) == len(written) and len(summary.done) == 12 - len(written)
    assert not list((out / "timelines").glob(".*.tmp"))
    rerun = frame(out)
    reference = frame(first_run[0])
    for copy in range(3):
        for name in ("face", "leaves", "two", "blank"):
            got = rerun[rerun.session_id == f"{name}{copy}"].drop(columns=["session_id", "video"])
            want = reference[reference.session_id == name].drop(columns=["session_id", "video"])
            pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


def test_folder_session_has_one_continuous_time_axis(clips: Path, options: ProcessOptions, tmp_path: Path) -> None:
    folder_options = ProcessOptions(**{**options.__dict__, "session_by": "folder"})
    summary = run_process([clips], tmp_path, folder_options, workers=0)
    assert [r.session_id for r in summary.done] == ["clinic"]
    assert [r.session_id for r in summary.failed] == ["bad"]  # its corrupt chunk fails that session only
    df = frame(tmp_path).drop_duplicates(["video", "frame_index"])
    assert df["video"].unique().tolist() == ["blank.mp4", "face.mp4", "leaves.mp4", "two.mp4"]
    assert np.all(np.diff(df["timestamp_s"].to_numpy()) > 0)
    assert df["timestamp_s"].max() == pytest.approx(9.8, abs=0.15)  # 2 + 3 + 3 + 2 seconds of chunks
    offsets = [v["offset_s"] for v in read_metadata(tmp_path / "timelines" / "clinic.parquet")["videos"]]
    assert offsets == pytest.approx([0.0, 2.0, 5.0, 8.0], abs=0.15)


def test_gpu_work_asks_dask_for_a_gpu_only_where_one_is_declared() -> None:
    from fermon.process import gpu_resources

    # fermon's own LocalCluster on a CUDA machine declares GPU=1 per worker: auto asks for it.
    assert gpu_resources("auto", local_cluster=True, cuda_available=True) == {"GPU": 1}
    # An existing cluster: only an explicit --device cuda asks (its workers must declare GPUs).
    assert gpu_resources("auto", local_cluster=False, cuda_available=True) is None
    assert gpu_resources("cuda", local_cluster=False, cuda_available=False) == {"GPU": 1}
    assert gpu_resources("cpu", local_cluster=True, cuda_available=True) is None
    assert gpu_resources("auto", local_cluster=True, cuda_available=False) is None


def test_numbers_written_as_int_or_float_are_one_setting() -> None:
    # The CLI passes floats, a Python caller may pass ints: a rerun must still find the sessions done.
    assert (
        ProcessOptions(fps=5, min_face=64, threshold=1).relevant()
        == ProcessOptions(fps=5.0, min_face=64.0, threshold=1.0).relevant()
    )
    assert ProcessOptions(min_face=64).relevant() != ProcessOptions(min_face=96).relevant()
