"""The embedded default read through the video path (issue 28, item 9).

FERPlus validation faces are rendered into a real h264 video, one face at a time, and ``fermon
process`` decodes, detects, aligns and classifies them with the embedded default models. Its
readings are compared, face by face, with the same classifier reading the same faces as images (the
48x48 crops as they are, the way the model is evaluated). The other video tests use random weights
and check only the shape of what comes out; this one checks what the real model reads.

FERPlus is not in the repository: the test reads it from ``../shared/datasets/ferplus`` beside the
clone (the tarball, or its unpacked ``data/FER2013Valid``) and is skipped, saying so, without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import pytest

from fermon.expression.classify import ExpressionClassifier
from fermon.run.process import ProcessOptions, run_process
from tests.ferplus import balanced_subset, ferplus_valid_root
from tests.videos import GREY, write_video
from training.datasets import read_ferplus

PER_CLASS = 50  # the first 50 of each class by index; disgust (32) and contempt (26) have fewer
FACE_PX = 192  # 4x the 48 px face, the size the crop template was measured at (training/crop_template.py)
FRAME_SIZE = (640, 360)
VIDEO_FPS, HOLD, SAMPLING_FPS = 15.0, 3, 5.0  # each face on screen for 3 frames (0.2 s): one sample each
CRF = 18  # close to visually lossless, so that the encoder is not what the test measures

pytestmark = pytest.mark.slow


@dataclass
class Readings:
    """The same faces read both ways; video rows are NaN for a face the detector missed."""

    labels: np.ndarray  # (N,) FERPlus majority label, index into class_names
    image: np.ndarray  # (N, K) probabilities from the 48x48 crops as they are
    video: np.ndarray  # (N, K) probabilities from the timeline
    samples: pd.DataFrame  # the timeline, with the face each sample shows
    class_names: list[str]

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.video).any(axis=1)


def face_frame(face: np.ndarray) -> np.ndarray:
    """A 48x48 grey face upscaled (bicubic) and centred on a plain grey 640x360 RGB frame."""
    big = cv2.resize(face.reshape(face.shape[:2]), (FACE_PX, FACE_PX), interpolation=cv2.INTER_CUBIC)
    width, height = FRAME_SIZE
    frame = np.full((height, width, 3), GREY, np.uint8)
    top, left = (height - FACE_PX) // 2, (width - FACE_PX) // 2
    frame[top : top + FACE_PX, left : left + FACE_PX] = big[:, :, None]
    return frame


def face_frames(images: np.ndarray) -> Iterator[np.ndarray]:
    """Face i fills frames [i * HOLD, (i + 1) * HOLD); generated, not held: 1,000 frames are 700 MB."""
    for face in images:
        frame = face_frame(face)
        for _ in range(HOLD):
            yield frame


def shown_face(timestamps_s: np.ndarray) -> np.ndarray:
    """Which face a sample at each timestamp shows (its frame, rounded against float error, over HOLD)."""
    return np.floor(timestamps_s * VIDEO_FPS + 0.5).astype(np.int64) // HOLD


def video_probabilities(samples: pd.DataFrame, count: int, class_names: list[str]) -> np.ndarray:
    """(count, K) probabilities per face from the timeline: the best-scored face of its sample, NaN
    where nothing was detected."""
    columns = [f"prob_{name}" for name in class_names]
    faces = samples[samples["face_detected"]].sort_values("det_score", ascending=False)
    best = faces.drop_duplicates("face")
    probabilities = np.full((count, len(class_names)), np.nan)
    probabilities[best["face"].to_numpy()] = best[columns].to_numpy()
    return probabilities


@pytest.fixture(scope="module")
def readings(tmp_path_factory: pytest.TempPathFactory) -> Readings:
    scratch = tmp_path_factory.mktemp("ferplus")
    classifier = ExpressionClassifier.load("default", device="cpu")
    size, colour = classifier.architecture.input_size, classifier.architecture.colour
    assert (size, colour) == (48, "gray"), "the faces are read at the default model's own size and colour"
    faces = balanced_subset(read_ferplus(ferplus_valid_root(scratch), "valid", size, colour), PER_CLASS)
    video = write_video(scratch / "in" / "faces.mp4", face_frames(faces.images), fps=VIDEO_FPS, crf=CRF)
    options = ProcessOptions(fps=SAMPLING_FPS, checkpoint="default", detector="centerface", device="cpu")
    summary = run_process([video], scratch / "out", options, workers=0)
    assert [r.session_id for r in summary.done] == ["faces"], summary.failed
    samples = pd.read_parquet(scratch / "out" / "timelines" / "faces.parquet")
    samples["face"] = shown_face(samples["timestamp_s"].to_numpy())
    assert list(classifier.class_names) == list(faces.class_names)
    return Readings(
        labels=faces.labels,
        image=classifier.predict(faces.images),
        video=video_probabilities(samples, len(faces), classifier.class_names),
        samples=samples,
        class_names=classifier.class_names,
    )


def per_class_table(r: Readings) -> str:
    """Per class: faces, found, image and video accuracy on the faces found, agreement; for messages."""
    found, image, video = r.found, r.image.argmax(axis=1), np.nan_to_num(r.video, nan=-1).argmax(axis=1)
    lines = ["class       faces found  image  video  agree"]
    for k, name in enumerate(r.class_names):
        ours, both = r.labels == k, (r.labels == k) & found
        lines.append(
            f"{name:10s} {ours.sum():6d} {both.sum():5d} {(image[both] == k).mean():6.3f} "
            f"{(video[both] == k).mean():6.3f} {(video[both] == image[both]).mean():6.3f}"
        )
    return "\n".join(lines)


def test_every_face_is_sampled_once_and_found_in_nearly_every_one(readings: Readings) -> None:
    samples, n = readings.samples, len(readings.labels)
    # The timestamps say which face a sample shows: they must agree with the decoded frame's index.
    assert (samples["face"] == samples["frame_index"] // HOLD).all()
    assert sorted(samples.drop_duplicates("frame_index")["face"]) == list(range(n))
    # A plain grey background holds nothing else that looks like a face.
    assert samples.groupby("frame_index").size().max() == 1
    # FERPlus has turned heads and hands over faces that no detector finds (reports/accuracy.md: 93.9%
    # of all validation faces at full scale); these 358 are found at 96-97% whatever the face size,
    # position or encoder quality, so 95% is the bound, and no class may lose more than 15%.
    assert readings.found.mean() >= 0.95, per_class_table(readings)
    for k, name in enumerate(readings.class_names):
        assert readings.found[readings.labels == k].mean() >= 0.85, f"{name}\n{per_class_table(readings)}"


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())


def mean_class_recall(probabilities: np.ndarray, labels: np.ndarray, classes: int) -> float:
    return float(np.mean([accuracy(probabilities[labels == k], labels[labels == k]) for k in range(classes)]))


def test_the_video_path_reads_each_class_as_the_image_path_does(readings: Readings) -> None:
    """On the faces found, the same model through decoding, detection and alignment reads what it
    reads from the crops themselves, to within what re-framing a face moves.

    The video path does not see the FERPlus crop: it warps five detected landmarks onto a template
    (the median FERPlus framing), which re-frames each face a little. That alone, with no video at
    all (``training.evaluate.recrop_like_video``), changes the top class of about 10% of these faces
    and costs 0.06 points on all of validation (reports/accuracy.md). So the bounds are set from runs
    of this test at face sizes 192 and 224, shifted sideways, at crf 0 and 18, and with detection at
    full and half scale: agreement 0.88-0.90, mean absolute difference 0.023-0.025, accuracy on the
    same faces 0 to 2.0 points lower, mean class recall 0 to 2.1 points lower, and per class at most
    3 faces more or fewer read right. With faults put into the video path only, it fails on a class
    mix-up in the timeline (agreement 0.59), on random weights (0.02), on a crop 10% looser or 2 px
    lower than the template (3.5-3.8 points of accuracy, 5 fear faces), and on a crop 25% looser or
    40% tighter. A crop 5-20% tighter or mirrored passes: the model reads those faces as well, which
    is what this test asks (the crop's geometry is tested in faces/). So does a missing calibration
    temperature (mean difference 0.031, under the bound): the top class is the same either way.
    """
    found, labels, names = readings.found, readings.labels[readings.found], readings.class_names
    image, video = readings.image[found], readings.video[found]
    table = per_class_table(readings)
    assert (video.argmax(axis=1) == image.argmax(axis=1)).mean() >= 0.85, table
    assert np.abs(video - image).mean() <= 0.04, table
    # 347 faces: 3 points is about 10 faces read differently, net.
    assert abs(accuracy(video, labels) - accuracy(image, labels)) <= 0.03, table
    # One face of the rarest class (26 contempt faces) moves mean class recall by half a point.
    recall_gap = mean_class_recall(video, labels, len(names)) - mean_class_recall(image, labels, len(names))
    assert abs(recall_gap) <= 0.04, table
    # Per class a face is 2 to 4 points (26 to 50 faces), so "a few points" can only be counted in
    # faces: at most 4 faces more or fewer read right in any class (about 8 points for the 50-face
    # classes, 13 for disgust's 31, 15 for contempt's 26, where the model reads 1 face in 6 right).
    for k, name in enumerate(names):
        ours = labels == k
        change = int((video[ours].argmax(axis=1) == k).sum()) - int((image[ours].argmax(axis=1) == k).sum())
        assert abs(change) <= 4, f"{name}: {change:+d} faces read right on video\n{table}"


def test_the_video_path_reads_expressions_not_noise(readings: Readings) -> None:
    """The readings are the trained model's: far above chance (1/8) on video, smiles read as smiles.
    Random weights, a model reading another class order or faces it cannot see all fail here even
    where the image path were broken the same way. Measured: mean class recall 0.64-0.66 on video,
    happiness 0.93-0.98."""
    found, labels = readings.found, readings.labels[readings.found]
    video = readings.video[found]
    assert mean_class_recall(video, labels, len(readings.class_names)) >= 0.55, per_class_table(readings)
    happiness = readings.class_names.index("happiness")
    assert accuracy(video[labels == happiness], labels[labels == happiness]) >= 0.85, per_class_table(readings)
