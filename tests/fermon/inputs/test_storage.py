"""Inputs and outputs in object storage: a real S3-compatible server (moto's) on loopback, real s3fs,
real videos decoded by decord through fsspec file objects, real timelines and reports. Credentials
come from boto's environment variables only."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fermon.cli import app
from fermon.inputs import relay, storage
from fermon.inputs.discover import find_inputs
from fermon.inputs.sessions import VideoFile
from fermon.run.ledger import LEDGER_NAME, file_fingerprint
from fermon.run.process import ProcessOptions, run_process
from fermon.video import open_reader, probe
from tests.s3server import ACCESS_KEY, SECRET_KEY, fresh_s3, s3_bucket
from tests.videos import write_bad_files, write_clip_set, write_video

BUCKET = "fermon-test"
KEY = ["session_id", "frame_index", "track_id"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """The server, boto's environment pointing at it, a bucket, and a client-local cache folder (where
    the ledgers of output URLs live)."""
    with s3_bucket(BUCKET, tmp_path_factory.mktemp("cache")) as (fs, _):
        yield fs


@pytest.fixture(scope="module")
def local_clips(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("s3clips") / "clinic"
    write_clip_set(root, astronaut)
    write_bad_files(root / "bad")
    return root


def upload(fs, local: Path, prefix: str) -> str:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())
    return f"s3://{prefix}"


@pytest.fixture(scope="module")
def clips_url(s3, local_clips: Path) -> str:
    return upload(s3, local_clips, f"{BUCKET}/in/clinic")


@pytest.fixture(scope="module")
def options(untrained_checkpoint: Path) -> ProcessOptions:
    return ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")


@pytest.fixture(scope="module")
def local_run(local_clips: Path, options: ProcessOptions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local-out")
    run_process([local_clips], out, options, workers=0)
    return out


def rows(location: Path | str) -> pd.DataFrame:
    folder = storage.join(location, "timelines")
    frames = []
    for name in storage.list_names(folder, ".parquet"):
        with storage.open_binary(storage.join(folder, name)) as handle:
            frames.append(pq.read_table(handle).to_pandas())
    return pd.concat(frames).sort_values(KEY).reset_index(drop=True)


def test_urls_and_paths() -> None:
    assert storage.location_of("s3://bucket/a/") == "s3://bucket/a"
    assert storage.location_of("file:///data/x") == Path("/data/x")
    assert storage.location_of("data/x") == Path("data/x")
    assert storage.join("s3://b/out", "timelines", "a.parquet") == "s3://b/out/timelines/a.parquet"
    assert storage.shown("s3://user:secret@host/b") == "s3://host/b"


def test_memory_store_writes_whole_objects_and_lists_videos(local_clips: Path) -> None:
    storage.write_bytes_atomic("memory://fermon-t/in/ward 3/pt01.mp4", (local_clips / "face.mp4").read_bytes())
    storage.write_bytes_atomic("memory://fermon-t/in/.hidden/x.mp4", b"x")
    storage.write_bytes_atomic("memory://fermon-t/in/notes.txt", b"notes")
    found = find_inputs(["memory://fermon-t/in"], "folder")
    assert [(s.session_id, [v.relative for v in s.videos]) for s in found.sessions] == [("ward_3", ["ward 3/pt01.mp4"])]
    assert found.skipped == ["notes.txt"]
    (video,) = found.sessions[0].videos
    info, _ = probe(video)
    assert info.frame_count == 30 and info.size_bytes == (local_clips / "face.mp4").stat().st_size
    assert file_fingerprint(video.path) == file_fingerprint(local_clips / "face.mp4")


@pytest.mark.slow
def test_decord_streams_an_s3_object_through_the_relay(s3, tmp_path: Path) -> None:
    """decord 0.6 indexes every packet when it opens a video, so opening reads the object once, by
    ranges through the loopback relay (no copy in memory or on disk); frames decode as from disk."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(60)]  # noise: a large file
    local = write_video(tmp_path / "noise.mp4", frames)
    url = upload(s3, tmp_path, f"{BUCKET}/ranged")
    video = VideoFile(f"{url}/noise.mp4", "noise.mp4")
    size = local.stat().st_size
    reader = open_reader(video)
    assert reader.fermon_source.url.startswith("http://127.0.0.1:")
    stamps = reader.get_frame_timestamp(np.arange(len(reader)))
    fetched_to_open = reader.fermon_source.fetched
    decoded = reader.get_batch([59]).asnumpy()
    fetched_in_all = reader.fermon_source.fetched
    on_disk = open_reader(VideoFile(local, "noise.mp4"))
    assert np.array_equal(decoded, on_disk.get_batch([59]).asnumpy())
    assert np.array_equal(stamps, on_disk.get_frame_timestamp(np.arange(len(on_disk))))
    print(f"noise.mp4: {size} bytes; opening fetched {fetched_to_open}, then the last frame {fetched_in_all}")
    assert size < fetched_to_open < 1.3 * size  # once, plus the relay's read-ahead at each seek
    assert fetched_in_all - fetched_to_open < size / 2  # a seek fetches from its keyframe, not the file
    token = reader.fermon_source.token
    del reader
    assert relay._RELAY.lookup(token) is None  # gone with its reader


