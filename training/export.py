"""Export a trained run to a fermon checkpoint, with a temperature fitted on validation data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar

import fermon
from fermon.expression.checkpoint import save_checkpoint, stored_tensors
from fermon.expression.classify import batched_logits, softmax
from fermon.expression.model import KE2NT
from fermon.faces.align import crop_template, template_points
from training.config import TrainResult
from training.datasets import LabelledFaces
from training.dlib_init import fold_batchnorms
from training.methods import get_method
from training.metrics import classification_report, negative_log_likelihood
from training.state import load_weights


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bias: np.ndarray | None = None) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T + bias)`` (Guo et al. 2017)."""
    offset = np.zeros(logits.shape[1]) if bias is None else bias

    def nll(log_t: float) -> float:
        return negative_log_likelihood(softmax(logits / float(np.exp(log_t)) + offset), labels)

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(100.0)), method="bounded")
    return float(np.exp(result.x))


# Prior-adjustment strengths tried on validation (0: none; 1: logits minus the full log prior).
ADJUSTMENT_STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
ADJUSTMENT_ACCURACY_COST = 0.005  # the most accuracy an adjustment may cost for rarer classes' recall


def fit_prior_adjustment(
    logits: np.ndarray, labels: np.ndarray, prior: np.ndarray, class_names: list[str]
) -> tuple[float, float, list[dict[str, float]]]:
    """Post-hoc logit adjustment (Menon et al. 2021): ``softmax(logits / T - tau * log(prior))``.

    Soft vote targets make a model reluctant to name the rare classes (disgust, fear, contempt),
    which are the ones a clinician watches. For each strength ``tau`` the temperature is refitted
    and validation accuracy and mean class recall measured; the chosen ``tau`` has the best mean
    class recall among those within ``ADJUSTMENT_ACCURACY_COST`` of the unadjusted accuracy.
    Returns (tau, temperature, the grid's figures).
    """
    log_prior = np.log(prior)
    grid = []
    for tau in ADJUSTMENT_STRENGTHS:
        temperature = fit_temperature(logits, labels, bias=-tau * log_prior)
        probabilities = softmax(logits / temperature - tau * log_prior)
        report = classification_report(probabilities, labels, class_names)
        grid.append(
            {
                "tau": tau,
                "temperature": temperature,
                "accuracy": report["accuracy"],
                "mean_class_recall": report["mean_class_recall"],
                "ece": report["ece"],
            }
        )
    allowed = [row for row in grid if row["accuracy"] >= grid[0]["accuracy"] - ADJUSTMENT_ACCURACY_COST]
    best = max(allowed, key=lambda row: row["mean_class_recall"])
    return best["tau"], best["temperature"], grid


def crop_metadata(template_name: str, colour: str, size: int | None = None) -> dict[str, Any]:
    """The face crop a checkpoint's network takes: the template's points scaled to its input ``size``
    (a 48 px template framing a 112 px network's input), so that run time crops what training saw."""
    size = int(size or crop_template(template_name)["size"])
    return {"template": template_name, "size": size, "points": template_points(template_name, size), "colour": colour}


def export_run(
    result: TrainResult,
    val: LabelledFaces,
    out: Path,
    name: str,
    half: bool = True,
    adjust_prior: bool = True,
    flip_average: bool = False,
) -> dict[str, Any]:
    """Best-epoch weights to ``out``; returns the checkpoint metadata (validation metrics included).

    With ``adjust_prior`` (and a training prior) the prior adjustment is chosen on ``val`` too. With
    ``flip_average`` the checkpoint averages each crop's logits with its mirror's at run time (twice
    the classification cost), and its temperature is fitted on those averaged logits.
    """
    architecture = result.architecture
    model = KE2NT(architecture, result.class_embeddings, logit_scale=result.config.logit_scale)
    tensors, _ = load_weights(result.best_weights)
    # Batch norms put into dlib's backbone for training ship as the affines the run-time module has.
    tensors = fold_batchnorms(tensors, model.state_dict().keys())
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("neutral_transform.")})
    model.eval()
    # Calibrate what will ship: the stored (fp16) weights, read back as float32.
    stored = stored_tensors(model, half)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored.items()})
    logits = batched_logits(model, val.images, torch.device("cpu"))
    if flip_average:
        logits = (logits + batched_logits(model, np.ascontiguousarray(val.images[:, :, ::-1]), torch.device("cpu"))) / 2
    bias, adjustment = np.zeros(len(result.class_names)), None
    if adjust_prior and result.class_prior is not None:
        tau, temperature, grid = fit_prior_adjustment(logits, val.labels, result.class_prior, val.class_names)
        bias = -tau * np.log(result.class_prior)
        adjustment = {"tau": tau, "prior": [float(p) for p in result.class_prior], "grid": grid}
    else:
        temperature = fit_temperature(logits, val.labels)
    before = classification_report(softmax(logits), val.labels, val.class_names)
    after = classification_report(softmax(logits / temperature + bias), val.labels, val.class_names)
    config = result.config
    uses_text = get_method(config.method).uses_text  # the CE baseline's class vectors are no text's
    metadata = {
        "name": name,
        "method": config.method,
        "class_names": result.class_names,
        "prompts": result.prompts,
        "text_encoder": config.text_encoder if uses_text else None,
        "text_centered": config.center_text if uses_text else None,
        "crop": crop_metadata(architecture.crop, architecture.colour, architecture.input_size),
        "temperature": temperature,
        "class_bias": [float(b) for b in bias] if adjustment and adjustment["tau"] > 0 else None,
        "prior_adjustment": adjustment,
        "flip_average": flip_average,
        "fermon_version": fermon.__version__,
        "training": {
            "dataset": config.dataset,
            "split": "train",
            "images": result.train_images,
            "label_mode": config.label_mode,
            "epochs": config.epochs,
            "best_epoch": result.best_epoch,
            "selected_weights": result.selected,
            "batch_size": config.batch_size,
            "lr": config.learning_rate(),
            "seed": config.seed,
            "init": Path(config.init).name if config.init else None,
            "selected_on": config.val_split,
            "selection_score": config.select_on,
            "backbone_lr_scale": config.backbone_lr_scale,
            "backbone_norm": config.backbone_norm,
            "region_occlusion": config.region_occlusion,
            # A file name or an embedded model's name, never a path (checkpoints travel).
            "teachers": [Path(teacher).name for teacher in config.teachers] or None,
            "teacher_weight": config.teacher_weight if config.teachers else None,
            **({"notes": config.extra} if config.extra else {}),
        },
        "metrics": {
            "split": config.val_split,
            "n": after["n"],
            "accuracy": after["accuracy"],
            "mean_class_recall": after["mean_class_recall"],
            "accuracy_unadjusted": before["accuracy"],
            "mean_class_recall_unadjusted": before["mean_class_recall"],
            "nll_uncalibrated": before["nll"],
            "ece_uncalibrated": before["ece"],
            "nll": after["nll"],
            "ece": after["ece"],
        },
    }
    return save_checkpoint(out, model, metadata, half=half)
