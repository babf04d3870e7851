"""Stage: detected faces to model-ready crops. Pure geometry, no state, no I/O.

A crop is a similarity transform of the five landmarks onto a template (``fermon/data/crops.json``),
the way insightface's ``norm_crop`` does it for the ArcFace template, then the model's colour. The
template a model was trained with is recorded in its checkpoint (``metadata["crop"]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from fermon.errors import ModelError


@dataclass(frozen=True)
class CropSpec:
    """Where the landmarks land in the output, its size and colour."""

    points: np.ndarray  # (5, 2) float32, in output pixels
    size: int
    colour: str  # "gray" or "rgb"

    @classmethod
    def from_metadata(cls, crop: dict[str, Any]) -> CropSpec:
        return cls(np.asarray(crop["points"], dtype=np.float32), int(crop["size"]), crop["colour"])


def similarity_matrix(landmarks: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform taking the five landmarks onto the template points."""
    transform = SimilarityTransform.from_estimate(landmarks.astype(np.float64), points.astype(np.float64))
    return transform.params[:2, :].astype(np.float32)


def crop_face(image: np.ndarray, landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """One aligned crop, uint8 (size, size, C): C is 1 for gray, 3 for RGB."""
    matrix = similarity_matrix(landmarks, spec.points)
    warped = cv2.warpAffine(
        image, matrix, (spec.size, spec.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if spec.colour == "gray":
        return cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY)[:, :, None]
    return warped


def crop_faces(image: np.ndarray, landmarks: Sequence[np.ndarray], spec: CropSpec) -> np.ndarray:
    """Aligned crops of several faces of one image, stacked (N, size, size, C)."""
    channels = 1 if spec.colour == "gray" else 3
    if len(landmarks) == 0:
        return np.zeros((0, spec.size, spec.size, channels), np.uint8)
    return np.stack([crop_face(image, marks, spec) for marks in landmarks])


@cache
def _crop_templates() -> dict[str, Any]:
    text = resources.files("fermon").joinpath("data", "crops.json").read_text(encoding="utf-8")
    return json.loads(text)["templates"]


def crop_template(name: str) -> dict[str, Any]:
    """A named face-crop template: output size and five landmark positions in that output."""
    templates = _crop_templates()
    if name not in templates:
        raise ModelError(f"unknown crop template '{name}'; known: {', '.join(sorted(templates))}")
    return dict(templates[name])


def template_points(name: str, size: int | None = None) -> list[list[float]]:
    """The template's five landmark positions scaled to a ``size`` px crop (its own size by default)."""
    template = crop_template(name)
    scale = (size or template["size"]) / float(template["size"])
    return [[x * scale, y * scale] for x, y in template["points"]]
