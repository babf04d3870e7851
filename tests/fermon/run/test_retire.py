"""A change of session layout retires the old sessions instead of counting their videos twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fermon
from fermon.cli import app
from fermon.run.ledger import Ledger
from tests.videos import astronaut_face, moving_face_frames, write_video

pytestmark = pytest.mark.slow


@pytest.fixture()
def ward(tmp_path: Path, astronaut: np.ndarray) -> Path:
    face = astronaut_face(astronaut)
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / "in" / "bed1" / name, moving_face_frames(face, 2, 10))
    return tmp_path / "in"


def _run(inputs: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    args = ["process", str(inputs), "--out", str(out), "--checkpoint", str(checkpoint), "--detector", "centerface"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()


def test_folder_sessions_after_file_sessions_retire_the_old_ones(
    tmp_path: Path, ward: Path, untrained_checkpoint: Path
) -> None:
    out = tmp_path / "out"
    _run(ward, out, untrained_checkpoint)
    assert sorted(p.name for p in (out / "timelines").glob("*.parquet")) == ["bed1__a.parquet", "bed1__b.parquet"]
    lines = _run(ward, out, untrained_checkpoint, "--session-by", "folder")
    assert ", 2 retired (their videos are in other sessions now)" in next(line for line in lines if " done," in line)
    # Each video counted once, by plain pandas, by read_timelines and in summary.parquet.
    assert sorted(p.name for p in (out / "timelines").glob("*.parquet")) == ["bed1.parquet"]
    plain = pd.read_parquet(out / "timelines")
    assert plain.groupby("video")["frame_index"].apply(lambda f: f.duplicated().sum()).sum() == 0
    assert set(fermon.read_timelines(out)["session_id"]) == {"bed1"}
    assert pd.read_parquet(out / "summary.parquet")["session_id"].tolist() == ["bed1"]
    # Moved aside and recorded, never deleted; not listed as a failure on the cohort page.
    assert sorted(p.name for p in (out / "retired").glob("*.parquet")) == ["bed1__a.parquet", "bed1__b.parquet"]
    with Ledger(out, read_only=True) as ledger:
        status = {row["session_id"]: (row["status"], row["output"]) for row in ledger.all()}
    assert status["bed1__a"] == ("retired", "retired/bed1__a.parquet") and status["bed1"][0] == "done"
    index = (out / "reports" / "index.html").read_text()
    assert "bed1__a" not in index


def test_an_input_this_run_did_not_see_retires_nothing(tmp_path: Path, ward: Path, untrained_checkpoint: Path) -> None:
    out = tmp_path / "out"
    _run(ward, out, untrained_checkpoint, "--session-by", "folder")
    # The mount is half down: b.mp4 is missing tonight. The folder session stays; nothing is retired.
    shutil.move(ward / "bed1" / "b.mp4", tmp_path / "b.mp4")
    lines = _run(ward, out, untrained_checkpoint)
    assert not any("retired" in line for line in lines)
    assert (out / "timelines" / "bed1.parquet").is_file() and not (out / "retired").exists()
    # Another folder into the same output, with videos of the same names, retires nothing either.
    other = tmp_path / "other" / "bed1"
    other.mkdir(parents=True)
    write_video(other / "a.mp4", moving_face_frames(np.full((120, 120, 3), 90, np.uint8), 1, 10))
    _run(other.parent, out, untrained_checkpoint, "--session-by", "folder")
    assert (out / "timelines" / "bed1__a.parquet").is_file() and not (out / "retired").exists()
