"""``fermon process`` end to end: real decoding, real CenterFace detection, a real (untrained) model,
real Parquet and SQLite. Nothing under test is mocked."""

from __future__ import annotations

import json
import os
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

from fermon import __version__
from fermon.cli import app
from fermon.errors import BusyError
from fermon.faces.runtime import cpu_bfloat16_is_fast
from fermon.run.ledger import LEDGER_NAME, FolderLock, Ledger
from fermon.run.process import ProcessOptions, run_process
from fermon.run.timeline import read_metadata
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
    assert len(summary.failed) == 2 and not summary.known_bad
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
    fastest = "bfloat16" if cpu_bfloat16_is_fast() else "float32"  # the one precision rule, in the footer
    assert meta["precision"] == {"classifier": fastest, "embedder": fastest}
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


def test_rerun_skips_done_and_known_bad_files(first_run, clips: Path, options: ProcessOptions) -> None:
    out, _, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "timelines").iterdir()}
    summary = run_process([clips], out, options, workers=0)
    assert sorted(summary.up_to_date) == ["blank", "face", "leaves", "two"]
    # The corrupt and the empty file are unchanged: known bad, not retried, not a new failure.
    assert not summary.done and not summary.failed
    assert summary.known_bad == ["bad__corrupt", "bad__empty"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "timelines").iterdir()} == before
    retried = run_process([clips], out, options, workers=0, retry_failed=True)
    assert sorted(r.session_id for r in retried.failed) == ["bad__corrupt", "bad__empty"]
    ledger = {row["session_id"]: row for row in Ledger(out).all()}
    assert ledger["bad__corrupt"]["failure_kind"] == "input" and ledger["bad__corrupt"]["status"] == "failed"


