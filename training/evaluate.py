"""Evaluate a checkpoint on a labelled split.

By default through the image path (the dataset's crops as they are). With ``via_detector`` each face
is cropped again the way ``fermon process`` crops a video frame (detected landmarks warped onto the
checkpoint's template), and the report says how the two paths compare on the same faces: a model
whose video crops differ from its training crops loses accuracy on video while its test score
looks fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fermon.expression.checkpoint import load_checkpoint
from fermon.expression.classify import ExpressionClassifier
from fermon.faces.align import CropSpec, crop_face
from fermon.faces.detector import SEEN_FACE_PX, CenterFaceDetector
from training.crop_template import on_canvas
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


def recrop_like_video(images: np.ndarray, spec: CropSpec, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Crop each face again as ``fermon process`` does; returns the crops and the indices of faces found.

    Each face is upscaled onto a grey canvas (a detector needs context around a face), CenterFace
    finds its landmarks, and they are warped onto the checkpoint's template from the canvas.
    """
    detector = CenterFaceDetector(min_face=SEEN_FACE_PX)
    crops, found = [], []
    for start in range(0, len(images), batch):
        canvases = [on_canvas(face)[0] for face in images[start : start + batch]]
        for offset, (canvas, detections) in enumerate(zip(canvases, detector.detect(canvases))):
            if len(detections):
                crops.append(crop_face(canvas, detections.landmarks[0], spec))
                found.append(start + offset)
    channels = 1 if spec.colour == "gray" else 3
    stacked = np.stack(crops) if crops else np.zeros((0, spec.size, spec.size, channels), np.uint8)
    return stacked, np.asarray(found, dtype=np.int64)


def _recrop_like_video(data: LabelledFaces, classifier: ExpressionClassifier) -> tuple[LabelledFaces, dict[str, Any]]:
    spec = CropSpec.from_metadata(classifier.checkpoint.metadata["crop"])
    crops, found = recrop_like_video(data.images, spec)
    same_faces = data.subset(found)
    image_probabilities = classifier.predict(same_faces.images)
    image_path = classification_report(*align_classes(image_probabilities, classifier.class_names, same_faces))
    same_faces.images = crops
    return same_faces, {
        "path": "video crop (detector landmarks onto the checkpoint's template)",
        "faces_detected": len(found),
        "faces_total": len(data),
        "image_path_accuracy_same_faces": image_path["accuracy"],
        "image_path_ece_same_faces": image_path["ece"],
        "image_path_mean_class_recall_same_faces": image_path["mean_class_recall"],
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    root: str | Path,
    split: str,
    device: str = "auto",
    limit: int | None = None,
    corrupt: str | None = None,
    via_detector: bool = False,
) -> dict[str, Any]:
    """Accuracy, per-class recall, confusion, ECE and NLL of a checkpoint on one split."""
    classifier = ExpressionClassifier(load_checkpoint(checkpoint), device=device, batch_size=256)
    architecture = classifier.architecture
    data = read_dataset(dataset, root, split, architecture.input_size, architecture.colour, limit)
    path_report: dict[str, Any] = {}
    if via_detector:
        data, path_report = _recrop_like_video(data, classifier)
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
        **path_report,
        checkpoint={
            "name": classifier.checkpoint.metadata.get("name"),
            "content_sha256": classifier.checkpoint.metadata["content_sha256"],
            "temperature": classifier.checkpoint.temperature,
        },
    )
    return report
