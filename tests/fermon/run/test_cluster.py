"""Across machines: a real Dask scheduler and a worker in its own mount namespace, where a fresh
tmpfs hides the test's temporary folders (the checkpoint, the videos, local outputs), so the worker shares
nothing with the client but loopback. Inputs and outputs are in a real S3-compatible server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fermon
from fermon.errors import InputError, OutputError
from fermon.inputs import storage
from fermon.run.ledger import Ledger
from fermon.run.process import ProcessOptions, run_process
from tests.fermon.inputs.test_storage import rows, upload
from tests.s3server import s3_bucket
from tests.videos import write_bad_files, write_clip_set

pytestmark = pytest.mark.slow
BUCKET = "fermon-cluster"  # moto keeps one store per process: a bucket of this module's own
REPOSITORY = Path(fermon.__file__).resolve().parents[1]


def _private_mounts_work() -> str | None:
    """Why a worker cannot be given its own /tmp here, or None."""
    if shutil.which("unshare") is None:
        return "no unshare (util-linux)"
    if os.geteuid() != 0:
        return "unshare --mount needs root"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
    )
    return None if probe.returncode == 0 else f"cannot mount a private tmpfs ({probe.stderr.decode().strip()})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with s3_bucket(BUCKET, tmp_path_factory.mktemp("cache")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory: pytest.TempPathFactory):
    """``dask scheduler`` on loopback and one ``dask worker`` that sees an empty tmpfs where the tests'
    temporary folders are. Only those are hidden: the repository (wherever a clone lies, /tmp included)
    stays visible, so the worker runs the same fermon."""
    hidden = tmp_path_factory.getbasetemp()
    reason = _private_mounts_work()
    if reason:
        pytest.skip(reason)
    _, environment = s3
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **environment, "PYTHONPATH": str(REPOSITORY), "HF_HUB_OFFLINE": "1"}
    scheduler = subprocess.Popen(
        [bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker_command = (
        f"mount -t tmpfs tmpfs '{hidden}' && exec {bin_dir / 'dask'} worker {address} --nthreads 2 --no-nanny"
        " --no-dashboard"
    )
    worker = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", worker_command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(1, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for process in (worker, scheduler):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    root = tmp_path_factory.mktemp("cluster-clips") / "clinic"
    write_clip_set(root, astronaut)
    write_bad_files(root / "bad")
    return root


@pytest.fixture(scope="module")
def options(untrained_checkpoint: Path) -> ProcessOptions:
    return ProcessOptions(checkpoint=str(untrained_checkpoint), detector="centerface", device="cpu")


def _on_worker(address: str, function, *args):
    from distributed import Client

    with Client(address) as client:
        (answer,) = client.run(function, *args).values()
    return answer


def _leftovers() -> list[str]:
    import glob
    import tempfile

    from fermon.run.models import SHIPPED_FILES

    # What a worker makes: model copies and session staging folders (other fermon-* folders under
    # /tmp, a training run's say, are not the worker's).
    made = [path for kind in ("models", "session") for path in glob.glob(f"{tempfile.gettempdir()}/fermon-{kind}-*")]
    return sorted(made) + sorted(SHIPPED_FILES)


def test_a_worker_that_sees_none_of_the_clients_files_matches_a_local_run(
    s3, cluster: str, clips: Path, options: ProcessOptions, tmp_path: Path
) -> None:
    fs, _ = s3
    assert not _on_worker(cluster, os.path.exists, options.checkpoint)  # only the client has it
    assert not _on_worker(cluster, os.path.exists, str(clips))
    inputs = upload(fs, clips, f"{BUCKET}/cluster-in/clinic")
    out = f"s3://{BUCKET}/cluster-out"
    summary = run_process([inputs], out, options, scheduler=cluster)
    assert sorted(r.session_id for r in summary.done) == ["blank", "face", "leaves", "two"]
    assert sorted(r.session_id for r in summary.failed) == ["bad__corrupt", "bad__empty"]
    local = tmp_path / "local"
    run_process([clips], local, options, workers=0)
    pd.testing.assert_frame_equal(rows(local), rows(out), check_exact=False, atol=1e-5)
    # The checkpoint and detector copies are gone from the worker with the run.
    assert _on_worker(cluster, _leftovers) == []


def test_a_worker_that_cannot_reach_the_inputs_stops_the_run_before_it_starts(
    s3, cluster: str, clips: Path, options: ProcessOptions
) -> None:
    out = f"s3://{BUCKET}/unreachable-in"
    with pytest.raises(InputError, match=r"^worker tcp://127\.0\.0\.1:\d+ cannot read \S+\.mp4 \(") as raised:
        run_process([clips], out, options, scheduler=cluster)
    assert "\n" not in str(raised.value) and raised.value.exit_code == 66
    assert Ledger(storage.state_dir(out)).all() == []  # nothing was started, nothing recorded as failed
    assert _on_worker(cluster, _leftovers) == []  # and no model was sent


def test_a_worker_that_writes_elsewhere_than_the_client_is_refused(
    s3, cluster: str, clips: Path, options: ProcessOptions, tmp_path: Path
) -> None:
    fs, _ = s3
    inputs = upload(fs, clips, f"{BUCKET}/cluster-in-2/clinic")
    with pytest.raises(OutputError, match=r"^worker tcp://127\.0\.0\.1:\d+ cannot read the output location ") as raised:
        run_process([inputs], tmp_path / "out", options, scheduler=cluster)  # the worker sees an empty folder there
    assert raised.value.exit_code == 73
    assert not (tmp_path / "out" / "timelines").exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".fermon-probe")] == []
