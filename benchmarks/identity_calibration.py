"""Measure what fermon's identity stage needs: the chip template, the distance threshold, the gates.

    python benchmarks/identity_calibration.py template [--ferplus ROOT]   # prints the dlib150 template
    python benchmarks/identity_calibration.py threshold [--ferplus ROOT] [--out reports/identity-calibration.json]
    python benchmarks/identity_calibration.py photos --photos DIR [--out reports/identity-photos.json]

``template``: dlib's own alignment (HOG detector, ``shape_predictor_5_face_landmarks``,
``dlib.get_face_chip`` at 150 px with padding 0.25, as ``compute_face_descriptor`` expects) on real
faces, then fermon's CenterFace on each chip; the median CenterFace landmarks, made left-right
symmetric, are where fermon must put the detected points so that its chips match dlib's. Faces: every
face of insightface's ``t1`` and ``Tom_Hanks_54745`` and scikit-image's astronaut (and each mirrored),
plus FERPlus training faces when ``--ferplus`` is given (48 px grey, upscaled 4x on a grey canvas).

``threshold``: fermon's own chips (CenterFace landmarks onto the template, :mod:`fermon.people.chips`) of
the eight colour faces, each rendered as a video would show it (face widths 56 to 160 px in a grey
640x360 frame, small rotations, blur, JPEG compression, mirrored), embedded by fermon's torch port of
dlib's ResNet. Same-face distances (one face, two renderings) against different-face distances
(two faces, and FERPlus faces against each other when given), and how the same-face distance grows
as faces get smaller or blurrier: the embedding gates. dlib is needed only for ``template``.

``photos``: real variation of one person, which one face rendered twice cannot show. ``--photos DIR``
holds photos named ``<person>*.jpg`` (face_recognition 1.3.0's source distribution ships five of one
man and one of another in ``tests/test_images/``: ``pip download --no-deps --no-binary :all:
face_recognition==1.3.0``); every pair of their largest faces' chips, same person against different
people, and the faces of insightface's group photo (six different people, about 100 px wide).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np

COLOUR_SOURCES = ("insightface:t1", "insightface:Tom_Hanks_54745", "skimage:astronaut")


def colour_photos() -> dict[str, np.ndarray]:
    from insightface.data import get_image
    from skimage import data

    return {
        "insightface:t1": np.ascontiguousarray(get_image("t1")[:, :, ::-1]),
        "insightface:Tom_Hanks_54745": np.ascontiguousarray(get_image("Tom_Hanks_54745")[:, :, ::-1]),
        "skimage:astronaut": data.astronaut(),
    }


def ferplus_faces(root: Path, count: int, split: str = "FER2013Train") -> list[np.ndarray]:
    """FERPlus faces, 48 px grey, upscaled 4x into the middle of a grey canvas, as RGB."""
    faces = []
    for path in sorted((root / "data" / split).glob("*.png"))[:count]:
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        canvas = np.full((320, 320), 128, np.uint8)
        canvas[64:256, 64:256] = cv2.resize(grey, (192, 192), interpolation=cv2.INTER_CUBIC)
        faces.append(cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB))
    return faces


# --------------------------------------------------------------------------- the template


def dlib_chips(images: list[np.ndarray], min_score: float = 0.5) -> list[np.ndarray]:
    """dlib's 150 px chips (get_face_chip, padding 0.25) of every face dlib's HOG detector finds."""
    import dlib

    from fermon.people.dlib_resnet import dlib_weights_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_weights_path().with_name("shape_predictor_5_face_landmarks.dat")))
    chips = []
    for image in images:
        boxes, scores, _ = detector.run(image, 1, 0)
        for box, score in zip(boxes, scores):
            if score >= min_score:
                chips.append(dlib.get_face_chip(image, predictor(image, box), size=150, padding=0.25))
    return chips


def centerface_on_chips(chips: list[np.ndarray]) -> np.ndarray:
    """CenterFace's five landmarks on each chip (placed on a grey 300 px canvas), in chip pixels."""
    from fermon.faces.detector import CenterFaceDetector

    detector = CenterFaceDetector(threads=1, min_face=32)
    found = []
    for chip in chips:
        canvas = np.full((300, 300, 3), 128, np.uint8)
        canvas[75:225, 75:225] = chip
        faces = detector.detect([canvas])[0]
        if len(faces):
            found.append(faces.landmarks[0] - 75)
    return np.stack(found)


