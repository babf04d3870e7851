"""Stage: who each track is. Tracks of one person are joined into a person for the whole session.

A face is turned into an aligned 150x150 RGB chip for dlib's face-recognition ResNet
(:mod:`fermon.dlib_resnet`, run in torch) by mapping the detector's five landmarks onto the
``dlib150`` template of ``fermon/data/crops.json`` (measured: where CenterFace's points fall on
dlib's own chips). Each live track keeps only its few best chips (large, sharp, frontal); when the
track ends they are embedded and only the track's mean descriptor is kept, in memory. Tracks that
never overlap in time and whose descriptors are close are one person (average-linkage clustering
with the overlap as a cannot-link); a track without a good enough face joins the person whose
track ended just before it, or began just after it, at the same place and size.

Descriptors identify people: they stay in this process's memory and are never written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fermon.align import CropSpec, crop_faces
from fermon.errors import DataError
from fermon.track import TrackStats

IDENTITY_MODEL = "dlib_face_recognition_resnet_model_v1"
CHIP_TEMPLATE = "dlib150"
# Changes whenever linking could give other persons for the same faces (the run fingerprint holds it).
IDENTITY_VERSION = f"{IDENTITY_MODEL}/{CHIP_TEMPLATE}/1"

# Measured on fermon's own chips (benchmarks/identity_calibration.py, reports/identity-calibration.json):
# one face rendered twice as a video shows it is at most 0.38 from itself (99% below 0.35), two of the
# eight different colour faces at least 0.53 apart (99% above 0.57; FERPlus faces: 99% above 0.55).
# dlib's own 0.6 is for its own chips.
DISTANCE_THRESHOLD = 0.45
# The gates below which a face is not embedded (its track falls back to position): below them the
# same-face distance of 5% of faces passes 0.4 (48 px wide: 0.43, 40 px: 0.49; blur sigma 3 px on a
# 120 px face, sharpness about 0.17: 0.44; sigma 2 px, sharpness 0.25: 0.35).
MIN_EMBED_PX = 56.0  # face box width in video pixels
MIN_SHARPNESS = 0.2  # see face_quality
MIN_FRONTAL = 0.15  # nose within 0.68 eye distances of the eyes' middle: three-quarter views embed, profiles not
CHIPS_PER_TRACK = 3  # kept while a track is live; a short track embeds fewer (chips_to_embed)
MIN_TRACK_FACES = 3  # a track seen fewer times is not embedded (often a false detection)
CHIP_SPACING = 5  # samples between a track's kept chips, so they are not near copies of one another
EMBED_BATCH = 16
MAX_POSITION_GAP_S = 10.0  # position and size continuity links tracks at most this far apart
# ...and only where the face comes back within this many face sizes of where it went, at a similar size
# (stricter than tracking's own continuity: the gap leaves room for someone else to sit there).
MAX_POSITION_SHIFT = 0.75
MAX_SIZE_RATIO = 4 / 3
_SHARPNESS_PX = 64


@dataclass(frozen=True)
class FaceQuality:
    """How well a face would embed: its width in video pixels, how frontal it is, how sharp."""

    width: float
    frontal: float  # 1 looking at the camera, 0 in profile (from the landmarks: see frontal_score)
    sharpness: float  # edge energy over contrast of the face at 64 px; blurred or tiny faces score low

    @property
    def embeddable(self) -> bool:
        return self.width >= MIN_EMBED_PX and self.sharpness >= MIN_SHARPNESS and self.frontal >= MIN_FRONTAL

    @property
    def score(self) -> float:
        return min(self.width, 160.0) / 160.0 * self.frontal * min(1.0, self.sharpness / (2 * MIN_SHARPNESS))


@cache
def chip_spec() -> CropSpec:
    """The dlib150 template: 150x150 RGB, the five landmarks where CenterFace finds them on dlib's chips."""
    from fermon.vocab import crop_template

    return CropSpec.from_metadata({**crop_template(CHIP_TEMPLATE), "colour": "rgb"})


