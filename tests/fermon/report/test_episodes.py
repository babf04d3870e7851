"""Expression episodes: the sticky chain on synthetic probability sequences with known episodes, and
episodes.parquet, the session page and incremental rebuilds over real timeline files (the timeline
writer's own schema and footer) made here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fermon
from fermon.analysis import EPISODE_COLUMNS, read_timeline
from fermon.cli import app
from fermon.report import build_reports
from fermon.report.build import ReportResult, write_episodes
from fermon.report.clinical import ClinicalOptions
from fermon.report.episodes import episode_samples, find_episodes, session_episodes
from fermon.run.timeline import SampledFaces, build_table, face_columns, timeline_path, write_atomic

NAMES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
FPS = 5.0


def noisy_probs(labels: np.ndarray, seed: int = 0, strength: float = 0.6) -> np.ndarray:
    """Per-sample probabilities that favour ``labels`` (``strength`` on the true class before noise)."""
    rng = np.random.default_rng(seed)
    probs = np.full((len(labels), len(NAMES)), (1 - strength) / (len(NAMES) - 1))
    probs[np.arange(len(labels)), labels] = strength
    probs *= np.exp(rng.normal(0.0, 0.4, probs.shape))
    return probs / probs.sum(axis=1, keepdims=True)


def samples_of(times: np.ndarray, labels: np.ndarray, covered: np.ndarray | None = None, seed: int = 0):
    covered = np.ones(len(times), bool) if covered is None else covered
    probs = noisy_probs(labels, seed)
    probs[~covered] = np.nan
    return pd.DataFrame({"timestamp_s": times, "covered": covered, **{f"prob_{c}": probs[:, k] for k, c in
                                                                        enumerate(NAMES)}})  # fmt: skip


def labels_at(times: np.ndarray, spans: list[tuple[float, float, str]]) -> np.ndarray:
    labels = np.zeros(len(times), int)
    for start, end, name in spans:
        labels[(times >= start) & (times < end)] = NAMES.index(name)
    return labels


def test_known_onsets_and_lengths_are_recovered_within_one_sample() -> None:
    rng = np.random.default_rng(7)
    for trial in range(12):
        times = np.arange(0, 300, 1 / FPS)
        onset, length = float(rng.uniform(20, 150)), float(rng.uniform(25, 120))
        name = NAMES[1 + trial % 7]
        episodes = find_episodes(samples_of(times, labels_at(times, [(onset, onset + length, name)]), seed=trial),
                                 NAMES, fps=FPS)  # fmt: skip
        (episode,) = episodes
        assert episode["expression"] == name
        assert abs(episode["start_s"] - onset) <= 1 / FPS + 1e-9, (trial, episode, onset)
        assert abs(episode["end_s"] - (onset + length)) <= 1 / FPS + 1e-9, (trial, episode, onset + length)
        assert episode["coverage"] == 1.0 and 0.3 < episode["mean_prob"] < episode["peak_prob"] <= 1.0


def test_a_short_missing_face_is_bridged_and_a_long_one_splits() -> None:
    times = np.arange(0, 120, 1 / FPS)
    labels = labels_at(times, [(10, 90, "sadness")])
    short = ~((times >= 40) & (times < 43))  # the face is missing for 3 s
    (bridged,) = find_episodes(samples_of(times, labels, short), NAMES, fps=FPS, gap_s=5)
    assert (bridged["start_s"], bridged["end_s"]) == pytest.approx((10, 90))
    assert bridged["coverage"] == pytest.approx(1 - 15 / 400)  # 15 of its 400 samples without the face
    long = ~((times >= 40) & (times < 50))  # missing for 10 s
    first, second = find_episodes(samples_of(times, labels, long), NAMES, fps=FPS, gap_s=5)
    assert (first["start_s"], first["end_s"]) == pytest.approx((10, 40))
    assert (second["start_s"], second["end_s"]) == pytest.approx((50, 90))
    assert first["coverage"] == second["coverage"] == 1.0
    # --episode-gap 12 bridges the same 10 s.
    assert len(find_episodes(samples_of(times, labels, long), NAMES, fps=FPS, gap_s=12)) == 1


def test_a_pause_between_chunks_is_not_bridged() -> None:
    """Two chunks with a 60-s pause (no samples at all) and the same expression on both sides."""
    chunk = np.arange(0, 40, 1 / FPS)
    times = np.concatenate([chunk, chunk + 100])
    labels = np.full(len(times), NAMES.index("happiness"))
    first, second = find_episodes(samples_of(times, labels), NAMES, fps=FPS)
    assert (first["start_s"], first["end_s"]) == pytest.approx((0, 40))
    assert (second["start_s"], second["end_s"]) == pytest.approx((100, 140))


def test_short_episodes_are_dropped_and_neutral_is_never_one() -> None:
    times = np.arange(0, 100, 1 / FPS)
    labels = labels_at(times, [(30, 45, "anger")])  # 15 s
    assert find_episodes(samples_of(times, labels), NAMES, fps=FPS, min_s=20) == []
    (episode,) = find_episodes(samples_of(times, labels), NAMES, fps=FPS, min_s=10)
    assert episode["expression"] == "anger" and episode["duration_s"] == pytest.approx(15)
    assert find_episodes(samples_of(times, np.zeros(len(times), int)), NAMES, fps=FPS) == []
    nobody = samples_of(times, labels, np.zeros(len(times), bool))
    assert find_episodes(nobody, NAMES, fps=FPS) == []


# --------------------------------------------------------------------------- timeline files


def write_session(
    out: Path,
    session_id: str,
    spans: list[tuple[float, float, str]],
    seconds: float = 120.0,
    start: str | None = None,
    patient: str | None = None,
    second_target: str | None = None,
) -> Path:
    """A real timeline file: one target face per sample showing ``spans``; with ``second_target``, a
    smaller second target face (as under --target all) showing that expression throughout."""
    times = np.arange(0, seconds, 1 / FPS)
    probs = noisy_probs(labels_at(times, spans), seed=len(session_id))
    faces = 1 if second_target is None else 2
    boxes = [np.array([[10, 10, 110, 110], [200, 10, 240, 50]][:faces], np.float32) for _ in times]
    scores = [np.array([0.8, 0.95][:faces], np.float32) for _ in times]
    per_face = [probs]
    if second_target is not None:
        per_face.append(noisy_probs(np.full(len(times), NAMES.index(second_target)), seed=99))
    stacked = np.stack(per_face, axis=1).reshape(-1, len(NAMES)).astype(np.float32)
    sampled = SampledFaces([0] * len(times), list(range(len(times))), times.tolist(), boxes, scores, stacked)
    count = len(times) * faces
    columns = face_columns(session_id, [f"{session_id}.mp4"], sampled, np.zeros(count, np.int32),
                           np.ones(count, bool), NAMES)  # fmt: skip
    metadata = {
        "session_id": session_id, "class_names": NAMES, "sampling_fps": FPS, "patient_id": patient,
        "clock": {"start": start, "source": "manifest" if start else None},
        "videos": [{"video": f"{session_id}.mp4", "duration_s": seconds, "offset_s": 0.0}],
    }  # fmt: skip
    path = timeline_path(out, session_id)
    write_atomic(build_table(columns, NAMES, metadata), path)
    return path


def test_with_several_target_faces_the_largest_is_used(tmp_path: Path) -> None:
    path = write_session(tmp_path, "all", [(10, 70, "happiness")], second_target="sadness")
    frame, metadata = read_timeline(path)
    assert frame["is_target"].sum() == 2 * 600
    assert episode_samples(frame, NAMES)["covered"].sum() == 600
    (episode,) = session_episodes(frame, metadata)
    assert episode["expression"] == "happiness" and episode["start_s"] == pytest.approx(10)


def test_a_daylight_saving_night_has_its_episodes_in_utc(tmp_path: Path) -> None:
    """Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC. A recording from 00:58 UTC (02:58
    CEST) with fear from 60 s to 180 s: 00:59:00Z (02:59 CEST) to 01:01:00Z (02:01 CET), 120 s."""
    write_session(tmp_path, "night", [(60, 180, "fear")], seconds=240, start="2026-10-25T00:58:00Z", patient="P01")
    build_reports(tmp_path, clinical=ClinicalOptions(timezone="Europe/Berlin"))
    (episode,) = fermon.read_episodes(tmp_path).itertuples()
    assert episode.start == pd.Timestamp("2026-10-25T00:59:00Z") and episode.end == pd.Timestamp("2026-10-25T01:01:00Z")
    assert (episode.end - episode.start).total_seconds() == episode.duration_s == 120
    assert (episode.patient_id, episode.session_id, episode.expression) == ("P01", "night", "fear")
    page = (tmp_path / "reports" / "sessions" / "night.html").read_text()
    assert "2026-10-25 02:59:00 +02:00" in page and "2026-10-25 02:01:00 +01:00" in page


def test_no_manifest_and_an_unknown_clock(tmp_path: Path) -> None:
    write_session(tmp_path, "clocked", [(10, 50, "surprise")], start="2026-03-01T10:00:00Z")
    write_session(tmp_path, "unclocked", [(20, 80, "disgust")])
    build_reports(tmp_path, clinical=ClinicalOptions(timezone="UTC"))
    frame = fermon.read_episodes(tmp_path).set_index("session_id")
    assert frame["patient_id"].isna().all()
    assert frame.loc["clocked", "start"] == pd.Timestamp("2026-03-01T10:00:10Z")
    assert pd.isna(frame.loc["unclocked", "start"]) and pd.isna(frame.loc["unclocked", "end"])
    assert (frame.loc["unclocked", "start_s"], frame.loc["unclocked", "end_s"]) == pytest.approx((20, 80))
    page = (tmp_path / "reports" / "sessions" / "unclocked.html").read_text()
    assert "Expression episodes" in page and "its clock is unknown" in page and "disgust" in page


def test_plain_pandas_reads_the_same_types(tmp_path: Path) -> None:
    write_session(tmp_path, "s1", [(10, 50, "surprise")], start="2026-03-01T10:00:00Z", patient="P01")
    build_reports(tmp_path)
    ours, plain = fermon.read_episodes(tmp_path), pd.read_parquet(tmp_path / "episodes.parquet")
    assert list(ours.columns) == list(plain.columns) == list(EPISODE_COLUMNS)
    assert ours.dtypes.to_dict() == plain.dtypes.to_dict()
    assert ours["session_id"].dtype == pd.StringDtype() and ours["start"].dtype == "datetime64[us, UTC]"
    assert ours["duration_s"].dtype == "float64"
    pd.testing.assert_frame_equal(ours, plain)
    # DuckDB (a test dependency) reads the same rows and values, times as UTC instants.
    import duckdb

    theirs = duckdb.sql(f"select * from '{tmp_path / 'episodes.parquet'}'").df()
    assert list(theirs.columns) == list(EPISODE_COLUMNS)
    pd.testing.assert_frame_equal(theirs.astype(ours.dtypes.to_dict()), ours)


def test_a_new_night_recomputes_only_its_session(tmp_path: Path) -> None:
    for number in range(3):
        write_session(tmp_path, f"old-{number}", [(10, 40 + 10 * number, "sadness")])
    first = build_reports(tmp_path)
    assert sorted(first.built) == ["old-0", "old-1", "old-2"] and first.episodes == 3
    write_session(tmp_path, "new", [(30, 90, "anger")])
    second = build_reports(tmp_path)
    assert second.built == ["new"] and sorted(second.unchanged) == ["old-0", "old-1", "old-2"]
    assert second.episodes == 4 and sorted(fermon.read_episodes(tmp_path)["session_id"]) == [
        "new", "old-0", "old-1", "old-2"]  # fmt: skip
    manifest = json.loads((tmp_path / "reports" / "manifest.json").read_text())
    stat = os.stat(timeline_path(tmp_path, "new"))
    assert manifest["sessions"]["new"]["timeline"] == [stat.st_size, stat.st_mtime_ns]
    assert manifest["sessions"]["new"]["episodes"][0]["expression"] == "anger"
    # Changed episode settings recompute every session's episodes (and are kept in clinical.json).
    third = build_reports(tmp_path, clinical=ClinicalOptions(episode_min_s=35.0))
    assert len(third.built) == 4 and third.episodes == 3  # old-0 (30 s) is shorter than 35 s
    assert json.loads((tmp_path / "clinical.json").read_text())["episode_min_s"] == 35.0
    assert build_reports(tmp_path).built == []  # kept: the next plain build changes nothing


def test_the_table_over_200_sessions_is_made_from_stored_rows(tmp_path: Path) -> None:
    """Rewriting episodes.parquet reads no timeline: the stored rows of 200 sessions, 5 episodes each."""
    row = {"patient_id": "P01", "expression": "sadness", "start": "2026-03-01T10:00:00+00:00",
           "end": "2026-03-01T10:01:00+00:00", "start_s": 0.0, "end_s": 60.0, "duration_s": 60.0,
           "mean_prob": 0.6, "peak_prob": 0.9, "coverage": 1.0}  # fmt: skip
    entries = {f"s{n:03d}": {"episodes": [{**row, "session_id": f"s{n:03d}"}] * 5} for n in range(200)}
    result = ReportResult()
    frame = write_episodes(tmp_path, entries, result)
    assert len(frame) == result.episodes == 1000 and result.episodes_seconds < 5  # about 0.02 s (benchmark)
    assert len(pd.read_parquet(tmp_path / "episodes.parquet")) == 1000


def test_episode_options_on_the_command_line(tmp_path: Path) -> None:
    write_session(tmp_path, "s1", [(10, 30, "happiness")])
    runner = CliRunner()
    bad = runner.invoke(app, ["report", str(tmp_path), "--episode-gap", "-1"])
    assert bad.exit_code == 64 and "--episode-gap must be 0 seconds or more" in bad.output
    assert runner.invoke(app, ["report", str(tmp_path), "--workers", "0", "--quiet"]).exit_code == 0
    assert len(fermon.read_episodes(tmp_path)) == 1  # 20 s: kept at the default 20
    done = runner.invoke(app, ["report", str(tmp_path), "--workers", "0", "--quiet", "--episode-min", "25"])
    assert done.exit_code == 0 and len(fermon.read_episodes(tmp_path)) == 0
    settings = json.loads((tmp_path / "clinical.json").read_text())
    assert (settings["episode_min_s"], settings["episode_gap_s"]) == (25.0, 5.0)


def test_the_session_page_shows_episodes_and_renders(tmp_path: Path) -> None:
    from tests.fermon.report.test_report import chromium

    write_session(tmp_path, "p", [(20, 60, "happiness"), (80, 110, "surprise")], start="2026-03-01T10:00:00Z")
    build_reports(tmp_path, clinical=ClinicalOptions(timezone="UTC"))
    html = (tmp_path / "reports" / "sessions" / "p.html").read_text()
    table = html.split("<h2>Expression episodes</h2>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 3 and "2026-03-01 10:00:20 +00:00" in table and "surprise" in table
    assert "<img" not in html and str(tmp_path) not in html
    image, console, requests = chromium((tmp_path / "reports" / "sessions" / "p.html").as_uri(), tmp_path)
    assert console == "" and requests == [] and (image.min(axis=2) < 200).mean() > 0.01
