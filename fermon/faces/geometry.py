"""Pure geometry shared by the detectors: the Detections record, the detector's input size, and NMS.

No I/O and no state: boxes in, boxes out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The smallest face, in video pixels, that a run must find; frames are scaled so that such a face
# reaches the detector at SEEN_FACE_PX. CenterFace finds faces from about 32 px wide in its input
# (reports/performance/detector-size.json): 64 means half size, 320x192 for a 640x360 camera, four
# times faster than full size.
DEFAULT_MIN_FACE = 64.0
SEEN_FACE_PX = 32


@dataclass
class Detections:
    """Faces found in one image, in its pixel coordinates, sorted by score (highest first)."""

    boxes: np.ndarray  # (N, 4) float32: x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N, 5, 2) float32

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def detector_scale(min_face: float) -> float:
    """How much frames are shrunk for the detector so that ``min_face`` pixels still reach it at SEEN_FACE_PX."""
    if min_face <= 0:
        raise ValueError("min_face must be positive")
    return min(1.0, SEEN_FACE_PX / min_face)


def scaled_size(height: int, width: int, scale: float, stride: int = 32) -> tuple[int, int]:
    """The detector's input size: the frame scaled by ``scale``, both sides rounded up to multiples of ``stride``."""
    return (
        max(stride, int(np.ceil(height * scale / stride)) * stride),
        max(stride, int(np.ceil(width * scale / stride)) * stride),
    )


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes that non-maximum suppression keeps, best score first: OpenCV's NMS, which
    keeps what torchvision's does (the same IoU, the same ties; tests/fermon/faces) without importing
    torchvision, whose import (torch._dynamo with it) costs seconds of every run's start-up."""
    import cv2

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    rects = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    # Every detection has a positive score: 0 filters nothing (OpenCV refuses a negative one).
    kept = cv2.dnn.NMSBoxes(rects.tolist(), np.asarray(scores, np.float64).tolist(), 0.0, float(iou))
    return np.asarray(kept, np.int64).reshape(-1)


def merge(parts: list[Detections], shape: tuple[int, ...], iou: float) -> Detections:
    """Detections from overlapping regions as one set: clipped to the image, duplicates removed, best first."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([part.boxes for part in parts])
    boxes = np.clip(boxes, 0, [shape[1], shape[0], shape[1], shape[0]]).astype(np.float32)
    scores = np.concatenate([part.scores for part in parts])
    landmarks = np.concatenate([part.landmarks for part in parts])
    keep = nms(boxes, scores, iou)
    return Detections(boxes[keep], scores[keep], landmarks[keep])
