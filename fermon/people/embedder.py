"""Descriptors: dlib's face-recognition network in torch, fed the best few chips of each track.

Each live track keeps only its few best chips (large, sharp, frontal); when the track ends they are
embedded and only the track's mean descriptor is kept, in memory, never written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fermon.faces.track import TrackStats
from fermon.people.chips import (
    CHIP_SPACING,
    CHIPS_PER_TRACK,
    EMBED_BATCH,
    IDENTITY_MODEL,
    chips_to_embed,
    face_chips,
    face_quality,
)


def _bfloat16_is_fast(device: Any) -> bool:
    import torch

    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class FaceEmbedder:
    """dlib's face-recognition ResNet in torch: chips in, 128-d descriptors out (dlib's distance scale).

    On a CPU with native bfloat16 (AVX512-BF16 or AMX) it runs in bfloat16, twice as fast as float32
    on this project's CPU; descriptors then move by about 0.01, against a threshold of 0.45.
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


# --------------------------------------------------------------------------- chips of live tracks


@dataclass
class _Candidate:
    score: float
    sample: int
    chip: np.ndarray


class TrackIdentities:
    """The best few chips of each live track, and the mean descriptor of each finished one.

    Memory is bounded: CHIPS_PER_TRACK chips per live track, EMBED_BATCH chips waiting to be
    embedded, and 128 floats per finished track. Without an embedder nothing is kept.
    """

    def __init__(self, embedder: FaceEmbedder | None) -> None:
        self.embedder = embedder
        self.kept: dict[int, list[_Candidate]] = {}
        self.chips_embedded = 0
        self._pending: list[tuple[int, np.ndarray]] = []
        self._sums: dict[int, np.ndarray] = {}
        self._counts: dict[int, int] = {}

    def observe(self, sample: int, image: np.ndarray, track_ids: np.ndarray, boxes: np.ndarray, landmarks) -> None:
        """Offer one sample's faces to their tracks' kept chips."""
        if self.embedder is None or not len(track_ids):
            return
        for index, quality in enumerate(face_quality(image, boxes, landmarks)):
            if quality.embeddable:
                self._offer(int(track_ids[index]), sample, quality.score, image, landmarks[index])

    def _offer(self, track: int, sample: int, score: float, image: np.ndarray, marks: np.ndarray) -> None:
        kept = self.kept.setdefault(track, [])
        near = [c for c in kept if abs(c.sample - sample) < CHIP_SPACING]
        if near:
            rival = min(near, key=lambda c: c.score)
        elif len(kept) < CHIPS_PER_TRACK:
            kept.append(_Candidate(score, sample, face_chips(image, marks[None])[0]))
            return
        else:
            rival = min(kept, key=lambda c: c.score)
        if score > rival.score:  # the chip is made only when it is kept
            kept[kept.index(rival)] = _Candidate(score, sample, face_chips(image, marks[None])[0])

    def end(self, tracks: Iterable[int], stats: Mapping[int, TrackStats]) -> None:
        """Tracks that will not be seen again: their best chips are queued and embedded in batches."""
        for track in tracks:
            kept = sorted(self.kept.pop(track, []), key=lambda c: -c.score)
            self._pending += [(track, c.chip) for c in kept[: chips_to_embed(stats[track].faces)]]
        # Whole batches during the session: one input shape, so the network's kernels are planned once.
        while len(self._pending) >= EMBED_BATCH:
            self._embed(EMBED_BATCH)

    def finish(self) -> dict[int, np.ndarray]:
        """Each embedded track's mean descriptor (after :meth:`end` for every track)."""
        self._embed(len(self._pending))
        return {track: total / self._counts[track] for track, total in self._sums.items()}

    def _embed(self, count: int) -> None:
        batch, self._pending = self._pending[:count], self._pending[count:]
        if not batch or self.embedder is None:
            return
        descriptors = self.embedder.descriptors(np.stack([chip for _, chip in batch]))
        for (track, _), descriptor in zip(batch, descriptors):
            self._sums[track] = self._sums.get(track, 0.0) + descriptor
            self._counts[track] = self._counts.get(track, 0) + 1
        self.chips_embedded += len(batch)
