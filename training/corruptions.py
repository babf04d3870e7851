"""Image corruptions for robustness evaluation (``evaluate --corrupt NAME``).

Regions follow the crop template the model was trained with: the eye band is placed on the
template's eye landmarks and the mouth box on its mouth corners, so "eyes" hides the eyes of an
aligned (or FERPlus-framed) face. Occluders are flat dark patches (a hand, a mask, a tube's tape).
Every corruption is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from fermon.errors import UsageError

OCCLUDER_VALUE = 0


def _eye_box(points: np.ndarray) -> tuple[int, int, int, int]:
    eye_distance = points[1, 0] - points[0, 0]
    eye_y = (points[0, 1] + points[1, 1]) / 2
    x1, x2 = points[0, 0] - 0.55 * eye_distance, points[1, 0] + 0.55 * eye_distance
    y1, y2 = eye_y - 0.4 * eye_distance, eye_y + 0.35 * eye_distance
    return round(x1), round(y1), round(x2), round(y2)


def _mouth_box(points: np.ndarray) -> tuple[int, int, int, int]:
    width = points[4, 0] - points[3, 0]
    mouth_y = (points[3, 1] + points[4, 1]) / 2
    x1, x2 = points[3, 0] - 0.45 * width, points[4, 0] + 0.45 * width
    y1, y2 = mouth_y - 0.5 * width, mouth_y + 0.6 * width
    return round(x1), round(y1), round(x2), round(y2)


def region_box(name: str, points: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """The clipped pixel box (x1, y1, x2, y2) that an 'eyes' or 'mouth' occlusion covers."""
    x1, y1, x2, y2 = (_eye_box if name == "eyes" else _mouth_box)(points)
    return max(0, x1), max(0, y1), min(size, x2), min(size, y2)


def _occlude_box(images: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    out = images.copy()
    x1, y1, x2, y2 = box
    out[:, y1:y2, x1:x2] = OCCLUDER_VALUE
    return out


def occlude_eyes(images: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _occlude_box(images, region_box("eyes", points, images.shape[1]))


def occlude_mouth(images: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _occlude_box(images, region_box("mouth", points, images.shape[1]))


def occlude_random(images: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square of a quarter of the image's area at a random place, per image."""
    out = images.copy()
    size = images.shape[1]
    side = size // 2
    for i in range(len(out)):
        top, left = rng.integers(0, size - side + 1, size=2)
        out[i, top : top + side, left : left + side] = OCCLUDER_VALUE
    return out


def blur(images: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma 1/24 of the image size (2 px at 48): a face out of focus or far away."""
    sigma = images.shape[1] / 24
    out = np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for image in images])
    return out.reshape(images.shape)


def low_light(images: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A night-time ward: a third of the light, with sensor noise."""
    dark = images.astype(np.float32) * 0.33 + rng.normal(0.0, 4.0, images.shape)
    return np.clip(dark, 0, 255).astype(np.uint8)


Corruption = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
CORRUPTIONS: dict[str, Corruption] = {
    "eyes": occlude_eyes,
    "mouth": occlude_mouth,
    "random": occlude_random,
    "blur": blur,
    "lowlight": low_light,
}


def apply_corruption(name: str, images: np.ndarray, points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Corrupt uint8 (N, H, W, C) images; ``points`` is the crop template at this size, (5, 2)."""
    if name not in CORRUPTIONS:
        raise UsageError(f"unknown corruption '{name}'; known: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](images, np.asarray(points, dtype=np.float32), np.random.default_rng(seed))
