"""Where to look for faces: the whole frame, or only around the faces of the sample before.

A detector that can search regions says so with ``supports_regions`` (see
:class:`fermon.faces.detector.FaceDetector`); the others search every frame whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fermon.faces.geometry import Detections

if TYPE_CHECKING:
    from fermon.faces.protocol import FaceDetector

# Between whole-frame detections a face is looked for only in a square around where it was: the
# square spans REGION_SPAN face sizes (room to move about a face width each way) and reaches the
# detector as REGION_INPUT pixels, so the face is seen at ~50 px whatever its size in the video.
# Six times fewer pixels than a 640x360 frame at half size.
REGION_SPAN = 2.5
REGION_INPUT = 128
MAX_TRACKED_FACES = 3  # more faces than this: the whole frame costs less than their regions


def region_matrix(box: np.ndarray) -> np.ndarray:
    """The 2x3 affine map from an image onto the REGION_INPUT square centred on ``box``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    k = REGION_INPUT / (REGION_SPAN * max(x2 - x1, y2 - y1, 1.0))
    half = REGION_INPUT / 2
    return np.array([[k, 0, half - k * (x1 + x2) / 2], [0, k, half - k * (y1 + y2) / 2]], np.float32)


def to_image(found: Detections, matrix: np.ndarray) -> Detections:
    """Detections in a region (mapped there by ``matrix``, from :func:`region_matrix`) back in image coordinates."""
    k, shift = matrix[0, 0], matrix[:, 2]
    boxes = (found.boxes - np.tile(shift, 2)) / k
    return Detections(boxes.astype(np.float32), found.scores, ((found.landmarks - shift) / k).astype(np.float32))


def detect_tracked(detector: FaceDetector, frames: Sequence[np.ndarray]) -> list[Detections]:
    """Faces in consecutive frames: the whole first frame, then only around the faces of the frame before.

    A frame after one without faces (or with more than MAX_TRACKED_FACES) is searched whole again, so
    a face that leaves and returns is found at once; a new face beside a tracked one is found at the
    next batch's first frame (8 samples later). Detectors without region search
    (``supports_regions`` false) search every frame whole.
    """
    results: list[Detections] = []
    for frame in frames:
        previous = results[-1] if results else None
        if not detector.supports_regions or previous is None or not 0 < len(previous) <= MAX_TRACKED_FACES:
            results.append(detector.detect([frame])[0])
        else:
            results.append(detector.detect_regions(frame, previous.boxes))
    return results


def detect_whole(detector: FaceDetector, frames: Sequence[np.ndarray]) -> list[Detections]:
    """Faces in every frame, each searched whole."""
    return detector.detect(list(frames))
