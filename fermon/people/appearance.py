"""Appearance along every track: a track is one person.

Tracking links faces by geometry (:mod:`fermon.faces.track`); geometry cannot tell one person from
another who takes their place (a cut, a visitor in the chair the patient left, a nurse leaning over the
bed). So each live track carries the mean descriptor of its chips, and a face is embedded, before it
joins a track, whenever its continuation is in doubt:

- the tracker finds it doubtful (a jump rather than an overlap, two candidates, a return after missed
  samples, a new face while others are live);
- its aligned crop (the classifier's, so nothing new is cut) correlates poorly with the track's
  previous one: a cheap, per-sample sign that the face changed;
- the track has not been checked for ``CHECK_INTERVAL_S`` seconds: the steady cadence.

A face further than ``SAME_TRACK_MAX`` from a track's mean descriptor may not continue it (the track
is vetoed and the face starts another). Faces too small, blurred or turned away are not embedded
(:func:`~fermon.people.chips.face_quality`): geometry alone decides for them.

Memory is bounded: per live track a descriptor sum, a crop signature and a few chip descriptors; per
finished track its mean and those few chip descriptors. Nothing here is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fermon.faces.track import Proposal
from fermon.people.chips import face_chips, face_quality

if TYPE_CHECKING:
    from fermon.people.embedder import FaceEmbedder

# One chip against a track's mean: a face further than this is someone else. One person's chips across
# photos taken years apart are at most 0.52 apart, a mirrored or darker copy 0.26; two strangers' at
# least 0.55 (reports/identity-photos.json; see fermon.people.linking).
SAME_TRACK_MAX = 0.5
# A live track is embedded at least this often where a face allows it: the backstop. The signature
# below checks every sample at no cost, and catches a cut to someone else (one face's crops, jittered by
# 2 px, correlate above 0.98; two strangers' at most 0.66, in insightface's group photo); a person who
# walks in is caught by the tracker's doubt. One embedding costs about 7 ms on one core (2 ms in a
# batch of 16): once a second would cost 20% of the run (reports/performance.md), every 4 s about 7%.
CHECK_INTERVAL_S = 4.0
SIGNATURE_PX = 24  # crops are compared at this size, grey
# A face whose crop correlates less than this with its track's previous crop is embedded at once.
SIGNATURE_TRIGGER = 0.75
CHIPS_KEPT = 8  # chip descriptors a track keeps, spread over its life (the reference photo's matching)


def crop_signatures(crops: np.ndarray) -> np.ndarray:
    """(N, SIGNATURE_PX**2) zero-mean unit-norm grey thumbnails of aligned crops (N, H, W[, C])."""
    out = np.zeros((len(crops), SIGNATURE_PX * SIGNATURE_PX), np.float32)
    for index, crop in enumerate(crops):
        grey = (
            crop
            if crop.ndim == 2
            else (crop[..., 0] if crop.shape[-1] == 1 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))
        )
        small = cv2.resize(np.ascontiguousarray(grey), (SIGNATURE_PX, SIGNATURE_PX), interpolation=cv2.INTER_AREA)
        vector = small.astype(np.float32).ravel()
        vector -= vector.mean()
        out[index] = vector / (np.linalg.norm(vector) + 1e-6)
    return out


@dataclass
class TrackLook:
    """What a track looks like: the sum and count of its chips' descriptors, and a few of them."""

    total: np.ndarray = field(default_factory=lambda: np.zeros(128, np.float64))
    count: int = 0
    chips: list[np.ndarray] = field(default_factory=list)
    last_check: float = -np.inf
    signature: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        return (self.total / max(self.count, 1)).astype(np.float32)

    def add(self, descriptor: np.ndarray, timestamp: float) -> None:
        self.total += descriptor
        self.count += 1
        self.last_check = timestamp
        if len(self.chips) < CHIPS_KEPT:
            self.chips.append(descriptor.astype(np.float32))
        else:  # keep them spread over the track's life: replace every other one in turn
            self.chips[(self.count // 2) % CHIPS_KEPT] = descriptor.astype(np.float32)


@dataclass
class Look:
    """This sample's appearance evidence: each embedded face's descriptor, every face's crop signature,
    and the veto that keeps a face off a track whose person it is not."""

    descriptors: dict[int, np.ndarray]
    signatures: np.ndarray
    veto: np.ndarray | None


class TrackAppearance:
    """Per-track appearance for a session's loop: :meth:`look` before the tracker commits a sample,
    :meth:`record` after; :meth:`end` for tracks that ended; :meth:`finish` at the end."""

    def __init__(self, embedder: FaceEmbedder | None) -> None:
        self.embedder = embedder
        self.live: dict[int, TrackLook] = {}
        self.finished: dict[int, TrackLook] = {}
        self.chips_embedded = 0
        self.splits = 0  # faces kept off the track geometry gave them, because they are someone else

    def look(self, proposal: Proposal, frame: np.ndarray, landmarks: np.ndarray, crops: np.ndarray) -> Look:
        signatures = crop_signatures(crops) if len(crops) else np.zeros((0, SIGNATURE_PX**2), np.float32)
        if self.embedder is None or not len(proposal.boxes):
            return Look({}, signatures, None)
        rows = self._rows_to_embed(proposal, frame, landmarks, signatures)
        descriptors: dict[int, np.ndarray] = {}
        if rows:
            found = self.embedder.descriptors(face_chips(frame, landmarks[rows]))
            descriptors = dict(zip(rows, found))
            self.chips_embedded += len(rows)
        return Look(descriptors, signatures, self._veto(proposal, descriptors))

    def _rows_to_embed(
        self, proposal: Proposal, frame: np.ndarray, landmarks: np.ndarray, signatures: np.ndarray
    ) -> list[int]:
        qualities = face_quality(frame, proposal.boxes, landmarks)
        rows = []
        for row, quality in enumerate(qualities):
            if not quality.embeddable:
                continue
            candidate = self._geometric_best(proposal, row)
            look = self.live.get(candidate) if candidate is not None else None
            due = look is None or proposal.timestamp - look.last_check >= CHECK_INTERVAL_S
            changed = (
                look is not None
                and look.signature is not None
                and float(signatures[row] @ look.signature) < SIGNATURE_TRIGGER
            )
            if proposal.doubtful[row] or due or changed:
                rows.append(row)
        return rows

    @staticmethod
    def _geometric_best(proposal: Proposal, row: int) -> int | None:
        if not proposal.live or proposal.affinity[row].max() <= 0:
            return None
        return proposal.live[int(np.argmax(proposal.affinity[row]))]

    def _veto(self, proposal: Proposal, descriptors: dict[int, np.ndarray]) -> np.ndarray | None:
        if not descriptors or not proposal.live:
            return None
        veto = np.zeros(proposal.affinity.shape, bool)
        for col, track in enumerate(proposal.live):
            look = self.live.get(track)
            if look is None or look.count == 0:
                continue
            for row, descriptor in descriptors.items():
                if proposal.affinity[row, col] > 0:
                    veto[row, col] = float(np.linalg.norm(descriptor - look.mean)) > SAME_TRACK_MAX
        return veto

    def record(self, proposal: Proposal, look: Look, track_ids: np.ndarray) -> None:
        """Add this sample's evidence to the tracks the faces joined."""
        for row, track in enumerate(int(t) for t in track_ids):
            state = self.live.setdefault(track, TrackLook())
            if row < len(look.signatures):
                state.signature = look.signatures[row]
            if row in look.descriptors:
                state.add(look.descriptors[row], proposal.timestamp)
            if look.veto is not None and look.veto[row].any():
                best = self._geometric_best(proposal, row)
                if best is not None and best != track and look.veto[row, proposal.live.index(best)]:
                    self.splits += 1

    def end(self, tracks: Iterable[int]) -> None:
        """Tracks that will not be seen again keep their descriptors only."""
        for track in tracks:
            state = self.live.pop(track, None)
            if state is not None and state.count:
                state.signature = None
                self.finished[track] = state

    def finish(self) -> dict[int, TrackLook]:
        """Every embedded track's look (after the session's last sample)."""
        self.end(list(self.live))
        return self.finished
