"""Where the networks run: ONNX Runtime sessions and providers for the detectors, the torch device for
the embedder and the classifier; and what the detectors share (the default score threshold, weight hashes)."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fermon.errors import UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_THRESHOLD = 0.5
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# Where no CPU flags say (not x86), bfloat16 is chosen only where a timed convolution runs clearly
# faster than float32: natively it is 2-3x faster, emulated slower. 1.3x leaves room for noise.
BFLOAT16_MIN_SPEEDUP = 1.3


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


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a usage error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def network_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The one precision rule for every network (classifier, face embedder, training): ``auto`` is
    float16 on CUDA and, on a CPU, bfloat16 where the CPU runs it natively (:func:`cpu_bfloat16_is_fast`),
    else float32. An explicit precision the device cannot run is a usage error."""
    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_bfloat16_is_fast() else torch.float32
    if precision == "float16" and device.type != "cuda":
        raise UsageError("--precision float16 runs on CUDA only; on a CPU use auto, bfloat16 or float32")
    return getattr(torch, precision)


@functools.cache
def cpu_bfloat16_is_fast() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively, clearly faster than float32.

    On x86 the CPU's own flags decide: AMX or AVX512-BF16 run bfloat16 natively (2-3x float32);
    without them oneDNN still reports bfloat16 support, but emulates it, slower than float32. Flags,
    not a timing, wherever they are known: every process of a run (a cluster's workers and the
    client) must choose alike, and a timing on a busy machine need not. Elsewhere (ARM, or no
    /proc/cpuinfo) a convolution is timed once per process (about 0.1 s)."""
    import torch

    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    flags = x86_flags()
    if flags is not None:
        return bool(flags & {"amx_bf16", "amx_tile", "avx512_bf16"})
    return _bfloat16_speedup() >= BFLOAT16_MIN_SPEEDUP


def x86_flags() -> set[str] | None:
    """The CPU's feature flags on x86 Linux, or None where they are not known."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def _bfloat16_speedup(rounds: int = 5) -> float:
    """float32 time over bfloat16 time of a convolution shaped like the classifier's middle layers:
    the best of ``rounds`` alternating tries each, on one thread, so a busy neighbour biases neither."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:

        def layer(dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor]:
            conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(dtype, memory_format=torch.channels_last)
            return conv, torch.randn(16, 64, 24, 24, dtype=dtype).contiguous(memory_format=torch.channels_last)

        variants = {dtype: layer(dtype) for dtype in (torch.float32, torch.bfloat16)}
        best = {dtype: float("inf") for dtype in variants}
        with torch.inference_mode():
            for conv, batch in variants.values():
                conv(batch)  # warm-up: oneDNN picks and caches its kernel on the first call
            for _ in range(rounds):
                for dtype, (conv, batch) in variants.items():
                    start = time.perf_counter()
                    conv(batch)
                    best[dtype] = min(best[dtype], time.perf_counter() - start)
        return best[torch.float32] / best[torch.bfloat16]
    finally:
        torch.set_num_threads(threads)
