"""Which faces are good enough to embed, and their aligned chips for dlib's face-recognition network.

A face becomes a 150x150 RGB chip by mapping the detector's five landmarks onto the ``dlib150``
template of ``fermon/data/crops.json`` (measured: where CenterFace's points fall on dlib's own chips).
A face too small, blurred or turned away is not embedded; its track falls back to position.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from fermon.faces.align import CropSpec, crop_faces

IDENTITY_MODEL = "dlib_face_recognition_resnet_model_v1"
CHIP_TEMPLATE = "dlib150"

# The gates below which a face is not embedded (its track falls back to position): below them the
# same-face distance of 5% of faces passes 0.4 (48 px wide: 0.43, 40 px: 0.49; blur sigma 3 px on a
# 120 px face, sharpness about 0.17: 0.44; sigma 2 px, sharpness 0.25: 0.35).
MIN_EMBED_PX = 56.0  # face box width in video pixels
MIN_SHARPNESS = 0.2  # see face_quality
MIN_FRONTAL = 0.15  # nose within 0.68 eye distances of the eyes' middle: three-quarter views embed, profiles not
_SHARPNESS_PX = 64


@dataclass(frozen=True)
class FaceQuality:
    """How well a face would embed: its width in video pixels, how frontal it is, how sharp."""

    width: float
    frontal: float  # 1 looking at the camera, 0 in profile (from the landmarks: see frontal_score)
    sharpness: float  # edge energy over contrast of the face at 64 px; blurred or tiny faces score low

    @property
    def embeddable(self) -> bool:
        return self.width >= MIN_EMBED_PX and self.sharpness >= MIN_SHARPNESS and self.frontal >= MIN_FRONTAL

    @property
    def score(self) -> float:
        return min(self.width, 160.0) / 160.0 * self.frontal * min(1.0, self.sharpness / (2 * MIN_SHARPNESS))


@cache
def chip_spec() -> CropSpec:
    """The dlib150 template: 150x150 RGB, the five landmarks where CenterFace finds them on dlib's chips."""
    from fermon.faces.align import crop_template

    return CropSpec.from_metadata({**crop_template(CHIP_TEMPLATE), "colour": "rgb"})


def face_chips(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib chips (N, 150, 150, 3) uint8 RGB of the faces with these five-point landmarks."""
    return crop_faces(image, landmarks, chip_spec())


def frontal_score(landmarks: np.ndarray) -> float:
    """1 when the nose and mouth sit midway between the eyes (along the eye line), falling to 0 when
    one is 0.8 eye distances off: a head turned to profile. A three-quarter view scores about 0.25."""
    points = np.asarray(landmarks, np.float64)
    across = points[1] - points[0]
    distance2 = float(across @ across)
    if distance2 < 1e-12:
        return 0.0
    middle = (points[0] + points[1]) / 2
    # Nose and mouth centre, along the eye line from the eyes' middle, in eye distances.
    offsets = np.abs((np.stack([points[2], (points[3] + points[4]) / 2]) - middle) @ across) / distance2
    return float(np.clip(1.0 - offsets.max() / 0.8, 0.0, 1.0))


def face_quality(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> list[FaceQuality]:
    """The quality of each face of one image. Cheap, as it runs on every face of every sample: the
    sharpness is measured on the face box shrunk (or grown) to 64 px grey, with no alignment."""
    height, width = image.shape[:2]
    qualities = []
    for box, marks in zip(boxes, landmarks):
        x1, y1 = int(max(0, box[0])), int(max(0, box[1]))
        x2, y2 = int(min(width, np.ceil(box[2]))), int(min(height, np.ceil(box[3])))
        sharpness = 0.0
        if x2 - x1 >= 4 and y2 - y1 >= 4:
            grey = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
            shrink = x2 - x1 > _SHARPNESS_PX
            grey = cv2.resize(
                grey, (_SHARPNESS_PX, _SHARPNESS_PX), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
            grey = grey.astype(np.float32)
            sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).std()) / (float(grey.std()) + 1.0)
        qualities.append(FaceQuality(float(box[2] - box[0]), frontal_score(marks), sharpness))
    return qualities
