"""Finding, probing and decoding videos (real files, real decord), and the tracking geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fermon.errors import DataError, InputError, UsageError
from fermon.faces.track import choose_targets, iou_matrix, link_tracks
from fermon.inputs.discover import find_inputs, session_id_for
from fermon.inputs.sessions import VideoFile
from fermon.video import iter_batches, open_reader, probe, sample_indices
from tests.videos import astronaut_face, moving_face_frames, punch_hole, write_bad_files, write_clip_set, write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_clip_set(root / "ward 1" / "pt01", astronaut)
    write_bad_files(root / "bad")
    shutil.copy(root / "ward 1" / "pt01" / "face.mp4", root / "bad" / "renamed_without_suffix")
    write_video(root / "long.mp4", moving_face_frames(astronaut_face(astronaut), 6, 10))
    punch_hole(root / "long.mp4", root / "bad" / "holed.mp4")
    return root


def test_find_inputs_recurses_checks_content_and_counts_others(media: Path) -> None:
    found = find_inputs([media])
    videos = {v.relative for s in found.sessions for v in s.videos}
    assert "ward 1/pt01/face.mp4" in videos
    assert "bad/renamed_without_suffix" in videos  # video content under another name
    assert {"bad/corrupt.mp4", "bad/empty.mp4"} <= videos  # kept so they are reported as failed
    assert found.skipped == ["bad/notes.txt"]
    ids = [s.session_id for s in found.sessions]
    assert len(ids) == len(set(ids))
    assert "ward_1__pt01__face" in ids
    assert all(not Path(v).is_absolute() for v in videos)


def test_find_inputs_by_folder_orders_chunks(media: Path) -> None:
    found = find_inputs([media / "ward 1"], session_by="folder")
    assert len(found.sessions) == 1
    session = found.sessions[0]
    assert session.session_id == "pt01"
    assert [v.path.name for v in session.videos] == ["blank.mp4", "face.mp4", "leaves.mp4", "two.mp4"]


def test_find_inputs_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing-here"):
        find_inputs([tmp_path / "nothing-here"])
    with pytest.raises(UsageError):
        find_inputs([tmp_path], session_by="day")


def test_session_ids_are_file_name_safe() -> None:
    assert session_id_for("ward 3/pt01.mp4") == "ward_3__pt01"
    assert session_id_for("a/b.c.mov") == "a__b.c"


def test_probe_reports_container_facts(media: Path) -> None:
    info, starts = probe(VideoFile(media / "long.mp4", "long.mp4"))
    assert (info.frame_count, info.fps, info.width, info.height, info.codec) == (60, 10.0, 320, 240, "h264")
    assert info.duration_s == pytest.approx(6.0, abs=0.11)
    assert np.all(np.diff(starts) > 0)


def test_sample_indices_follow_timestamps() -> None:
    starts = np.arange(30) / 10.0
    assert sample_indices(starts, 5).tolist() == list(range(0, 30, 2))
    assert sample_indices(starts, 0).tolist() == list(range(30))
    assert sample_indices(starts, 1).tolist() == [0, 10, 20]
    # Variable frame rate: the first frame at or after each sampling time.
    uneven = np.array([0.0, 0.05, 0.6, 0.65, 1.3])
    assert sample_indices(uneven, 2).tolist() == [0, 2, 4]


@pytest.mark.parametrize(("name", "reason"), [("corrupt.mp4", "not a readable video"), ("empty.mp4", "empty file")])
def test_bad_files_raise_data_error_naming_only_the_file(media: Path, name: str, reason: str) -> None:
    with pytest.raises(DataError) as caught:
        open_reader(VideoFile(media / "bad" / name, f"bad/{name}"))
    message = str(caught.value)
    assert message.startswith(f"bad/{name}: {reason}")
    assert str(media) not in message


def test_segments_reopen_without_changing_frames(media: Path) -> None:
    video = VideoFile(media / "long.mp4", "long.mp4")
    _, starts = probe(video)
    indices = sample_indices(starts, 5)
    whole = np.concatenate([b.frames for b in iter_batches(video, indices, starts, [])])
    pieces = list(iter_batches(video, indices, starts, [], batch=3))
    assert np.array_equal(np.concatenate([b.frame_indices for b in pieces]), indices)
    assert np.array_equal(np.concatenate([b.frames for b in pieces]), whole)


def test_no_sampled_frames_decode_nothing(media: Path) -> None:
    video = VideoFile(media / "long.mp4", "long.mp4")
    _, starts = probe(video)
    gaps: list = []
    assert list(iter_batches(video, np.zeros(0, np.int64), starts, gaps)) == [] and gaps == []


def test_damaged_stretch_is_skipped_and_reported(media: Path) -> None:
    video = VideoFile(media / "bad" / "holed.mp4", "bad/holed.mp4")
    _, starts = probe(video)
    indices = sample_indices(starts, 5)
    gaps: list = []
    decoded = np.concatenate([b.frame_indices for b in iter_batches(video, indices, starts, gaps, batch=4)])
    assert gaps, "the zeroed stretch should fail to decode"
    assert 0 < len(decoded) < len(indices)
    assert decoded[0] == 0 and decoded[-1] == indices[-1]  # frames on both sides are kept
    skipped = set(indices.tolist()) - set(decoded.tolist())
    assert all(any(g.first_frame <= i <= g.last_frame for g in gaps) for i in skipped)
    assert all(str(media) not in g.reason for g in gaps)
    assert gaps[0].reason.startswith("damaged video data (Invalid data found")  # the decoder's words, not a guess


def test_iou_and_greedy_linking() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    assert iou_matrix(a, a)[0, 0] == pytest.approx(1.0)
    assert iou_matrix(a, a + 20)[0, 0] == 0.0
    left, right = np.array([0, 0, 10, 10], np.float32), np.array([50, 0, 60, 10], np.float32)
    samples = [np.stack([left, right]), np.stack([right + 1, left + 1]), np.zeros((0, 4), np.float32), left[None] + 2]
    ids = link_tracks(samples)
    assert ids[0].tolist() == [0, 1]
    assert ids[1].tolist() == [1, 0]  # followed by overlap, not by order
    assert ids[3].tolist() == [0]  # a short gap keeps the track
    far = link_tracks([left[None]] + [np.zeros((0, 4), np.float32)] * 6 + [left[None]], max_gap=5)
    assert far[-1].tolist() == [1]  # a long absence starts a new track


def test_choose_targets() -> None:
    tracks = np.array([0, 1, 0, 1])
    boxes = np.array([[0, 0, 50, 50], [140, 100, 160, 120], [0, 0, 50, 50], [140, 100, 160, 120]], np.float32)
    assert choose_targets(tracks, boxes, "largest") == {0}
    assert choose_targets(tracks, boxes, "center", (240, 320)) == {1}
    assert choose_targets(tracks, boxes, "all") == {0, 1}
    assert choose_targets(np.zeros(0, np.int32), np.zeros((0, 4)), "largest") == set()


def test_a_fast_moving_face_stays_one_track_but_a_stranger_does_not_join() -> None:
    face = np.array([100, 100, 150, 150], np.float32)
    # The face moves a full face width (50 px) per sample: no overlap between samples.
    step = np.array([50, 0, 50, 0], np.float32)
    moving = [(face + i * step)[None] for i in range(5)]
    assert [ids.tolist() for ids in link_tracks(moving)] == [[0]] * 5
    # A face of very different size at the same place is someone else.
    small = np.array([[210, 110, 220, 120]], np.float32)
    assert link_tracks([face[None], small])[1].tolist() == [1]


def test_largest_target_weighs_presence_not_one_big_glimpse() -> None:
    patient = np.array([0, 0, 50, 50], np.float32)
    visitor = np.array([100, 0, 170, 70], np.float32)  # bigger, but seen once
    tracks = np.array([0] * 9 + [1])
    boxes = np.stack([patient] * 9 + [visitor])
    assert choose_targets(tracks, boxes, "largest") == {0}


def test_sampling_keeps_the_last_frame_despite_float32_timestamps() -> None:
    # decord's float32 view of a 10-frame, 5 fps clip: the last start reads 1.79999995, not 1.8.
    starts = (np.arange(10) / 5).astype(np.float32)
    assert sample_indices(starts, 5.0).tolist() == list(range(10))
    assert sample_indices(starts, 2.5).tolist() == [0, 2, 4, 6, 8]
    # Two hours at 25 fps, sampled at 5 per second: one sample every fifth frame, none lost.
    long = (np.arange(2 * 3600 * 25) / 25).astype(np.float32)
    picked = sample_indices(long, 5.0)
    assert len(picked) == 2 * 3600 * 5 and np.all(np.diff(picked) == 5)


def test_decoder_failures_read_in_plain_words_with_the_raw_text_kept(tmp_path: Path, media: Path) -> None:
    import subprocess

    import imageio_ffmpeg

    lavfi = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i"]
    whole = tmp_path / "whole.mp4"  # the index (moov) at the end, as a camera writes it
    subprocess.run([*lavfi, "testsrc=duration=2:size=160x120:rate=10", str(whole)], check=True)
    (tmp_path / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    sound = tmp_path / "sound.m4a"
    subprocess.run([*lavfi, "sine=duration=1", str(sound)], check=True)
    cases = {
        tmp_path / "cut.mp4": "truncated or unfinished recording (no index)",
        sound: "no video stream (sound only?)",
        media / "bad" / "corrupt.mp4": "not a video file",
    }
    for path, plain in cases.items():
        with pytest.raises(DataError) as caught:
            open_reader(VideoFile(path, path.name))
        assert str(caught.value) == f"{path.name}: not a readable video: {plain}"
        assert caught.value.detail and str(path.parent) not in caught.value.detail  # the decoder's words, no path


@pytest.mark.parametrize(
    ("name", "codec", "params"),
    [
        ("h264.mp4", "libx264", ()),
        ("bframes.mp4", "libx264", ("-bf", "3", "-g", "12")),  # frames decoded out of display order
        ("h264.mkv", "libx264", ()),
        ("hevc.mov", "libx265", ("-tag:v", "hvc1")),
        ("vp9.webm", "libvpx-vp9", ()),
        ("mjpeg.avi", "mjpeg", ()),
        ("mpeg4.avi", "mpeg4", ()),
    ],
)
def test_decoded_frames_are_decords_frames(
    tmp_path: Path, astronaut: np.ndarray, name: str, codec: str, params: tuple
) -> None:
    """PyAV decodes, decord's index numbers the frames: each sampled frame is the very frame, pixel for
    pixel, that decord hands over for that number, whatever the container and codec."""
    import decord

    path = write_video(tmp_path / name, moving_face_frames(astronaut_face(astronaut), 3, 10), codec=codec,
                       extra_params=params)  # fmt: skip
    video = VideoFile(path, name)
    _, starts = probe(video)
    indices = sample_indices(starts, 5)
    gaps: list = []
    batches = list(iter_batches(video, indices, starts, gaps, batch=4))
    expected = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1).get_batch(indices.tolist()).asnumpy()
    assert gaps == [] and np.array_equal(np.concatenate([b.frame_indices for b in batches]), indices)
    assert np.array_equal(np.concatenate([b.frames for b in batches]), expected)
