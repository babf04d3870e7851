"""The analyst API on a real processed folder: real decoding, detection and (untrained) model, real
Parquet. Summary figures are checked against values computed here from the raw timeline files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import fermon
from fermon.analysis import QualityThresholds, summarize_session, target_samples
from fermon.errors import InputError
from fermon.run.process import ProcessOptions, run_process
from tests.videos import astronaut_face, blank_frames, moving_face_frames, two_face_frames, write_video


def write_small_clips(folder: Path, astronaut: np.ndarray) -> Path:
    """A face that leaves after 1.4 s, two faces, no face, and a corrupt file."""
    face = astronaut_face(astronaut)
    write_video(folder / "face.mp4", moving_face_frames(face, 2, 10, visible_until=1.4))
    write_video(folder / "two.mp4", two_face_frames(astronaut, 1.5, 10))
    write_video(folder / "blank.mp4", blank_frames(1, 10))
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 20_000, np.uint8).tobytes())
    return folder


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, untrained_checkpoint: Path) -> Path:
    root = tmp_path_factory.mktemp("analysis")
    clips = write_small_clips(root / "clips", astronaut)
    options = ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")
    summary = run_process([clips], root / "out", options, workers=0)
    assert sorted(r.session_id for r in summary.done) == ["blank", "face", "two"]
    return root / "out"


def raw_tables(out: Path) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Each timeline read with plain pyarrow, independent of fermon.analysis."""
    tables = {}
    for path in sorted((out / "timelines").glob("*.parquet")):
        table = pq.read_table(path)
        tables[path.stem] = (table.to_pandas(), json.loads(table.schema.metadata[b"fermon"]))
    return tables


@pytest.mark.slow
def test_read_timelines_dtypes(processed: Path) -> None:
    frame = fermon.read_timelines(processed)
    class_names = next(iter(raw_tables(processed).values()))[1]["class_names"]
    assert isinstance(frame["label"].dtype, pd.CategoricalDtype)
    assert list(frame["label"].cat.categories) == class_names
    expected = {
        "session_id": pd.StringDtype(),
        "video": pd.StringDtype(),
        "frame_index": np.dtype("int64"),
        "timestamp_s": np.dtype("float64"),
        "face_detected": np.dtype("bool"),
        "track_id": pd.Int32Dtype(),
        "is_target": np.dtype("bool"),
        "det_score": np.dtype("float32"),
        "bbox_x1": np.dtype("float32"),
        "confidence": np.dtype("float32"),
        **{f"prob_{c}": np.dtype("float32") for c in class_names},
    }
    for column, dtype in expected.items():
        assert frame[column].dtype == dtype, column
    # No face, no track: a real missing value, not a sentinel.
    assert frame.loc[~frame["face_detected"], "track_id"].isna().all()
    assert frame.loc[frame["face_detected"], "track_id"].notna().all()
    assert sorted(frame["session_id"].unique()) == ["blank", "face", "two"]
    assert set(frame.attrs["fermon_sessions"]) == {"blank", "face", "two"}


@pytest.mark.slow
def test_read_timelines_sessions_filter(processed: Path, tmp_path: Path) -> None:
    frame = fermon.read_timelines(processed, sessions=["two", "blank"])
    assert sorted(frame["session_id"].unique()) == ["blank", "two"]
    assert len(frame) == sum(len(t) for s, (t, _) in raw_tables(processed).items() if s in ("two", "blank"))
    with pytest.raises(InputError, match="nosuch"):
        fermon.read_timelines(processed, sessions=["face", "nosuch"])
    with pytest.raises(InputError, match="fermon process"):
        fermon.read_timelines(tmp_path)


def expected_summary(raw: pd.DataFrame, meta: dict) -> dict:
    """Coverage, shares, mean probabilities and dominant expression, computed directly."""
    samples = raw.drop_duplicates(["video", "frame_index"])
    targets = raw[raw["is_target"]]
    assert not targets.duplicated(["video", "frame_index"]).any()  # target=largest: one per sample
    names = meta["class_names"]
    counts = targets["label"].astype(str).value_counts()
    shares = {c: counts.get(c, 0) / len(targets) if len(targets) else np.nan for c in names}
    return {
        "sampled_frames": len(samples),
        "coverage": len(targets) / len(samples),
        "duration_s": sum(v["duration_s"] for v in meta["videos"]),
        "shares": shares,
        "mean_probs": {c: targets[f"prob_{c}"].astype(float).mean() if len(targets) else np.nan for c in names},
        "dominant": max(names, key=lambda c: (shares[c], -names.index(c))) if len(targets) else None,
        "multi": (raw.groupby(["video", "frame_index"])["face_detected"].sum() >= 2).mean(),
    }


