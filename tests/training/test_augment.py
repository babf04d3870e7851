"""Training augmentation: the blur and dim-light parts do what they claim, in pixel units."""

from __future__ import annotations

import torch

from training.augment import Augmentation


def _only(**parts: float) -> Augmentation:
    """An augmentation with every random part off except the ones named."""
    base = dict(
        rotate_degrees=0.0,
        scale_range=(1.0, 1.0),
        shift=0.0,
        flip=False,
        jitter=0.0,
        erase_probability=0.0,
        blur_probability=0.0,
        dim_probability=0.0,
    )
    return Augmentation(**{**base, **parts})


def test_identity_when_every_part_is_off() -> None:
    batch = torch.randn(4, 1, 24, 24)
    out = _only()(batch.clone(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, batch, atol=1e-5, rtol=0)


def test_blur_lowers_high_frequency_energy() -> None:
    batch = torch.randn(8, 1, 48, 48)
    out = _only(blur_probability=1.0, blur_sigma=(0.04, 0.04))(batch.clone(), torch.Generator().manual_seed(0))

    def roughness(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert roughness(out) < 0.5 * roughness(batch)
    torch.testing.assert_close(out.mean(), batch.mean(), atol=0.05, rtol=0)


def test_dim_scales_pixels_not_normalised_values() -> None:
    # Normalised with mean 0.5, std 0.5: pixel 1.0 is +1, pixel 0.0 is -1.
    white, black = torch.ones(1, 1, 8, 8), -torch.ones(1, 1, 8, 8)
    dim = _only(dim_probability=1.0, dim_light=(0.5, 0.5), dim_noise=0.0, pixel_mean=(0.5,), pixel_std=(0.5,))
    generator = torch.Generator().manual_seed(0)
    # Half the light: white becomes pixel 0.5 (normalised 0), black stays black (-1).
    torch.testing.assert_close(dim(white, generator), torch.zeros(1, 1, 8, 8))
    torch.testing.assert_close(dim(black, generator), black)


def test_region_occlusion_hides_only_the_eyes_or_the_mouth() -> None:
    from fermon.expression.model import load_architecture
    from training.corruptions import region_box

    architecture = load_architecture("cnn48")
    template = Augmentation.for_architecture(architecture).template_points
    assert template is not None
    points = torch.tensor(template).numpy()
    augment = _only(region_occlusion=1.0, template_points=template, region_scale=(1.0, 1.0), region_shift=0.0)
    batch = torch.full((40, 1, 48, 48), 3.0)  # far from any fill value, so every hidden pixel shows
    out = augment(batch.clone(), torch.Generator().manual_seed(0))
    regions = {}
    for name in ("eyes", "mouth"):
        x1, y1, x2, y2 = region_box(name, points, 48)
        mask = torch.zeros(48, 48, dtype=torch.bool)
        mask[y1:y2, x1:x2] = True
        regions[name] = mask
    seen = set()
    for image in out[:, 0]:
        changed = image != 3.0
        if not changed.any():
            continue  # the "face's own mean" fill on a flat face changes nothing
        inside = [name for name, mask in regions.items() if bool(changed[~mask].logical_not().all())]
        assert inside, "pixels outside both regions changed"
        seen.update(inside)
    assert seen == {"eyes", "mouth"}


def test_region_occlusion_off_by_default() -> None:
    batch = torch.randn(4, 1, 48, 48)
    template = ((10.0, 10.0), (30.0, 10.0), (20.0, 20.0), (12.0, 30.0), (28.0, 30.0))
    out = _only(template_points=template)(batch.clone(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, batch, atol=1e-4, rtol=0)