def symmetric(points: np.ndarray, size: int) -> np.ndarray:
    """Left-right symmetric landmark positions: each pair averaged with its mirror image."""
    mirrored = points[[1, 0, 2, 4, 3]].copy()
    mirrored[:, 0] = size - mirrored[:, 0]
    return (points + mirrored) / 2


def measure_template(ferplus: Path | None, ferplus_count: int) -> dict:
    photos = list(colour_photos().values())
    photos += [np.ascontiguousarray(p[:, ::-1]) for p in photos]
    colour = dlib_chips(photos)
    grey = dlib_chips(ferplus_faces(ferplus, ferplus_count)) if ferplus else []
    marks = centerface_on_chips(colour + grey).astype(np.float64)
    median = np.median(marks, axis=0)
    points = symmetric(median, 150)
    spread = np.median(np.abs(marks - median), axis=0)
    return {
        "colour_chips": len(colour),
        "ferplus_chips": len(grey),
        "faces_with_landmarks": len(marks),
        "median": np.round(median, 2).tolist(),
        "points": np.round(points, 2).tolist(),
        "median_absolute_deviation": np.round(spread, 2).tolist(),
    }


# --------------------------------------------------------------------------- the threshold


def colour_faces() -> list[tuple[np.ndarray, np.ndarray]]:
    """(head crop, its box inside the crop) for each of the eight colour faces, found by CenterFace."""
    from fermon.faces.detector import CenterFaceDetector

    detector = CenterFaceDetector(threads=1, min_face=16)
    heads = []
    for image in colour_photos().values():
        found = detector.detect([image])[0]
        for box in found.boxes:
            x1, y1, x2, y2 = box
            side = 1.8 * max(x2 - x1, y2 - y1)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            c, d = int(min(image.shape[1], cx + side / 2)), int(min(image.shape[0], cy + side / 2))
            heads.append((image[b:d, a:c].copy(), np.array([x1 - a, y1 - b, x2 - a, y2 - b])))
    return heads


def render(head: np.ndarray, box: np.ndarray, width: float, rng: np.random.Generator, blur: float = 0.0) -> np.ndarray:
    """One head in a grey 640x360 frame with its face ``width`` px wide, rotated a little, maybe blurred
    and mirrored, then JPEG-compressed as a recording would be."""
    scale = width / float(box[2] - box[0])
    patch = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    angle = rng.uniform(-10, 10)
    h, w = patch.shape[:2]
    patch = cv2.warpAffine(patch, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h), borderValue=(128,) * 3)
    if rng.random() < 0.5:
        patch = np.ascontiguousarray(patch[:, ::-1])
    frame = np.full((360, 640, 3), 128, np.uint8)
    h, w = min(h, 360), min(w, 640)
    x, y = int(rng.integers(0, 640 - w + 1)), int(rng.integers(0, 360 - h + 1))
    frame[y : y + h, x : x + w] = patch[:h, :w]
    if blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    _, jpeg = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 90))])
    return np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])


def embed_rendered(frames: list[np.ndarray], embedder, detector) -> tuple[np.ndarray, list[dict]]:
    """Descriptors and quality of the best-scored face of each frame (frames without a face dropped)."""
    from fermon.people.chips import face_chips, face_quality

    chips, qualities = [], []
    for frame in frames:
        found = detector.detect([frame])[0]
        if not len(found):
            qualities.append(None)
            continue
        quality = face_quality(frame, found.boxes[:1], found.landmarks[:1])[0]
        qualities.append({"width": quality.width, "frontal": quality.frontal, "sharpness": quality.sharpness})
        chips.append(face_chips(frame, found.landmarks[:1])[0])
    descriptors = embedder.descriptors(np.stack(chips)) if chips else np.zeros((0, 128), np.float32)
    return descriptors, qualities


def percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    marks = (0, 1, 5, 50, 95, 99, 100)
    return {f"p{p}": round(float(np.percentile(values, p)), 4) for p in marks}


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[:, None] - b[None], axis=2)