def test_a_changed_bad_file_is_retried(clips: Path, options: ProcessOptions, tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(clips / "bad" / "corrupt.mp4", source / "cam.mp4")
    out = tmp_path / "out"
    assert [r.session_id for r in run_process([source], out, options, workers=0).failed] == ["cam"]
    assert run_process([source], out, options, workers=0).known_bad == ["cam"]
    shutil.copy(clips / "face.mp4", source / "cam.mp4")  # the hospital re-exported it
    assert [r.session_id for r in run_process([source], out, options, workers=0).done] == ["cam"]


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


@pytest.fixture(scope="module")
def dask_scheduler() -> str:
    """An existing Dask cluster on loopback: a scheduler and one worker process, as a site runs them."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def _same_rows(a: Path, b: Path) -> None:
    key = ["session_id", "frame_index", "track_id"]
    left = frame(a).sort_values(key).reset_index(drop=True)
    right = frame(b).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_exact=False, atol=1e-5)


@pytest.mark.slow
def test_an_existing_dask_cluster_matches_in_process_and_sends_progress(
    first_run, clips: Path, options: ProcessOptions, tmp_path: Path, dask_scheduler: str
) -> None:
    out, _, _ = first_run
    events: list[dict] = []
    summary = run_process([clips], tmp_path, options, scheduler=dask_scheduler, on_event=events.append)
    assert sorted(r.session_id for r in summary.done) == ["blank", "face", "leaves", "two"]
    assert len(summary.failed) == 2
    _same_rows(out, tmp_path)
    # Progress came from the worker process through Dask's events, up to each session's end.
    last = {e["session_id"]: e for e in events if e["event"] == "progress"}
    assert set(last) >= {"blank", "face", "leaves", "two"}
    assert all(e["processed_s"] == pytest.approx(e["duration_s"]) for e in last.values())


@pytest.mark.slow
def test_sessions_on_threads_match_one_at_a_time(
    first_run, clips: Path, options: ProcessOptions, tmp_path: Path
) -> None:
    summary = run_process([clips], tmp_path, options, workers=2)
    assert sorted(r.session_id for r in summary.done) == ["blank", "face", "leaves", "two"]
    _same_rows(first_run[0], tmp_path)


def test_progress_events_cover_each_session_in_steps_of_at_most_a_tenth(first_run) -> None:
    _, _, events = first_run
    progress = [e for e in events if e["event"] == "progress" and e["session_id"] == "leaves"]
    seen = [0.0] + [e["processed_s"] for e in progress]
    duration = progress[-1]["duration_s"]
    assert duration == pytest.approx(3.0, abs=0.11) and seen[-1] == pytest.approx(duration)
    assert max(np.diff(seen)) <= 0.1 * duration
    assert [e["event"] for e in events].index("run_start") < [e["event"] for e in events].index("progress")
    run_start = next(e for e in events if e["event"] == "run_start")
    assert run_start["video_s"] == pytest.approx(2 + 3 + 3 + 2, abs=0.5)  # the good clips; the bad add 0


def _sessions_done(out: Path) -> set[str]:
    """Sessions the ledger records as done, read from outside the running process (none before it exists)."""
    try:
        with sqlite3.connect(f"file:{out / LEDGER_NAME}?mode=ro", uri=True) as db:
            return {row[0] for row in db.execute("SELECT session_id FROM sessions WHERE status = 'done'")}
    except sqlite3.Error:
        return set()


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
    # Kill once the ledger records a finished session. A timeline is renamed into place just before
    # its ledger row is written, so a kill may land between the two for the next session: the rerun
    # then redoes that one, correctly. What the ledger recorded at the kill is what is up to date.
    while not _sessions_done(out) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    recorded = _sessions_done(out)
    written = list((out / "timelines").glob("*.parquet"))
    assert 0 < len(written) < 12, "the kill should land mid-run"
    assert recorded <= {path.stem for path in written}  # done means its timeline is there
    for path in written:  # every visible timeline is complete
        assert pq.read_metadata(path).num_rows > 0
    summary = run_process([source], out, options, workers=0)
    assert set(summary.up_to_date) == recorded and len(summary.done) == 12 - len(recorded)
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
    assert [r.session_id for r in summary.failed] == ["bad"]  # every video in it is bad: that session fails
    df = frame(tmp_path).drop_duplicates(["video", "frame_index"])
    assert df["video"].unique().tolist() == ["blank.mp4", "face.mp4", "leaves.mp4", "two.mp4"]
    assert np.all(np.diff(df["timestamp_s"].to_numpy()) > 0)
    assert df["timestamp_s"].max() == pytest.approx(9.8, abs=0.15)  # 2 + 3 + 3 + 2 seconds of chunks
    offsets = [v["offset_s"] for v in read_metadata(tmp_path / "timelines" / "clinic.parquet")["videos"]]
    assert offsets == pytest.approx([0.0, 2.0, 5.0, 8.0], abs=0.15)


def test_gpu_work_asks_dask_for_a_gpu_only_when_named() -> None:
    from fermon.run.process import gpu_resources

    # An existing cluster: only an explicit --device cuda asks (its workers must declare GPUs).
    assert gpu_resources("cuda") == {"GPU": 1}
    assert gpu_resources("auto") is None and gpu_resources("cpu") is None


def test_numbers_written_as_int_or_float_are_one_setting() -> None:
    # The CLI passes floats, a Python caller may pass ints: a rerun must still find the sessions done.
    assert (
        ProcessOptions(fps=5, min_face=64, threshold=1).relevant()
        == ProcessOptions(fps=5.0, min_face=64.0, threshold=1.0).relevant()
    )
    assert ProcessOptions(min_face=64).relevant() != ProcessOptions(min_face=96).relevant()


def test_a_folder_session_survives_a_bad_chunk(clips: Path, options: ProcessOptions, tmp_path: Path) -> None:
    ward = tmp_path / "in" / "bed3"
    ward.mkdir(parents=True)
    shutil.copy(clips / "face.mp4", ward / "a.mp4")
    shutil.copy(clips / "bad" / "corrupt.mp4", ward / "b.mp4")
    shutil.copy(clips / "leaves.mp4", ward / "c.mp4")
    out = tmp_path / "out"
    folder_options = ProcessOptions(**{**options.__dict__, "session_by": "folder"})
    summary = run_process([tmp_path / "in"], out, folder_options, workers=0)
    assert [r.session_id for r in summary.done] == ["bed3"] and not summary.failed
    (bad,) = summary.failed_videos
    assert bad["video"] == "bed3/b.mp4" and bad["reason"].startswith("bed3/b.mp4: not a readable video")
    df = frame(out)
    assert set(df["video"]) == {"bed3/a.mp4", "bed3/c.mp4"} and len(df) == 30
    footer = read_metadata(out / "timelines" / "bed3.parquet")
    assert footer["failed_videos"] == [bad]
    assert [v["video"] for v in footer["videos"]] == ["bed3/a.mp4", "bed3/c.mp4"]
    (row,) = Ledger(out).all()
    assert row["status"] == "done" and json.loads(row["details"])["failed_videos"] == [bad]
    from fermon.report.sources import read_failures

    (listed,) = read_failures(out)
    assert listed["videos"] == ["bed3/b.mp4"] and listed["status"] == "video failed"
    # The next night nothing changed: up to date, and not a new failure.
    again = run_process([tmp_path / "in"], out, folder_options, workers=0)
    assert again.up_to_date == ["bed3"] and not again.failed_videos


def _cli(*args: str) -> subprocess.CompletedProcess:
    """fermon as a user runs it, in its own process: real exit codes and everything on fd 1 and 2."""
    command = [sys.executable, "-c", "from fermon.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _one_line_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],  # no input and no --out
        ["process"],
        ["process", "x.mp4"],  # no --out
        ["process", "x.mp4", "--out", "o", "--fps", "abc"],
        ["process", "x.mp4", "--out", "o", "--no-such-option"],
        ["process", "x.mp4", "--out", "o", "--threshold", "2"],
        ["process", "x.mp4", "--out", "o", "--threshold", "0"],
        ["process", "x.mp4", "--out", "o", "--fps", "nan"],
        ["process", "x.mp4", "--out", "o", "--threads", "0"],
        ["process", "x.mp4", "--out", "o", "--batch-size", "0"],
        ["process", "x.mp4", "--out", "o", "--target", "nobody"],
        ["process", "x.mp4", "--out", "o", "--workers", "-1"],
    ],
)
def test_usage_errors_exit_64_with_one_line(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 64, result.output
    if args:
        assert result.output.startswith("fermon: error: ") and len(result.output.strip().splitlines()) == 1


def test_out_on_a_file_is_73_and_version_prints(clips: Path, tmp_path: Path) -> None:
    existing = tmp_path / "not-a-folder"
    existing.write_text("")
    result = _cli("process", str(clips / "face.mp4"), "--out", str(existing))
    assert result.returncode == 73 and "not-a-folder: exists and is not a folder" in result.stderr
    _one_line_no_traceback(result)
    assert _cli("--version").stdout.strip() == f"fermon {__version__}"
    assert _cli("process", "--fps", "abc", "x", "--out", "o").returncode == 64


@pytest.mark.slow
def test_known_bad_file_second_night_exits_0_and_quiet_is_quiet(
    clips: Path, options: ProcessOptions, tmp_path: Path
) -> None:
    common = ["--out", str(tmp_path / "out"), "--checkpoint", options.checkpoint, "--device", "cpu", "--no-report"]
    first = _cli("process", str(clips), *common, "--quiet")
    assert first.returncode == 65
    # Quiet means quiet: nothing from decord's C++ layer, no absolute path, only fermon's own lines,
    # and those only to name what failed and count it.
    assert first.stdout == "" and "ERROR opening" not in first.stderr and str(tmp_path) not in first.stderr
    lines = first.stderr.strip().splitlines()
    assert str(clips) not in first.stderr and len(lines) == 3, lines
    assert lines[0].startswith("fermon: failed: bad/") and lines[1].startswith("fermon: failed: bad/")
    assert lines[2].startswith("4 done, 0 up to date, 2 failed")
    second = _cli("process", str(clips), *common)
    assert second.returncode == 0, second.stderr
    assert "2 known bad (not retried)" in second.stderr and "ERROR opening" not in second.stderr
    assert _cli("process", str(clips), *common, "--retry-failed", "--quiet").returncode == 65
    # Under other options (another sampling rate) the verdict is not kept: the bad files are tried again.
    other = _cli("process", str(clips), *common, "--fps", "2", "--quiet")
    assert other.returncode == 65 and other.stderr.count("fermon: failed: bad/") == 2, other.stderr


def _listening_ports(pid: int) -> set[int]:
    import psutil

    try:
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
        return {c.laddr.port for p in family for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        return set()


def _start(args: list[str]) -> subprocess.Popen:
    """A child in its own process group with SIGINT at its default, as an interactive shell starts it."""
    command = [sys.executable, "-c", "from fermon.cli import main; main()", *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.slow
@pytest.mark.parametrize(("number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_exits_with_one_line_and_records_what_finished(
    number: int, code: int, clips: Path, options: ProcessOptions, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for copy in range(6):
        for name in ("face", "leaves"):
            shutil.copy(clips / f"{name}.mp4", source / f"{name}{copy}.mp4")
    out = tmp_path / "out"
    child = _start(["process", str(source), "--out", str(out), "--checkpoint", options.checkpoint, "--device", "cpu"])
    deadline = time.monotonic() + 120
    ports: set[int] = set()
    while not _sessions_done(out) and time.monotonic() < deadline and child.poll() is None:
        ports |= _listening_ports(child.pid)
        time.sleep(0.05)
    os.killpg(child.pid, number)  # the terminal sends Ctrl-C to the whole process group
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == code, stderr
    assert not ports, f"a default run listened on {ports}"
    assert "Traceback" not in stderr
    (line,) = [text for text in stderr.splitlines() if "interrupted" in text]
    done = len(_sessions_done(out))
    assert line.endswith(f"interrupted: {done} sessions done, {12 - done} left for the next run")
    assert 0 < done < 12 and len(list((out / "timelines").glob("*.parquet"))) == done
    rerun = run_process([source], out, options, workers=0)
    assert len(rerun.up_to_date) == done and len(rerun.done) == 12 - done


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_a_gpu_is_a_usage_error_before_any_session(tmp_path: Path, clips) -> None:
    result = CliRunner().invoke(
        app, ["process", str(clips / "face.mp4"), "--out", str(tmp_path / "out"), "--device", "cuda"]
    )
    assert result.exit_code == 64, result.output
    (line,) = result.output.strip().splitlines()
    assert "cuda" in line and "no CUDA device" in line
    assert not (tmp_path / "out" / "fermon-ledger.sqlite").exists()  # no session was recorded as failed


def _folder_session_args(tmp_path: Path, clips: Path, name: str, chunks: dict[str, str], checkpoint: Path) -> list[str]:
    """A folder session of copies of the shared clips (chunk name -> clip), and the CLI arguments
    that process it with --session-by folder and no report."""
    folder = tmp_path / "in" / name
    folder.mkdir(parents=True)
    for chunk, clip in chunks.items():
        shutil.copy(clips / clip, folder / chunk)
    args = ["process", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--session-by", "folder"]
    return [*args, "--checkpoint", str(checkpoint), "--detector", "centerface", "--no-report"]


def test_quiet_and_without_a_terminal_every_failed_chunk_is_named_and_counted(
    tmp_path: Path, clips: Path, untrained_checkpoint: Path
) -> None:
    """As cron runs it: a folder session with one good chunk and two broken ones."""
    chunks = {"a.mp4": "face.mp4", "b.mp4": "bad/corrupt.mp4", "c.mp4": "bad/empty.mp4"}
    base = _folder_session_args(tmp_path, clips, "bed-3", chunks, untrained_checkpoint)
    for extra in (["--quiet"], []):
        result = CliRunner().invoke(app, [*base, *extra, "--force"])
        assert result.exit_code == 65, result.output
        lines = result.output.strip().splitlines()
        failed = [line for line in lines if line.startswith("fermon: failed:")]
        assert len(failed) == 2 and any("b.mp4" in f for f in failed) and any("c.mp4" in f for f in failed), lines
        assert lines[-1].startswith("1 done, 0 up to date, 0 failed (and 2 failed video(s) in done sessions)")
    # Plain words on the terminal; the decoder's own words kept in the ledger.
    assert any("b.mp4: not a readable video: not a video file" in line for line in failed)
    with Ledger(tmp_path / "out", read_only=True) as ledger:
        (row,) = ledger.all()
    chunks = {v["video"]: v for v in json.loads(row["details"])["failed_videos"]}
    assert "Error reading" in chunks["bed-3/b.mp4"]["detail"] and "detail" not in chunks["bed-3/c.mp4"]


def test_retry_failed_retries_a_folder_sessions_failed_chunks(
    tmp_path: Path, clips: Path, untrained_checkpoint: Path
) -> None:
    chunks = {"a.mp4": "face.mp4", "b.mp4": "bad/corrupt.mp4"}
    args = [*_folder_session_args(tmp_path, clips, "bed-5", chunks, untrained_checkpoint), "--quiet"]
    assert CliRunner().invoke(app, args).exit_code == 65
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and again.output == ""  # up to date: the bad chunk is not retried every night
    retried = CliRunner().invoke(app, [*args, "--retry-failed"])  # asked to: the session runs again
    assert retried.exit_code == 65 and "fermon: failed: bed-5/b.mp4" in retried.output, retried.output
    assert "1 done" in retried.output.strip().splitlines()[-1]
