"""Choosing a run's weights on validation: clean accuracy, or the robust score with eyes and mouth covered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fermon.expression.checkpoint import load_checkpoint, write_untrained_checkpoint
from fermon.expression.model import load_architecture
from fermon.faces.align import crop_template
from tests.fixtures import write_ferplus_splits
from training.__main__ import app
from training.config import TrainConfig
from training.corruptions import region_box
from training.datasets import read_dataset
from training.selection import Validation, best_score, evaluate_model

runner = CliRunner()


@pytest.fixture()
def ferplus_root(tmp_path: Path) -> Path:
    return write_ferplus_splits(tmp_path / "ferplus", repeat=4)


def test_robust_validation_covers_the_templates_eyes_and_mouth_and_nothing_else(ferplus_root: Path) -> None:
    architecture = load_architecture("cnn48")
    clean = read_dataset("ferplus", ferplus_root, "valid", architecture.input_size, architecture.colour)
    validation = Validation.for_score("robust", clean, architecture)
    template = crop_template(architecture.crop)
    points = np.asarray(template["points"], np.float32) * architecture.input_size / template["size"]
    assert set(validation.occluded) == {"eyes", "mouth"}
    for region, images in validation.occluded.items():
        x1, y1, x2, y2 = region_box(region, points, architecture.input_size)
        inside = np.zeros(images.shape[1:3], bool)
        inside[y1:y2, x1:x2] = True
        assert (images[:, inside] == 0).all()
        np.testing.assert_array_equal(images[:, ~inside], clean.images[:, ~inside])
    assert Validation.for_score("accuracy", clean, architecture).occluded == {}


def test_the_robust_score_is_the_mean_of_clean_and_covered_accuracy(ferplus_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_untrained_checkpoint(path, seed=1)
    model = load_checkpoint(path).build_model()
    architecture = load_architecture("cnn48")
    clean = read_dataset("ferplus", ferplus_root, "valid", architecture.input_size, architecture.colour)
    robust = evaluate_model(model, Validation.for_score("robust", clean, architecture), torch.device("cpu"))
    plain = evaluate_model(model, Validation.for_score("accuracy", clean, architecture), torch.device("cpu"))
    assert plain["score"] == plain["accuracy"] == robust["accuracy"]
    mean = (robust["accuracy"] + robust["eyes_accuracy"] + robust["mouth_accuracy"]) / 3
    assert robust["score"] == pytest.approx(mean)
    # States saved before the score existed carry accuracy only; they compare on it.
    assert best_score({"epoch": 3, "accuracy": 0.8}) == 0.8


def test_default_selection_leaves_the_run_fingerprint_alone(tmp_path: Path) -> None:
    # Runs begun before --select-on existed must still resume: the default is not in the fingerprint.
    plain = TrainConfig(root=tmp_path)
    assert TrainConfig(root=tmp_path, select_on="accuracy").fingerprint() == plain.fingerprint()
    assert TrainConfig(root=tmp_path, select_on="robust").fingerprint() != plain.fingerprint()


@pytest.mark.slow
def test_train_selecting_on_the_robust_score_records_it(ferplus_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "robust.safetensors"
    args = ["train", "--root", str(ferplus_root), "--epochs", "2", "--batch-size", "8", "--limit", "16"]
    args += ["--select-on", "robust", "--state-dir", str(tmp_path / "s"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "eyes " in result.output and "mouth " in result.output  # each epoch's line shows them
    records = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        covered = (record["val_accuracy"] + record["val_eyes_accuracy"] + record["val_mouth_accuracy"]) / 3
        assert record["val_score"] == pytest.approx(covered)
    best = max(records, key=lambda record: record["val_score"])
    training = load_checkpoint(out).metadata["training"]
    assert training["selection_score"] == "robust"
    assert training["best_epoch"] == best["epoch"]


def test_unknown_selection_score_fails_before_training(ferplus_root: Path, tmp_path: Path) -> None:
    args = ["train", "--root", str(ferplus_root), "--select-on", "loss", "--state-dir", str(tmp_path / "s")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 64 and "loss" in result.output
    assert not (tmp_path / "s").exists()
