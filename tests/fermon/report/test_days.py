"""The patient over days: clinical dates across daylight saving, baselines and flags, patient_days.parquet,
the flags kept between builds, the patient pages and the cohort's morning view, from timelines written
with the real writer and footer (one sample a minute, so that a week of nights builds in seconds)."""

from __future__ import annotations

import json
import shutil
import time as clock
from datetime import date, time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fermon
from fermon.cli import app
from fermon.report import build_reports
from fermon.report.days import clinical_dates, patient_days, period_seconds
from fermon.run.timeline import build_table, write_atomic
from tests.fermon.report.test_report import chromium

NAMES = ["neutral", "happiness", "sadness"]
BERLIN = ZoneInfo("Europe/Berlin")
STEP_S = 60.0


def write_night(
    out: Path, session_id: str, patient: str | None, start: str, hours: float, sad: float, seen: float = 1.0
) -> None:
    """A timeline of ``hours`` from ``start`` (ISO with offset): the face seen for the first ``seen`` of
    it, sad on a ``sad`` share of the samples where it is seen (spread evenly), neutral otherwise."""
    n = round(hours * 3600 / STEP_S)
    k = np.arange(n)
    face = k < seen * n
    is_sad = face & (np.floor((k + 1) * sad) > np.floor(k * sad))  # evenly spread
    probs = np.zeros((n, len(NAMES)), np.float32)
    probs[:, 0], probs[:, 2] = np.where(is_sad, 0.1, 0.85), np.where(is_sad, 0.85, 0.1)
    probs[:, 1] = 0.05
    probs[~face] = np.nan
    utc = pd.Timestamp(start).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    metadata = {
        "session_id": session_id, "patient_id": patient, "class_names": NAMES, "sampling_fps": 1 / STEP_S,
        "videos": [{"video": f"{session_id}.mp4", "duration_s": n * STEP_S, "offset_s": 0.0}],
        "clock": {"source": "manifest" if patient else "container", "start": utc, "utc_offset": start[-6:]},
        "samples": {"count": n, "with_several_faces": 0}, "decode_gaps": [],
    }  # fmt: skip
    nan = np.full(n, np.nan, np.float32)
    columns = {
        "session_id": [session_id] * n, "video": [f"{session_id}.mp4"] * n, "frame_index": k * 1500,
        "timestamp_s": k * STEP_S, "face_detected": face, "track_id": np.zeros(n, np.int32),
        "person_id": np.zeros(n, np.int32), "is_target": face, "det_score": np.where(face, 0.9, nan),
        "label_index": np.where(face, probs.argmax(axis=1), -1), "confidence": np.where(face, probs.max(axis=1), nan),
        **{b: np.where(face, 10.0 * (j + 1), nan) for j, b in enumerate(("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))},
        **{f"prob_{c}": probs[:, j] for j, c in enumerate(NAMES)},
    }  # fmt: skip
    write_atomic(build_table(columns, NAMES, metadata), out / "timelines" / f"{session_id}.parquet")


def write_study(out: Path) -> None:
    """P01: seven calm nights from 2026-10-17, then the night of the 24th (clocks go back: 9 hours) with
    sadness on 45% of the samples. P02: one night with the face seen 10% of it. A session without a
    manifest (no patient)."""
    for day in range(17, 25):
        hours = 9.0 if day == 24 else 8.0
        sad = 0.45 if day == 24 else 0.04 + 0.01 * (day % 3)
        write_night(out, f"p01-{day}", "P01", f"2026-10-{day}T22:00:00+02:00", hours, sad)
    write_night(out, "p02-23", "P02", "2026-10-23T22:00:00+02:00", 8.0, 0.05, seen=0.1)
    write_night(out, "loose", None, "2026-10-23T22:00:00+02:00", 1.0, 0.5)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("days") / "out"
    write_study(out)
    result = CliRunner().invoke(app, ["report", str(out), "--timezone", "Europe/Berlin", "--workers", "0"])
    assert result.exit_code == 0, result.output
    return out


def test_clinical_dates_and_hours_across_daylight_saving() -> None:
    """02:30 CEST and 02:30 CET on 25 October are both the night of the 24th, which lasts 9 hours."""
    wall = pd.Series(pd.to_datetime(["2026-10-25T00:30Z", "2026-10-25T01:30Z", "2026-10-25T10:00Z"], utc=True))
    dates, night = clinical_dates(wall, (time(22), time(6)), BERLIN)
    assert list(dates) == ["2026-10-24", "2026-10-24", "2026-10-25"] and list(night) == [True, True, False]
    assert period_seconds(date(2026, 10, 24), "night", (time(22), time(6)), BERLIN) == 9 * 3600
    assert period_seconds(date(2026, 3, 28), "night", (time(22), time(6)), BERLIN) == 7 * 3600
    assert period_seconds(date(2026, 10, 25), "day", (time(22), time(6)), BERLIN) == 16 * 3600
    assert period_seconds(date(2026, 10, 25), "day", (time(20, 30), time(21, 30)), BERLIN) == 24 * 3600


def test_only_the_distressed_night_is_flagged_for_sadness(study: Path) -> None:
    days = fermon.read_patient_days(study)
    p01 = days[days["patient_id"] == "P01"].set_index("date")
    assert list(p01["period"].unique()) == ["night"] and len(p01) == 8  # 22:00-06:00 local: nights only
    flagged = p01[p01["flagged"]]
    assert list(flagged.index) == [date(2026, 10, 24)] and flagged["flag_classes"].tolist() == ["sadness"]
    reason = flagged["flag_reason"].iloc[0]
    assert reason.startswith("sadness 45% of the night against a usual 5% (z ") and p01["z_sadness"].max() > 3
    for k, day in enumerate([date(2026, 10, 17), date(2026, 10, 18), date(2026, 10, 19)]):  # no baseline yet
        assert p01.loc[day, "flag_reason"].startswith(f"no baseline: {k} earlier night(s) with enough coverage")
    assert p01.loc[date(2026, 10, 23), "flag_reason"].startswith("within the usual range")
    # The daylight-saving night: 9 hours, recorded in full, its after-midnight samples on the 24th.
    dst = p01.loc[date(2026, 10, 24)]
    assert dst["period_s"] == 9 * 3600 and dst["recorded_s"] == 9 * 3600 and dst["coverage"] == 1.0
    assert dst["sampled_frames"] == 540 and dst["baseline_n"] == 7


def test_low_coverage_and_no_manifest(study: Path) -> None:
    days = fermon.read_patient_days(study)
    (p02,) = days[days["patient_id"] == "P02"].itertuples()
    assert not p02.flagged and p02.flag_reason == "coverage 10% of the night below the 30% floor: not compared"
    assert set(days["patient_id"]) == {"P01", "P02"}  # the session without a patient gives no patient days
    summary = pd.read_parquet(study / "summary.parquet")
    assert "loose" in set(summary["session_id"])


def test_types_through_the_api_and_plain_pandas(study: Path) -> None:
    days = fermon.read_patient_days(study)
    pd.testing.assert_frame_equal(days, pd.read_parquet(study / "patient_days.parquet"))
    assert days["patient_id"].dtype == "string" and days["flag_reason"].dtype == "string"
    assert isinstance(days["date"].iloc[0], date) and days["flagged"].dtype == bool
    assert days["start_time"].dtype == "datetime64[us, UTC]" and days["episodes_sadness"].dtype == "int64"
    import pyarrow.parquet as pq

    assert str(pq.read_schema(study / "patient_days.parquet").field("date").type) == "date32[day]"
    assert json.loads(pq.read_schema(study / "patient_days.parquet").metadata[b"fermon"])["baseline"]["days"] == 7
    # DuckDB (a test dependency) reads the same rows and values: the flagged night among them.
    import duckdb

    theirs = duckdb.sql(f"select * from '{study / 'patient_days.parquet'}'").df()
    assert list(theirs.columns) == list(days.columns) and len(theirs) == len(days)
    flagged = duckdb.sql(f"select patient_id, date, period from '{study / 'patient_days.parquet'}' where flagged")
    assert flagged.fetchall() == [
        tuple(row) for row in days.loc[days["flagged"], ["patient_id", "date", "period"]].values
    ]
    for column in ("share_sadness", "recorded_s", "coverage"):
        assert np.allclose(theirs[column].to_numpy(float), days[column].to_numpy(float), equal_nan=True)


def test_episodes_count_at_the_night_they_start() -> None:
    parts = [
        {"patient_id": "P01", "session_id": "s", "date": "2026-10-24", "period": "night", "sampled_frames": 10,
         "covered_frames": 10, "recorded_s": 600.0, "covered_s": 600.0, "period_s": 32400.0,
         "start_time": "2026-10-24T20:00:00+00:00", "end_time": "2026-10-25T04:59:00+00:00",
         **{f"sum_prob_{c}": 1.0 for c in NAMES}, **{f"count_{c}": 5 * (c != "happiness") for c in NAMES}},
    ]  # fmt: skip
    starts = pd.to_datetime(["2026-10-25T01:30Z", "2026-10-25T02:00Z", "2026-10-25T02:00Z"], utc=True)
    episodes = pd.DataFrame({"patient_id": ["P01", "P01", None], "session_id": ["s", "s", "x"]})
    episodes = episodes.assign(expression="sadness", start=starts, duration_s=[90.0, 30.0, 60.0])
    (row,) = patient_days(parts, episodes, NAMES).itertuples()
    assert row.episodes_sadness == 2 and row.episode_min_sadness == pytest.approx(2.0) and row.episodes_neutral == 0
    assert patient_days(parts, None, NAMES)["episodes_sadness"].tolist() == [0]


def test_cohort_page_opens_with_the_flagged_patient(study: Path) -> None:
    index = (study / "reports" / "index.html").read_text()
    top, rest = index.split("<h2>Everyone else</h2>", 1)
    assert "Flagged since no earlier build" in top and 'href="patients/P01.html"' in top
    assert "sadness 45% of the night" in top and "P02" not in top
    assert 'href="patients/P02.html"' in rest.split("<table", 1)[0]
    assert index.index("Flagged since") < index.index('<table class="sortable cohort">')
    page = (study / "reports" / "patients" / "P01.html").read_text()
    assert "night of 2026-10-24: sadness 45% of the night" in page and "<svg" in page and "<img" not in page
    assert str(study.parent) not in page


@pytest.mark.slow
@pytest.mark.parametrize("patient", ["P01", "P02"])
def test_patient_page_renders_in_chromium(study: Path, patient: str, tmp_path: Path) -> None:
    image, console, requests = chromium((study / "reports" / "patients" / f"{patient}.html").as_uri(), tmp_path)
    assert console == "" and requests == []
    assert (image.min(axis=2) < 200).mean() > 0.01
    colour = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60
    least = 2000 if patient == "P01" else 200  # P02 has one night: one point
    assert colour.sum() > least, f"{patient}: figure looks empty ({colour.sum()} coloured pixels)"


def test_force_keeps_first_seen_and_a_new_night_touches_one_patient(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(study, out)
    first = json.loads((out / "flags.json").read_text())
    assert list(first["flags"]) == ["P01|2026-10-24|night|sadness"]
    clock.sleep(1.1)  # first_seen has whole seconds
    build_reports(out, force=True)
    again = json.loads((out / "flags.json").read_text())
    assert again["flags"] == first["flags"] and again["previous_build"] == first["built"]
    index = (out / "reports" / "index.html").read_text()
    assert "No patient newly flagged" in index and "1 flagged day(s) or night(s), none new" in index
    # One more calm night for P01: only P01's page is drawn again, P02's is kept.
    p02_page = out / "reports" / "patients" / "P02.html"
    p02_stamp = p02_page.stat().st_mtime_ns
    write_night(out, "p01-25", "P01", "2026-10-25T22:00:00+01:00", 8.0, 0.05)
    result = build_reports(out)
    assert result.built == ["p01-25"] and p02_page.stat().st_mtime_ns == p02_stamp
    days = fermon.read_patient_days(out)
    assert days[days["patient_id"] == "P01"]["flagged"].tolist() == [False] * 7 + [True, False]
    assert json.loads((out / "flags.json").read_text())["flags"] == first["flags"]


def test_patient_days_over_200_sessions_in_under_a_second() -> None:
    """The cohort table from the parts the report manifest keeps: 200 sessions of 50 patients."""
    parts = []
    for s in range(200):
        day = pd.Timestamp("2026-10-01") + pd.Timedelta(days=s // 50)
        parts.append({"patient_id": f"P{s % 50:02d}", "session_id": f"s{s}", "date": day.strftime("%Y-%m-%d"),
                      "period": "night", "sampled_frames": 5760, "covered_frames": 5000, "recorded_s": 28800.0,
                      "covered_s": 25000.0, "period_s": 28800.0, "start_time": f"{day:%Y-%m-%d}T20:00:00+00:00",
                      "end_time": f"{day:%Y-%m-%d}T23:59:00+00:00", **{f"sum_prob_{c}": 100.0 for c in NAMES},
                      **{f"count_{c}": 1000 for c in NAMES}})  # fmt: skip
    started = clock.perf_counter()
    days = patient_days(parts, None, NAMES)
    assert clock.perf_counter() - started < 1.0 and len(days) == 200


def test_baseline_options_are_checked(study: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(study), "--baseline-days", "2"])
    assert result.exit_code == 64 and "--baseline-days must be at least 3" in result.output
    result = CliRunner().invoke(app, ["report", str(study), "--min-coverage", "1.5"])
    assert result.exit_code == 64 and "--min-coverage must be between 0 and 1" in result.output


def test_short_recordings_of_each_night_are_compared(tmp_path: Path) -> None:
    """A study that records 30 minutes of each night (the face seen throughout) compares its nights:
    coverage is the share of recorded samples with the face, not of the night's hours."""
    out = tmp_path / "out"
    for day in range(17, 25):
        sad = 0.45 if day == 24 else 0.04 + 0.01 * (day % 3)
        write_night(out, f"p03-{day}", "P03", f"2026-10-{day}T23:00:00+02:00", 0.5, sad)
    result = CliRunner().invoke(app, ["report", str(out), "--timezone", "Europe/Berlin", "--workers", "0"])
    assert result.exit_code == 0, result.output
    days = fermon.read_patient_days(out)
    assert (days["coverage"] == 1.0).all() and (days["recorded_s"] == 1800).all()
    flagged = days[days["flagged"]]
    assert [(str(d), c) for d, c in zip(flagged["date"], flagged["flag_classes"])] == [("2026-10-24", "sadness")]
