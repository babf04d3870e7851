"""HNCL (training/hncl.py): heatmaps, neighbour search and cache, the multi-positive loss, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fermon.expression.checkpoint import load_checkpoint
from fermon.expression.model import load_architecture
from training.__main__ import app
from training.hncl import (
    NeighbourParams,
    PretrainModel,
    build_views,
    heatmap_neighbours,
    multi_positive_info_nce,
    nearest_neighbours,
    render_heatmaps,
)
from training.landmarks import CenterFaceLandmarks
from training.state import load_weights

# FERPlus vote rows: a clear majority each, so every image is kept.
VOTES = [[10, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 10, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 10, 0, 0, 0, 0, 0, 0, 0]]


def astronaut_faces(count: int) -> np.ndarray:
    """Gray 48x48 crops of the astronaut's face, flipped, shifted and brightened; the last one blank."""
    from skimage import data

    face = np.pad(data.astronaut()[20:260, 100:340], ((12, 12), (12, 12), (0, 0)), mode="edge")
    crops = []
    for i in range(count - 1):
        dy, dx = (i * 5) % 24, (i * 7) % 24
        crop = face[dy : dy + 240, dx : dx + 240]
        crop = crop[:, ::-1] if i % 2 else crop
        gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY).astype(np.float32) * (0.8 + 0.05 * i)
        crops.append(cv2.resize(np.clip(gray, 0, 255).astype(np.uint8), (48, 48), interpolation=cv2.INTER_AREA))
    crops.append(np.full((48, 48), 128, np.uint8))  # no face: no landmarks, no neighbours
    return np.stack(crops)[:, :, :, None]


class CountingSource:
    """The real CenterFace landmark source, counting how often it is asked."""

    def __init__(self) -> None:
        self.inner = CenterFaceLandmarks()
        self.name, self.points, self.calls = self.inner.name, self.inner.points, 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner(images)


def test_heatmaps_peak_at_the_landmarks_and_are_zero_without_them() -> None:
    landmarks = np.array([[[6.0, 18.0], [42.0, 30.0]], [[np.nan, np.nan], [np.nan, np.nan]]], np.float32)
    maps = render_heatmaps(landmarks, image_size=48, size=24, sigma=1.0).reshape(2, 2, 24, 24)
    assert np.unravel_index(maps[0, 0].argmax(), (24, 24)) in {(8, 2), (9, 2), (8, 3), (9, 3)}
    assert np.unravel_index(maps[0, 1].argmax(), (24, 24)) in {(14, 20), (15, 20), (14, 21), (15, 21)}
    assert not maps[1].any()


def test_nearest_neighbours_on_hand_made_heatmaps() -> None:
    heatmaps = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.9, 0.1, 0.0],  # nearest to 0
            [0.0, 1.0, 0.0],
            [0.0, 0.9, 0.3],  # nearest to 2
            [0.6, 0.5, 0.0],  # between the pairs, nearer 1 (cos 0.83) then 0 (0.77)
            [0.0, 0.0, 0.0],  # no landmarks
        ],
        np.float32,
    )
    neighbours = nearest_neighbours(heatmaps, k=2, block=4)  # block < N: the blocked path too
    assert neighbours[0].tolist() == [1, 4]
    assert neighbours[1].tolist() == [0, 4]
    assert neighbours[2].tolist() == [3, 4]
    assert neighbours[3].tolist() == [2, 4]
    assert neighbours[4].tolist() == [1, 0]
    assert neighbours[5].tolist() == [-1, -1]
    assert 5 not in neighbours


def test_neighbours_are_cached_and_reused(tmp_path: Path) -> None:
    images = astronaut_faces(6)
    source = CountingSource()
    first = heatmap_neighbours(images, source, NeighbourParams(k=2), tmp_path)
    assert source.calls == 1
    second = heatmap_neighbours(images, source, NeighbourParams(k=2), tmp_path)
    assert source.calls == 1  # read from the cache
    assert np.array_equal(first, second)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert first[-1].tolist() == [-1, -1]  # the blank image
    assert (first[:-1] >= 0).all() and (first[:-1] != 5).all()
    heatmap_neighbours(images, source, NeighbourParams(k=3), tmp_path)  # other parameters: another key
    assert source.calls == 2


