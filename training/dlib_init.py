"""Starting a ``dlib_resnet`` backbone from dlib's released face-recognition weights (CC0).

dlib ships its batch norms folded into frozen per-channel affines, which leaves a 29-layer ResNet
with no normalisation at all: fine-tuned as released, SGD destroyed the features within a few
steps, and even balanced (``balance_for_training``) the network trains slowly at the small rate it
tolerates. ``affines_to_batchnorm`` puts real batch norms back: each affine becomes a
``BatchNorm2d`` whose statistics are measured on training images and whose scale and shift are set
so that, in eval mode, it computes exactly what the affine did. Training then starts from dlib's
function with a well-conditioned network. ``fold_batchnorms`` turns the trained batch norms back
into affines for export, so the run-time module (``fermon.people.dlib_resnet.DlibResNet``) is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import torch
from torch import nn

from fermon.errors import UsageError
from fermon.expression.model import KE2NT
from fermon.people.dlib_resnet import (
    DlibResNet,
    balance_for_training,
    dlib_weights_path,
    load_dlib_weights,
    read_dlib_network,
)

log = logging.getLogger("training")

DLIB_INIT = "dlib"  # --init's word for dlib's released face-recognition ResNet (architecture dlib112)
BACKBONE_NORMS = ("affine", "batch")  # dlib's frozen affines, or batch norms put back for fine-tuning


def _affine_slots(backbone: DlibResNet) -> list[tuple[nn.Module, str]]:
    """(parent module, attribute) of every affine, from the input up."""
    slots: list[tuple[nn.Module, str]] = [(backbone, "stem_affine")]
    for block in backbone.blocks:
        slots += [(block, "affine1"), (block, "affine2")]
    return slots


def require_dlib_backbone(model: KE2NT) -> DlibResNet:
    if not isinstance(model.backbone, DlibResNet):
        raise UsageError(
            f"--init {DLIB_INIT} needs the dlib_resnet backbone (--architecture dlib112), "
            f"not '{model.architecture.backbone}'"
        )
    return model.backbone


def load_dlib_backbone(model: KE2NT) -> int:
    """dlib's weights into the backbone, balanced between each convolution and its affine.

    Balancing keeps the function and makes the affine-only network trainable with SGD. A backbone
    cut after one of dlib's stages (``backbone_kwargs`` widths and depths a prefix of dlib's) takes
    the released network's first layers: it computes that network's features at the cut.
    """
    backbone = require_dlib_backbone(model)
    released = DlibResNet(in_chans=backbone.in_chans)
    load_dlib_weights(released, read_dlib_network(dlib_weights_path()))
    balance_for_training(released)
    tensors = leading_tensors(released, backbone)
    backbone.load_state_dict(tensors, strict=False)
    log.info("initialised %d of %d backbone tensors from dlib's ResNet", len(tensors), len(backbone.state_dict()))
    return len(tensors)


def leading_tensors(released: DlibResNet, backbone: DlibResNet) -> dict[str, torch.Tensor]:
    """The released network's tensors for ``backbone``: all of them, or those of its first blocks.

    Only the descriptor's projection (``embedding``, unused by the classifier) may be left out,
    where a cut backbone's feature is narrower than dlib's 256.
    """
    own, source = backbone.state_dict(), released.state_dict()
    tensors = {name: source[name] for name in own if name in source and source[name].shape == own[name].shape}
    missing = [name for name in own if name not in tensors and not name.startswith("embedding.")]
    if missing:
        raise UsageError(f"the dlib_resnet backbone is not a prefix of dlib's network: {', '.join(missing[:3])}")
    return tensors


@torch.no_grad()
def affines_to_batchnorm(backbone: DlibResNet, images: torch.Tensor, eps: float = 1e-5) -> None:
    """Replace every affine by a batch norm that computes the same function on ``images``' statistics.

    With per-channel input mean m and variance v measured here, the batch norm's shift and scale are
    a*sqrt(v+eps) and a*m + b, so that (x - m) / sqrt(v+eps) * scale + shift = a*x + b exactly in
    eval mode, and nearly so in train mode on batches like ``images``.
    """
    slots = _affine_slots(backbone)
    inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        x = args[0].double()
        inputs[id(module)] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False))

    hooks = [getattr(parent, name).register_forward_hook(record) for parent, name in slots]
    was_training = backbone.training
    backbone.eval()
    try:
        backbone(images)
    finally:
        for hook in hooks:
            hook.remove()
    for parent, name in slots:
        affine = getattr(parent, name)
        mean, var = inputs[id(affine)]
        norm = nn.BatchNorm2d(affine.weight.numel(), eps=eps).to(affine.weight.device)
        std = (var + eps).sqrt()
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        norm.weight.copy_(affine.weight.double() * std)
        norm.bias.copy_(affine.weight.double() * mean + affine.bias.double())
        setattr(parent, name, norm)
    backbone.train(was_training)


def batchnorm_structure(backbone: DlibResNet) -> None:
    """Batch norms in the affines' places, without statistics: the shape a resumed run loads into."""
    for parent, name in _affine_slots(backbone):
        affine = getattr(parent, name)
        setattr(parent, name, nn.BatchNorm2d(affine.weight.numel()).to(affine.weight.device))


def fold_batchnorms(
    tensors: dict[str, torch.Tensor], target_keys: Collection[str], eps: float = 1e-5
) -> dict[str, torch.Tensor]:
    """A state dict whose batch norms (eval mode) become affines where the target module has affines.

    Only batch norms whose statistics ``target_keys`` lacks are folded (a cnn48's own batch norms
    stay): ``x.running_mean``, ``x.running_var``, ``x.weight``, ``x.bias`` and
    ``x.num_batches_tracked`` become ``x.weight`` and ``x.bias``. Other tensors pass through.
    """
    prefixes = {
        name.removesuffix("running_mean")
        for name in tensors
        if name.endswith(".running_mean") and name not in target_keys
    }
    out = {name: value for name, value in tensors.items() if not any(name.startswith(p) for p in prefixes)}
    for prefix in prefixes:
        var = tensors[prefix + "running_var"].double()
        scale = tensors[prefix + "weight"].double() / (var + eps).sqrt()
        shift = tensors[prefix + "bias"].double() - tensors[prefix + "running_mean"].double() * scale
        dtype = tensors[prefix + "weight"].dtype
        out[prefix + "weight"], out[prefix + "bias"] = scale.to(dtype), shift.to(dtype)
    return out
