"""Persons across a session on real faces: chips for dlib's ResNet (the real weights), tracks joined
into persons in real videos (written with imageio-ffmpeg, decoded, detected and classified by fermon),
the target following the patient, and nothing identifying in any output. No mocks."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import fermon
from fermon.cli import app
from fermon.faces.detector import CenterFaceDetector
from fermon.faces.track import Tracker, TrackStats
from fermon.people.chips import MIN_EMBED_PX, face_chips, face_quality, frontal_score
from fermon.people.embedder import FaceEmbedder
from fermon.people.linking import DISTANCE_THRESHOLD, link_persons
from fermon.run.options import ProcessOptions
from fermon.run.process import run_process
from fermon.run.timeline import read_metadata
from tests.videos import GREY, write_video

FPS = 10.0  # of the clips; fermon samples them at 5 a second
SIZE = (640, 360)


# --------------------------------------------------------------------------- real faces


def _head(photo: np.ndarray, box: np.ndarray, face_px: int) -> np.ndarray:
    """A head-and-shoulders crop around a detected face box, scaled so the face is ``face_px`` wide."""
    x1, y1, x2, y2 = box
    side = 1.7 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.1 * (y2 - y1)
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(photo.shape[1], cx + side / 2)), int(min(photo.shape[0], cy + side / 2))
    scale = face_px / float(x2 - x1)
    return cv2.resize(np.ascontiguousarray(photo[b:d, a:c]), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def people(group_photo: np.ndarray) -> dict[str, np.ndarray]:
    """Two different people of insightface's group photo, upscaled: the patient and a visitor."""
    found = CenterFaceDetector(threads=1, min_face=16).detect([group_photo])[0]
    order = np.argsort(found.boxes[:, 0])  # left to right
    patient_box, visitor_box = found.boxes[order[2]], found.boxes[order[4]]
    return {
        "patient": _head(group_photo, patient_box, 110),
        "visitor": _head(group_photo, visitor_box, 125),
        "patient_photo": np.ascontiguousarray(group_photo[150:550, 380:660]),  # the original pixels, not the video's
        "small": _head(group_photo, patient_box, 40),
    }


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


def _frame() -> np.ndarray:
    return np.full((SIZE[1], SIZE[0], 3), GREY, np.uint8)


def _paste(frame: np.ndarray, patch: np.ndarray, x: float, y: float) -> None:
    h, w = patch.shape[:2]
    x, y = int(np.clip(x, 0, SIZE[0] - w)), int(np.clip(y, 0, SIZE[1] - h))
    frame[y : y + h, x : x + w] = patch


# --------------------------------------------------------------------------- the ward clip

# Who is in view when (seconds) and where (left edge, pixels): the patient alone, away, back, a visitor
# alone, both side by side, the patient alone again... Each appearance is a new track.
SCHEDULE = [
    (0.0, 7.0, {"patient": 100}),
    (7.0, 9.5, {}),
    (9.5, 15.0, {"patient": 300}),
    (15.0, 16.5, {}),
    (16.5, 21.0, {"visitor": 200}),
    (21.0, 23.0, {}),
    (23.0, 32.0, {"patient": 60, "visitor": 360}),
    (32.0, 33.5, {}),
    (33.5, 37.0, {"patient": 250}),
    (37.0, 39.0, {}),
    (39.0, 45.0, {"patient": 150}),
]
WARD_SECONDS = 45.0


def in_view(t: float) -> tuple[str, ...]:
    for start, end, who in SCHEDULE:
        if start <= t < end:
            return tuple(who)
    return ()


