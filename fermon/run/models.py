"""The models a worker loads once and shares between its sessions and threads.

The detector and classifier (:func:`cached_models`), the face embedder (:func:`cached_embedder`) and the
reference photo's descriptor (:func:`cached_reference`); on a cluster worker, from the copies of the
client's model files that :mod:`fermon.run.cluster` shipped (:data:`SHIPPED_FILES`).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fermon.errors import ModelError
from fermon.run.options import ModelIdentity, ProcessOptions

_MODEL_CACHE: dict[tuple, tuple[Any, Any]] = {}
_MODEL_LOCK = threading.Lock()  # worker threads of one process share the cache
# sha256 -> local copies of the client's model files, written here by fermon.run.cluster's worker plugin
# (a stack per hash: two runs on one cluster may ship the same file).
SHIPPED_FILES: dict[str, list[str]] = {}


def shipped_copy(sha256: str) -> str | None:
    """This process's local copy of a file the client shipped by content, or None."""
    copies = SHIPPED_FILES.get(sha256) if sha256 else None
    return copies[-1] if copies else None


def _with_local_copies(identity: ModelIdentity) -> ModelIdentity:
    """The identity with its files replaced by the copies shipped to this worker, where there are any:
    the client's paths may not exist here."""
    checkpoint = shipped_copy(identity.checkpoint_file_sha256)
    detector = shipped_copy(identity.detector_sha256)
    return replace(
        identity,
        checkpoint_path=checkpoint or identity.checkpoint_path,
        detector_path=detector or identity.detector_path,
    )


def cached_models(identity: ModelIdentity, options: ProcessOptions) -> tuple[Any, Any]:
    """The detector and classifier for this run, built once per process and configuration; on a
    cluster worker, from the copies the client shipped (``SHIPPED_FILES``)."""
    identity = _with_local_copies(identity)
    key = (
        identity, options.threshold, options.min_face, options.device, options.precision, options.batch_size,
        options.threads,
    )  # fmt: skip
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE.clear()  # one model set per worker: a new configuration replaces the old
            _MODEL_CACHE[key] = _load_models(identity, options)
        return _MODEL_CACHE[key]


def _load_models(identity: ModelIdentity, options: ProcessOptions) -> tuple[Any, Any]:
    import torch

    from fermon.expression.checkpoint import load_checkpoint
    from fermon.expression.classify import ExpressionClassifier, resolve_device
    from fermon.faces.detector import create_detector

    # Classification runs on one thread beside the detection threads (detect_in_parallel), which
    # take the worker's cores; more torch threads would only wait on them.
    torch.set_num_threads(1)
    device = resolve_device(options.device).type
    detector = create_detector(
        identity.detector_name,
        identity.detector_path,
        threshold=options.threshold,
        min_face=options.min_face,
        threads=1,  # parallel over batches instead: see detect.detect_in_parallel
        device=device,
    )
    checkpoint = load_checkpoint(identity.checkpoint_path)
    if checkpoint.metadata["content_sha256"] != identity.checkpoint_sha256:
        raise ModelError(f"{Path(identity.checkpoint_path).name}: changed on disk during the run")
    classifier = ExpressionClassifier(
        checkpoint, device=options.device, batch_size=options.batch_size, precision=options.precision
    )
    return detector, classifier


_EMBEDDER_CACHE: dict[tuple[str, str], Any] = {}  # (device, precision) -> embedder
_REFERENCE_CACHE: dict[tuple[str, str], np.ndarray] = {}  # (path, content hash) -> descriptor, in memory


def cached_embedder(options: ProcessOptions) -> Any:
    """dlib's face-recognition ResNet for this process, or None when identity is off."""
    if not options.identity:
        return None
    from fermon.expression.classify import resolve_device
    from fermon.people.embedder import FaceEmbedder

    key = (resolve_device(options.device).type, options.precision)
    with _MODEL_LOCK:
        if key not in _EMBEDDER_CACHE:
            _EMBEDDER_CACHE[key] = FaceEmbedder(device=key[0], precision=options.precision)
        return _EMBEDDER_CACHE[key]


def cached_reference(options: ProcessOptions, detector: Any, embedder: Any) -> np.ndarray | None:
    """The patient photo's descriptor (--target-reference), computed once per process and photo."""
    if options.target_reference is None:
        return None
    from fermon.people.reference import reference_descriptor
    from fermon.run.options import reference_sha256

    key = (options.target_reference, reference_sha256(options.target_reference))
    with _MODEL_LOCK:
        if key not in _REFERENCE_CACHE:
            _REFERENCE_CACHE[key] = reference_descriptor(options.target_reference, detector, embedder)
        return _REFERENCE_CACHE[key]
