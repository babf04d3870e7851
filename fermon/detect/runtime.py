"""What the ONNX detectors share: the default score threshold, ONNX Runtime sessions, weight hashes."""

from __future__ import annotations

import hashlib
import os

DEFAULT_THRESHOLD = 0.5


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def session_options(threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def onnx_providers(device: str) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" else ["CPUExecutionProvider"]
    return [p for p in wanted if p in available]
