"""A tiny ONNX model with SCRFD's interface, built with onnx.helper, that 'finds' one known face.

insightface's model router sends any ONNX file with nine outputs to its SCRFD class (three strides,
each with scores, box distances and five keypoints), so this exercises fermon's real SCRFD path:
routing, pre-processing, anchor decoding, NMS and rescaling are all insightface's own code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = 64  # the model's fixed input size; insightface resizes frames to it
STRIDES = (8, 16, 32)
ANCHORS = 2
FACE_CELL = (3, 4)  # (row, column) at stride 8: anchor centre x=32, y=24 in model input pixels
BOX_DISTANCE = 2.0  # left, top, right, bottom, in strides: a 32x32 box
KEYPOINTS = np.array([[-1.0, -0.8], [1.0, -0.8], [0.0, 0.2], [-0.8, 1.2], [0.8, 1.2]], np.float32)  # in strides


def expected_face(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The box (x1, y1, x2, y2) and landmarks (5, 2) the model reports, in a square image's pixels."""
    scale = image_size / INPUT
    centre = np.array([FACE_CELL[1] * 8, FACE_CELL[0] * 8], np.float32)
    half = BOX_DISTANCE * 8
    box = np.array([*(centre - half), *(centre + half)], np.float32) * scale
    return box, (centre + KEYPOINTS * 8) * scale


def _outputs() -> dict[str, np.ndarray]:
    outputs = {}
    for stride in STRIDES:
        cells = (INPUT // stride) ** 2 * ANCHORS
        scores = np.full((cells, 1), 0.01, np.float32)
        boxes = np.ones((cells, 4), np.float32)
        kps = np.zeros((cells, 10), np.float32)
        if stride == 8:
            face = (FACE_CELL[0] * (INPUT // 8) + FACE_CELL[1]) * ANCHORS
            scores[face] = 0.95
            boxes[face] = BOX_DISTANCE
            kps[face] = KEYPOINTS.reshape(-1)
        outputs[f"score_{stride}"], outputs[f"bbox_{stride}"], outputs[f"kps_{stride}"] = scores, boxes, kps
    return outputs


def write_tiny_scrfd(path: Path) -> Path:
    """Write the model; its outputs depend on the input only through a zero-weighted mean."""
    values = _outputs()
    order = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES]
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    for name in order:
        initializers.append(numpy_helper.from_array(values[name], f"{name}_const"))
        nodes.append(helper.make_node("Add", [f"{name}_const", "nothing"], [name]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, INPUT, INPUT])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(values[name].shape)) for name in order],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
