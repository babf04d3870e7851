"""Descriptors: dlib's face-recognition network in torch, chips in, 128 numbers out.

Descriptors identify people: they stay in this process's memory and are never written anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fermon.people.chips import IDENTITY_MODEL


class FaceEmbedder:
    """dlib's face-recognition ResNet in torch: chips in, 128-d descriptors out (dlib's distance scale).

    It runs in the precision of fermon's one rule (:func:`fermon.faces.runtime.network_dtype`): on a
    CPU with native bfloat16 (AVX512-BF16 or AMX) bfloat16, twice as fast as float32 on this project's
    CPUs; descriptors then move by about 0.01, against a linking threshold of 0.5.
    """

    name = IDENTITY_MODEL

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", precision: str = "auto") -> None:
        import torch

        from fermon.faces.runtime import network_dtype, resolve_device
        from fermon.people.dlib_resnet import DlibResNet, dlib_weights_path, load_dlib_weights, read_dlib_network

        self.device = resolve_device(device)
        model = DlibResNet()
        load_dlib_weights(model, read_dlib_network(weights or dlib_weights_path()))
        self.dtype = network_dtype(precision, self.device)
        self.precision = str(self.dtype).removeprefix("torch.")
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
