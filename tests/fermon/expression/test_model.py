"""The KE2NT model: forward and backward on the CPU, heads, the registry of architectures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fermon.errors import ModelError
from fermon.expression.model import KE2NT, load_architecture


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [("cnn48", 48, 1), ("resnet18_112", 112, 3), ("swin_tiny_112", 112, 3), ("mobilenetv3_small_050", 112, 3)],
)
def test_forward_and_backward_on_tiny_batch(name: str, size: int, channels: int) -> None:
    torch.manual_seed(0)
    architecture = load_architecture(name)
    model = KE2NT(architecture, torch.randn(7, 32), with_neutral_transform=True)
    images = torch.randn(2, channels, size, size)
    logits = model(images)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    # Text embeddings are fixed: a buffer with no gradient.
    assert not model.class_embeddings.requires_grad


def test_swin_uses_patch_size_two_at_112() -> None:
    model = KE2NT(load_architecture("swin_tiny_112"), torch.randn(7, 16))
    assert model.backbone.patch_embed.proj.kernel_size == (2, 2)
    assert model.backbone.num_features == 768


def test_logits_are_scaled_cosines() -> None:
    torch.manual_seed(0)
    model = KE2NT(load_architecture("cnn48"), torch.randn(8, 16), logit_scale=30.0).eval()
    images = torch.randn(3, 1, 48, 48)
    features = model.encode_image(images)
    expected = 30.0 * F.normalize(features, dim=-1) @ F.normalize(model.class_embeddings, dim=-1).t()
    assert torch.allclose(model(images), expected, atol=1e-4)
    assert model(images).abs().max() <= 30.0 + 1e-4


def test_neutral_transform_is_left_out_of_the_inference_weights() -> None:
    model = KE2NT(load_architecture("cnn48"), torch.randn(8, 16), with_neutral_transform=True)
    assert any(k.startswith("neutral_transform.") for k in model.state_dict())
    assert not any(k.startswith("neutral_transform.") for k in model.inference_state_dict())


def test_cross_entropy_baseline_learns_its_class_embeddings() -> None:
    model = KE2NT(load_architecture("cnn48"), torch.randn(8, 16), learn_class_embeddings=True)
    assert model.class_embeddings.requires_grad
    assert math.isclose(float(model.logit_scale.exp()), 100.0, rel_tol=1e-5)


def test_unknown_architecture_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="no_such_net"):
        load_architecture("no_such_net")


def test_the_default_model_loads_without_importing_timm_or_torchvision() -> None:
    """timm imports torchvision and torch._dynamo: seconds of every run's start-up, for nothing."""
    import subprocess
    import sys

    code = (
        "import sys; from fermon.expression.classify import ExpressionClassifier; "
        "from fermon.faces.detector import CenterFaceDetector; import numpy as np; "
        "ExpressionClassifier.load('default', device='cpu'); "
        "CenterFaceDetector().detect([np.zeros((64, 64, 3), np.uint8)]); "
        "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_own_backbones_are_registered_with_timm_on_demand() -> None:
    import timm

    from fermon.expression.backbones import register_with_timm

    register_with_timm()
    register_with_timm()  # twice is harmless
    assert timm.create_model("fermon_vgg", num_classes=0, in_chans=1).num_features == 256
