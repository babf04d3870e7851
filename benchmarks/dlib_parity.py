"""fermon's torch port of dlib's face-recognition ResNet against dlib itself, on 100 aligned face chips.

    python benchmarks/dlib_parity.py [--ferplus ~/.cache/fermon/ferplus] [--out reports/dlib-parity.json]

Chips are 150x150 RGB, as ``dlib.face_recognition_model_v1.compute_face_descriptor`` takes them:

- colour faces: insightface's group photo ``t1`` and ``Tom_Hanks_54745``, scikit-image's astronaut,
  each face found by dlib's HOG detector, its 5 landmarks by dlib's ``shape_predictor_5_face_landmarks``
  and cut out by ``dlib.get_face_chip`` (dlib's own alignment), and each chip mirrored as well;
- FERPlus validation faces (48 px grey) upscaled to 150 and copied into three channels, to make up 100.

For each chip: the cosine between fermon's descriptor (``DlibResNet.descriptor``, weights read by
fermon's own parser) and dlib's, and the largest absolute difference. The grey faces also go through
the one-channel model (``in_chans=1``, the first convolution's weights summed over RGB), fed the grey
image alone, against dlib on the three-channel copy. At 150 px the feature maps run 72, 35, 17, 8,
4 and 2: odd sizes pool (35 -> 17) and a stride-2 block's 3x3 output is zero-padded to its 4x4
shortcut, so dlib's pooling and padding conventions are both exercised. No image is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import cv2
import dlib
import numpy as np
import torch
from insightface.data import get_image
from skimage import data

from fermon.people.dlib_resnet import (
    CHIP_SIZE,
    DLIB_GRAY_MEAN,
    DLIB_INPUT_SCALE,
    DlibResNet,
    dlib_input,
    dlib_weights_path,
    load_dlib_weights,
    read_dlib_network,
)

TOTAL = 100
DETECTOR_MIN_SCORE = 0.5  # the astronaut's suit holds a second, weak HOG detection (0.12) that is no face


def shape_predictor_path() -> Path:
    return dlib_weights_path().with_name("shape_predictor_5_face_landmarks.dat")


def colour_chips() -> tuple[list[np.ndarray], list[str]]:
    """dlib-aligned 150 px chips of every face in the packaged photographs, each also mirrored."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(shape_predictor_path()))
    photos = {
        "insightface:t1": get_image("t1")[:, :, ::-1],
        "insightface:Tom_Hanks_54745": get_image("Tom_Hanks_54745")[:, :, ::-1],
        "skimage:astronaut": data.astronaut(),
    }
    chips, names = [], []
    for source, photo in photos.items():
        photo = np.ascontiguousarray(photo)
        boxes, scores, _ = detector.run(photo, 1, 0)
        for index, (box, score) in enumerate(zip(boxes, scores)):
            if score < DETECTOR_MIN_SCORE:
                continue
            chip = dlib.get_face_chip(photo, predictor(photo, box), size=CHIP_SIZE, padding=0.25)
            chips += [chip, np.ascontiguousarray(chip[:, ::-1])]
            names += [f"{source}#{index}", f"{source}#{index}:mirrored"]
    return chips, names


def ferplus_chips(root: Path, count: int) -> tuple[list[np.ndarray], list[str]]:
    """The first ``count`` FERPlus validation faces, 48 px grey upscaled to 150, as grey images."""
    paths = sorted((root / "data" / "FER2013Valid").glob("*.png"))[:count]
    if len(paths) < count:
        raise SystemExit(f"{root}: needs {count} FERPlus validation faces, found {len(paths)}")
    faces = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths]
    grey = [cv2.resize(face, (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_CUBIC) for face in faces]
    return grey, [f"ferplus:FER2013Valid/{path.name}" for path in paths]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def summary(ours: np.ndarray, reference: np.ndarray) -> dict:
    cos = cosine(ours, reference)
    return {
        "faces": len(cos),
        "cosine_min": float(cos.min()),
        "cosine_median": float(np.median(cos)),
        "max_abs_difference": float(np.abs(ours - reference).max()),
        "faces_below_0.999": int((cos < 0.999).sum()),
        "per_face_cosine": [round(float(c), 9) for c in cos],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=Path.home() / ".cache" / "fermon" / "ferplus")
    parser.add_argument("--out", type=Path, default=Path("reports/dlib-parity.json"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    weights = dlib_weights_path()
    colour, colour_names = colour_chips()
    grey, grey_names = ferplus_chips(args.ferplus, TOTAL - len(colour))
    chips = np.stack(colour + [np.repeat(face[:, :, None], 3, axis=2) for face in grey])
    names = colour_names + grey_names

    reference_model = dlib.face_recognition_model_v1(str(weights))
    started = time.perf_counter()
    reference = np.array(reference_model.compute_face_descriptor(list(chips)), dtype=np.float64)
    dlib_seconds = time.perf_counter() - started

    network = read_dlib_network(weights)
    rgb = DlibResNet(in_chans=3).eval()
    load_dlib_weights(rgb, network)
    started = time.perf_counter()
    ours = rgb.descriptor(dlib_input(chips, network.means)).double().numpy()
    torch_seconds = time.perf_counter() - started

    gray = DlibResNet(in_chans=1).eval()
    load_dlib_weights(gray, network)
    grey_batch = (torch.from_numpy(np.stack(grey)).float()[:, None] - DLIB_GRAY_MEAN) / DLIB_INPUT_SCALE
    ours_gray = gray.descriptor(grey_batch).double().numpy()

    result = summary(ours, reference)
    report = {
        "what": "cosine between fermon's DlibResNet descriptor and dlib's compute_face_descriptor, per 150 px chip",
        "target": "cosine >= 0.999 for every face",
        "passed": result["faces_below_0.999"] == 0,
        "dlib_version": dlib.__version__,
        "weights": {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()},
        "sources": {
            "colour_chips": len(colour),
            "ferplus_grey_chips": len(grey),
        },
        **{k: v for k, v in result.items() if k != "per_face_cosine"},
        "gray_model_on_ferplus": {
            k: v for k, v in summary(ours_gray, reference[len(colour) :]).items() if k != "per_face_cosine"
        },
        "seconds": {
            "dlib": round(dlib_seconds, 2),
            "torch_float32": round(torch_seconds, 2),
            "threads": torch.get_num_threads(),
        },
        "per_face": [{"chip": name, "cosine": cos} for name, cos in zip(names, result["per_face_cosine"], strict=True)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    gray_result = report["gray_model_on_ferplus"]
    print(
        f"{result['faces']} chips ({len(colour)} colour, {len(grey)} FERPlus grey): "
        f"cosine min {result['cosine_min']:.12f}, median {result['cosine_median']:.12f}, "
        f"max |diff| {result['max_abs_difference']:.2e}; "
        f"one-channel model on the grey faces: min {gray_result['cosine_min']:.12f}; "
        f"{'PASS' if report['passed'] else 'FAIL'} (target >= 0.999); "
        f"dlib {dlib_seconds:.1f} s, torch {torch_seconds:.1f} s"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
