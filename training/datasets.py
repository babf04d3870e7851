"""Readers for labelled face datasets, each returning the same in-memory :class:`LabelledFaces`.

Every reader maps the dataset's own label codes through ``fermon/data/vocabulary.json`` to the
canonical class names, and resizes images to the model's input size and colour when read.

Layouts (``root`` is the folder a user points at):

- ``ferplus``: ``data/FER2013{Train,Valid,Test}/label.csv`` and the PNGs beside it (the FERPlus
  release layout; no header; image name, face box, then 10 vote counts).
- ``rafdb``: ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, codes 1..7) and
  ``Image/aligned/train_00001_aligned.jpg`` (or ``Image/original/train_00001.jpg``).
- ``affectnet7`` / ``affectnet8``: ``training.csv`` / ``validation.csv`` with columns
  ``subDirectory_filePath, face_x, face_y, face_width, face_height, ..., expression`` and images
  under ``Manually_Annotated_Images/``; faces are cut out by their box.
- ``folder``: ``<split>/<class name>/*.{png,jpg}`` with canonical class names (or their prompt
  words, such as ``happy``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fermon.errors import DataError, InputError, UsageError
from fermon.expression.vocab import canonical_classes
from training.vocabulary import class_words, code_to_class_index, dataset_classes, dataset_labels

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
FERPLUS_SPLITS = {"train": "FER2013Train", "valid": "FER2013Valid", "val": "FER2013Valid", "test": "FER2013Test"}


@dataclass
class LabelledFaces:
    """Face images held in memory with their labels.

    ``images``: uint8 (N, H, W, C); ``labels``: int64 (N,) index into ``class_names`` (majority);
    ``targets``: float32 (N, K) label distribution (vote shares where a dataset has votes, else
    one-hot); ``names``: image names relative to the dataset root.
    """

    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    class_names: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray | slice) -> LabelledFaces:
        names = np.asarray(self.names, dtype=object)[index].tolist()
        return LabelledFaces(self.images[index], self.labels[index], self.targets[index], self.class_names, names)


def prepare_image(image: np.ndarray, size: int, colour: str) -> np.ndarray:
    """Resize to ``size`` and convert to the model's colour; returns uint8 (size, size, C)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if colour == "gray" and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif colour == "rgb" and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[0] != size or image.shape[1] != size:
        interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
        image = cv2.resize(image, (size, size), interpolation=interpolation)
        if image.ndim == 2:
            image = image[:, :, None]
    return np.ascontiguousarray(image, dtype=np.uint8)


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB (or single-channel gray) uint8."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot read image")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _stack(images: Iterable[np.ndarray], size: int, colour: str) -> np.ndarray:
    prepared = [prepare_image(image, size, colour) for image in images]
    channels = 1 if colour == "gray" else 3
    return np.stack(prepared) if prepared else np.zeros((0, size, size, channels), np.uint8)


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels] if len(labels) else np.zeros((0, classes), np.float32)


def _limit(rows: list, limit: int | None) -> list:
    return rows[:limit] if limit else rows


