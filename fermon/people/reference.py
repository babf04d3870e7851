"""The patient's reference photo: its descriptor, and the person nearest it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fermon.errors import DataError
from fermon.people.chips import face_chips
from fermon.people.embedder import FaceEmbedder
from fermon.people.linking import DISTANCE_THRESHOLD, PersonLinks

REFERENCE_MAX_SIDE = 1280  # photos are shrunk to this before detection: enough for a face, fast


def nearest_person(
    reference: np.ndarray,
    links: PersonLinks,
    chips: Mapping[int, np.ndarray] | None = None,
    threshold: float = DISTANCE_THRESHOLD,
):
    """The person nearest ``reference``, and that distance; None beyond ``threshold``.

    A person's distance is the smaller of its mean descriptor's and the median of its three nearest
    individual chips' (``chips``: person -> (k, 128); the person's track descriptors without them): a
    photo taken in other light or pose may match some of the patient's faces (the ones like it)
    better than their mean, while one lookalike chip alone does not decide."""
    if not links.centroids:
        return None, None
    persons = list(links.centroids)
    distances = []
    for person in persons:
        to_mean = float(np.linalg.norm(links.centroids[person] - reference))
        own = (chips or {}).get(person)
        own = own if own is not None and len(own) else links.exemplars.get(person)
        nearest = np.sort(np.linalg.norm(own - reference[None], axis=1))[:3] if own is not None else []
        distances.append(min(to_mean, float(np.median(nearest))) if len(nearest) else to_mean)
    best = int(np.argmin(distances))
    distance = distances[best]
    return (persons[best] if distance <= threshold else None), distance


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
