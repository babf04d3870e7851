"""The training loop: SGD with warm-up and cosine decay, mixed precision, EMA, resumable per epoch.

State lives in ``state_dir`` (default ``~/.cache/fermon/runs/<run name>``), outside the repository:
``state.safetensors`` after every epoch, ``best.safetensors`` (the weights of the best validation
epoch), ``metrics.jsonl`` (one line per epoch). Rerunning the same command resumes from the last
finished epoch. Models are selected on the validation split only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from fermon.checkpoint import EMBEDDED_CHECKPOINTS, resolve_checkpoint
from fermon.classify import batched_logits, cpu_has_amx, normalise_batch, resolve_device, softmax
from fermon.errors import UsageError
from fermon.model import CLIP_LOGIT_SCALE, KE2NT, Architecture, load_architecture
from training.augment import Augmentation
from training.datasets import LabelledFaces, read_dataset
from training.distil import mix_targets, teacher_probabilities
from training.dlib_init import (
    BACKBONE_NORMS,
    DLIB_INIT,
    affines_to_batchnorm,
    batchnorm_structure,
    load_dlib_backbone,
    require_dlib_backbone,
)
from training.losses import KE2NTLoss
from training.methods import get_method
from training.metrics import classification_report
from training.pmfer import forward_with_feature_map
from training.state import load_state, load_weights, save_final_ema_weights, save_state, save_weights
from training.text import DEFAULT_TEXT_ENCODER, create_text_encoder

log = logging.getLogger("training")

REFERENCE_LR = 0.002  # KE2NT's reference: fine-tuning a face-recognition backbone
SCRATCH_LR = 0.1  # from random weights a small CNN needs a far larger step


# The configuration fields of the first release; see TrainConfig.fingerprint.
FINGERPRINT_FIELDS_V1 = frozenset(
    [
        "root",
        "dataset",
        "method",
        "architecture",
        "batch_size",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "warmup_epochs",
        "amp",
        "ema_decay",
        "label_mode",
        "limit",
        "seed",
        "text_encoder",
        "prompt_template",
        "center_text",
        "logit_scale",
        "transform_weight",
        "contrast_weight",
        "pairing",
        "init",
        "val_split",
        "extra",
    ]
)


@dataclass
class TrainConfig:
    root: Path
    dataset: str = "ferplus"
    method: str = "ke2nt"
    architecture: str = "cnn48"
    epochs: int = 50
    batch_size: int = 64
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    amp: str = "auto"
    ema_decay: float = 0.0
    label_mode: str = "soft"
    limit: int | None = None
    seed: int = 0
    text_encoder: str = DEFAULT_TEXT_ENCODER
    prompt_template: str = "ke2nt"
    center_text: bool = True
    logit_scale: float = CLIP_LOGIT_SCALE
    transform_weight: float = 1.0
    contrast_weight: float = 1.0
    pairing: str = "own"
    # PMFER's loss weights (training/pmfer.py); added after the first release, so never in FINGERPRINT_FIELDS_V1.
    mask_weight: float = 1.0
    adversarial_weight: float = 0.1
    # The backbone's learning rate as a fraction of the head's; added after the first release.
    backbone_lr_scale: float = 1.0
    # dlib's backbone: its frozen affines as released, or batch norms put back (training/dlib_init.py).
    backbone_norm: str = "affine"
    # Fraction of images with the template's eye or mouth region hidden (training/augment.py).
    region_occlusion: float = 0.0
    # Distillation (training/distil.py): teacher checkpoints whose mean probabilities join the targets.
    teachers: tuple[str, ...] = ()
    teacher_weight: float = 0.5
    # A safetensors file, or DLIB_INIT for dlib's own weights.
    init: Path | None = None
    state_dir: Path | None = None
    device: str = "auto"
    val_split: str = "valid"
    # Free-form notes recorded with the run and in its checkpoint's training metadata.
    extra: dict[str, Any] = field(default_factory=dict)

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return REFERENCE_LR if self.init else SCRATCH_LR

    def fingerprint(self) -> str:
        """What must match for a resume: everything but where state lives, the device and the length.

        Fields added after the first release count only when set away from their default, so runs
        begun before a new option existed still resume.
        """
        relevant = {}
        for spec in fields(self):
            if spec.name in ("state_dir", "device", "epochs"):
                continue
            value = getattr(self, spec.name)
            if spec.name in FINGERPRINT_FIELDS_V1 or value != _default_of(spec):
                relevant[spec.name] = str(value)
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _default_of(spec: Field) -> Any:
    if spec.default is not MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not MISSING else MISSING


@dataclass
class TrainResult:
    best_weights: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    train_images: int
    architecture: Architecture
    class_names: list[str]
    class_embeddings: torch.Tensor
    config: TrainConfig
    prompts: list[str] | None = None  # the class prompts behind class_embeddings (None for ce)
    class_prior: np.ndarray | None = None  # training-label frequencies (smoothed), for the prior adjustment
    state_path: Path | None = None  # the run's resumable state (its last epoch's weights and EMA)
    selected: str = "best"  # which weights best_weights holds: the best validation epoch, or the final EMA


def class_embeddings_for(config: TrainConfig, class_names: list[str]) -> torch.Tensor:
    """Text embeddings of the class prompts (KE2NT), or a seeded random start (the CE baseline).

    With ``center_text`` the mean over classes is removed first: a sentence encoder gives all the
    prompts a large shared component (MiniLM: pairwise cosine 0.74-0.89), which leaves little angle
    between classes; centred, the prompts are well apart and ``t_y - t_neutral`` is unchanged.
    """
    method = get_method(config.method)
    prompts = method.prompts(class_names, config)
    text = torch.from_numpy(create_text_encoder(config.text_encoder).encode(prompts))
    if config.center_text:
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


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def use_bf16(amp: str, device: torch.device) -> bool:
    """bf16 autocast: on CUDA, and on CPUs with AMX, where it is 2-3x faster for these convolutions."""
    if amp == "off":
        return False
    if amp == "on":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_amx()


def evaluate_model(model: torch.nn.Module, data: LabelledFaces, device: torch.device) -> dict[str, Any]:
    model.eval()
    logits = batched_logits(model, data.images, device)  # type: ignore[arg-type]
    report = classification_report(softmax(logits), data.labels, data.class_names)
    return {k: report[k] for k in ("accuracy", "mean_class_recall", "nll", "ece", "per_class_recall")}


def select_on_validation(
    model: KE2NT, ema: ModelEmaV3 | None, val: LabelledFaces, device: torch.device
) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """The better of the raw and the EMA weights on validation, which one, and its metrics.

    An EMA of weights is not always a good model: early in a run at a high learning rate the
    averaged weights and the averaged BatchNorm statistics disagree (seen here: 72% raw, 37% EMA
    after 5 epochs), so both are measured and the better one is kept.
    """
    candidates: list[tuple[torch.nn.Module, str]] = [(model, "raw")]
    if ema is not None:
        candidates.append((ema.module, "ema"))
    scored = [(evaluate_model(module, val, device), module, name) for module, name in candidates]
    metrics, module, name = max(scored, key=lambda item: item[0]["accuracy"])
    return module, name, metrics


def _load_data(config: TrainConfig, architecture: Architecture) -> tuple[LabelledFaces, LabelledFaces]:
    train = read_dataset(
        config.dataset, config.root, "train", architecture.input_size, architecture.colour, config.limit
    )
    val = read_dataset(config.dataset, config.root, config.val_split, architecture.input_size, architecture.colour)
    if len(train) == 0:
        raise UsageError(f"{config.root}: no training images for dataset '{config.dataset}'")
    if config.label_mode == "majority":
        train.targets = np.eye(len(train.class_names), dtype=np.float32)[train.labels]
    if config.teachers:
        taught = np.mean(
            [teacher_probabilities(t, config.dataset, Path(config.root), config.limit, train) for t in config.teachers],
            axis=0,
        )
        train.targets = mix_targets(train.targets, taught, config.teacher_weight)
    return train, val


def _calibration_images(
    config: TrainConfig, train_data: LabelledFaces, architecture: Architecture, count: int = 512
) -> torch.Tensor | None:
    """A seeded sample of normalised training images for batch-norm statistics, where they are needed."""
    if config.backbone_norm != "batch":
        return None
    chosen = np.random.default_rng(config.seed).permutation(len(train_data))[:count]
    return normalise_batch(train_data.images[np.sort(chosen)], architecture, torch.device("cpu"))


def train(config: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train (or resume) one run; return where its best validation weights are."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    architecture = load_architecture(config.architecture)
    train_data, val_data = _load_data(config, architecture)
    embeddings = class_embeddings_for(config, train_data.class_names)
    calibration = _calibration_images(config, train_data, architecture)
    model = build_training_model(config, architecture, embeddings, calibration)
    model = model.to(device).to(memory_format=torch.channels_last)
    method = get_method(config.method)
    extra = method.extra(config, model, train_data.class_names).to(device) if method.extra else None
    # What the optimiser updates and the state holds: the model alone, or the model and the method's
    # training-only module under the method's name.
    trainable: nn.Module = model if extra is None else nn.ModuleDict({"model": model, method.name: extra})
    criterion = KE2NTLoss(
        neutral_index=train_data.class_names.index("neutral"),
        transform_weight=config.transform_weight,
        contrast_weight=config.contrast_weight,
        pairing=config.pairing,
    )
    # One group unless the backbone's rate is split off (a group without lr_scale runs at 1).
    groups = (
        trainable.parameters()
        if config.backbone_lr_scale == 1.0
        else backbone_lr_groups(trainable, model.backbone, config.backbone_lr_scale)
    )
    optimizer = torch.optim.SGD(
        groups,
        lr=config.learning_rate(),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    ema = ModelEmaV3(model, decay=config.ema_decay) if config.ema_decay > 0 else None
    state_dir = Path(
        config.state_dir or Path.home() / ".cache" / "fermon" / "runs" / f"{config.method}-{config.fingerprint()}"
    )
    state_path, best_path, metrics_path = (
        state_dir / "state.safetensors",
        state_dir / "best.safetensors",
        state_dir / "metrics.jsonl",
    )

    steps_per_epoch = max(1, len(train_data) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, {"epoch": -1, "accuracy": -1.0}
    if state_path.is_file():
        info = load_state(state_path, trainable, optimizer, ema)
        if info.get("fingerprint") != config.fingerprint():
            raise UsageError(f"{state_dir}: holds a different run; pass another --state-dir or delete it")
        start_epoch, best, history = info["epoch"] + 1, info["best"], info["history"]
        log.info("resuming %s at epoch %d", state_dir, start_epoch + 1)

    bf16 = use_bf16(config.amp, device)
    augment = Augmentation.for_architecture(architecture, region_occlusion=config.region_occlusion)
    targets_all = torch.from_numpy(train_data.targets)
    labels_all = torch.from_numpy(train_data.labels)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = np.random.default_rng(config.seed * 1000 + epoch).permutation(len(train_data))
        started, sums = time.perf_counter(), {}
        mask_rng = np.random.default_rng([config.seed, epoch])  # PMFER's phrase masking, reproducible on resume
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            factor = lr_factor(epoch * steps_per_epoch + step, total_steps, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate() * factor * group.get("lr_scale", 1.0)
            images = augment(normalise_batch(train_data.images[index], architecture, device))
            targets, labels = targets_all[index].to(device), labels_all[index].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                if extra is not None and extra.needs_feature_map:
                    emotional, feature_map = forward_with_feature_map(model, images)
                else:
                    emotional, feature_map = model.encode_image(images), None
                neutral = model.neutral_transform(emotional) if model.neutral_transform is not None else None
            logits = model.logits_from_features(emotional)
            parts = criterion(logits, targets, labels, emotional, neutral, model.class_embeddings)
            if extra is not None:
                parts.update(extra.losses(feature_map, emotional, labels, model.class_embeddings, mask_rng))
                parts["total"] = parts["total"] + parts[method.name]
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        evaluated, source, metrics = select_on_validation(model, ema, val_data, device)
        record = {
            "epoch": epoch + 1,
            "seconds": round(time.perf_counter() - started, 1),
            "lr": optimizer.param_groups[0]["lr"],
            **{f"train_{k}": round(v / steps_per_epoch, 4) for k, v in sums.items()},
            **{f"val_{k}": v for k, v in metrics.items() if k != "per_class_recall"},
            "val_weights": source,
        }
        history.append(record)
        if metrics["accuracy"] > best["accuracy"]:
            best = {"epoch": epoch + 1, "weights": source, **metrics}
            info = {"epoch": epoch + 1, "weights": source, "fingerprint": config.fingerprint()}
            save_weights(best_path, evaluated, info)
        save_state(
            state_path,
            trainable,
            optimizer,
            {"epoch": epoch, "best": best, "history": history, "fingerprint": config.fingerprint()},
            ema,
        )
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if on_epoch:
            on_epoch(record)
    return TrainResult(
        best_weights=best_path,
        best_epoch=int(best["epoch"]),
        best_metrics=best,
        history=history,
        train_images=len(train_data),
        architecture=architecture,
        class_names=train_data.class_names,
        class_embeddings=embeddings,
        config=config,
        prompts=method.prompts(train_data.class_names, config) if method.uses_text else None,
        class_prior=label_prior(train_data),
        state_path=state_path,
    )


SELECTIONS = ("best", "last-ema")


def select_weights(result: TrainResult, selection: str) -> TrainResult:
    """The weights to export: the best validation epoch's (``best``), or the weight EMA after the
    last epoch (``last-ema``: for a fine-tuning whose gains, such as robustness to occlusion, the
    clean validation accuracy that picks ``best`` does not see)."""
    if selection not in SELECTIONS:
        raise UsageError(f"unknown --select '{selection}'; known: {', '.join(SELECTIONS)}")
    if selection == "best" or result.state_path is None:
        return result
    out = result.state_path.with_name("last-ema.safetensors")
    save_final_ema_weights(result.state_path, out)
    return replace(result, best_weights=out, best_epoch=len(result.history), selected=selection)


def label_prior(data: LabelledFaces) -> np.ndarray:
    """Majority-label frequencies with one added to each class (no class has probability zero)."""
    counts = np.bincount(data.labels, minlength=len(data.class_names)).astype(np.float64) + 1.0
    return counts / counts.sum()
