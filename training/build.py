"""The model a run trains: class embeddings from the prompts, the network, and where it starts from.

A run starts from random weights, from dlib's face-recognition ResNet (``--init dlib``), or from a
safetensors file or fermon checkpoint (``--init PATH|NAME``: its backbone, and its projection head
where it fits, so a trained model can be fine-tuned or distilled into).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fermon.errors import UsageError
from fermon.expression.checkpoint import EMBEDDED_CHECKPOINTS, resolve_checkpoint
from fermon.expression.model import KE2NT, Architecture
from training.config import TrainConfig
from training.dlib_init import (
    BACKBONE_NORMS,
    DLIB_INIT,
    affines_to_batchnorm,
    batchnorm_structure,
    load_dlib_backbone,
    require_dlib_backbone,
)
from training.methods import get_method
from training.state import load_weights
from training.text import create_text_encoder

log = logging.getLogger("training")


def class_embeddings_for(config: TrainConfig, class_names: list[str]) -> torch.Tensor:
    """Text embeddings of the class prompts (KE2NT), or a seeded random start (the CE baseline).

    With ``center_text`` the mean over classes is removed first: a sentence encoder gives all the
    prompts a large shared component (MiniLM: pairwise cosine 0.74-0.89), which leaves little angle
    between classes; centred, the prompts are well apart and ``t_y - t_neutral`` is unchanged.
    """
    method = get_method(config.method)
    prompts = method.prompts(class_names, config)
    encoder = create_text_encoder(config.text_encoder)
    text = torch.from_numpy(encoder.encode(prompts))
    if encoder.centred and not config.center_text:
        raise UsageError(f"--text-encoder {config.text_encoder} gives centred embeddings; train with --center-text")
    if config.center_text and not encoder.centred:
        text = torch.nn.functional.normalize(text - text.mean(dim=0, keepdim=True), dim=-1)
    if method.learn_class_embeddings:  # only the text's width is used: the class vectors start random
        generator = torch.Generator().manual_seed(config.seed)
        return torch.randn(text.shape, generator=generator)
    return text


def class_prompts_for(config: TrainConfig, class_names: list[str]) -> list[str]:
    """The method's class prompts (KE2NT's template, PMFER's action units, ...)."""
    return get_method(config.method).prompts(class_names, config)


def build_training_model(
    config: TrainConfig,
    architecture: Architecture,
    embeddings: torch.Tensor,
    calibration: torch.Tensor | None = None,
) -> KE2NT:
    """The model a run trains; ``calibration`` (normalised training images) sets the statistics of
    batch norms put into dlib's backbone (``--backbone-norm batch``); without it they are only shaped."""
    if config.backbone_norm not in BACKBONE_NORMS:
        raise UsageError(f"unknown --backbone-norm '{config.backbone_norm}'; known: {', '.join(BACKBONE_NORMS)}")
    method = get_method(config.method)
    model = KE2NT(
        architecture,
        embeddings,
        logit_scale=config.logit_scale,
        learn_class_embeddings=method.learn_class_embeddings,
        with_neutral_transform=method.neutral_transform,
    )
    if config.init and str(config.init) == DLIB_INIT:
        load_dlib_backbone(model)
    elif config.init:
        load_backbone(model, config.init)
    if config.backbone_norm == "batch":
        backbone = require_dlib_backbone(model)
        if calibration is not None:
            affines_to_batchnorm(backbone, calibration)
        else:
            batchnorm_structure(backbone)
    return model


def load_backbone(model: KE2NT, path: Path) -> int:
    """Initialise the backbone from a safetensors file (``backbone.`` prefixes are optional), or from
    a fermon checkpoint (a path or an embedded model's name): then its projection head too, where
    it fits, so that fine-tuning a trained model (e.g. distilling into it) starts from all of it."""
    if str(path) in EMBEDDED_CHECKPOINTS:
        path = resolve_checkpoint(str(path))
    tensors, _ = load_weights(Path(path))
    own = model.backbone.state_dict()
    matched = {}
    for name, tensor in tensors.items():
        key = name.removeprefix("backbone.")
        if key in own and own[key].shape == tensor.shape:
            matched[key] = tensor.to(own[key].dtype)
    if not matched:
        raise UsageError(f"{path}: no tensor matches the backbone '{model.architecture.backbone}'")
    model.backbone.load_state_dict(matched, strict=False)
    head = model.projection.state_dict()
    projection = {
        key: tensors[f"projection.{key}"].to(value.dtype)
        for key, value in head.items()
        if f"projection.{key}" in tensors and tensors[f"projection.{key}"].shape == value.shape
    }
    if len(projection) == len(head):  # all of a trained head or none of it
        model.projection.load_state_dict(projection)
    log.info(
        "initialised %d of %d backbone tensors%s from %s",
        len(matched),
        len(own),
        " and the projection head" if len(projection) == len(head) else "",
        Path(path).name,
    )
    return len(matched)


def backbone_lr_groups(trainable: nn.Module, backbone: nn.Module, scale: float) -> list[dict[str, Any]]:
    """Two parameter groups: the head (projection, class embeddings, other modules) at the scheduled
    rate, first, so that the logged rate stays the schedule's; the backbone at ``scale`` times it."""
    in_backbone = {id(p) for p in backbone.parameters()}
    head = [p for p in trainable.parameters() if id(p) not in in_backbone]
    return [{"params": head, "lr_scale": 1.0}, {"params": list(backbone.parameters()), "lr_scale": scale}]
