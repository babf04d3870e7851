"""HNCL: self-supervised pre-training where faces with similar landmark heatmaps count as positives.

Liu et al., "Facial Expression Recognition With Heatmap Neighbor Contrastive Learning", IEEE TMM
2025. From the abstract: contrastive pre-training on unlabelled faces in which, besides its own
augmented view, the images whose facial heatmaps are an image's nearest neighbours are its
positives (more intra-class variation than augmentations alone give); then fine-tuning with labels
(here ``python -m training train --init BACKBONE``).

The full text is not public; these details are our choices, the simplest that follow the abstract:

- Landmarks: :mod:`training.landmarks` (CenterFace's 5 points; see there why not MediaPipe).
- Heatmaps: one Gaussian per landmark (sigma 1.5 cells) on a 24x24 grid, stacked per landmark and
  flattened; two faces are compared by the cosine of these vectors; k = 5 nearest neighbours.
  A face without landmarks has no neighbours and is never anyone's neighbour.
- Neighbours are cached in ``~/.cache/fermon/hncl/<key>.npz``, the key a hash of the image bytes,
  the landmark source and the heatmap parameters.
- Batches: for each anchor ``i``, two augmented views of ``i`` and one augmented view of a neighbour
  ``j`` drawn at random from its k (none if it has none). Views that come from the same anchor, or
  from the same image, are positives of each other.
- Loss: multi-positive InfoNCE (SupCon, Khosla et al. 2020, "L_out") with temperature 0.1 on
  L2-normalised projections; projection head Linear-BN-ReLU-Linear to 128-d (SimCLR's), dropped
  after pre-training; only the backbone is written.
- Optimiser: SGD with momentum 0.9, warm-up then cosine (as ``train``); augmentation: the same
  :class:`training.augment.Augmentation` as supervised training.
- ``contrastive``: the same code without the heatmap neighbours (two views per anchor, SimCLR-style),
  so the neighbours' own effect can be measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fermon.errors import UsageError
from fermon.expression.classify import normalise_batch, resolve_device
from fermon.expression.model import Architecture, create_backbone, load_architecture
from fermon.inputs.storage import atomic_path
from training.augment import Augmentation
from training.datasets import read_dataset
from training.landmarks import LandmarkSource, create_landmark_source
from training.loop import lr_factor, use_bf16
from training.state import load_state, save_state, save_weights

log = logging.getLogger("training")

# The pre-training methods, and whether each takes the images whose landmark heatmaps are nearest
# neighbours as extra positives (HNCL) or the augmented views alone (its plain contrastive baseline).
PRETRAIN_METHODS: dict[str, bool] = {"hncl": True, "contrastive": False}
DEFAULT_CACHE = Path.home() / ".cache" / "fermon" / "hncl"


# ---------------------------------------------------------------- heatmaps and neighbours


def render_heatmaps(landmarks: np.ndarray, image_size: int, size: int = 24, sigma: float = 1.5) -> np.ndarray:
    """Gaussian heatmaps, one channel per landmark, flattened: (N, P * size * size) float32.

    ``landmarks`` is (N, P, 2) in pixels of an ``image_size`` square; rows with NaN give zeros.
    """
    n, points, _ = landmarks.shape
    cells = (np.arange(size, dtype=np.float32) + 0.5) * (image_size / size)  # cell centres in pixels
    sigma_px = sigma * image_size / size
    x = landmarks[:, :, 0:1]
    y = landmarks[:, :, 1:2]
    gx = np.exp(-((cells[None, None, :] - x) ** 2) / (2 * sigma_px**2))  # (N, P, size)
    gy = np.exp(-((cells[None, None, :] - y) ** 2) / (2 * sigma_px**2))
    maps = gy[:, :, :, None] * gx[:, :, None, :]  # (N, P, size, size), separable Gaussian
    maps = np.nan_to_num(maps, nan=0.0).astype(np.float32)
    return maps.reshape(n, points * size * size)


def nearest_neighbours(heatmaps: np.ndarray, k: int = 5, block: int = 1024) -> np.ndarray:
    """The k most cosine-similar other rows of each row: (N, k) int64, -1 where there are too few.

    All-zero rows (no landmarks) get no neighbours and are nobody's neighbour.
    """
    vectors = torch.from_numpy(np.asarray(heatmaps, np.float32))
    norms = vectors.norm(dim=1)
    valid = norms > 0
    unit = vectors / norms.clamp(min=1e-12)[:, None]
    n = len(vectors)
    out = np.full((n, k), -1, np.int64)
    usable = min(k, int(valid.sum()) - 1)
    if usable <= 0:
        return out
    for start in range(0, n, block):
        rows = torch.arange(start, min(n, start + block))
        similarity = unit[rows] @ unit.t()
        similarity[:, ~valid] = -float("inf")
        similarity[torch.arange(len(rows)), rows] = -float("inf")  # not one's own neighbour
        index = similarity.topk(usable, dim=1).indices.numpy()
        keep = valid[rows].numpy()
        out[rows.numpy()[keep], :usable] = index[keep]
    return out


@dataclass(frozen=True)
class NeighbourParams:
    k: int = 5
    heatmap_size: int = 24
    sigma: float = 1.5


def cache_key(images: np.ndarray, source_name: str, params: NeighbourParams) -> str:
    """Hash of the image bytes (and shape), the landmark source and the heatmap parameters."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"shape": list(images.shape), "source": source_name, **asdict(params)}).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()[:24]


