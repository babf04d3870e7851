"""Reports end to end: a real ``fermon process`` run (which builds the reports), pages opened in
headless Chromium, summary.parquet checked against the analyst API, incremental rebuilds."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fermon
from fermon.cli import app
from fermon.report import build_reports
from tests.fermon.test_analysis import write_small_clips

# Debian's package; the README says how to install it. Without it the browser checks skip, saying why.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Requests the browser makes for itself (updates, time, accounts), not for the page.
BROWSER_HOSTS = ("google.com", "googleapis.com", "gstatic.com", "gvt1.com")


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, untrained_checkpoint: Path) -> Path:
    root = tmp_path_factory.mktemp("report")
    clips = write_small_clips(root / "clips", astronaut)
    out = root / "out"
    arguments = ["process", str(clips), "--out", str(out), "--workers", "0", "--checkpoint", str(untrained_checkpoint)]
    result = CliRunner().invoke(app, [*arguments, "--detector", "centerface", "--device", "cpu", "--quiet"])
    assert result.exit_code == 65, result.output  # the corrupt file fails, the rest go on
    return out


def pages(out: Path) -> list[Path]:
    return [out / "reports" / "index.html", *sorted((out / "reports" / "sessions").glob("*.html"))]


@pytest.mark.slow
def test_process_writes_reports_and_summary(processed: Path) -> None:
    assert [p.name for p in pages(processed)] == ["index.html", "blank.html", "face.html", "two.html"]
    summary = pd.read_parquet(processed / "summary.parquet")
    expected = fermon.summarize(fermon.read_timelines(processed))
    pd.testing.assert_frame_equal(summary, expected)
    assert not list(processed.glob(".*.tmp")) and not list((processed / "reports").rglob(".*.tmp"))


@pytest.mark.slow
def test_index_lists_sessions_and_failures(processed: Path) -> None:
    html = (processed / "reports" / "index.html").read_text()
    for session_id in ("blank", "face", "two"):
        assert f'href="sessions/{session_id}.html"' in html
    failed = html.split("Failed inputs", 1)[1]
    assert "corrupt.mp4" in failed and "not a readable video" in failed
    assert "low coverage" in html and "several faces" in html
    assert 'class="sortable"' in html and "addEventListener" in html


@pytest.mark.slow
def test_pages_are_self_contained_and_private(processed: Path) -> None:
    root = str(processed.parent)
    for path in pages(processed):
        html = path.read_text()
        assert root not in html and "/tmp/" not in html and "file:" not in html, path.name
        links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
        assert not [u for u in links if urlparse(u).scheme not in ("", "data")], path.name
        assert "<img" not in html and "<link" not in html and "<script src" not in html and "@import" not in html
        assert "@media print" in html
    session = (processed / "reports" / "sessions" / "face.html").read_text()
    assert session.count("<svg") == 4 and "checkpoint sha256" in session and fermon.__version__ in session


def test_include_thumbnails_needs_the_videos(processed: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(processed), "--include-thumbnails"])
    assert result.exit_code == 64 and "--videos" in result.output


def _thumbnails(html: str) -> list[np.ndarray]:
    uris = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', html)
    return [cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR) for uri in uris]


@pytest.mark.slow
def test_thumbnails_only_when_asked_and_taken_from_the_video(processed: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(processed, out)
    clips = processed.parent / "clips"
    result = CliRunner().invoke(app, ["report", str(out), "--include-thumbnails", "--videos", str(clips)])
    assert result.exit_code == 0, result.output
    face = (out / "reports" / "sessions" / "face.html").read_text()
    images = _thumbnails(face)
    assert images and "identifiable data" in face
    for image in images:  # a face crop from the astronaut clip: textured, not a flat frame
        assert image.shape[0] == 96 and image.std() > 20
    blank = (out / "reports" / "sessions" / "blank.html").read_text()
    assert not _thumbnails(blank) and "No target face to show" in blank
    assert "<img" not in (out / "reports" / "index.html").read_text()
    _, console, requests = chromium((out / "reports" / "sessions" / "face.html").as_uri(), tmp_path)
    assert console == "" and requests == []  # the faces are inline data, not fetched
    # Built again without the option, every page loses its faces.
    rebuilt = build_reports(out)
    assert sorted(rebuilt.built) == ["blank", "face", "two"]
    assert "<img" not in (out / "reports" / "sessions" / "face.html").read_text()


@pytest.mark.slow
def test_thumbnails_name_a_video_that_is_not_there(processed: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(processed, out)
    build_reports(out, thumbnails_from=[tmp_path / "elsewhere"])
    face = (out / "reports" / "sessions" / "face.html").read_text()
    assert not _thumbnails(face) and "Not found or not readable" in face and "face.mp4" in face
    assert str(tmp_path) not in face


@pytest.mark.slow
def test_incremental_build(processed: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(processed, out)
    again = build_reports(out)  # copytree keeps mtimes: a copied folder keeps its pages
    assert again.built == [] and sorted(again.unchanged) == ["blank", "face", "two"] and again.failed_inputs == 1
    os.utime(out / "timelines" / "face.parquet", ns=(1, 1))
    (out / "timelines" / "blank.parquet").unlink()
    third = CliRunner().invoke(app, ["report", str(out)])
    assert third.exit_code == 0 and "1 page(s) built, 1 unchanged" in third.output
    assert not (out / "reports" / "sessions" / "blank.html").exists()
    assert list(pd.read_parquet(out / "summary.parquet")["session_id"]) == ["face", "two"]
    assert sorted(build_reports(out, force=True).built) == ["face", "two"]


def chromium(url: str, workdir: Path) -> tuple[np.ndarray, str, list[str]]:
    """Screenshot, console messages and the page's network requests from headless Chromium."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: the pages are not opened in a browser (apt-get install chromium)")
    png, netlog = workdir / "page.png", workdir / "net.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--log-net-log={netlog}",
        f"--screenshot={png}", "--window-size=1200,2000", url,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert png.is_file(), run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    urls = set(re.findall(r'"url":"([^"]+)"', netlog.read_text())) if netlog.is_file() else set()
    hosts = {u: urlparse(u).hostname or "" for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss")}
    requests = [u for u, host in hosts.items() if not host.endswith(BROWSER_HOSTS)]
    return cv2.imread(str(png)), "\n".join(console), requests


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index", "sessions/blank", "sessions/face", "sessions/two"])
def test_pages_render_in_chromium(processed: Path, page: str, tmp_path: Path) -> None:
    image, console, requests = chromium((processed / "reports" / f"{page}.html").as_uri(), tmp_path)
    assert console == "" and requests == []
    non_white = (image.min(axis=2) < 200).mean()
    assert non_white > 0.01, f"{page}: looks blank ({non_white:.3%} non-white)"
    if page in ("sessions/face", "sessions/two"):
        # Coloured plot marks (curves, bars, coverage fill), not just black text and axes.
        colour = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60
        assert colour.sum() > 5000, f"{page}: plots look empty ({colour.sum()} coloured pixels)"


def test_chromium_check_catches_errors_and_requests(tmp_path: Path) -> None:
    """The checks above can fail: a page with a script error and a remote image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<p>x</p><script>notDefined();</script><img src="https://example.org/x.png">')
    _, console, requests = chromium(bad.as_uri(), tmp_path)
    assert "notDefined" in console and requests == ["https://example.org/x.png"]


def test_manifest_records_timeline_stamps(processed: Path) -> None:
    manifest = json.loads((processed / "reports" / "manifest.json").read_text())
    assert set(manifest["sessions"]) == {"blank", "face", "two"}
    stat = (processed / "timelines" / "face.parquet").stat()
    assert manifest["sessions"]["face"]["timeline"] == [stat.st_size, stat.st_mtime_ns]


@pytest.mark.slow
def test_process_options_for_reports(processed: Path, untrained_checkpoint: Path, tmp_path: Path) -> None:
    """Every input failed: the index still says why. --no-report: no reports at all."""
    clips = processed.parent / "clips"
    common = ["--workers", "0", "--checkpoint", str(untrained_checkpoint), "--device", "cpu", "--quiet"]
    failed = CliRunner().invoke(app, ["process", str(clips / "corrupt.mp4"), "--out", str(tmp_path / "a"), *common])
    assert failed.exit_code == 65
    index = (tmp_path / "a" / "reports" / "index.html").read_text()
    assert "No session has a timeline yet" in index and "not a readable video" in index
    assert len(pd.read_parquet(tmp_path / "a" / "summary.parquet")) == 0
    arguments = ["process", str(clips / "blank.mp4"), "--out", str(tmp_path / "b"), "--no-report", *common]
    skipped = CliRunner().invoke(app, [*arguments, "--detector", "centerface"])
    assert skipped.exit_code == 0 and (tmp_path / "b" / "timelines" / "blank.parquet").is_file()
    assert not (tmp_path / "b" / "reports").exists() and not (tmp_path / "b" / "summary.parquet").exists()


FER_PLUS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
# Written into the page's title once laid out: the document's width, the cohort table's right edge,
# and how wide its scrolling box's content is against its visible width.
WIDTH_PROBE = """<script>var t = document.querySelector("table.sortable"), box = t.parentElement;
document.title = [document.documentElement.scrollWidth, Math.ceil(t.getBoundingClientRect().right),
  box.scrollWidth, box.clientWidth].join(",");</script>"""


def laid_out_widths(html: str, workdir: Path, width: int, height: int = 900) -> list[int]:
    """The widths WIDTH_PROBE measures, in headless Chromium at this window size."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine: the pages are not opened in a browser (apt-get install chromium)")
    path = workdir / "probe.html"
    path.write_text(html.replace("</body>", f"{WIDTH_PROBE}</body>"), encoding="utf-8")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={workdir / 'p'}",
        f"--window-size={width},{height}", "--virtual-time-budget=2000", "--dump-dom", path.as_uri(),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    title = re.search(r"<title>([\d,]+)</title>", run.stdout)
    assert title, run.stderr[-2000:]
    return [int(v) for v in title.group(1).split(",")]


