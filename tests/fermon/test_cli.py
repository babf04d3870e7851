"""The ``fermon`` command as a user runs it: real images in, one-line errors and sysexits codes out."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from fermon.cli import app
from fermon.expression.vocab import canonical_classes

runner = CliRunner()


def test_classify_prints_one_line_per_face(tmp_path: Path, astronaut: np.ndarray, untrained_checkpoint: Path) -> None:
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    result = runner.invoke(app, ["classify", str(image), "--checkpoint", str(untrained_checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    faces = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(faces) == 1
    assert faces[0]["image"] == "astronaut.png"  # a name, never an absolute path
    assert list(faces[0]["probabilities"]) == canonical_classes()


def test_missing_image_is_exit_66_with_a_one_line_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["classify", str(tmp_path / "nope.png")])
    assert result.exit_code == 66
    assert result.output.strip().count("\n") == 0 and "nope.png" in result.output


def test_a_file_that_is_not_a_checkpoint_is_exit_78(tmp_path: Path, astronaut: np.ndarray) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), astronaut)
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["classify", str(image), "--checkpoint", str(bogus)])
    assert result.exit_code == 78
    assert "model.safetensors" in result.output


def test_info_prints_checkpoint_metadata(untrained_checkpoint: Path) -> None:
    result = runner.invoke(app, ["info", "--checkpoint", str(untrained_checkpoint)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["class_names"][0] == "neutral"
