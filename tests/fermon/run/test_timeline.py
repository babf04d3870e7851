"""Rows to Arrow columns and the atomic Parquet write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fermon.run.timeline import (
    SampledFaces,
    build_table,
    face_columns,
    read_metadata,
    remove_stale_temporaries,
    timeline_path,
    write_atomic,
)

CLASSES = ["neutral", "happiness"]


def _two_samples() -> SampledFaces:
    """Sample 0 has two faces, sample 1 none."""
    boxes = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.zeros((0, 4), np.float32)]
    scores = [np.array([0.9, 0.8], np.float32), np.zeros(0, np.float32)]
    probs = np.array([[0.2, 0.8], [0.7, 0.3]], np.float32)
    return SampledFaces([0, 0], [0, 5], [0.0, 0.2], boxes, scores, probs)


def test_one_row_per_face_and_one_empty_row_per_faceless_sample(tmp_path: Path) -> None:
    columns = face_columns("s", ["v.mp4"], _two_samples(), np.array([3, 4], np.int32), np.array([True, False]), CLASSES)
    table = build_table(columns, CLASSES, {"session_id": "s"})
    df = table.to_pandas()
    assert len(df) == 3 and df["face_detected"].tolist() == [True, True, False]
    assert df["track_id"].tolist()[:2] == [3, 4] and df["track_id"].isna().tolist() == [False, False, True]
    assert df["label"].astype(str).tolist()[:2] == ["happiness", "neutral"] and df["label"].isna().iloc[2]
    assert df["is_target"].tolist() == [True, False, False]
    assert df["timestamp_s"].tolist() == [0.0, 0.0, 0.2] and np.isnan(df["prob_neutral"].iloc[2])


def test_write_is_atomic_and_stale_temporaries_are_removed(tmp_path: Path) -> None:
    columns = face_columns("s", ["v.mp4"], _two_samples(), np.array([0, 1], np.int32), np.array([True, True]), CLASSES)
    path = timeline_path(tmp_path, "s")
    write_atomic(build_table(columns, CLASSES, {"session_id": "s", "note": "footer"}), path)
    assert pq.read_metadata(path).num_rows == 3 and read_metadata(path)["note"] == "footer"
    assert [p.name for p in path.parent.iterdir()] == ["s.parquet"]
    (path.parent / ".s.parquet.123.tmp").write_bytes(b"half a file")  # left by a killed run
    assert remove_stale_temporaries(tmp_path) == 1 and [p.name for p in path.parent.iterdir()] == ["s.parquet"]


def test_plain_pandas_reads_the_ids_as_nullable_integers(tmp_path: Path) -> None:
    """The README's own example, pandas.read_parquet("DIR/timelines"), gets what read_timelines gets."""
    import pandas as pd

    import fermon

    columns = face_columns("s", ["v.mp4"], _two_samples(), np.array([3, 4], np.int32), np.array([True, False]), CLASSES)
    columns["person_id"] = np.array([0, 1, 0], np.int32)
    write_atomic(
        build_table(columns, CLASSES, {"session_id": "s", "class_names": CLASSES}), timeline_path(tmp_path, "s")
    )
    plain = pd.read_parquet(tmp_path / "timelines")
    ours = fermon.read_timelines(tmp_path)
    for name in ("track_id", "person_id"):
        assert plain[name].dtype == pd.Int32Dtype() == ours[name].dtype
        assert plain[name].tolist()[:2] == ours[name].tolist()[:2] and plain[name].isna().tolist() == [
            False,
            False,
            True,
        ]
    assert str(plain["wall_time"].dtype) == str(ours["wall_time"].dtype)
    assert read_metadata(timeline_path(tmp_path, "s"))["session_id"] == "s"  # fermon's footer is kept beside pandas'