def heatmap_neighbours(
    images: np.ndarray,
    source: LandmarkSource,
    params: NeighbourParams = NeighbourParams(),
    cache_dir: Path | None = DEFAULT_CACHE,
) -> np.ndarray:
    """Each image's k heatmap neighbours (N, k), -1 for none; read from the cache when there."""
    path = Path(cache_dir) / f"{cache_key(images, source.name, params)}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return stored["neighbours"]
    landmarks = source(images)
    heatmaps = render_heatmaps(landmarks, images.shape[1], params.heatmap_size, params.sigma)
    neighbours = nearest_neighbours(heatmaps, params.k)
    if path is not None:
        with atomic_path(path, suffix=".npz") as temporary:
            np.savez_compressed(temporary, neighbours=neighbours, landmarks=landmarks)
    found = int(np.isfinite(landmarks[:, 0, 0]).sum())
    log.info("landmarks found on %d of %d faces (%s)", found, len(images), source.name)
    return neighbours


# ---------------------------------------------------------------- loss and batches


def multi_positive_info_nce(
    embeddings: torch.Tensor, positives: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """SupCon's multi-positive InfoNCE over L2-normalised embeddings.

    ``positives`` (M, M) bool marks which other rows are each row's positives (the diagonal is
    ignored). For an anchor ``i`` with positives ``P(i)``:
    ``-1/|P(i)| * sum_p log(exp(s_ip / t) / sum_{a != i} exp(s_ia / t))``; averaged over anchors that
    have at least one positive.
    """
    unit = F.normalize(embeddings.float(), dim=-1)
    logits = unit @ unit.t() / temperature
    eye = torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    logits = logits.masked_fill(eye, -float("inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    mask = positives & ~eye
    counts = mask.sum(dim=1)
    has = counts > 0
    per_anchor = -(log_prob.masked_fill(~mask, 0.0).sum(dim=1)[has]) / counts[has]
    return per_anchor.mean()


def build_views(
    anchors: np.ndarray, neighbours: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image indices of a batch's views and the positive mask between them.

    Two views of every anchor, then one view of a random heatmap neighbour for anchors that have one.
    Views of the same anchor, or of the same image, are positives.
    """
    images = [anchors, anchors]
    owners = [np.arange(len(anchors)), np.arange(len(anchors))]
    if neighbours is not None:
        choices = neighbours[anchors]
        has = (choices >= 0).any(axis=1)
        for row in np.flatnonzero(has):
            valid = choices[row][choices[row] >= 0]
            images.append(np.array([rng.choice(valid)]))
            owners.append(np.array([row]))
    image_index = np.concatenate(images)
    owner = np.concatenate(owners)
    mask = (owner[:, None] == owner[None, :]) | (image_index[:, None] == image_index[None, :])
    return image_index, mask


# ---------------------------------------------------------------- pre-training


class ProjectionHead(nn.Module):
    """SimCLR's projection MLP; used during pre-training only."""

    def __init__(self, width: int, dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Linear(width, dim)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class PretrainModel(nn.Module):
    """A backbone (its keys start with ``backbone.``, as :func:`training.build.load_backbone` reads) and a head."""

    def __init__(self, architecture: Architecture) -> None:
        super().__init__()
        self.backbone, width = create_backbone(architecture)
        self.head = ProjectionHead(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


@dataclass
class PretrainConfig:
    root: Path
    out: Path
    method: str = "hncl"
    dataset: str = "ferplus"
    architecture: str = "cnn48"
    epochs: int = 50
    batch_size: int = 64  # anchors per step; a step holds up to 3x as many views
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    temperature: float = 0.1
    neighbours: int = 5
    heatmap_size: int = 24
    sigma: float = 1.5
    landmarks: str = "centerface"
    limit: int | None = None
    seed: int = 0
    amp: str = "auto"
    state_dir: Path | None = None
    cache_dir: Path | None = DEFAULT_CACHE
    device: str = "auto"

    def fingerprint(self) -> str:
        skip = {"out", "state_dir", "cache_dir", "device", "epochs"}
        relevant = {f.name: str(getattr(self, f.name)) for f in fields(self) if f.name not in skip}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def pretrain(
    config: PretrainConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    source: LandmarkSource | None = None,
) -> Path:
    """Pre-train (or resume) a backbone; write it to ``config.out`` as safetensors and return that path."""
    if config.method not in PRETRAIN_METHODS:
        raise UsageError(f"unknown pre-training method '{config.method}'; known: {', '.join(PRETRAIN_METHODS)}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    architecture = load_architecture(config.architecture)
    data = read_dataset(
        config.dataset, config.root, "train", architecture.input_size, architecture.colour, config.limit
    )
    if len(data) < 2:
        raise UsageError(f"{config.root}: need at least 2 training images for dataset '{config.dataset}'")
    neighbours = None
    if PRETRAIN_METHODS[config.method]:
        params = NeighbourParams(config.neighbours, config.heatmap_size, config.sigma)
        neighbours = heatmap_neighbours(
            data.images, source or create_landmark_source(config.landmarks), params, config.cache_dir
        )

    model = PretrainModel(architecture).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    state_dir = Path(
        config.state_dir
        or Path.home() / ".cache" / "fermon" / "runs" / f"pretrain-{config.method}-{config.fingerprint()}"
    )
    state_path, metrics_path = state_dir / "state.safetensors", state_dir / "metrics.jsonl"
    start_epoch, history = 0, []
    if state_path.is_file():
        info = load_state(state_path, model, optimizer)
        if info.get("fingerprint") != config.fingerprint():
            raise UsageError(f"{state_dir}: holds a different run; pass another --state-dir or delete it")
        start_epoch, history = info["epoch"] + 1, info["history"]
        log.info("resuming %s at epoch %d", state_dir, start_epoch + 1)

    steps_per_epoch = max(1, len(data) // config.batch_size)
    total_steps, warmup_steps = steps_per_epoch * config.epochs, max(1, int(config.warmup_epochs * steps_per_epoch))
    bf16, augment = use_bf16(config.amp, device), Augmentation.for_architecture(architecture)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        rng = np.random.default_rng(config.seed * 1000 + epoch)
        order = rng.permutation(len(data))
        started, total = time.perf_counter(), 0.0
        for step in range(steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(epoch * steps_per_epoch + step, total_steps, warmup_steps)
            anchors = order[step * config.batch_size : (step + 1) * config.batch_size]
            image_index, mask = build_views(anchors, neighbours, rng)
            views = augment(normalise_batch(data.images[image_index], architecture, device))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                projected = model(views)
            loss = multi_positive_info_nce(projected, torch.from_numpy(mask).to(device), config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        record = {
            "epoch": epoch + 1,
            "seconds": round(time.perf_counter() - started, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": round(total / steps_per_epoch, 4),
        }
        history.append(record)
        save_state(
            state_path, model, optimizer, {"epoch": epoch, "history": history, "fingerprint": config.fingerprint()}
        )
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if on_epoch:
            on_epoch(record)
    info = {
        "method": config.method,
        "architecture": architecture.name,
        "epochs": config.epochs,
        "images": len(data),
        "fingerprint": config.fingerprint(),
    }
    save_weights(Path(config.out), nn.ModuleDict({"backbone": model.backbone}), info)
    return Path(config.out)
