"""insightface's SCRFD from a model pack (``det_10g.onnx`` in ``buffalo_l``, ``det_500m.onnx`` in
``buffalo_s``), loaded through ``insightface.model_zoo.get_model``.

The packs are downloaded once by the user into ``~/.insightface/models/<pack>/`` (non-commercial
licence); nothing here downloads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from fermon.errors import ModelError
from fermon.faces.geometry import DEFAULT_MIN_FACE, Detections, detector_scale, scaled_size
from fermon.faces.runtime import DEFAULT_THRESHOLD, file_sha256, onnx_providers, session_options

DEFAULT_MODEL_DIR = Path("~/.insightface/models/buffalo_l")


def find_scrfd(path: Path) -> Path | None:
    """An SCRFD ONNX file: the path itself, or the ``det_*.onnx`` in a model-pack folder."""
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("det_*.onnx"))
        return found[0] if found else None
    return None


class ScrfdDetector:
    """insightface's SCRFD from a model file or a model-pack folder."""

    name: ClassVar[str] = "scrfd"
    supports_regions: ClassVar[bool] = False

    @classmethod
    def find_weights(cls, model_dir: str | os.PathLike[str] | None = None) -> Path | None:
        """The ``det_*.onnx`` in ``model_dir`` (default ``~/.insightface/models/buffalo_l``), if there is one."""
        return find_scrfd(Path(model_dir or DEFAULT_MODEL_DIR).expanduser())

    @classmethod
    def resolve_weights(cls, model_path: str | os.PathLike[str] | None = None) -> Path:
        """As :meth:`find_weights`, but a missing detector is a ModelError."""
        pack = Path(model_path or DEFAULT_MODEL_DIR).expanduser()
        found = find_scrfd(pack)
        if found is None:
            raise ModelError(f"{pack.name}: no SCRFD detector (det_*.onnx) found")
        return found

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        threshold: float = DEFAULT_THRESHOLD,
        min_face: float = DEFAULT_MIN_FACE,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        from insightface.model_zoo import model_zoo

        path = find_scrfd(Path(model_path).expanduser())
        if path is None:
            raise ModelError(f"{model_path}: no SCRFD detector (det_*.onnx) found")
        model = model_zoo.get_model(str(path), providers=onnx_providers(device), sess_options=session_options(threads))
        if model is None or getattr(model, "taskname", None) != "detection":
            raise ModelError(f"{path.name}: insightface does not recognise it as a face detector")
        model.prepare(ctx_id=0 if device != "cpu" else -1, det_thresh=threshold, input_size=(640, 640))
        self.model = model
        self.scale = detector_scale(min_face)
        self.threshold = threshold
        self.weights_sha256 = file_sha256(path)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results = []
        for image in images:
            height, width = image.shape[:2]
            in_h, in_w = scaled_size(height, width, self.scale)
            boxes, landmarks = self.model.detect(image[:, :, ::-1].copy(), input_size=(in_w, in_h))
            if boxes is None or len(boxes) == 0:
                results.append(Detections.empty())
                continue
            order = np.argsort(-boxes[:, 4])
            marks = landmarks[order] if landmarks is not None else np.zeros((len(order), 5, 2), np.float32)
            results.append(
                Detections(
                    boxes[order, :4].astype(np.float32), boxes[order, 4].astype(np.float32), marks.astype(np.float32)
                )
            )
        return results

    def detect_regions(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """Not available: SCRFD searches whole images only (``supports_regions`` is false)."""
        raise NotImplementedError("SCRFD searches whole images only; check supports_regions first")
