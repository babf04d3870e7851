"""Knowledge distillation: a teacher checkpoint's probabilities mixed into the training targets.

The teacher (e.g. the `accurate` dlib model) reads every training face once, at its own input size
and colour, and its calibrated probabilities (averaged over the face and its mirror image) are cached
under ``~/.cache/fermon/teachers``. The student then trains on
``(1 - weight) * votes + weight * teacher`` with its usual augmentation: soft targets that carry
what the teacher knows about similar classes, beside the annotators' votes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fermon.errors import UsageError
from fermon.expression.checkpoint import load_checkpoint
from fermon.expression.classify import ExpressionClassifier
from fermon.inputs.storage import atomic_path
from training.datasets import LabelledFaces, read_dataset

log = logging.getLogger("training")


def teacher_cache_dir() -> Path:
    return Path.home() / ".cache" / "fermon" / "teachers"


def teacher_probabilities(
    teacher: str, dataset: str, root: Path, limit: int | None, expected: LabelledFaces
) -> np.ndarray:
    """The teacher's calibrated, flip-averaged probabilities for ``expected``'s training faces, in order."""
    checkpoint = load_checkpoint(teacher)
    if checkpoint.class_names != expected.class_names:
        raise UsageError(f"teacher {checkpoint.path.name}: classes {checkpoint.class_names} differ from the data's")
    cache = teacher_cache_dir() / f"{checkpoint.short_hash}-{dataset}-{limit or 'all'}-{len(expected)}.npy"
    if cache.is_file():
        return np.load(cache)
    architecture = checkpoint.architecture
    faces = read_dataset(dataset, root, "train", architecture.input_size, architecture.colour, limit)
    if not np.array_equal(faces.labels, expected.labels):
        raise UsageError(f"teacher {checkpoint.path.name}: its reading of {dataset} is not the student's")
    # The classifier applies what the checkpoint says: temperature, prior adjustment, flip averaging.
    classifier = ExpressionClassifier(checkpoint, device="cpu", batch_size=256)
    log.info("teacher %s reads %d training faces", checkpoint.path.name, len(faces))
    probabilities = classifier.predict(faces.images)
    if not checkpoint.flip_average:
        probabilities = (probabilities + classifier.predict(np.ascontiguousarray(faces.images[:, :, ::-1]))) / 2
    with atomic_path(cache, suffix=".npy") as temporary:
        np.save(temporary, probabilities.astype(np.float32))
    return probabilities.astype(np.float32)


def mix_targets(votes: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * votes + weight * teacher``, rows summing to one."""
    if not 0.0 <= weight <= 1.0:
        raise UsageError(f"--teacher-weight must be in [0, 1], not {weight}")
    mixed = (1.0 - weight) * votes + weight * teacher
    return (mixed / mixed.sum(axis=1, keepdims=True)).astype(np.float32)
