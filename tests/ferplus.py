"""FERPlus validation faces for tests, from ``../shared/datasets/ferplus`` beside the clone (the
tarball, or its unpacked ``data/FER2013Valid``); a test that needs them is skipped, saying so,
without them. FERPlus is never in the repository."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from training.datasets import LabelledFaces

REPOSITORY = Path(__file__).resolve().parents[1]
FERPLUS = REPOSITORY.parent / "shared" / "datasets" / "ferplus"
VALID = "data/FER2013Valid"


def ferplus_valid_root(scratch: Path) -> Path:
    """A folder holding ``data/FER2013Valid``: the shared one if unpacked, else the split extracted
    from the shared tarball into ``scratch``."""
    if (FERPLUS / VALID / "label.csv").is_file():
        return FERPLUS
    tarball = FERPLUS / "ferplus-trainval.tar.gz"
    if not tarball.is_file():
        pytest.skip(f"FERPlus not found at {FERPLUS} (the test reads ../shared/datasets/ferplus beside the clone)")
    folder = scratch / VALID
    folder.mkdir(parents=True)
    # One pass over the stream; each file written under its base name only (no paths from the archive).
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if member.isfile() and member.name.startswith(f"{VALID}/"):
                (folder / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    return scratch


def balanced_subset(faces: LabelledFaces, per_class: int) -> LabelledFaces:
    """The first ``per_class`` faces of each class, in index order: the same faces on every run."""
    index = np.concatenate([np.flatnonzero(faces.labels == k)[:per_class] for k in range(len(faces.class_names))])
    return faces.subset(index)
