"""Evaluate a checkpoint on a labelled split: the image path (dataset crops as they are)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fermon.checkpoint import load_checkpoint
from fermon.classify import ExpressionClassifier
from training.datasets import LabelledFaces, read_dataset
from training.metrics import classification_report


def align_classes(
    probabilities: np.ndarray, model_classes: list[str], data: LabelledFaces
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Put model probabilities and dataset labels in one class space, matched by canonical name.

    The space is the dataset's classes, then any the model has beyond them: a prediction of a class
    the dataset lacks counts as wrong, and a dataset class the model lacks can never be right.
    """
    space = list(data.class_names) + [name for name in model_classes if name not in data.class_names]
    aligned = np.zeros((len(probabilities), len(space)), dtype=np.float64)
    for column, name in enumerate(model_classes):
        aligned[:, space.index(name)] = probabilities[:, column]
    return aligned, data.labels, space


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    root: str | Path,
    split: str,
    device: str = "auto",
    limit: int | None = None,
    corrupt: str | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class recall, confusion, ECE and NLL of a checkpoint on one split."""
    classifier = ExpressionClassifier(load_checkpoint(checkpoint), device=device, batch_size=256)
    architecture = classifier.architecture
    data = read_dataset(dataset, root, split, architecture.input_size, architecture.colour, limit)
    images = data.images
    if corrupt:
        from training.corruptions import apply_corruption

        crop = classifier.checkpoint.metadata["crop"]
        points = np.asarray(crop["points"], np.float32) * architecture.input_size / crop["size"]
        images = apply_corruption(corrupt, images, points, seed=0)
    probabilities, labels, space = align_classes(classifier.predict(images), classifier.class_names, data)
    report = classification_report(probabilities, labels, space)
    report.update(
        dataset=dataset,
        split=split,
        corruption=corrupt,
        checkpoint={
            "name": classifier.checkpoint.metadata.get("name"),
            "content_sha256": classifier.checkpoint.metadata["content_sha256"],
            "temperature": classifier.checkpoint.temperature,
        },
    )
    return report
