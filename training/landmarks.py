"""Facial landmarks for HNCL's heatmaps, from a model available offline.

A landmark source takes face crops (uint8, (N, H, W, C)) and returns landmarks in the crops' own
pixels, (N, P, 2) float32, with NaN rows where no face was found.

Sources (a registry; a new one is one class):

- ``centerface`` (used): fermon's own CenterFace detector (5 points: eyes, nose, mouth corners).
  FIELD-NOTES names ``mediapipe==0.10.14`` (468-point face mesh) as the richer choice, but it needs
  ``protobuf<5`` while the installed ``onnx`` 1.23 (which fermon's detector uses to load CenterFace)
  needs ``protobuf>=6.31.1``: the two cannot share one environment, so it was not installed.
  Small crops (FERPlus: 48x48) are upscaled onto a grey canvas first, as in
  :mod:`training.crop_template`, because CenterFace needs context around a face.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from fermon.errors import UsageError

log = logging.getLogger(__name__)

CANVAS = 320
FACE_SIDE = 192  # the crop's side on the canvas; 48 px faces are found far more often at 4x


class LandmarkSource(Protocol):
    name: str
    points: int

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Landmarks (N, points, 2) in each image's pixels; NaN where no face was found."""
        ...


def on_canvas(face: np.ndarray, side: int = FACE_SIDE, canvas: int = CANVAS) -> np.ndarray:
    """A face crop resized to ``side`` and centred on a grey RGB canvas."""
    image = face[:, :, 0] if face.ndim == 3 and face.shape[2] == 1 else face
    big = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
    if big.ndim == 2:
        big = np.repeat(big[:, :, None], 3, axis=2)
    out = np.full((canvas, canvas, 3), 128, np.uint8)
    offset = (canvas - side) // 2
    out[offset : offset + side, offset : offset + side] = big
    return out


class CenterFaceLandmarks:
    """The five CenterFace landmarks of the best-scoring face in each crop."""

    name = "centerface"
    points = 5

    def __init__(self, threshold: float = 0.5, batch: int = 32) -> None:
        from fermon.faces.detector import SEEN_FACE_PX, CenterFaceDetector

        self.detector = CenterFaceDetector(min_face=SEEN_FACE_PX, threshold=threshold)
        self.batch = batch

    def __call__(self, images: np.ndarray) -> np.ndarray:
        size = images.shape[1]
        offset = (CANVAS - FACE_SIDE) // 2
        out = np.full((len(images), self.points, 2), np.nan, np.float32)
        report_every = max(self.batch, (len(images) // 10) // self.batch * self.batch)  # about ten progress lines
        for start in range(0, len(images), self.batch):
            if start and start % report_every == 0:
                log.info("landmarks: %d of %d faces", start, len(images))
            canvases = [on_canvas(face) for face in images[start : start + self.batch]]
            for i, found in enumerate(self.detector.detect(canvases)):
                if len(found):
                    out[start + i] = (found.landmarks[0] - offset) * (size / FACE_SIDE)
        return out


LANDMARK_SOURCES: dict[str, Callable[[], LandmarkSource]] = {"centerface": CenterFaceLandmarks}


def create_landmark_source(name: str = "centerface") -> LandmarkSource:
    if name not in LANDMARK_SOURCES:
        raise UsageError(f"unknown landmark source '{name}'; known: {', '.join(sorted(LANDMARK_SOURCES))}")
    return LANDMARK_SOURCES[name]()
