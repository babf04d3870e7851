"""The session loop: tracks end where the video does (at a decode gap, at the end of a chunk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fermon.run.options import ProcessOptions
from fermon.run.process import run_process
from fermon.run.timeline import read_metadata
from tests.videos import astronaut_face, moving_face_frames, punch_hole, write_video


@pytest.mark.slow
def test_no_track_runs_across_a_decode_gap(tmp_path: Path, astronaut: np.ndarray, untrained_checkpoint: Path) -> None:
    whole = write_video(tmp_path / "whole.mp4", moving_face_frames(astronaut_face(astronaut), 6, 10))
    (tmp_path / "in").mkdir()
    punch_hole(whole, tmp_path / "in" / "holed.mp4")
    options = ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")
    assert run_process([tmp_path / "in"], tmp_path / "out", options, workers=0).done
    path = tmp_path / "out" / "timelines" / "holed.parquet"
    footer = read_metadata(path)
    (gap,) = footer["decode_gaps"]
    faces = pd.read_parquet(path).query("face_detected")
    spans = faces.groupby("track_id")["timestamp_s"].agg(["min", "max"])
    assert len(spans) >= 2
    # Every track lies wholly before the hole or wholly after it.
    assert ((spans["max"] < gap["start_s"]) | (spans["min"] > gap["end_s"])).all(), (spans, gap)
    # A face seen in the last sample before the hole: its track was ended by the hole, and counted so.
    # (How much of the damaged stretch still decodes, as frames without a face, varies with the build.)
    if faces["timestamp_s"][faces["timestamp_s"] < gap["start_s"]].max() >= gap["start_s"] - 0.25:
        assert footer["identity"]["track_ends"]["decode_gap"] >= 1
