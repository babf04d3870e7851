"""A store that fails for a while (a timeout, a 5xx) is the machine's failure, not the video's: reads
are retried with backoff, a lasting failure fails the session as retryable, and nothing is recorded
as a bad input or a decode gap. The store is a real fsspec filesystem (fsspec's in-memory one) whose
reads time out on demand, as a flaky object store's do."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from fermon.cli.process import last_line
from fermon.errors import StorageError
from fermon.inputs import storage
from fermon.inputs.containers import container_facts
from fermon.inputs.sessions import VideoFile
from fermon.run.ledger import Ledger
from fermon.run.process import ProcessOptions, run_process
from fermon.run.session import FAILED_RUN
from fermon.video import iter_batches, probe, sample_indices
from tests.videos import astronaut_face, moving_face_frames, write_video


class FlakyStore(MemoryFileSystem):
    """fsspec's memory store whose reads time out ``failures`` times once ``good_reads`` have passed."""

    protocol = ("flaky",)
    failures = 0
    good_reads = 0
    ranged_only = False  # count and fail only the ranged reads that serve decoding
    lock = threading.Lock()

    @classmethod
    def fail(cls, times: int, after_reads: int = 0, ranged_only: bool = False) -> None:
        with cls.lock:
            cls.failures, cls.good_reads, cls.ranged_only = times, after_reads, ranged_only

    @staticmethod
    def _read(ranged: bool = False) -> None:
        with FlakyStore.lock:
            if FlakyStore.ranged_only and not ranged:
                return
            failing = FlakyStore.failures > 0 and FlakyStore.good_reads <= 0
            FlakyStore.failures -= int(failing)
            FlakyStore.good_reads -= 1
        if failing:
            raise TimeoutError("Read timed out (simulated store outage)")

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._read(ranged=True)
        return super().cat_file(path, start=start, end=end, **kwargs)

    def size(self, path):
        self._read()
        return super().size(path)

    def _open(self, path, mode="rb", **kwargs):
        if "r" not in mode:
            return super()._open(path, mode, **kwargs)
        self._read()
        return FlakyFile(super()._open(path, mode, **kwargs).getvalue())


class FlakyFile(io.BytesIO):
    """An opened object whose reads (a decoder's, by ranges) fail with the store."""

    def read(self, size: int = -1) -> bytes:
        FlakyStore._read(ranged=True)
        return super().read(size)


@pytest.fixture(autouse=True)
def flaky(monkeypatch: pytest.MonkeyPatch):
    fsspec.register_implementation("flaky", FlakyStore, clobber=True)
    monkeypatch.setattr(storage, "RETRY_DELAYS_S", (0.01, 0.05, 0.1))  # the backoff, shortened
    FlakyStore.fail(0)
    yield
    FlakyStore.fail(0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """A face over sensor noise: a file of about a megabyte, which a decoder reads in many pieces."""
    rng = np.random.default_rng(0)
    frames = [np.clip(f + rng.normal(0, 40, f.shape), 0, 255).astype(np.uint8)
              for f in moving_face_frames(astronaut_face(astronaut), 6, 10)]  # fmt: skip
    return write_video(tmp_path_factory.mktemp("flaky") / "face.mp4", frames, creation_time="2026-03-29T00:59:58Z")


def upload(clip: Path, key: str) -> VideoFile:
    url = f"flaky://ward/{key}/face.mp4"
    fsspec.filesystem("flaky").pipe_file(url, clip.read_bytes())
    return VideoFile(url, "face.mp4")


def decoded(video: VideoFile, failures: int = 0) -> tuple[np.ndarray, list]:
    """The sampled frames and decode gaps; ``failures`` reads time out once decoding is under way."""
    _, starts = probe(video)
    FlakyStore.fail(failures, after_reads=10)
    gaps: list = []
    frames = [b.frames for b in iter_batches(video, sample_indices(starts, 5), starts, gaps, batch=4)]
    return np.concatenate(frames), gaps


def test_an_outage_mid_video_is_ridden_out(clip: Path) -> None:
    video = upload(clip, "brief")
    expected, _ = decoded(VideoFile(clip, "face.mp4"))
    frames, gaps = decoded(video, failures=2)
    assert FlakyStore.failures == 0  # both failures were met, and retried past
    assert gaps == [] and np.array_equal(frames, expected)


def test_a_lasting_outage_is_a_storage_error_not_a_bad_video(clip: Path) -> None:
    video = upload(clip, "down")
    with pytest.raises(StorageError, match=r"^face\.mp4: the store failed while reading \(TimeoutError"):
        decoded(video, failures=10_000)


def test_the_header_is_retried_too(clip: Path) -> None:
    video = upload(clip, "header")
    FlakyStore.fail(2)
    facts = container_facts(video.path)
    assert (facts.codec, facts.created.isoformat()) == ("h264", "2026-03-29T00:59:58+00:00")
    FlakyStore.fail(10_000)
    with pytest.raises(StorageError):
        container_facts(video.path)


@pytest.mark.slow
def test_a_session_that_meets_an_outage_is_retried_by_the_next_run(
    clip: Path, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    upload(clip, "night")
    options = ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")
    FlakyStore.fail(10_000, after_reads=30, ranged_only=True)  # the store goes down while decoding
    first = run_process(["flaky://ward/night"], tmp_path, options, workers=0)
    assert [(r.session_id, r.failure_kind) for r in first.failed] == [("face", FAILED_RUN)]
    assert "the store failed while reading" in first.failed[0].error
    assert last_line(first).startswith("0 done, 0 up to date, 1 failed, 1 to retry")
    assert not (tmp_path / "timelines").exists() or not list((tmp_path / "timelines").iterdir())
    entry = Ledger(tmp_path, read_only=True).get("face")
    assert (entry.status, entry.failure_kind) == ("failed", FAILED_RUN)
    FlakyStore.fail(0)  # the store is back: the next plain run (no --retry-failed) tries again
    second = run_process(["flaky://ward/night"], tmp_path, options, workers=0)
    assert [r.session_id for r in second.done] == ["face"] and not second.done[0].gaps
    rows = pd.read_parquet(tmp_path / "timelines")
    assert rows["face_detected"].sum() > 0


def test_a_store_that_fails_while_fingerprinting_is_not_a_bad_input(
    clip: Path, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    upload(clip, "early")
    options = ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")
    FlakyStore.fail(10_000, ranged_only=True)  # down before the first read of the video
    summary = run_process(["flaky://ward/early"], tmp_path, options, workers=0)
    assert [(r.failure_kind, r.error.split(":")[0]) for r in summary.failed] == [(FAILED_RUN, "flaky")]
    assert "the store failed while reading" in summary.failed[0].error
    assert not summary.known_bad
