"""``python -m training``: one real training step and evaluation on tiny fixtures the test writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fermon.expression.checkpoint import load_checkpoint
from tests.fixtures import write_ferplus_splits
from training.__main__ import app
from training.methods import get_method, method_names

runner = CliRunner()


@pytest.fixture(scope="module")
def ferplus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ferplus_splits(tmp_path_factory.mktemp("ferplus"), repeat=6)


@pytest.mark.parametrize("method", method_names())  # every registered method: a new one is tested by adding it
def test_train_one_epoch_exports_a_checkpoint_that_evaluate_reads(
    ferplus_root: Path, tmp_path: Path, method: str
) -> None:
    out = tmp_path / f"{method}.safetensors"
    result = runner.invoke(
        app,
        [
            "train",
            "--root",
            str(ferplus_root),
            "--method",
            method,
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--limit",
            "16",
            "--state-dir",
            str(tmp_path / "state"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint.metadata["method"] == method
    # What the export keeps follows the method's declaration: prompts only where text made the classes.
    assert (checkpoint.metadata["prompts"] is not None) == get_method(method).uses_text
    assert checkpoint.metadata["training"]["selected_on"] == "valid"
    assert checkpoint.temperature > 0
    assert (tmp_path / "state" / "metrics.jsonl").read_text().count("\n") == 1

    report_path = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--dataset",
            "ferplus",
            "--root",
            str(ferplus_root),
            "--split",
            "test",
            "--checkpoint",
            str(out),
            "--json",
            str(report_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["n"] == 24  # 36 rows, 12 with majority unknown or not-a-face dropped
    assert 0.0 <= report["accuracy"] <= 1.0
    assert set(report["per_class_recall"]) == {
        "neutral",
        "happiness",
        "surprise",
        "sadness",
        "anger",
        "disgust",
        "fear",
        "contempt",
    }
    assert {"ece", "nll", "confusion_matrix"} <= set(report)


def test_rerun_resumes_instead_of_starting_over(ferplus_root: Path, tmp_path: Path) -> None:
    args = [
        "train",
        "--root",
        str(ferplus_root),
        "--batch-size",
        "8",
        "--limit",
        "16",
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(tmp_path / "m.safetensors"),
    ]
    assert runner.invoke(app, [*args, "--epochs", "1"]).exit_code == 0
    result = runner.invoke(app, [*args, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_evaluate_on_missing_split_fails_with_one_line_and_exit_66(tmp_path: Path, untrained_checkpoint: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--root", str(tmp_path), "--checkpoint", str(untrained_checkpoint)])
    assert result.exit_code == 66
    assert "label.csv" in result.output


def test_evaluate_via_detector_recrops_real_faces_like_the_video_path(
    tmp_path: Path, astronaut, untrained_checkpoint: Path
) -> None:
    import cv2

    head = cv2.resize(astronaut[30:250, 110:330], (48, 48), interpolation=cv2.INTER_AREA)
    face = cv2.cvtColor(head, cv2.COLOR_RGB2GRAY)
    folder = tmp_path / "faces" / "valid" / "happy"
    folder.mkdir(parents=True)
    for i, variant in enumerate([face, cv2.flip(face, 1), np.full_like(face, 128)]):  # the last has no face
        cv2.imwrite(str(folder / f"{i}.png"), variant)
    out = tmp_path / "report.json"
    result = runner.invoke(
        app, ["evaluate", "--dataset", "folder", "--root", str(tmp_path / "faces"), "--split", "valid",
              "--checkpoint", str(untrained_checkpoint), "--via-detector", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["faces_total"] == 3 and report["faces_detected"] == 2 and report["n"] == 2
    assert 0.0 <= report["image_path_accuracy_same_faces"] <= 1.0
    assert 0.0 <= report["image_path_mean_class_recall_same_faces"] <= 1.0


def test_the_exported_crop_is_the_networks_input_size() -> None:
    from fermon.faces.align import crop_template
    from training.export import crop_metadata

    template = crop_template("ferplus48")
    same = crop_metadata("ferplus48", "gray")
    assert same["size"] == template["size"] and np.allclose(same["points"], template["points"])
    scaled = crop_metadata("ferplus48", "gray", 112)  # dlib112 trains on FERPlus framing at 112 px
    assert scaled["size"] == 112
    assert np.allclose(np.asarray(scaled["points"]), np.asarray(template["points"]) * 112 / template["size"])