@pytest.mark.slow
def test_s3_inputs_and_outputs_match_a_local_run(s3, clips_url: str, options, local_run: Path) -> None:
    out = f"s3://{BUCKET}/out"
    partial: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def read_while_running() -> None:
        """A reader of the bucket during the run: every timeline it can see must be whole."""
        reader = fresh_s3()
        while not stop.is_set():
            prefix = f"{BUCKET}/out/timelines"
            for key in reader.find(prefix, refresh=True):
                if key == prefix:  # s3fs names a missing prefix itself
                    continue
                if not key.endswith(".parquet"):
                    partial.append(f"{key}: not a timeline")  # a temporary key would show here
                    continue
                seen.add(key)
                try:
                    pq.read_table(pa.BufferReader(reader.cat_file(key)))
                except Exception as error:
                    if reader.exists(key):
                        partial.append(f"{key}: {error}")

    watcher = threading.Thread(target=read_while_running)
    watcher.start()
    try:
        summary = run_process([clips_url], out, options, workers=0)
    finally:
        stop.set()
        watcher.join()
    assert sorted(r.session_id for r in summary.done) == ["blank", "face", "leaves", "two"]
    assert {r.session_id: r.error for r in summary.failed} == {
        "bad__corrupt": summary.failed[0].error,
        "bad__empty": "bad/empty.mp4: empty file",
    }
    assert summary.failed[0].error.startswith("bad/corrupt.mp4: not a readable video")
    assert not partial and seen  # it saw timelines appear, each one whole
    pd.testing.assert_frame_equal(rows(local_run), rows(out), check_exact=False, atol=1e-5)
    keys = s3.find(f"{BUCKET}/out", refresh=True)
    assert sorted(k.rsplit("/", 1)[-1] for k in keys) == [f"{s}.parquet" for s in ("blank", "face", "leaves", "two")]
    # The ledger and the lock stay on this machine; the rerun finds them by the URL.
    state = storage.state_dir(out)
    assert (state / LEDGER_NAME).is_file()
    again = run_process([clips_url], out, options, workers=0)
    assert sorted(again.up_to_date) == ["blank", "face", "leaves", "two"] and again.known_bad == [
        "bad__corrupt",
        "bad__empty",
    ]


@pytest.mark.slow
def test_cli_process_and_report_over_s3(s3, clips_url: str, untrained_checkpoint: Path, tmp_path: Path) -> None:
    out = f"s3://{BUCKET}/cli-out"
    log = tmp_path / "run.jsonl"
    common = ["--checkpoint", str(untrained_checkpoint), "--device", "cpu", "--workers", "0"]
    result = CliRunner().invoke(app, ["process", clips_url, "--out", out, *common, "--log-json", str(log)])
    assert result.exit_code == 65, result.output  # two bad files
    names = {key.split("/cli-out/", 1)[1] for key in s3.find(f"{BUCKET}/cli-out", refresh=True)}
    assert {"summary.parquet", "reports/index.html", "reports/sessions/face.html", "timelines/face.parquet"} <= names
    summary = pd.read_parquet(f"{out}/summary.parquet")
    assert sorted(summary["session_id"]) == ["blank", "face", "leaves", "two"]
    assert "corrupt.mp4" in s3.cat_file(f"{BUCKET}/cli-out/reports/index.html").decode()
    report = CliRunner().invoke(app, ["report", out])
    assert report.exit_code == 0, report.output
    assert f"open {out}/reports/index.html" in report.output
    # What one build keeps for the next (the settings) travels with the URL's outputs, as it does on disk.
    assert CliRunner().invoke(app, ["report", out, "--timezone", "Europe/Berlin"]).exit_code == 0
    assert CliRunner().invoke(app, ["report", out]).exit_code == 0
    assert json.loads(s3.cat_file(f"{BUCKET}/cli-out/clinical.json"))["timezone"] == "Europe/Berlin"
    names = {key.split("/cli-out/", 1)[1] for key in s3.find(f"{BUCKET}/cli-out", refresh=True)}
    assert {"episodes.parquet", "clinical.json"} <= names
    # No credentials in any output: the bucket, the local ledger folder, the event log.
    written = [s3.cat_file(key) for key in s3.find(f"{BUCKET}/cli-out", refresh=True)]
    written += [p.read_bytes() for p in storage.state_dir(out).rglob("*") if p.is_file()]
    written.append(log.read_bytes())
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert not any(secret.encode() in data for data in written)


def test_a_missing_input_url_and_an_unwritable_output(s3, options, tmp_path: Path) -> None:
    from fermon.errors import InputError, OutputError

    with pytest.raises(InputError, match=f"s3://{BUCKET}/nothing-here: no such file or folder"):
        run_process([f"s3://{BUCKET}/nothing-here"], tmp_path, options, workers=0)
    with pytest.raises(OutputError, match="s3://no-such-bucket-fermon/out: cannot write"):
        run_process([tmp_path], "s3://no-such-bucket-fermon/out", options, workers=0)