def read_ferplus(root: Path, split: str, size: int, colour: str, limit: int | None = None) -> LabelledFaces:
    """FERPlus under the majority protocol over its 8 emotions, with the vote shares as targets.

    Rows whose majority (first maximum in column order) is 'unknown' or 'not a face' are dropped.
    """
    folder = root / "data" / FERPLUS_SPLITS.get(split, split)
    label_file = folder / "label.csv"
    if not label_file.is_file():
        raise InputError(f"{label_file}: FERPlus label file not found")
    classes = dataset_classes("ferplus")
    code_to_index = code_to_class_index("ferplus")
    expressions = len(dataset_labels("ferplus"))
    rows = []
    with label_file.open(newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if len(row) < 2 + expressions + 2 or not row[0]:
                raise DataError(f"{label_file}:{line}: expected image name, box and 10 vote counts")
            votes = np.asarray([float(v) for v in row[2:]], dtype=np.float32)
            majority = int(np.argmax(votes))  # argmax keeps the first maximum: ties go to the earlier column
            if majority >= expressions or votes[:expressions].sum() == 0:
                continue
            rows.append((row[0], code_to_index[majority], votes[:expressions]))
    rows = _limit(rows, limit)
    images = _stack((read_image(folder / name) for name, _, _ in rows), size, colour)
    labels = np.asarray([label for _, label, _ in rows], dtype=np.int64)
    targets = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for i, (_, _, votes) in enumerate(rows):
        for code, share in enumerate(votes / votes.sum()):
            targets[i, code_to_index[code]] = share
    return LabelledFaces(images, labels, targets, classes, [name for name, _, _ in rows])


def read_rafdb(root: Path, split: str, size: int, colour: str, limit: int | None = None) -> LabelledFaces:
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        raise InputError(f"{label_file}: RAF-DB label file not found")
    prefix = {"valid": "test", "val": "test"}.get(split, split)  # RAF-DB has train and test only
    code_to_index = code_to_class_index("rafdb")
    rows = []
    for line in label_file.read_text().splitlines():
        if not line.strip():
            continue
        name, code = line.split()[:2]
        if name.startswith(prefix + "_"):
            rows.append((name, code_to_index[int(code)]))
    rows = _limit(rows, limit)

    def locate(name: str) -> Path:
        aligned = root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg")
        return aligned if aligned.is_file() else root / "Image" / "original" / name

    images = _stack((read_image(locate(name)) for name, _ in rows), size, colour)
    labels = np.asarray([label for _, label in rows], dtype=np.int64)
    classes = dataset_classes("rafdb")
    return LabelledFaces(images, labels, _one_hot(labels, len(classes)), classes, [name for name, _ in rows])


def read_affectnet(
    root: Path, split: str, size: int, colour: str, limit: int | None = None, vocabulary: str = "affectnet8"
) -> LabelledFaces:
    csv_name = "training.csv" if split == "train" else "validation.csv"
    label_file = root / csv_name
    if not label_file.is_file():
        raise InputError(f"{label_file}: AffectNet CSV not found")
    code_to_index = code_to_class_index(vocabulary)
    rows = []
    with label_file.open(newline="") as handle:
        for record in csv.DictReader(handle):
            code = int(record["expression"])
            if code in code_to_index:
                box = [int(float(record[k])) for k in ("face_x", "face_y", "face_width", "face_height")]
                rows.append((record["subDirectory_filePath"], code_to_index[code], box))
    rows = _limit(rows, limit)

    def face(name: str, box: list[int]) -> np.ndarray:
        image = read_image(root / "Manually_Annotated_Images" / name)
        x, y, w, h = box
        return image[max(y, 0) : y + h, max(x, 0) : x + w]

    images = _stack((face(name, box) for name, _, box in rows), size, colour)
    labels = np.asarray([label for _, label, _ in rows], dtype=np.int64)
    classes = dataset_classes(vocabulary)
    return LabelledFaces(images, labels, _one_hot(labels, len(classes)), classes, [name for name, _, _ in rows])


def _folder_class(name: str) -> str | None:
    words = class_words()
    lowered = name.lower()
    if lowered in words:
        return lowered
    return next((cls for cls, word in words.items() if word == lowered), None)


def read_folder(root: Path, split: str, size: int, colour: str, limit: int | None = None) -> LabelledFaces:
    base = root / split if (root / split).is_dir() else root
    folders = {}
    for folder in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        cls = _folder_class(folder.name)
        if cls is None:
            raise DataError(f"{folder}: folder name is not an expression class")
        folders[cls] = folder
    if not folders:
        raise InputError(f"{base}: no class folders found")
    classes = [name for name in canonical_classes() if name in folders]
    rows = [
        (path, classes.index(cls))
        for cls in classes
        for path in sorted(folders[cls].iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    rows = _limit(rows, limit)
    images = _stack((read_image(path) for path, _ in rows), size, colour)
    labels = np.asarray([label for _, label in rows], dtype=np.int64)
    names = [str(path.relative_to(root)) for path, _ in rows]
    return LabelledFaces(images, labels, _one_hot(labels, len(classes)), classes, names)


Reader = Callable[..., LabelledFaces]
READERS: dict[str, Reader] = {
    "ferplus": read_ferplus,
    "rafdb": read_rafdb,
    "affectnet7": lambda *a, **k: read_affectnet(*a, **k, vocabulary="affectnet7"),
    "affectnet8": lambda *a, **k: read_affectnet(*a, **k, vocabulary="affectnet8"),
    "folder": read_folder,
}


def read_dataset(
    dataset: str, root: str | Path, split: str, size: int, colour: str, limit: int | None = None
) -> LabelledFaces:
    """Read one split of a dataset by layout name (see the module docstring)."""
    if dataset not in READERS:
        raise UsageError(f"unknown dataset '{dataset}'; known: {', '.join(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    return READERS[dataset](root, split, size, colour, limit=limit)
