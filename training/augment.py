"""Batched augmentation on normalised tensors (see :func:`fermon.expression.classify.normalise_batch`).

One random affine warp per image (rotation, scale, shift: it covers the crop-to-crop variation a
detector's landmarks give at run time), horizontal flip, brightness/contrast jitter, Gaussian blur
(a face far from the camera or out of focus), dim light with sensor noise (a ward at night), and
random erasing (rectangles of noise: occlusion by hands, tubes and pillows), and region occlusion:
the crop template's eye band or mouth box hidden (a mask, a tube, a hand over the mouth, sunglasses
or a pillow over the eyes), with its size, place and fill varied so that the model learns to read
what is left rather than one occluder's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from fermon.expression.model import Architecture
from fermon.faces.align import template_points
from training.corruptions import region_box

REGIONS = ("eyes", "mouth")


@dataclass
class Augmentation:
    rotate_degrees: float = 12.0
    scale_range: tuple[float, float] = (0.88, 1.12)
    shift: float = 0.08
    flip: bool = True
    jitter: float = 0.25
    erase_probability: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.25)
    blur_probability: float = 0.15
    blur_sigma: tuple[float, float] = (0.01, 0.06)  # as a fraction of the image side
    dim_probability: float = 0.15
    dim_light: tuple[float, float] = (0.2, 0.7)  # fraction of the light left
    dim_noise: float = 0.03  # sensor noise, in 0-1 pixel units
    # The normalisation the batch carries: dimming scales pixels, not normalised values.
    pixel_mean: tuple[float, ...] = (0.5,)
    pixel_std: tuple[float, ...] = (0.5,)
    region_occlusion: float = 0.0  # fraction of images with the eyes or the mouth hidden
    region_scale: tuple[float, float] = (0.8, 1.35)  # the box's size against the evaluation box
    region_shift: float = 0.12  # the box's shift, as a fraction of its own size
    # The crop template's five points at the input size (eyes, nose, mouth corners), for the regions.
    template_points: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def for_architecture(cls, architecture: Architecture, region_occlusion: float = 0.0) -> Augmentation:
        points = tuple((x, y) for x, y in template_points(architecture.crop, architecture.input_size))
        return cls(
            pixel_mean=tuple(architecture.mean),
            pixel_std=tuple(architecture.std),
            region_occlusion=region_occlusion,
            template_points=points,
        )

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = batch.shape[0]
        device = batch.device
        batch = self._occlude_region(batch, generator)  # on the face, before the warp moves it

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, device=device, generator=generator) * (high - low) + low

        angle = uniform(-self.rotate_degrees, self.rotate_degrees) * math.pi / 180
        scale = uniform(*self.scale_range)
        flip = torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -1.0, 1.0) if self.flip else 1.0
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, uniform(-self.shift, self.shift) * 2], dim=1),
                torch.stack([sin * flip, cos, uniform(-self.shift, self.shift) * 2], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
        contrast = uniform(1 - self.jitter, 1 + self.jitter).view(n, 1, 1, 1)
        brightness = uniform(-self.jitter, self.jitter).view(n, 1, 1, 1)
        out = out * contrast + brightness
        out = self._dim(self._blur(out, generator), generator)
        return self._erase(out, generator).contiguous(memory_format=torch.channels_last)

    def _pick(
        self, n: int, probability: float, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        return torch.rand(n, device=device, generator=generator) < probability

    def _blur(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One sigma per batch (gaussian_blur takes one), applied to a random subset of images."""
        chosen = self._pick(batch.shape[0], self.blur_probability, batch.device, generator)
        if not bool(chosen.any()):
            return batch
        low, high = self.blur_sigma
        sigma = (
            float(low + torch.rand(1, generator=generator, device=batch.device).item() * (high - low)) * batch.shape[-1]
        )
        kernel = 2 * math.ceil(3 * sigma) + 1
        blurred = gaussian_blur(batch[chosen], [kernel, kernel], [sigma, sigma])
        out = batch.clone()
        out[chosen] = blurred
        return out

    def _dim(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """pixel' = light * pixel + noise, written in normalised units: x' = light * x + (light - 1) * mean / std."""
        n, channels = batch.shape[:2]
        chosen = self._pick(n, self.dim_probability, batch.device, generator).view(n, 1, 1, 1)
        low, high = self.dim_light
        light = (torch.rand(n, device=batch.device, generator=generator) * (high - low) + low).view(n, 1, 1, 1)
        mean = torch.tensor(self.pixel_mean, device=batch.device).view(1, -1, 1, 1).expand(1, channels, 1, 1)
        std = torch.tensor(self.pixel_std, device=batch.device).view(1, -1, 1, 1).expand(1, channels, 1, 1)
        noise = torch.randn(batch.shape, device=batch.device, generator=generator) * (self.dim_noise / std)
        dimmed = light * batch + (light - 1) * mean / std + noise
        return torch.where(chosen, dimmed, batch)

    def _occlude_region(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Hide the eye band or the mouth box (``training/corruptions.py``'s boxes, resized and moved at
        random) with black, grey, white, the face's own mean, or noise."""
        if self.region_occlusion <= 0 or self.template_points is None:
            return batch
        n, channels, height, _ = batch.shape
        rand = torch.rand(n, 6, generator=generator, device=batch.device).cpu().numpy()
        chosen = np.flatnonzero(rand[:, 0] < self.region_occlusion)
        if len(chosen) == 0:
            return batch
        out = batch.clone()
        points = np.asarray(self.template_points, dtype=np.float32)
        mean = torch.tensor(self.pixel_mean, device=batch.device).view(-1, 1, 1).expand(channels, 1, 1)
        std = torch.tensor(self.pixel_std, device=batch.device).view(-1, 1, 1).expand(channels, 1, 1)
        for i in chosen:
            x1, y1, x2, y2 = region_box(REGIONS[int(rand[i, 1] * len(REGIONS))], points, height)
            size = self.region_scale[0] + rand[i, 2] * (self.region_scale[1] - self.region_scale[0])
            w, h = (x2 - x1) * size, (y2 - y1) * size
            cx = (x1 + x2) / 2 + (rand[i, 3] - 0.5) * 2 * self.region_shift * w
            cy = (y1 + y2) / 2 + (rand[i, 4] - 0.5) * 2 * self.region_shift * h
            left, right = max(0, round(cx - w / 2)), min(height, round(cx + w / 2))
            top, bottom = max(0, round(cy - h / 2)), min(height, round(cy + h / 2))
            if right <= left or bottom <= top:
                continue
            region = out[i, :, top:bottom, left:right]
            fill = int(rand[i, 5] * 5)
            if fill == 4:  # sensor-like noise
                region.copy_(torch.randn(region.shape, generator=generator, device=batch.device))
            elif fill == 3:  # a flat patch at the face's own mean (skin-toned tape, a hand in shadow)
                region.copy_(out[i].mean(dim=(1, 2), keepdim=True).expand_as(region))
            else:  # black, mid grey or white, in pixel units
                region.copy_(((torch.full_like(mean, (0.0, 0.5, 1.0)[fill]) - mean) / std).expand_as(region))
        return out

    def _erase(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, _, height, width = batch.shape
        rand = torch.rand(n, 4, generator=generator, device=batch.device).cpu().numpy()
        apply = torch.rand(n, generator=generator, device=batch.device).cpu().numpy() < self.erase_probability
        for i in np.flatnonzero(apply):
            area = (self.erase_area[0] + rand[i, 0] * (self.erase_area[1] - self.erase_area[0])) * height * width
            aspect = math.exp((rand[i, 1] - 0.5) * math.log(9))  # aspect ratio in [1/3, 3]
            h = min(height, round(math.sqrt(area * aspect)))
            w = min(width, round(math.sqrt(area / aspect)))
            top = int(rand[i, 2] * (height - h + 1))
            left = int(rand[i, 3] * (width - w + 1))
            batch[i, :, top : top + h, left : left + w] = torch.randn(
                batch.shape[1], h, w, generator=generator, device=batch.device
            )
        return batch
