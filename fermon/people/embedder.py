"""Descriptors: dlib's face-recognition network in torch, chips in, 128 numbers out.

Descriptors identify people: they stay in this process's memory and are never written anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fermon.people.chips import IDENTITY_MODEL


def _bfloat16_is_fast(device: Any) -> bool:
    import torch

    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class FaceEmbedder:
    """dlib's face-recognition ResNet in torch: chips in, 128-d descriptors out (dlib's distance scale).

    On a CPU with native bfloat16 (AVX512-BF16 or AMX) it runs in bfloat16, twice as fast as float32
    on this project's CPU; descriptors then move by about 0.01, against thresholds of 0.6.
    """

    name = IDENTITY_MODEL

    def __init__(self, weights: str | Path | None = None, device: str = "cpu") -> None:
        import torch

        from fermon.faces.runtime import resolve_device
        from fermon.people.dlib_resnet import DlibResNet, dlib_weights_path, load_dlib_weights, read_dlib_network

        self.device = resolve_device(device)
        model = DlibResNet()
        load_dlib_weights(model, read_dlib_network(weights or dlib_weights_path()))
        self.dtype = torch.bfloat16 if _bfloat16_is_fast(self.device) else torch.float32
        if self.device.type == "cuda":
            self.dtype = torch.float16
        self.model = model.eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """float32 (N, 128) descriptors of uint8 RGB chips (N, 150, 150, 3)."""
        import torch

        from fermon.people.dlib_resnet import dlib_input

        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        with torch.inference_mode():
            batch = dlib_input(chips).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
            return self.model.descriptor(batch).float().cpu().numpy()
