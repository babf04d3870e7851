"""Distillation: a teacher checkpoint's flip-averaged probabilities mixed into the training targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fermon.expression.checkpoint import load_checkpoint, write_untrained_checkpoint
from fermon.expression.classify import ExpressionClassifier
from tests.fixtures import write_ferplus_splits
from training import distil
from training.__main__ import app
from training.datasets import read_dataset

runner = CliRunner()


@pytest.fixture()
def ferplus_root(tmp_path: Path) -> Path:
    return write_ferplus_splits(tmp_path / "ferplus", repeat=4)


@pytest.fixture()
def teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(distil, "teacher_cache_dir", lambda: tmp_path / "teachers")
    path = tmp_path / "teacher.safetensors"
    write_untrained_checkpoint(path, seed=3)
    return path


def test_teacher_probabilities_average_the_face_and_its_mirror(ferplus_root: Path, teacher: Path) -> None:
    student = read_dataset("ferplus", ferplus_root, "train", 48, "gray")
    got = distil.teacher_probabilities(str(teacher), "ferplus", ferplus_root, None, student)
    # Read as the run reads faces: the classifier, in the precision it picks on this CPU.
    classifier = ExpressionClassifier(load_checkpoint(teacher), device="cpu")
    plain = classifier.predict(student.images)
    mirrored = classifier.predict(np.ascontiguousarray(student.images[:, :, ::-1]))
    np.testing.assert_allclose(got, (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(plain - mirrored).max() > 1e-6  # the mirror is really another view
    again = distil.teacher_probabilities(str(teacher), "ferplus", ferplus_root, None, student)
    np.testing.assert_array_equal(again, got)  # read back from the cache


def test_mix_targets_weighs_votes_and_teacher() -> None:
    votes = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    taught = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)
    np.testing.assert_allclose(distil.mix_targets(votes, taught, 0.25), [[0.8, 0.2], [0.6, 0.4]], atol=1e-6)
    np.testing.assert_allclose(distil.mix_targets(votes, taught, 0.0), votes)
    with pytest.raises(Exception, match="teacher-weight"):
        distil.mix_targets(votes, taught, 1.5)


@pytest.mark.slow
def test_train_with_a_teacher_records_it_by_name(ferplus_root: Path, teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "student.safetensors"
    args = ["train", "--root", str(ferplus_root), "--epochs", "1", "--batch-size", "8", "--limit", "16"]
    args += ["--teacher", str(teacher), "--teacher-weight", "0.7"]
    args += ["--state-dir", str(tmp_path / "s"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    training = load_checkpoint(out).metadata["training"]
    assert training["teachers"] == ["teacher.safetensors"] and training["teacher_weight"] == 0.7
    assert (tmp_path / "teachers").is_dir()


def test_init_from_a_checkpoint_starts_from_its_backbone_and_head(tmp_path: Path) -> None:
    import torch

    from fermon.expression.model import load_architecture
    from training.build import build_training_model
    from training.config import TrainConfig

    source = tmp_path / "trained.safetensors"
    write_untrained_checkpoint(source, seed=5)
    stored = load_checkpoint(source).tensors
    config = TrainConfig(root=tmp_path, init=source)
    model = build_training_model(config, load_architecture("cnn48"), torch.randn(8, 384))
    for name, tensor in model.state_dict().items():
        if name.startswith(("backbone.", "projection.")):
            torch.testing.assert_close(tensor, stored[name].to(tensor.dtype), msg=name)


def test_init_accepts_an_embedded_model_by_name(tmp_path: Path) -> None:
    import torch

    from fermon.expression.model import load_architecture
    from training.build import build_training_model
    from training.config import TrainConfig

    model = build_training_model(
        TrainConfig(root=tmp_path, init=Path("default")), load_architecture("cnn48"), torch.randn(8, 384)
    )
    stored = load_checkpoint("default").tensors
    torch.testing.assert_close(model.projection[0].weight, stored["projection.0.weight"].float())


def test_two_teachers_teach_their_mean(ferplus_root: Path, teacher: Path, tmp_path: Path) -> None:
    from fermon.expression.model import load_architecture
    from training.config import TrainConfig
    from training.loop import _load_data

    second = tmp_path / "second.safetensors"
    write_untrained_checkpoint(second, seed=9)
    config = TrainConfig(root=ferplus_root, teachers=(str(teacher), str(second)), teacher_weight=0.6)
    train, _ = _load_data(config, load_architecture("cnn48"))
    votes = read_dataset("ferplus", ferplus_root, "train", 48, "gray").targets
    each = [distil.teacher_probabilities(str(t), "ferplus", ferplus_root, None, train) for t in (teacher, second)]
    np.testing.assert_allclose(train.targets, distil.mix_targets(votes, (each[0] + each[1]) / 2, 0.6), atol=1e-6)
    assert not np.allclose(each[0], each[1], atol=1e-4)


@pytest.mark.slow
def test_select_last_ema_exports_the_final_weight_average(ferplus_root: Path, tmp_path: Path) -> None:
    from training.state import load_weights

    out = tmp_path / "last.safetensors"
    args = ["train", "--root", str(ferplus_root), "--epochs", "2", "--batch-size", "8", "--limit", "16"]
    args += ["--ema-decay", "0.5", "--select", "last-ema", "--full-precision", "--no-prior-adjustment"]
    args += ["--state-dir", str(tmp_path / "s"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint.metadata["training"]["selected_weights"] == "last-ema"
    assert checkpoint.metadata["training"]["best_epoch"] == 2
    ema, _ = load_weights(tmp_path / "s" / "last-ema.safetensors")
    for name in ("backbone.stages.0.0.0.weight", "projection.0.weight"):
        if name in ema:
            torch.testing.assert_close(checkpoint.tensors[name].float(), ema[name].float())
    assert any(name in ema for name in ("backbone.stages.0.0.0.weight", "projection.0.weight"))


def test_unknown_selection_fails_before_training(ferplus_root: Path, tmp_path: Path) -> None:
    args = ["train", "--root", str(ferplus_root), "--select", "median", "--state-dir", str(tmp_path / "s")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 64 and "median" in result.output
    assert not (tmp_path / "s").exists()
