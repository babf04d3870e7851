"""Clinical events: reading them, peri-event windows, day and night per patient, and the reports
(session pages, events.parquet, patients.parquet, the cohort page) from a real processed study."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fermon.cli import app
from fermon.errors import DataError, UsageError
from fermon.report.events import (
    events_frame,
    parse_night,
    patients_frame,
    read_events,
    session_event_rows,
    session_periods,
)
from tests.videos import astronaut_face, blank_frames, moving_face_frames, write_video

NAMES = ["neutral", "happiness"]
START = "2026-03-29T00:59:58.000000Z"  # 01:59:58 CET, two seconds before clocks go to 03:00 CEST


def _events(tmp_path: Path, body: str, header: str = "patient_id,session_id,time,event,end\n") -> Path:
    path = tmp_path / "events.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def _samples(covered_until: float, seconds: float = 10.0) -> pd.DataFrame:
    """One sample per second: covered (neutral 0.8) until ``covered_until``, then uncovered."""
    times = np.arange(0.0, seconds, 1.0)
    covered = times < covered_until
    return pd.DataFrame(
        {
            "session_id": "s1",
            "timestamp_s": times,
            "covered": covered,
            "label": pd.Categorical(np.where(covered, "neutral", None), categories=NAMES),
            "prob_neutral": np.where(covered, 0.8, np.nan),
            "prob_happiness": np.where(covered, 0.2, np.nan),
        }
    )


def test_read_events_and_its_errors(tmp_path: Path) -> None:
    (event,) = read_events(_events(tmp_path, "P01,,2026-03-29T03:00:03+02:00,sedation,2026-03-29T03:00:05+02:00\n"))
    assert (event.line, event.patient_id, event.session_id, event.event) == (2, "P01", None, "sedation")
    assert (event.end - event.time).total_seconds() == 2
    for body, message in [
        ("P01,,2026-03-29T03:00:03,x,\n", "events.csv:2: '2026-03-29T03:00:03' has no UTC offset"),
        (",,2026-03-29T03:00:03Z,x,\n", "events.csv:2: needs a patient_id or a session_id"),
        ("P01,,2026-03-29T03:00:03Z,x,2026-03-29T03:00:01Z\n", "events.csv:2: end '2026-03-29T03:00:01Z' is before"),
        ("P01,,2026-03-29T03:00:03Z,,\n", "events.csv:2: empty event"),
    ]:
        with pytest.raises(DataError) as error:
            read_events(_events(tmp_path, body))
        assert str(error.value).startswith(message)
    with pytest.raises(DataError, match=r"events\.csv:1: needs the columns"):
        read_events(_events(tmp_path, "x\n", header="when,what\n"))
    with pytest.raises(UsageError, match="--night must look like"):
        parse_night("late")


def test_peri_event_windows() -> None:
    """An event at 5 s with a 3-s window: before is [2, 5) (covered), after [5, 8) (covered only at 5)."""
    metadata = {"session_id": "s1", "patient_id": "P01", "clock": {"start": START}}
    (event,) = read_events_from_text("P01,,2026-03-29T01:00:03Z,pain,\n")
    (row,) = session_event_rows(_samples(covered_until=6), metadata, 10.0, [event], 3.0, NAMES)
    assert row["offset_s"] == pytest.approx(5.0) and row["in_recording"]
    assert row["before_samples"] == 3 and row["before_coverage"] == 1.0
    assert row["after_samples"] == 3 and row["after_coverage"] == pytest.approx(1 / 3)
    assert row["before_mean_prob_neutral"] == pytest.approx(0.8) and row["during_samples"] == 0
    # Another patient's event is not this session's; an unknown start places nothing.
    (other,) = read_events_from_text("P02,,2026-03-29T01:00:03Z,pain,\n")
    assert session_event_rows(_samples(6), metadata, 10.0, [other], 3.0, NAMES) == []
    (unplaced,) = session_event_rows(_samples(6), {**metadata, "clock": {}}, 10.0, [event], 3.0, NAMES)
    assert not unplaced["in_recording"] and np.isnan(unplaced["before_coverage"])
    frame = events_frame([row, unplaced], NAMES)
    assert frame["time"].dtype == "datetime64[us, UTC]" and len(frame) == 2


def read_events_from_text(body: str) -> list:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return read_events(_events(Path(folder), body))


def test_day_and_night_across_the_daylight_saving_change() -> None:
    """Night ends at 03:00:05 Berlin time: the samples from 01:59:58 CET to 03:00:04 CEST (7 s in UTC,
    not an hour and 7 s) are night, the rest day."""
    metadata = {"session_id": "s1", "patient_id": "P01", "clock": {"start": START, "utc_offset": "+01:00"}}
    night = (time(22, 0), time(3, 0, 5))
    parts = session_periods(_samples(covered_until=10), metadata, night, ZoneInfo("Europe/Berlin"), NAMES)
    by_period = {p["period"]: p for p in parts}
    # parse_night keeps whole minutes: 03:00:05 counts from 03:00, so samples 0 and 1 (01:59:58, 01:59:59) are
    # night and those from 03:00:00 CEST on are day.
    assert by_period["night"]["sampled_frames"] == 2 and by_period["day"]["sampled_frames"] == 8
    patients = patients_frame(parts, NAMES)
    assert list(patients["period"]) == ["day", "night"]
    assert patients["coverage"].tolist() == [1.0, 1.0] and patients["sessions"].tolist() == [1, 1]
    assert patients["dominant_expression"].tolist() == ["neutral", "neutral"]
    assert parse_night("22:00-06:00") == (time(22, 0), time(6, 0))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, untrained_checkpoint: Path) -> dict:
    """Patient P01's night in two chunks across the change; P02's short day session; and events."""
    root = tmp_path_factory.mktemp("study")
    face = astronaut_face(astronaut)
    write_video(root / "in" / "bed" / "a.mp4", moving_face_frames(face, 2, 10))
    write_video(root / "in" / "bed" / "b.mp4", moving_face_frames(face, 2, 10, visible_until=1.0))
    write_video(root / "in" / "day.mp4", blank_frames(2, 10))
    manifest = root / "manifest.csv"
    manifest.write_text(
        "video,patient_id,session_id,start\n"
        "bed/a.mp4,P01,p01-night,2026-03-29T01:59:58+01:00\n"
        "bed/b.mp4,P01,p01-night,2026-03-29T03:00:01+02:00\n"
        "day.mp4,P02,p02-day,2026-03-29T14:00:00+02:00\n"
    )
    events = _events(
        root,
        "P01,,2026-03-29T03:00:02+02:00,sedation,\n"
        ",p01-night,2026-03-29T01:59:59+01:00,nurse visit,2026-03-29T03:00:00+02:00\n"
        "P02,,2026-03-29T14:00:01+02:00,physiotherapy,\n"
        "P03,,2026-03-29T12:00:00Z,not recorded,\n",
    )
    out = root / "out"
    args = ["process", str(root / "in"), "--out", str(out), "--manifest", str(manifest), "--events", str(events)]
    args += ["--event-window", "0.05", "--checkpoint", str(untrained_checkpoint), "--detector", "centerface"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TZ", "UTC")  # as on a machine with no zone set: times at the manifest's offsets
        result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output, "events": events}


@pytest.mark.slow
def test_every_event_is_in_events_parquet_and_on_its_pages(study: dict) -> None:
    out = study["out"]
    events = pd.read_parquet(out / "events.parquet")
    assert sorted(set(events["event_line"])) == [2, 3, 4, 5]
    night = events[events["session_id"] == "p01-night"].set_index("event")
    assert set(night.index) == {"sedation", "nurse visit"} and night["in_recording"].all()
    assert night.loc["sedation", "offset_s"] == pytest.approx(4.0)  # 3 s of wall clock across 02:00 -> 03:00
    assert night.loc["sedation", "before_samples"] == 10  # [1, 4) s at 5 per second, less the gap [2, 3)
    assert night.loc["sedation", "before_coverage"] > night.loc["sedation", "after_coverage"]  # the face leaves
    assert night.loc["nurse visit", "during_samples"] == 5  # [1, 2) s: its end is 03:00 CEST, one second on
    missing = events[events["event"] == "not recorded"]
    assert missing["session_id"].isna().all() and not missing["in_recording"].any()
    page = (out / "reports" / "sessions" / "p01-night.html").read_text()
    # Without --timezone, times are shown at the manifest's offset for the session's start (+01:00).
    for text in ("sedation", "nurse visit", "2026-03-29 02:00:02 +01:00", "2026-03-29 01:59:59 +01:00"):
        assert text in page
    assert "physiotherapy" not in page
    assert "physiotherapy" in (out / "reports" / "sessions" / "p02-day.html").read_text()
    assert "1 event row(s) near no recording" in study["output"]


@pytest.mark.slow
def test_patients_and_the_cohort_page(study: dict) -> None:
    out = study["out"]
    patients = pd.read_parquet(out / "patients.parquet")
    assert set(zip(patients["patient_id"], patients["period"])) == {
        ("P01", "day"), ("P01", "night"), ("P02", "day"), ("P02", "night")
    }  # fmt: skip
    p01 = patients[patients["patient_id"] == "P01"].set_index("period")
    assert p01.loc["night", "sampled_frames"] == 20 and p01.loc["day", "sampled_frames"] == 0  # 02:00-04:00 is night
    index = (out / "reports" / "index.html").read_text()
    assert "<h2>Patients</h2>" in index and "Patient P01" in index and "Patient P02" in index
    # The sessions' table has their start on the wall clock (UTC here: built with no zone set).
    assert "start (UTC)" in index and '<span class="nowrap">00:59</span>' in index
    assert str(out.parent) not in index


@pytest.mark.slow
def test_report_alone_rebuilds_from_what_dir_holds(study: dict, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(study["out"], out)
    before = pd.read_parquet(out / "events.parquet")
    result = CliRunner().invoke(app, ["report", str(out), "--force", "--workers", "0"])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out / "events.parquet"), before)
    assert "sedation" in (out / "reports" / "sessions" / "p01-night.html").read_text()
    berlin = CliRunner().invoke(app, ["report", str(out), "--timezone", "Europe/Berlin", "--workers", "0"])
    assert berlin.exit_code == 0, berlin.output
    page = (out / "reports" / "sessions" / "p01-night.html").read_text()
    assert "Europe/Berlin" in page and "2026-03-29 03:00:02 +02:00" in page
    bad = CliRunner().invoke(app, ["report", str(out), "--timezone", "Mars/Olympus"])
    assert bad.exit_code == 64 and "unknown time zone 'Mars/Olympus'" in bad.output


@pytest.mark.slow
def test_without_timezone_the_machines_zone_is_kept_and_shown(
    study: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P01's night starts at 20:59:58 in New York (EDT since March 8): with night hours 20:30-21:30 all of
    it is night there, where a fixed offset (EST, 19:59:58; or the manifest's +01:00) would make it day."""
    import json
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(study["out"], out)
    assert json.loads((out / "clinical.json").read_text())["timezone"] is None  # built with no zone set
    monkeypatch.setenv("TZ", "America/New_York")
    result = CliRunner().invoke(app, ["report", str(out), "--night", "20:30-21:30", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "clinical.json").read_text())["timezone"] == "America/New_York"
    p01 = pd.read_parquet(out / "patients.parquet").set_index(["patient_id", "period"]).loc["P01"]
    assert p01.loc["night", "sampled_frames"] == 20 and p01.loc["day", "sampled_frames"] == 0
    page = (out / "reports" / "sessions" / "p01-night.html").read_text()
    assert "<th>times shown in</th><td>America/New_York</td>" in page and "2026-03-28 20:59:58 -04:00" in page
    # Kept: another machine (or none set) shows the same; --timezone still wins, and is kept in its turn.
    monkeypatch.setenv("TZ", "UTC")
    assert CliRunner().invoke(app, ["report", str(out), "--workers", "0"]).exit_code == 0
    assert json.loads((out / "clinical.json").read_text())["timezone"] == "America/New_York"
    berlin = CliRunner().invoke(app, ["report", str(out), "--timezone", "Europe/Berlin", "--workers", "0"])
    assert berlin.exit_code == 0, berlin.output
    assert json.loads((out / "clinical.json").read_text())["timezone"] == "Europe/Berlin"
    p01 = pd.read_parquet(out / "patients.parquet").set_index(["patient_id", "period"]).loc["P01"]
    assert p01.loc["day", "sampled_frames"] == 20  # 01:59:58 to 03:00:04 in Berlin: not 20:30-21:30