def test_the_cohort_table_fits_a_1400_px_window(tmp_path: Path) -> None:
    """Eight classes, every flag, long archive session ids, a start time: no sideways scrolling."""
    from zoneinfo import ZoneInfo

    from fermon.report import pages as html_pages

    flags = "low_coverage;multiple_faces;low_confidence;low_detection_score;decode_gaps"
    rows = []
    for k, start in enumerate(["2026-10-24T23:30:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00"]):
        row = {"session_id": f"archive.zip__ward3__p0{k}-2026-10-24-night", "duration_s": 28800.0,
               "sampled_frames": 144000, "coverage": 0.62, "dominant_expression": "happiness", "mean_confidence": 0.71,
               "multi_face_share": 0.12, "start_time": start, "quality_flags": flags}  # fmt: skip
        rows.append(row | {f"share_{c}": 0.125 for c in FER_PLUS})
    index = html_pages.index_page(rows, FER_PLUS, [], zone=ZoneInfo("Europe/Berlin"))
    document, table_right, content, visible = laid_out_widths(index, tmp_path, 1400)
    assert document <= 1400 and table_right <= 1400 and content <= visible, (document, table_right, content, visible)
    # The start column: on the wall clock in the display zone, which the header names; sorted by UTC.
    assert "start (Europe/Berlin)" in index
    assert '<span class="nowrap">2026-10-25</span> <span class="nowrap">01:30 CEST</span>' in index
    assert '<span class="nowrap">2026-10-25</span> <span class="nowrap">02:30 CET</span>' in index  # an hour on
    assert '<span class="nowrap">2026-10-25</span> <span class="nowrap">02:30 CEST</span>' in index
    assert 'data-v="2026-10-24T23:30:00+00:00"' in index