def ward_frames(people: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The patient (left when side by side) and the visitor (right), each swaying a little; the
    visitor's face is the larger one, and the longest single appearance is the visitor's."""
    frames = []
    for index in range(round(WARD_SECONDS * FPS)):
        t = index / FPS
        frame = _frame()
        where = next((who for start, end, who in SCHEDULE if start <= t < end), {})
        for name, x in where.items():
            sway = 12 * np.sin(t * 1.3 + (0 if name == "patient" else 2))
            _paste(frame, people[name], x + sway, 60 + sway / 2)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory, people: dict[str, np.ndarray]) -> Path:
    folder = tmp_path_factory.mktemp("ward")
    write_video(folder / "ward.mp4", ward_frames(people), fps=FPS)
    return folder / "ward.mp4"


@pytest.fixture(scope="module")
def options(untrained_checkpoint: Path) -> ProcessOptions:
    return ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")


@pytest.fixture(scope="module")
def ward_out(ward: Path, options: ProcessOptions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fermon.report.build import build_reports

    out = tmp_path_factory.mktemp("ward-out")
    summary = run_process([ward], out, options, workers=0)
    assert [r.session_id for r in summary.done] == ["ward"], summary.failed
    build_reports(out)  # as fermon process does after the run
    return out


@dataclass
class Acceptance:
    patient_alone: float  # of samples with only the patient in view and a face detected: share with a target face
    visitor_alone: float
    patient_beside: float  # side by side: share of the patient's detected faces that are target
    visitor_beside: float


def acceptance(rows: pd.DataFrame) -> Acceptance:
    faces = rows[rows["face_detected"]].copy()
    faces["who"] = [in_view(t) for t in faces["timestamp_s"]]
    centre = (faces["bbox_x1"] + faces["bbox_x2"]) / 2
    alone = faces[faces["who"].map(len) == 1]
    by_sample = alone.groupby("frame_index").agg(who=("who", "first"), target=("is_target", "any"))
    beside = faces[faces["who"].map(len) == 2]
    patient_side = (centre[beside.index] < SIZE[0] / 2).to_numpy()
    return Acceptance(
        patient_alone=float(by_sample[by_sample["who"] == ("patient",)]["target"].mean()),
        visitor_alone=float(by_sample[by_sample["who"] == ("visitor",)]["target"].mean()),
        patient_beside=float(beside["is_target"].to_numpy()[patient_side].mean()),
        visitor_beside=float(beside["is_target"].to_numpy()[~patient_side].mean()),
    )


# --------------------------------------------------------------------------- chips and descriptors


def test_chips_put_the_landmarks_on_the_dlib_template(astronaut: np.ndarray) -> None:
    from fermon.people.chips import chip_spec

    found = CenterFaceDetector(threads=1).detect([astronaut])[0]
    chip = face_chips(astronaut, found.landmarks)[0]
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    again = CenterFaceDetector(threads=1, min_face=32).detect([cv2.copyMakeBorder(chip, 75, 75, 75, 75, 0)])[0]
    assert np.abs(again.landmarks[0] - 75 - chip_spec().points).max() < 6  # CenterFace finds them where they went


def test_same_person_near_and_different_people_far(group_photo, astronaut, embedder: FaceEmbedder) -> None:
    from insightface.data import get_image

    detector = CenterFaceDetector(threads=1, min_face=16)
    found = detector.detect([group_photo])[0]
    descriptors = embedder.descriptors(face_chips(group_photo, found.landmarks))
    assert descriptors.shape == (len(found), 128) and len(found) >= 5
    # Six different people: every pair is beyond the threshold.
    distances = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=2)
    assert distances[np.triu_indices(len(found), 1)].min() > DISTANCE_THRESHOLD
    # The same people at half size, mirrored and JPEG-compressed: each is nearest itself, within it.
    small = cv2.resize(group_photo[:, ::-1], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    _, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 50])
    small = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    again = detector.detect([small])[0]
    other = embedder.descriptors(face_chips(small, again.landmarks))
    cross = np.linalg.norm(descriptors[:, None] - other[None], axis=2)
    assert (cross.min(axis=1) < DISTANCE_THRESHOLD).all()
    assert len(set(cross.argmin(axis=1).tolist())) == len(found)
    # Two strangers, Tom Hanks and the astronaut, match nobody in the group.
    hanks = np.ascontiguousarray(cv2.resize(get_image("Tom_Hanks_54745"), (336, 336))[:, :, ::-1])
    for photo in (hanks, astronaut):
        face = detector.detect([photo])[0]
        stranger = embedder.descriptors(face_chips(photo, face.landmarks[:1]))[0]
        assert np.linalg.norm(descriptors - stranger, axis=1).min() > DISTANCE_THRESHOLD


def test_torch_descriptors_match_dlib_on_fermon_chips(group_photo, embedder: FaceEmbedder) -> None:
    dlib = pytest.importorskip("dlib")
    from fermon.people.dlib_resnet import dlib_weights_path

    found = CenterFaceDetector(threads=1, min_face=16).detect([group_photo])[0]
    chips = face_chips(group_photo, found.landmarks)
    theirs = np.array(dlib.face_recognition_model_v1(str(dlib_weights_path())).compute_face_descriptor(list(chips)))
    ours = embedder.descriptors(chips)
    # bfloat16 on CPUs that have it moves descriptors by about 0.01 (dlib's scale, threshold 0.45).
    assert np.linalg.norm(ours - theirs, axis=1).max() < 0.03


def test_quality_sees_size_blur_and_profile(astronaut: np.ndarray) -> None:
    found = CenterFaceDetector(threads=1).detect([astronaut])[0]
    sharp = face_quality(astronaut, found.boxes, found.landmarks)[0]
    assert sharp.embeddable and sharp.width > MIN_EMBED_PX
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 4)
    soft = face_quality(blurred, found.boxes, found.landmarks)[0]
    assert soft.sharpness < sharp.sharpness / 2 and not soft.embeddable
    tiny = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    small = CenterFaceDetector(threads=1, min_face=16).detect([tiny])[0]
    assert not face_quality(tiny, small.boxes, small.landmarks)[0].embeddable
    marks = found.landmarks[0].copy()
    assert frontal_score(marks) > 0.7
    marks[2] = marks[1] + 0.4 * (marks[1] - marks[0])  # the nose beyond one eye: a head in profile
    assert frontal_score(marks) == 0


# --------------------------------------------------------------------------- linking


def test_tracks_that_overlap_are_never_one_person(group_photo, embedder: FaceEmbedder) -> None:
    # The same face twice in one frame (a mirror, a photo on the wall) stays two persons.
    found = CenterFaceDetector(threads=1, min_face=16).detect([group_photo])[0]
    descriptor = embedder.descriptors(face_chips(group_photo, found.landmarks[:1]))[0]
    tracker = Tracker()
    for _ in range(10):
        tracker.update(np.array([[0, 0, 80, 80], [300, 0, 380, 80]], np.float32))
    links = link_persons(tracker.stats, {0: descriptor, 1: descriptor})
    assert links.persons == 2 and links.by_embedding == 0


def test_linking_a_long_session_of_small_faces_stays_fast() -> None:
    import time

    # A long session of a wide-angle camera: a small face (too small to embed) seen briefly, gone for
    # 7 s, back at one of two places; 720 tracks. Position alone joins the returns to the same place,
    # never across places, and never across the long stretches the face spends at the other place.
    tracker = Tracker()
    places = [np.array([[100, 100, 140, 140]], np.float32), np.array([[400, 100, 440, 140]], np.float32)]
    empty = np.zeros((0, 4), np.float32)
    for sample in range(720 * 8):
        cycle, within = divmod(sample, 8)
        tracker.update(places[(cycle // 40) % 2] if within < 2 else empty, timestamp=float(sample))
    started = time.perf_counter()
    links = link_persons(tracker.stats, {})
    assert time.perf_counter() - started < 5.0
    assert len(tracker.stats) == 720 and links.by_position == 720 - links.persons
    place = {t: int(s.first_box[0] > 200) for t, s in tracker.stats.items()}
    by_person: dict[int, set[int]] = {}
    for track, person in links.person_of_track.items():
        by_person.setdefault(person, set()).add(place[track])
    assert all(len(p) == 1 for p in by_person.values()) and links.persons == 18


@pytest.mark.slow
def test_the_patient_across_a_ward_session(ward_out: Path) -> None:
    rows = pd.read_parquet(ward_out / "timelines" / "ward.parquet")
    footer = read_metadata(ward_out / "timelines" / "ward.parquet")
    faces = rows[rows["face_detected"]]
    assert faces["track_id"].nunique() == 7  # every appearance is a new track...
    assert faces["person_id"].nunique() == 2  # ...of one of two persons
    assert rows.loc[~rows["face_detected"], "person_id"].isna().all()
    # One person id per track, and the target is one whole person.
    assert (faces.groupby("track_id")["person_id"].nunique() == 1).all()
    assert faces.loc[faces["is_target"], "person_id"].nunique() == 1
    figures = acceptance(rows)
    assert figures.patient_alone >= 0.95 and figures.visitor_alone <= 0.05, figures
    assert figures.patient_beside >= 0.90 and figures.visitor_beside <= 0.10, figures
    identity = footer["identity"]
    assert identity["model"] == "dlib_face_recognition_resnet_model_v1" and identity["persons"] == 2
    assert identity["distance_threshold"] == DISTANCE_THRESHOLD
    assert identity["links"]["embedding"] + identity["links"]["position"] == identity["tracks"] - 2
    assert identity["links"]["embedding"] >= 5
    assert 0 < identity["chips_embedded"] <= len(faces) / 2  # about one chip per track-second, not per sample
    assert footer["samples"]["count"] == rows.drop_duplicates("frame_index").shape[0]


@pytest.mark.slow
def test_one_track_per_appearance_would_have_picked_the_visitor(ward_out: Path) -> None:
    # What the target was before persons: the largest single track is the visitor's (larger face,
    # longest appearance beside the patient), so persons, not tracks, are what makes this right.
    rows = pd.read_parquet(ward_out / "timelines" / "ward.parquet")
    faces = rows[rows["face_detected"]]
    area = (faces["bbox_x2"] - faces["bbox_x1"]) * (faces["bbox_y2"] - faces["bbox_y1"])
    largest_track = area.groupby(faces["track_id"]).sum().idxmax()
    assert not faces.loc[faces["track_id"] == largest_track, "is_target"].any()


@pytest.mark.slow
def test_reference_photo_of_the_patient_and_of_a_stranger(
    ward: Path, people, options: ProcessOptions, tmp_path: Path, ward_out: Path
) -> None:
    from insightface.data import get_image

    patient = tmp_path / "patient.png"
    cv2.imwrite(str(patient), people["patient_photo"][:, :, ::-1])
    stranger = tmp_path / "stranger.png"
    cv2.imwrite(str(stranger), cv2.resize(get_image("Tom_Hanks_54745"), (336, 336)))
    chosen = replace(options, target_reference=str(patient))
    assert run_process([ward], tmp_path / "a", chosen, workers=0).done
    rows = pd.read_parquet(tmp_path / "a" / "timelines" / "ward.parquet")
    largest = pd.read_parquet(ward_out / "timelines" / "ward.parquet")
    assert (rows["is_target"] == largest["is_target"]).all()  # the photo names the same person
    footer = read_metadata(tmp_path / "a" / "timelines" / "ward.parquet")
    assert footer["identity"]["reference"]["matched"]
    assert footer["config"]["target_reference"] == chosen.relevant()["target_reference_sha256"]
    assert "patient.png" not in json.dumps(footer)
    nobody = replace(options, target_reference=str(stranger))
    assert run_process([ward], tmp_path / "b", nobody, workers=0).done
    rows = pd.read_parquet(tmp_path / "b" / "timelines" / "ward.parquet")
    assert rows["face_detected"].sum() > 100 and not rows["is_target"].any()
    footer = read_metadata(tmp_path / "b" / "timelines" / "ward.parquet")
    assert not footer["identity"]["reference"]["matched"]
    assert footer["identity"]["reference"]["distance"] > DISTANCE_THRESHOLD


def test_reference_option_checks(tmp_path: Path, untrained_checkpoint: Path) -> None:
    missing = CliRunner().invoke(
        app, ["process", str(tmp_path), "--out", str(tmp_path / "o"), "--target-reference", str(tmp_path / "no.jpg")]
    )
    assert missing.exit_code == 66 and len(missing.output.strip().splitlines()) == 1
    assert "no.jpg: no such reference photo" in missing.output
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"one")
    first = ProcessOptions(target_reference=str(photo)).relevant()
    assert str(tmp_path) not in json.dumps(ProcessOptions(target_reference=str(photo)).public())
    photo.write_bytes(b"two")  # same name, another photo: another setting
    assert ProcessOptions(target_reference=str(photo)).relevant() != first
    args = ["process", str(tmp_path), "--out", str(tmp_path / "o"), "--target-reference", str(photo)]
    both = CliRunner().invoke(app, [*args, "--target", "all"])
    assert both.exit_code == 64


# --------------------------------------------------------------------------- leaving and returning, small faces


@pytest.mark.slow
def test_a_person_who_leaves_and_returns_is_one_person(astronaut, options: ProcessOptions, tmp_path: Path) -> None:
    head = cv2.resize(astronaut[20:260, 100:340], (150, 150), interpolation=cv2.INTER_AREA)
    frames = []
    for index in range(round(20 * FPS)):
        t = index / FPS
        frame = _frame()
        if int(t // 4) % 2 == 0:  # in view 0-4, 8-12, 16-20 s, somewhere else each time
            _paste(frame, head, 80 + 150 * int(t // 8) + 3 * np.sin(t), 100)
        frames.append(frame)
    write_video(tmp_path / "in" / "returns.mp4", frames, fps=FPS)
    assert run_process([tmp_path / "in"], tmp_path / "out", options, workers=0).done
    rows = pd.read_parquet(tmp_path / "out" / "timelines" / "returns.parquet")
    faces = rows[rows["face_detected"]]
    assert faces["track_id"].nunique() == 3 and faces["person_id"].nunique() == 1 and faces["is_target"].all()
    links = read_metadata(tmp_path / "out" / "timelines" / "returns.parquet")["identity"]["links"]
    assert links == {"embedding": 2, "merged": 0, "position": 0}


@pytest.mark.slow
def test_faces_too_small_to_embed_link_by_position(people, options: ProcessOptions, tmp_path: Path) -> None:
    small = people["small"]
    frames = []
    for index in range(round(12 * FPS)):
        t = index / FPS
        frame = _frame()
        if not 4 <= t < 6.5:  # away for 2.5 s, back at the same place
            _paste(frame, small, 300 + 2 * np.sin(t), 150)
        frames.append(frame)
    write_video(tmp_path / "in" / "far.mp4", frames, fps=FPS)
    far = replace(options, min_face=32.0)
    assert run_process([tmp_path / "in"], tmp_path / "out", far, workers=0).done
    rows = pd.read_parquet(tmp_path / "out" / "timelines" / "far.parquet")
    faces = rows[rows["face_detected"]]
    assert faces["bbox_x2"].sub(faces["bbox_x1"]).max() < MIN_EMBED_PX
    assert faces["track_id"].nunique() == 2 and faces["person_id"].nunique() == 1 and faces["is_target"].all()
    identity = read_metadata(tmp_path / "out" / "timelines" / "far.parquet")["identity"]
    assert identity["tracks_embedded"] == 0 and identity["links"] == {"embedding": 0, "merged": 0, "position": 1}


# --------------------------------------------------------------------------- figures and privacy


@pytest.mark.slow
def test_coverage_is_the_same_from_all_rows_or_target_rows(ward_out: Path, options, tmp_path: Path) -> None:
    import shutil

    from fermon.report.build import build_reports

    write_video(tmp_path / "in" / "empty-room.mp4", [_frame() for _ in range(20)], fps=FPS)
    out = tmp_path / "out"
    (out / "timelines").mkdir(parents=True)
    shutil.copy(ward_out / "timelines" / "ward.parquet", out / "timelines")
    assert run_process([tmp_path / "in"], out, options, workers=0).done
    build_reports(out)
    df = fermon.read_timelines(out)
    whole = fermon.summarize(df).set_index("session_id")
    targets = fermon.summarize(df[df["is_target"]]).set_index("session_id")
    assert list(targets.index) == ["empty-room", "ward"]
    pd.testing.assert_series_equal(whole["coverage"], targets["coverage"])
    pd.testing.assert_series_equal(whole["multi_face_share"], targets["multi_face_share"])
    assert targets.loc["empty-room", "coverage"] == 0 and targets.loc["empty-room", "sampled_frames"] == 10
    ward = df[df.session_id == "ward"]
    seen = ward.groupby("frame_index")["is_target"].any().mean()
    assert whole.loc["ward", "coverage"] == pytest.approx(seen)
    assert 0.5 < seen < 0.85  # the patient is away for part of it
    summary = pd.read_parquet(out / "summary.parquet").set_index("session_id")
    assert summary.loc["ward", "coverage"] == pytest.approx(seen)


@pytest.fixture(scope="module")
def classifier(untrained_checkpoint: Path):
    from fermon.expression.classify import ExpressionClassifier

    return ExpressionClassifier.load(str(untrained_checkpoint), device="cpu")


def replay_session(video: Path, classifier, embedder: FaceEmbedder):
    """The worker's per-sample loop over one video, as process_session runs it (same decoding,
    detection, tracking and chips), yielding the rows after every sample."""
    from functools import partial

    from fermon.faces.align import CropSpec
    from fermon.faces.detector import detect_tracked
    from fermon.inputs.discover import find_inputs
    from fermon.run.loop import FaceRows
    from fermon.video import iter_batches, probe, sample_indices

    session = find_inputs([video]).sessions[0]
    _, starts = probe(session.videos[0])
    detect = partial(detect_tracked, CenterFaceDetector(threads=1))
    rows = FaceRows(classifier, CropSpec.from_metadata(classifier.checkpoint.metadata["crop"]), embedder)
    for batch in iter_batches(session.videos[0], sample_indices(starts, 5.0), starts, []):
        found = detect(batch.frames)
        for index, stamp, frame, faces in zip(batch.frame_indices, batch.timestamps_s, batch.frames, found):
            rows.add(0, int(index), float(stamp), frame, faces)
            yield rows


@pytest.mark.slow
def test_no_descriptor_reaches_any_output(ward: Path, ward_out: Path, classifier, embedder: FaceEmbedder) -> None:
    # The worker's own descriptors, computed again as the worker computes them (deterministic: twice the same).
    *_, rows = replay_session(ward, classifier, embedder)
    looks = rows.looks()
    descriptors = {t: look.mean for t, look in looks.items()} | {
        (t, i): chip for t, look in looks.items() for i, chip in enumerate(look.chips)
    }
    *_, again = replay_session(ward, classifier, embedder)
    assert len(looks) >= 5 and all(np.array_equal(looks[t].mean, look.mean) for t, look in again.looks().items())
    files = [p for p in ward_out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in files) and any(p.name == "summary.parquet" for p in files)
    blobs = [p.read_bytes() for p in files]
    for descriptor in descriptors.values():
        for form in (descriptor.astype("<f4"), descriptor.astype("<f8")):
            for start in range(0, 128, 32):  # any quarter of it
                piece = form[start : start + 32].tobytes()
                assert not any(piece in blob for blob in blobs)
    # And no 128-long list of numbers in the footer or the reports' manifest.
    assert not _number_lists(read_metadata(ward_out / "timelines" / "ward.parquet"), 128)
    assert not _number_lists(json.loads((ward_out / "reports" / "manifest.json").read_text()), 128)
    assert not {"descriptor", "embedding"} & set(pq.read_schema(ward_out / "timelines" / "ward.parquet").names)


def _number_lists(value, length: int) -> list:
    if isinstance(value, dict):
        return [found for item in value.values() for found in _number_lists(item, length)]
    if isinstance(value, list):
        if len(value) == length and all(isinstance(v, (int, float)) for v in value):
            return [value]
        return [found for item in value for found in _number_lists(item, length)]
    return []


@pytest.mark.slow
def test_appearance_stays_bounded_per_track(ward: Path, classifier, embedder: FaceEmbedder) -> None:
    from fermon.people.appearance import CHIPS_KEPT

    most_live = 0
    for rows in replay_session(ward, classifier, embedder):
        live = rows.appearance.live
        assert set(live) <= set(rows.tracker.live())  # nothing held for a track that ended but its descriptors
        assert all(len(look.chips) <= CHIPS_KEPT for look in live.values())
        assert all(look.signature is None for look in rows.appearance.finished.values())
        most_live = max(most_live, len(live))
    assert 0 < most_live <= 2
    # The steady cadence: about one chip a second of each track, not one a sample.
    faces = sum(len(b) for b in rows.boxes)
    assert 0 < rows.appearance.chips_embedded <= faces / 2


def test_a_reference_photo_without_a_face_fails_once_before_any_session(
    tmp_path: Path, untrained_checkpoint: Path, astronaut: np.ndarray
) -> None:
    from tests.videos import astronaut_face, moving_face_frames

    write_video(tmp_path / "in" / "a.mp4", moving_face_frames(astronaut_face(astronaut), 2, 10), fps=10)
    write_video(tmp_path / "in" / "b.mp4", moving_face_frames(astronaut_face(astronaut), 2, 10), fps=10)
    photo = tmp_path / "patient.png"
    cv2.imwrite(str(photo), np.full((240, 240, 3), GREY, np.uint8))  # a wall, no face
    out = tmp_path / "out"
    args = ["process", str(tmp_path / "in"), "--out", str(out), "--checkpoint", str(untrained_checkpoint)]
    args += ["--detector", "centerface", "--target-reference", str(photo), "--no-report"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 65, first.output
    assert first.output.strip().splitlines() == [
        line
        for line in first.output.strip().splitlines()
        if "patient.png: no face found in the reference photo" in line
    ]
    assert not (out / "timelines").exists()
    assert not (out / "fermon-ledger.sqlite").exists()  # nothing recorded against the sessions
    # The photo fixed (the patient's face this time): both sessions run at once, none is known bad.
    cv2.imwrite(str(photo), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    fixed = CliRunner().invoke(app, [*args, "--quiet"])
    assert fixed.exit_code == 0, fixed.output
    assert sorted(p.name for p in (out / "timelines").glob("*.parquet")) == ["a.parquet", "b.parquet"]


def _track(first: int, last: int, x: float = 100.0) -> TrackStats:
    box = np.array([x, 100, x + 100, 200], np.float32)
    return TrackStats(first, last, first / 5, last / 5, box, box, last - first + 1)


def test_a_faceless_track_between_two_people_stays_a_person_of_its_own() -> None:
    rng = np.random.default_rng(0)
    patient, visitor = rng.normal(0, 0.05, 128), rng.normal(0, 0.05, 128)
    stats = {0: _track(0, 20), 1: _track(25, 30), 2: _track(35, 60)}
    between = link_persons(stats, {0: patient, 2: visitor})
    assert between.persons == 3 and between.kept_apart_by_position == 1 and between.by_position == 0
    # With the patient on both sides, the faceless track is the patient's, by position.
    around = link_persons(stats, {0: patient, 2: patient + rng.normal(0, 0.01, 128)})
    assert around.persons == 1 and around.by_position == 1 and around.tracks_by_position == {1}


def test_one_odd_track_does_not_chain_two_people() -> None:
    """A track halfway between two people (within the threshold of each on average) joins neither
    when one of its person's tracks is beyond the guard: complete linkage's worry, bounded."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.05, 128)
    b = a + 0.8 * (v := rng.normal(0, 1, 128)) / np.linalg.norm(v)
    middle = (a + b) / 2
    stats = {0: _track(0, 10), 1: _track(20, 30), 2: _track(40, 50)}
    links = link_persons(stats, {0: a, 1: middle, 2: b})
    assert len({links.person_of_track[0], links.person_of_track[2]}) == 2