@pytest.mark.slow
def test_summary_matches_the_timelines(processed: Path) -> None:
    summary = fermon.summarize(fermon.read_timelines(processed)).set_index("session_id")
    raw = raw_tables(processed)
    assert list(summary.index) == sorted(raw)
    for session_id, (table, meta) in raw.items():
        row, want = summary.loc[session_id], expected_summary(table, meta)
        assert row["sampled_frames"] == want["sampled_frames"]
        assert row["coverage"] == pytest.approx(want["coverage"])
        assert row["duration_s"] == pytest.approx(want["duration_s"])
        assert row["multi_face_share"] == pytest.approx(want["multi"])
        for name in meta["class_names"]:
            assert row[f"share_{name}"] == pytest.approx(want["shares"][name], nan_ok=True)
            assert row[f"mean_prob_{name}"] == pytest.approx(want["mean_probs"][name], rel=1e-5, nan_ok=True)
        dominant = row["dominant_expression"]
        assert (None if pd.isna(dominant) else dominant) == want["dominant"]
    # What the clips were made to show.
    assert summary.loc["blank", "coverage"] == 0 and summary.loc["blank", "quality_flags"] == "low_coverage"
    assert 0.5 < summary.loc["face", "coverage"] < 0.9  # the face leaves after 1.4 of 2 s
    assert summary.loc["two", "flag_multiple_faces"] and summary.loc["two", "coverage"] == 1
    assert summary["dominant_expression"].dtype == pd.CategoricalDtype(meta["class_names"])


def test_summary_of_a_synthetic_session() -> None:
    """Exact figures: two targets in one sample (the better-scored one counts), a gap, a face-less sample."""
    names = ["neutral", "happiness"]
    frame = pd.DataFrame(
        {
            "session_id": pd.array(["s"] * 5, "string"),
            "video": pd.array(["v.mp4"] * 5, "string"),
            "frame_index": [0, 0, 2, 4, 6],
            "timestamp_s": [0.0, 0.0, 0.2, 0.4, 0.6],
            "face_detected": [True, True, True, False, True],
            "is_target": [True, True, True, False, True],
            "det_score": np.array([0.9, 0.5, 0.8, np.nan, 0.7], np.float32),
            "label": pd.Categorical(["happiness", "neutral", "happiness", None, "neutral"], categories=names),
            "confidence": np.array([0.8, 0.9, 0.6, np.nan, 0.7], np.float32),
            "prob_neutral": np.array([0.2, 0.9, 0.4, np.nan, 0.7], np.float32),
            "prob_happiness": np.array([0.8, 0.1, 0.6, np.nan, 0.3], np.float32),
        }
    )
    gaps = [{"video": "v.mp4", "first_frame": 8, "last_frame": 9, "start_s": 0.8, "end_s": 1.0, "reason": "x"}]
    meta = {"videos": [{"video": "v.mp4", "duration_s": 1.0}], "decode_gaps": gaps, "sampling_fps": 5.0}
    row = summarize_session(target_samples(frame), names, meta, QualityThresholds())
    assert row["sampled_frames"] == 4 and row["covered_frames"] == 3 and row["coverage"] == 0.75
    assert row["share_happiness"] == pytest.approx(2 / 3) and row["share_neutral"] == pytest.approx(1 / 3)
    assert row["mean_prob_neutral"] == pytest.approx((0.2 + 0.4 + 0.7) / 3)
    assert row["dominant_expression"] == "happiness"
    assert row["multi_face_share"] == 0.25
    assert row["decode_gaps"] == 1 and row["decode_gap_s"] == pytest.approx(0.2)
    assert row["quality_flags"] == "multiple_faces;decode_gaps"


def test_import_fermon_is_cheap() -> None:
    code = "import sys, fermon; assert 'pandas' not in sys.modules; fermon.summarize; assert 'pandas' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
