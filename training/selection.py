"""Choosing a run's weights on the validation split.

Each epoch the raw and the EMA weights are scored on validation and the better kept; across epochs
the best score is saved. The score is clean accuracy (``--select-on accuracy``), or, for models
that must hold up when part of the face is hidden, the mean of the clean accuracy and the accuracy
with the template's eyes and with its mouth covered (``--select-on robust``): clean accuracy alone
cannot see what an occlusion fine-tuning is for, and picks the epoch before it. At export,
``--select last-ema`` takes the final weight EMA instead of the best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3

from fermon.errors import UsageError
from fermon.expression.classify import batched_logits, softmax
from fermon.expression.model import Architecture
from fermon.faces.align import template_points
from training.config import TrainResult
from training.corruptions import apply_corruption
from training.datasets import LabelledFaces
from training.metrics import classification_report
from training.state import save_final_ema_weights

VALIDATION_SCORES = ("accuracy", "robust")
OCCLUDED_REGIONS = ("eyes", "mouth")  # what "robust" covers, with evaluate --corrupt's boxes


@dataclass
class Validation:
    """The validation faces, and for the robust score the same faces with each region covered."""

    clean: LabelledFaces
    occluded: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def for_score(cls, score: str, clean: LabelledFaces, architecture: Architecture) -> Validation:
        if score not in VALIDATION_SCORES:
            raise UsageError(f"unknown --select-on '{score}'; known: {', '.join(VALIDATION_SCORES)}")
        if score == "accuracy":
            return cls(clean)
        points = np.asarray(template_points(architecture.crop, architecture.input_size), np.float32)
        return cls(clean, {r: apply_corruption(r, clean.images, points, seed=0) for r in OCCLUDED_REGIONS})


def _report(model: torch.nn.Module, images: np.ndarray, data: LabelledFaces, device: torch.device) -> dict[str, Any]:
    logits = batched_logits(model, images, device)  # type: ignore[arg-type]
    return classification_report(softmax(logits), data.labels, data.class_names)


def evaluate_model(model: torch.nn.Module, validation: Validation, device: torch.device) -> dict[str, Any]:
    """Clean metrics, each covered region's accuracy and mean class recall, and the selection score."""
    model.eval()
    clean = _report(model, validation.clean.images, validation.clean, device)
    metrics = {k: clean[k] for k in ("accuracy", "mean_class_recall", "nll", "ece", "per_class_recall")}
    for region, images in validation.occluded.items():
        covered = _report(model, images, validation.clean, device)
        metrics[f"{region}_accuracy"] = covered["accuracy"]
        metrics[f"{region}_mean_class_recall"] = covered["mean_class_recall"]
    accuracies = [metrics["accuracy"]] + [metrics[f"{r}_accuracy"] for r in validation.occluded]
    metrics["score"] = float(np.mean(accuracies))
    return metrics


def select_on_validation(
    model: torch.nn.Module, ema: ModelEmaV3 | None, validation: Validation, device: torch.device
) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """The better of the raw and the EMA weights on validation, which one, and its metrics.

    An EMA of weights is not always a good model: early in a run at a high learning rate the
    averaged weights and the averaged BatchNorm statistics disagree (seen here: 72% raw, 37% EMA
    after 5 epochs), so both are measured and the better one is kept.
    """
    candidates: list[tuple[torch.nn.Module, str]] = [(model, "raw")]
    if ema is not None:
        candidates.append((ema.module, "ema"))
    scored = [(evaluate_model(module, validation, device), module, name) for module, name in candidates]
    metrics, module, name = max(scored, key=lambda item: item[0]["score"])
    return module, name, metrics


def best_score(best: dict[str, Any]) -> float:
    """A saved best epoch's score (states written before the robust score hold only its accuracy)."""
    return float(best.get("score", best["accuracy"]))


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
