"""Measure a dataset's face framing as a crop template: where a detector puts the five landmarks.

FERPlus faces are loose 48x48 crops, not aligned ones. Run-time crops must frame faces the same
way, so the template is measured on the training faces themselves: each face is upscaled onto a
grey canvas (CenterFace needs context around a face), detected, and the median landmark positions
are taken, then made left-right symmetric.
"""

from __future__ import annotations

import numpy as np

from fermon.faces.detector import SEEN_FACE_PX, CenterFaceDetector
from training.datasets import LabelledFaces

FACE_PIXELS = 192  # a 48 px FERPlus face upscaled 4x
CANVAS = 320


def on_canvas(face: np.ndarray) -> tuple[np.ndarray, int, float]:
    """A face crop upscaled to FACE_PIXELS and centred on a grey RGB canvas; returns it, the offset and scale."""
    import cv2

    scale = FACE_PIXELS / face.shape[0]
    big = cv2.resize(face, (FACE_PIXELS, FACE_PIXELS), interpolation=cv2.INTER_CUBIC)
    if big.ndim == 2 or big.shape[2] == 1:
        big = np.repeat(big.reshape(FACE_PIXELS, FACE_PIXELS, 1), 3, axis=2)
    canvas = np.full((CANVAS, CANVAS, 3), 128, np.uint8)
    offset = (CANVAS - FACE_PIXELS) // 2
    canvas[offset : offset + FACE_PIXELS, offset : offset + FACE_PIXELS] = big
    return canvas, offset, scale


def measure_landmarks(faces: LabelledFaces, batch: int = 32) -> np.ndarray:
    """The best face's landmarks in each image where one is found, in the faces' own pixels: (M, 5, 2)."""
    detector = CenterFaceDetector(min_face=SEEN_FACE_PX)
    found = []
    for start in range(0, len(faces), batch):
        placed = [on_canvas(face) for face in faces.images[start : start + batch]]
        for (_, offset, scale), detections in zip(placed, detector.detect([canvas for canvas, _, _ in placed])):
            if len(detections):
                found.append((detections.landmarks[0] - offset) / scale)
    return np.asarray(found, dtype=np.float32).reshape(-1, 5, 2)


def symmetric_template(landmarks: np.ndarray, size: int) -> list[list[float]]:
    """Median positions, mirrored pairs averaged so the template is symmetric about the centre."""
    median = np.median(landmarks, axis=0)
    centre = size / 2
    eye_dx = (median[1, 0] - median[0, 0]) / 2
    mouth_dx = (median[4, 0] - median[3, 0]) / 2
    eye_y = (median[0, 1] + median[1, 1]) / 2
    mouth_y = (median[3, 1] + median[4, 1]) / 2
    points = [
        [centre - eye_dx, eye_y],
        [centre + eye_dx, eye_y],
        [centre, median[2, 1]],
        [centre - mouth_dx, mouth_y],
        [centre + mouth_dx, mouth_y],
    ]
    return [[round(float(x), 2), round(float(y), 2)] for x, y in points]
