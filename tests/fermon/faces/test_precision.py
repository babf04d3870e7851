"""One precision rule for every network: auto is the fastest format the machine runs well, an
explicit one is honoured or refused, and bfloat16 moves descriptors far less than the linking margin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fermon.cli import app
from fermon.errors import UsageError
from fermon.faces.detector import CenterFaceDetector
from fermon.faces.runtime import _bfloat16_speedup, cpu_bfloat16_is_fast, network_dtype, x86_flags
from fermon.people.chips import face_chips
from fermon.people.embedder import FaceEmbedder
from fermon.people.linking import DISTANCE_THRESHOLD
from fermon.run.options import ProcessOptions

CPU = torch.device("cpu")


def test_auto_on_a_cpu_follows_the_cpus_own_flags() -> None:
    expected = torch.bfloat16 if cpu_bfloat16_is_fast() else torch.float32
    assert network_dtype("auto", CPU) is expected
    flags = x86_flags()
    if flags is not None and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # Native bfloat16 (AMX, AVX512-BF16) is chosen; oneDNN's emulation elsewhere is not.
        assert cpu_bfloat16_is_fast() == bool(flags & {"amx_bf16", "amx_tile", "avx512_bf16"})
    if cpu_bfloat16_is_fast():
        assert _bfloat16_speedup() > 1.0  # where it is chosen, it is faster when timed


def test_explicit_precisions_are_honoured_or_refused() -> None:
    assert network_dtype("float32", CPU) is torch.float32
    assert network_dtype("bfloat16", CPU) is torch.bfloat16
    assert network_dtype("float16", torch.device("cuda")) is torch.float16
    with pytest.raises(UsageError, match="CUDA only"):
        network_dtype("float16", CPU)
    with pytest.raises(UsageError, match="--precision must be one of"):
        network_dtype("int8", CPU)


def test_precision_is_not_part_of_the_option_fingerprint() -> None:
    assert ProcessOptions(precision="float32").relevant() == ProcessOptions(precision="bfloat16").relevant()
    assert ProcessOptions(precision="float32").public()["precision"] == "float32"


@pytest.mark.parametrize(("args", "message"), [(["--precision", "float16", "--device", "cpu"], "CUDA only"),
                                               (["--precision", "half"], "--precision must be one of")])  # fmt: skip
def test_cli_refuses_a_precision_it_cannot_run(tmp_path, args: list[str], message: str) -> None:
    video = tmp_path / "none.mp4"
    video.write_bytes(b"")
    result = CliRunner().invoke(app, ["process", str(video), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 64 and message in result.output
    assert not (tmp_path / "out").exists()


def test_bfloat16_descriptors_stay_well_inside_the_linking_margin(group_photo: np.ndarray) -> None:
    found = CenterFaceDetector(threads=1, min_face=16).detect([group_photo])[0]
    chips = face_chips(group_photo, found.landmarks)
    exact = FaceEmbedder(precision="float32").descriptors(chips)
    fast = FaceEmbedder(precision="bfloat16").descriptors(chips)
    moved = np.linalg.norm(exact - fast, axis=1)
    print(f"bfloat16 moves {len(chips)} descriptors by {moved.mean():.4f} on average, {moved.max():.4f} at most")
    # Same people across photos sit at 0.26-0.52, strangers at 0.55 and beyond (reports/performance/
    # identity-photos.json): a move of a tenth of the threshold cannot carry a face across it.
    assert moved.max() < 0.1 * DISTANCE_THRESHOLD