def measure_threshold(ferplus: Path | None, ferplus_count: int, renders: int) -> dict:
    from fermon.faces.detector import CenterFaceDetector
    from fermon.people.embedder import FaceEmbedder

    rng = np.random.default_rng(0)
    detector = CenterFaceDetector(threads=1, min_face=24)
    embedder = FaceEmbedder()
    heads = colour_faces()
    # Good renderings: faces 72 to 160 px, sharp or lightly blurred.
    good: list[np.ndarray] = []
    for head, box in heads:
        frames = [render(head, box, rng.uniform(72, 160), rng, rng.choice([0.0, 0.0, 0.7])) for _ in range(renders)]
        good.append(embed_rendered(frames, embedder, detector)[0])
    same = np.concatenate([pairwise(d, d)[np.triu_indices(len(d), 1)] for d in good])
    different = np.concatenate(
        [pairwise(good[i], good[j]).ravel() for i in range(len(good)) for j in range(i + 1, len(good))]
    )
    result: dict = {
        "faces": len(heads),
        "renders_per_face": renders,
        "same_face": percentiles(same),
        "different_faces": percentiles(different),
    }
    if ferplus:
        grey = ferplus_faces(ferplus, ferplus_count, "FER2013Valid")
        descriptors, _ = embed_rendered(grey, embedder, detector)
        distances = pairwise(descriptors, descriptors)[np.triu_indices(len(descriptors), 1)]
        result["ferplus_different_faces"] = {"faces": len(descriptors), **percentiles(distances)}
    # How the same-face distance (to the face's own good renderings) grows with smaller or blurrier faces.
    by_width, by_blur = {}, {}
    for width in (24, 32, 40, 48, 56, 64, 80):
        distances, sharp = [], []
        for (head, box), reference in zip(heads, good):
            frames = [render(head, box, width, rng) for _ in range(4)]
            descriptors, qualities = embed_rendered(frames, embedder, detector)
            if len(descriptors):
                distances.append(pairwise(descriptors, reference).mean(axis=1))
        by_width[str(width)] = percentiles(np.concatenate(distances)) if distances else {}
    for blur in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0):
        distances, sharp = [], []
        for (head, box), reference in zip(heads, good):
            frames = [render(head, box, 120, rng, blur) for _ in range(4)]
            descriptors, qualities = embed_rendered(frames, embedder, detector)
            sharp += [q["sharpness"] for q in qualities if q]
            if len(descriptors):
                distances.append(pairwise(descriptors, reference).mean(axis=1))
        by_blur[str(blur)] = {
            **(percentiles(np.concatenate(distances)) if distances else {}),
            "median_sharpness": round(float(np.median(sharp)), 4) if sharp else math.nan,
        }
    result["same_face_by_width_px"] = by_width
    result["same_face_by_blur_sigma_at_120px"] = by_blur
    return result


def measure_photos(folder: Path) -> dict:
    import re

    from insightface.data import get_image

    from fermon.faces.detector import CenterFaceDetector
    from fermon.people.chips import face_chips
    from fermon.people.embedder import FaceEmbedder

    detector, embedder = CenterFaceDetector(threads=1), FaceEmbedder()
    names, descriptors = [], []
    for path in sorted(folder.glob("*.jpg")):
        photo = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        found = detector.detect([photo])[0]
        if not len(found):
            continue
        largest = int(np.argmax((found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])))
        descriptors.append(embedder.descriptors(face_chips(photo, found.landmarks[largest][None]))[0])
        names.append(path.stem)
    person = [re.sub(r"[0-9_].*$", "", name) for name in names]
    distances = pairwise(np.stack(descriptors), np.stack(descriptors))
    same, different = [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (same if person[i] == person[j] else different).append(float(distances[i, j]))
    group = np.ascontiguousarray(get_image("t1")[:, :, ::-1])
    faces = detector.detect([group])[0]
    group_descriptors = embedder.descriptors(face_chips(group, faces.landmarks))
    crowd = pairwise(group_descriptors, group_descriptors)[np.triu_indices(len(faces), 1)]
    return {
        "photos": names,
        "same_person": {"min": min(same), "max": max(same), "count": len(same)},
        "different_people": {"min": min(different), "max": max(different), "count": len(different)},
        "group_photo_different_people": {"min": float(crowd.min()), "max": float(crowd.max()), "count": len(crowd)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("template", "threshold", "photos"))
    parser.add_argument("--photos", type=Path, help="photos named <person>*.jpg, for 'photos'")
    parser.add_argument("--ferplus", type=Path, help="a FERPlus root (data/FER2013Train, data/FER2013Valid)")
    parser.add_argument("--ferplus-count", type=int, default=400)
    parser.add_argument("--renders", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.what == "template":
        result = measure_template(args.ferplus, args.ferplus_count)
    elif args.what == "photos":
        result = measure_photos(args.photos)
    else:
        result = measure_threshold(args.ferplus, args.ferplus_count, args.renders)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
