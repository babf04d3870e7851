"""Still images through the same stages as video frames: detect, align, classify."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fermon.errors import InputError
from fermon.expression.classify import ExpressionClassifier
from fermon.faces.align import CropSpec, crop_faces
from fermon.faces.detector import FaceDetector


@dataclass
class FaceResult:
    """One face in one image: where it is, how sure the detector is, and the expression."""

    image: str
    box: tuple[float, float, float, float]
    det_score: float
    label: str
    confidence: float
    probabilities: dict[str, float]


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def classify_faces(
    image: np.ndarray, detector: FaceDetector, classifier: ExpressionClassifier, name: str = ""
) -> list[FaceResult]:
    """Every face the detector finds in one RGB image, with calibrated expression probabilities."""
    detections = detector.detect([image])[0]
    spec = CropSpec.from_metadata(classifier.checkpoint.metadata["crop"])
    probabilities = classifier.predict(crop_faces(image, detections.landmarks, spec))
    names = classifier.class_names
    results = []
    for box, score, probs in zip(detections.boxes, detections.scores, probabilities):
        best = int(np.argmax(probs))
        results.append(
            FaceResult(
                image=name,
                box=tuple(float(v) for v in box),
                det_score=float(score),
                label=names[best],
                confidence=float(probs[best]),
                probabilities={cls: float(p) for cls, p in zip(names, probs)},
            )
        )
    return results


def classify_image_files(
    paths: list[Path], detector: FaceDetector, classifier: ExpressionClassifier
) -> list[FaceResult]:
    return [face for path in paths for face in classify_faces(read_rgb(path), detector, classifier, path.name)]