def _reference_loss(sims: np.ndarray, positives: np.ndarray, temperature: float) -> float:
    losses = []
    for i in range(len(sims)):
        others = [a for a in range(len(sims)) if a != i]
        denominator = sum(np.exp(sims[i, a] / temperature) for a in others)
        pos = [p for p in others if positives[i, p]]
        if pos:
            losses.append(-np.mean([np.log(np.exp(sims[i, p] / temperature) / denominator) for p in pos]))
    return float(np.mean(losses))


@pytest.mark.parametrize("all_positive", [False, True])
def test_multi_positive_info_nce_matches_a_hand_computation(all_positive: bool) -> None:
    angle = np.pi / 3
    vectors = np.array([[1.0, 0.0], [np.cos(angle), np.sin(angle)], [-2.0, 0.0]])  # the last is not unit length
    sims = np.array([[1.0, 0.5, -1.0], [0.5, 1.0, -0.5], [-1.0, -0.5, 1.0]])
    positives = np.ones((3, 3), bool) if all_positive else np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
    got = multi_positive_info_nce(torch.tensor(vectors), torch.from_numpy(positives), temperature=0.5)
    assert float(got) == pytest.approx(_reference_loss(sims, positives, 0.5), rel=1e-5)
    if not all_positive:  # by hand: anchors 0 and 1 only; 2 has no positive
        loss0 = -np.log(np.exp(1.0) / (np.exp(1.0) + np.exp(-2.0)))
        loss1 = -np.log(np.exp(1.0) / (np.exp(1.0) + np.exp(-1.0)))
        assert float(got) == pytest.approx((loss0 + loss1) / 2, rel=1e-5)


def test_views_put_each_anchors_neighbour_in_the_batch() -> None:
    neighbours = np.array([[2, 3], [-1, -1], [0, -1], [0, 2]])
    images, mask = build_views(np.array([0, 1]), neighbours, np.random.default_rng(0))
    assert images[:4].tolist() == [0, 1, 0, 1]
    assert len(images) == 5 and images[4] in (2, 3)  # anchor 1 has no neighbour: only its two views
    expected = np.array([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [1, 0, 1, 0, 1], [0, 1, 0, 1, 0], [1, 0, 1, 0, 1]], bool)
    assert np.array_equal(mask, expected)
    plain, plain_mask = build_views(np.array([0, 1]), None, np.random.default_rng(0))
    assert plain.tolist() == [0, 1, 0, 1] and plain_mask.sum() == 8


@pytest.fixture(scope="module")
def astronaut_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ferplus_faces")
    faces = astronaut_faces(9)
    for split in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        folder = root / "data" / split
        folder.mkdir(parents=True)
        lines = []
        for i, face in enumerate(faces):
            cv2.imwrite(str(folder / f"fer{i:07d}.png"), face[:, :, 0])
            lines.append(f'fer{i:07d}.png,"(0, 0, 48, 48)",' + ",".join(map(str, VOTES[i % 3])))
        (folder / "label.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("method", ["hncl", "contrastive"])
def test_pretrain_then_fine_tune_from_its_backbone(astronaut_root: Path, tmp_path: Path, method: str) -> None:
    runner = CliRunner()
    backbone = tmp_path / f"{method}.safetensors"
    args = ["pretrain", "--method", method, "--root", str(astronaut_root), "--epochs", "1", "--limit", "9"]
    args += ["--batch-size", "4", "--state-dir", str(tmp_path / "pre"), "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, [*args, "--out", str(backbone)])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache").glob("*.npz"))) == (1 if method == "hncl" else 0)
    tensors, info = load_weights(backbone)
    assert info["method"] == method
    expected = PretrainModel(load_architecture("cnn48")).backbone.state_dict()
    assert set(tensors) == {f"backbone.{k}" for k in expected}

    # A rerun resumes: the finished epoch is not trained again.
    assert runner.invoke(app, [*args, "--out", str(backbone)]).exit_code == 0
    assert len((tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()) == 1

    checkpoint = tmp_path / "fine.safetensors"
    args = ["train", "--root", str(astronaut_root), "--method", "ke2nt", "--init", str(backbone), "--epochs", "1"]
    args += ["--batch-size", "4", "--limit", "8", "--state-dir", str(tmp_path / "fine"), "--out", str(checkpoint)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(checkpoint).metadata["training"]["init"] == backbone.name
    result = runner.invoke(app, ["evaluate", "--root", str(astronaut_root), "--checkpoint", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert json.dumps("accuracy")[1:-1] in result.output