def face_chips(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib chips (N, 150, 150, 3) uint8 RGB of the faces with these five-point landmarks."""
    return crop_faces(image, landmarks, chip_spec())


def frontal_score(landmarks: np.ndarray) -> float:
    """1 when the nose and mouth sit midway between the eyes (along the eye line), falling to 0 when
    one is 0.8 eye distances off: a head turned to profile. A three-quarter view scores about 0.25."""
    points = np.asarray(landmarks, np.float64)
    across = points[1] - points[0]
    distance2 = float(across @ across)
    if distance2 < 1e-12:
        return 0.0
    middle = (points[0] + points[1]) / 2
    # Nose and mouth centre, along the eye line from the eyes' middle, in eye distances.
    offsets = np.abs((np.stack([points[2], (points[3] + points[4]) / 2]) - middle) @ across) / distance2
    return float(np.clip(1.0 - offsets.max() / 0.8, 0.0, 1.0))


def face_quality(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> list[FaceQuality]:
    """The quality of each face of one image. Cheap, as it runs on every face of every sample: the
    sharpness is measured on the face box shrunk (or grown) to 64 px grey, with no alignment."""
    height, width = image.shape[:2]
    qualities = []
    for box, marks in zip(boxes, landmarks):
        x1, y1 = int(max(0, box[0])), int(max(0, box[1]))
        x2, y2 = int(min(width, np.ceil(box[2]))), int(min(height, np.ceil(box[3])))
        sharpness = 0.0
        if x2 - x1 >= 4 and y2 - y1 >= 4:
            grey = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
            shrink = x2 - x1 > _SHARPNESS_PX
            grey = cv2.resize(
                grey, (_SHARPNESS_PX, _SHARPNESS_PX), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
            grey = grey.astype(np.float32)
            sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).std()) / (float(grey.std()) + 1.0)
        qualities.append(FaceQuality(float(box[2] - box[0]), frontal_score(marks), sharpness))
    return qualities


def chips_to_embed(faces: int) -> int:
    """How many of a finished track's kept chips are embedded: 1 under 5 s at 5 samples/s, up to 3."""
    if faces < MIN_TRACK_FACES:
        return 0
    return min(CHIPS_PER_TRACK, 1 + faces // 25)


# --------------------------------------------------------------------------- the model


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

        from fermon.classify import resolve_device
        from fermon.dlib_resnet import DlibResNet, dlib_weights_path, load_dlib_weights, read_dlib_network

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

        from fermon.dlib_resnet import dlib_input

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


# --------------------------------------------------------------------------- tracks into persons


@dataclass
class PersonLinks:
    """Each track's person (numbered by first appearance), and how many joins came from what."""

    person_of_track: dict[int, int]
    by_embedding: int = 0
    by_position: int = 0
    centroids: dict[int, np.ndarray] = field(default_factory=dict)  # person -> mean descriptor (in memory only)

    @property
    def persons(self) -> int:
        return len(set(self.person_of_track.values()))


class _Groups:
    """Union-find over tracks, keeping each group's tracks so that overlaps can be checked."""

    def __init__(self, tracks: Iterable[int]) -> None:
        self.parent = {t: t for t in tracks}
        self.members = {t: [t] for t in self.parent}

    def find(self, track: int) -> int:
        while self.parent[track] != track:
            self.parent[track] = self.parent[self.parent[track]]
            track = self.parent[track]
        return track

    def join(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.members[a] += self.members.pop(b)


def _cluster(ids: list[int], stats: Mapping[int, TrackStats], descriptors: Mapping[int, np.ndarray], threshold: float):
    """Average-linkage clustering of embedded tracks; tracks that overlap in time never share a cluster.

    Yields (a, b) for each join, closest first, while the closest clusters are nearer than ``threshold``.
    """
    if len(ids) < 2:
        return
    vectors = np.stack([descriptors[t] for t in ids]).astype(np.float64)
    distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    first = np.array([stats[t].first_sample for t in ids])
    last = np.array([stats[t].last_sample for t in ids])
    distance[(first[:, None] <= last[None]) & (first[None] <= last[:, None])] = np.inf  # includes the diagonal
    size = np.ones(len(ids))
    while True:
        i, j = divmod(int(np.argmin(distance)), len(ids))
        if not distance[i, j] < threshold:
            return
        # Lance-Williams for the average: an infinite (overlapping) member pair keeps the pair apart.
        merged = (size[i] * distance[i] + size[j] * distance[j]) / (size[i] + size[j])
        distance[i, :] = distance[:, i] = merged
        distance[j, :] = distance[:, j] = np.inf
        distance[i, i] = np.inf
        size[i] += size[j]
        yield ids[i], ids[j]


class _Spans:
    """The tracks' first and last samples, times and boxes as arrays, for vectorised comparisons."""

    def __init__(self, stats: Mapping[int, TrackStats]) -> None:
        self.ids = list(stats)
        self.index = {t: i for i, t in enumerate(self.ids)}
        self.first = np.array([stats[t].first_sample for t in self.ids])
        self.last = np.array([stats[t].last_sample for t in self.ids])
        self.start = np.array([stats[t].first_time for t in self.ids], np.float64)
        self.end = np.array([stats[t].last_time for t in self.ids], np.float64)
        self.first_box = np.stack([stats[t].first_box for t in self.ids]).astype(np.float64)
        self.last_box = np.stack([stats[t].last_box for t in self.ids]).astype(np.float64)

    def partners(self, track: int, max_gap_s: float) -> list[int]:
        """Tracks that end shortly before ``track`` starts (or start shortly after it ends) where it
        starts (ends), at a similar size; nearest in time first."""
        i = self.index[track]
        before = (self.last < self.first[i]) & (self.start[i] - self.end <= max_gap_s)
        after = (self.first > self.last[i]) & (self.start - self.end[i] <= max_gap_s)
        near = np.zeros(len(self.ids), bool)
        near[before] = same_place(self.last_box[before], self.first_box[i][None])
        near[after] = same_place(self.last_box[i][None], self.first_box[after])
        gaps = np.where(before, self.start[i] - self.end, self.start - self.end[i])
        return [self.ids[j] for j in np.flatnonzero(near)[np.argsort(gaps[near], kind="stable")]]

    def overlap(self, a: list[int], b: list[int]) -> bool:
        """Whether any track of ``a`` overlaps any track of ``b`` in time."""
        ia, ib = [self.index[t] for t in a], [self.index[t] for t in b]
        fa, la, fb, lb = self.first[ia], self.last[ia], self.first[ib], self.last[ib]
        return bool(((fa[:, None] <= lb[None]) & (fb[None] <= la[:, None])).any())


def same_place(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Whether face boxes ``after`` (N, 4) are where ``before`` (N or 1, 4) were, at about their size."""
    size_before = np.sqrt(np.maximum((before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1]), 1e-9))
    size_after = np.sqrt(np.maximum((after[:, 2] - after[:, 0]) * (after[:, 3] - after[:, 1]), 1e-9))
    centres = (after[:, :2] + after[:, 2:]) / 2 - (before[:, :2] + before[:, 2:]) / 2
    shift = np.linalg.norm(centres, axis=1) / size_before
    ratio = size_after / size_before
    return (shift <= MAX_POSITION_SHIFT) & (ratio >= 1 / MAX_SIZE_RATIO) & (ratio <= MAX_SIZE_RATIO)


def link_persons(
    stats: Mapping[int, TrackStats],
    descriptors: Mapping[int, np.ndarray],
    threshold: float = DISTANCE_THRESHOLD,
    max_gap_s: float = MAX_POSITION_GAP_S,
) -> PersonLinks:
    """Join tracks into persons: by descriptor where a track has one, else by position and size.

    Two tracks that overlap in time are never one person. Persons are numbered 0, 1, ... by their
    first track (tracks are numbered by first appearance).
    """
    groups = _Groups(stats)
    embedded = [t for t in stats if t in descriptors]
    by_embedding = 0
    for a, b in _cluster(embedded, stats, descriptors, threshold):
        groups.join(a, b)
        by_embedding += 1
    by_position = 0
    spans = _Spans(stats) if len(stats) > len(embedded) else None
    for track in sorted((t for t in stats if t not in descriptors), key=lambda t: stats[t].first_sample):
        for other in spans.partners(track, max_gap_s):
            mine, theirs = groups.find(track), groups.find(other)
            if mine != theirs and not spans.overlap(groups.members[mine], groups.members[theirs]):
                groups.join(theirs, mine)
                by_position += 1
                break
    roots = sorted({groups.find(t) for t in stats}, key=lambda r: min(groups.members[r]))
    number = {root: index for index, root in enumerate(roots)}
    person_of_track = {t: number[groups.find(t)] for t in stats}
    centroids = {}
    for root, person in number.items():
        vectors = [descriptors[t] for t in groups.members[root] if t in descriptors]
        if vectors:
            centroids[person] = np.mean(vectors, axis=0)
    return PersonLinks(person_of_track, by_embedding, by_position, centroids)


def nearest_person(reference: np.ndarray, links: PersonLinks, threshold: float = DISTANCE_THRESHOLD):
    """The person whose mean descriptor is nearest ``reference``, and that distance; None beyond ``threshold``."""
    if not links.centroids:
        return None, None
    persons = list(links.centroids)
    distances = np.linalg.norm(np.stack([links.centroids[p] for p in persons]) - reference[None], axis=1)
    best = int(np.argmin(distances))
    distance = float(distances[best])
    return (persons[best] if distance <= threshold else None), distance


# --------------------------------------------------------------------------- the reference photo

REFERENCE_MAX_SIDE = 1280  # photos are shrunk to this before detection: enough for a face, fast


def reference_descriptor(path: str | Path, detector: Any, embedder: FaceEmbedder) -> np.ndarray:
    """The descriptor of the largest face in a photo of the patient. Raises DataError without one."""
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path.name}: the reference photo is not a readable image")
    image = np.ascontiguousarray(image[:, :, ::-1])
    scale = REFERENCE_MAX_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    found = detector.detect([image])[0]
    if not len(found):
        raise DataError(f"{path.name}: no face found in the reference photo")
    areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
    largest = int(np.argmax(areas))
    return embedder.descriptors(face_chips(image, found.landmarks[largest][None]))[0]


def identity_footer(links: PersonLinks, tracks: int, embedded: int, chips: int, model: bool) -> dict[str, Any]:
    """What the timeline's footer says about linking: counts, the threshold and the model, no descriptors."""
    return {
        "model": IDENTITY_MODEL if model else None,
        "chip_template": CHIP_TEMPLATE if model else None,
        "distance_threshold": DISTANCE_THRESHOLD if model else None,
        "max_position_gap_s": MAX_POSITION_GAP_S,
        "max_position_shift": MAX_POSITION_SHIFT,
        "tracks": tracks,
        "tracks_embedded": embedded,
        "chips_embedded": chips,
        "persons": links.persons,
        "links": {"embedding": links.by_embedding, "position": links.by_position},
    }
