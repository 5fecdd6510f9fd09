"""Batched image augmentation in torch: SupCon's CIFAR recipe applied to a whole batch at once.

Recipe (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, CIFAR training
augmentation): random resized crop with area scale in [0.2, 1] and aspect ratio in
[3/4, 4/3], horizontal flip with p = 0.5, colour jitter (brightness 0.4, contrast 0.4,
saturation 0.4, hue 0.1, the four in a random order) with p = 0.8, grayscale with p = 0.2.

Every sample draws its own parameters, but the work runs as a few batched tensor
operations: crop and flip are one affine sampling grid per sample
(``torch.nn.functional.grid_sample``), and each colour operation runs once per position
in the random order on the samples that drew it. All random numbers come from one
``torch.Generator`` on its own device (the CPU when none is given) and are then moved to
the batch's device, so a seed gives the same parameters on CPU and GPU.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hmlc_core.config import ConfigBase, require

# ITU-R 601-2 luma weights as torchvision's tensor functions round them (0.2989, not 0.299).
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
# Colour operations in the order of their columns in ImageAugmentationParams.factors.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
_CROP_ATTEMPTS = 10
_CPU_CHUNK = 64


@dataclasses.dataclass(frozen=True)
class ImageAugmentationConfig(ConfigBase):
    """Parameters of the two-view image recipe; the defaults are SupCon's CIFAR recipe.

    Attributes:
        crop_scale: range of the crop area as a share of the image area.
        crop_ratio: range of the crop aspect ratio (width / height).
        flip_prob: probability of a horizontal flip.
        jitter_prob: probability of applying the colour jitter.
        brightness: brightness factor drawn from [1 - brightness, 1 + brightness].
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast].
        saturation: saturation factor drawn from [1 - saturation, 1 + saturation]
            (no effect on one-channel images).
        hue: hue shift drawn from [-hue, hue], in turns of the colour wheel, <= 0.5
            (no effect on one-channel images).
        grayscale_prob: probability of converting to grayscale (no effect on one channel).
        output_size: side length of the output views in pixels; None keeps the input size.
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    output_size: int | None = None

    def validate(self) -> None:
        low, high = self.crop_scale
        require(
            0.0 < low <= high <= 1.0,
            f"crop_scale is {self.crop_scale}; expected 0 < low <= high <= 1",
        )
        low, high = self.crop_ratio
        require(0.0 < low <= high, f"crop_ratio is {self.crop_ratio}; expected 0 < low <= high")
        for name in ("flip_prob", "jitter_prob", "grayscale_prob"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"{name} is {value}; expected a probability in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            require(value >= 0.0, f"{name} is {value}; expected >= 0")
        require(0.0 <= self.hue <= 0.5, f"hue is {self.hue}; expected a value in [0, 0.5]")
        require(
            self.output_size is None or self.output_size >= 1,
            f"output_size is {self.output_size}; expected None or >= 1",
        )


def grayscale_recipe() -> ImageAugmentationConfig:
    """Return the recipe for one-channel images such as Fashion-MNIST (project choice).

    SupCon's crop, flip and jitter probability, with brightness and contrast jitter only,
    because saturation, hue and grayscale conversion do nothing to a grayscale image.
    """
    return ImageAugmentationConfig(saturation=0.0, hue=0.0, grayscale_prob=0.0)


@dataclasses.dataclass(frozen=True)
class ImageAugmentationParams:
    """Random parameters of one augmented view per sample.

    Attributes:
        boxes: crop boxes (top, left, height, width) in input pixels.
        flip: whether each sample is flipped horizontally.
        jitter: whether each sample gets the colour jitter.
        factors: brightness, contrast and saturation factors and the hue shift.
        order: the order of the four colour operations, a permutation per sample.
        grayscale: whether each sample is converted to grayscale.

    Shape:
        boxes: (B, 4) float. flip, jitter, grayscale: (B,) bool. factors: (B, 4) float.
        order: (B, 4) int64.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    grayscale: Tensor

    def to(self, device: torch.device) -> ImageAugmentationParams:
        """Return the parameters on ``device``."""
        return ImageAugmentationParams(
            *(getattr(self, field.name).to(device) for field in dataclasses.fields(self))
        )


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None
) -> Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def sample_crop_boxes(
    batch_size: int,
    height: int,
    width: int,
    config: ImageAugmentationConfig,
    generator: torch.Generator | None,
) -> Tensor:
    """Draw one random resized crop box per sample.

    Like torchvision's ``RandomResizedCrop``: up to ten draws of area and log-uniform
    aspect ratio, the first that fits the image wins, and a sample with no fitting draw
    falls back to the largest centred box whose ratio is within ``crop_ratio``.

    Shape:
        return: (batch_size, 4) float (top, left, height, width), integer-valued, on the
        generator's device.
    """
    area = height * width * _uniform((batch_size, _CROP_ATTEMPTS), *config.crop_scale, generator)
    log_low, log_high = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    ratio = torch.exp(_uniform((batch_size, _CROP_ATTEMPTS), log_low, log_high, generator))
    crop_w = torch.round(torch.sqrt(area * ratio))
    crop_h = torch.round(torch.sqrt(area / ratio))
    fits = (crop_w >= 1) & (crop_w <= width) & (crop_h >= 1) & (crop_h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)
    any_fit = fits.any(dim=1)
    fallback_h, fallback_w = _fallback_crop(height, width, config.crop_ratio)
    crop_h = torch.where(any_fit, crop_h.gather(1, first).squeeze(1), fallback_h)
    crop_w = torch.where(any_fit, crop_w.gather(1, first).squeeze(1), fallback_w)
    offset = torch.rand((batch_size, 2), generator=generator, device=crop_h.device)
    top = torch.floor(offset[:, 0] * (height - crop_h + 1))
    left = torch.floor(offset[:, 1] * (width - crop_w + 1))
    top = torch.where(any_fit, top, (height - crop_h) // 2)
    left = torch.where(any_fit, left, (width - crop_w) // 2)
    return torch.stack([top, left, crop_h, crop_w], dim=1)


def _fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    image_ratio = width / height
    if image_ratio < ratio[0]:
        return float(round(width / ratio[0])), float(width)
    if image_ratio > ratio[1]:
        return float(height), float(round(height * ratio[1]))
    return float(height), float(width)


def sample_image_params(
    batch_size: int,
    height: int,
    width: int,
    config: ImageAugmentationConfig,
    generator: torch.Generator | None,
) -> ImageAugmentationParams:
    """Draw the parameters of one augmented view for every sample (on the generator's device)."""
    boxes = sample_crop_boxes(batch_size, height, width, config, generator)
    coins = _uniform((batch_size, 3), 0.0, 1.0, generator)
    columns = [
        _uniform((batch_size,), max(0.0, 1 - strength), 1 + strength, generator)
        for strength in (config.brightness, config.contrast, config.saturation)
    ]
    columns.append(_uniform((batch_size,), -config.hue, config.hue, generator))
    factors = torch.stack(columns, dim=1)
    order = torch.argsort(_uniform((batch_size, 4), 0.0, 1.0, generator), dim=1)
    return ImageAugmentationParams(
        boxes=boxes,
        flip=coins[:, 0] < config.flip_prob,
        jitter=coins[:, 1] < config.jitter_prob,
        factors=factors,
        order=order,
        grayscale=coins[:, 2] < config.grayscale_prob,
    )


def crop_and_flip(images: Tensor, boxes: Tensor, flip: Tensor, output_size: int) -> Tensor:
    """Crop every image to its box, flip where ``flip`` is set, and resize bilinearly to a square.

    One affine grid per sample maps the output square onto the box (mirrored for a flip).
    A full-image box with the input size as output size reproduces the image exactly.

    Shape:
        images: (B, C, H, W) float. boxes: (B, 4) (top, left, height, width) pixels.
        flip: (B,) bool. return: (B, C, output_size, output_size).
    """
    batch, _, height, width = images.shape
    top, left, crop_h, crop_w = boxes.to(images.dtype).unbind(dim=1)
    sign = 1.0 - 2.0 * flip.to(images.dtype)
    theta = torch.zeros(batch, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = sign * crop_w / width
    theta[:, 0, 2] = (2 * left + crop_w) / width - 1
    theta[:, 1, 1] = crop_h / height
    theta[:, 1, 2] = (2 * top + crop_h) / height - 1
    output_shape = [batch, images.shape[1], output_size, output_size]
    grid = F.affine_grid(theta, output_shape, align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_grayscale(images: Tensor) -> Tensor:
    """Return the luma of RGB images (one-channel images unchanged).

    Shape:
        images: (B, C, H, W) with C in {1, 3}. return: (B, 1, H, W).
    """
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
    return torch.einsum("bchw,c->bhw", images, weights).unsqueeze(1)


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def adjust_brightness(images: Tensor, factors: Tensor) -> Tensor:
    """Scale intensities by a per-sample factor, clipped to [0, 1].

    Shape:
        images: (B, C, H, W) in [0, 1]. factors: (B,).
    """
    return (images * _per_sample(factors)).clamp(0.0, 1.0)


def adjust_contrast(images: Tensor, factors: Tensor) -> Tensor:
    """Blend each image with its mean luma by a per-sample factor, clipped to [0, 1].

    Shape:
        images: (B, C, H, W) in [0, 1]. factors: (B,).
    """
    # The mean luma equals the luma of the per-channel means, which is cheaper to compute.
    channel_means = images.mean(dim=(2, 3))
    if images.shape[1] == 3:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
        channel_means = channel_means @ weights
    mean = _per_sample(channel_means.reshape(-1))
    f = _per_sample(factors)
    return (f * images + (1 - f) * mean).clamp(0.0, 1.0)


def adjust_saturation(images: Tensor, factors: Tensor) -> Tensor:
    """Blend each RGB image with its grayscale version by a per-sample factor.

    Shape:
        images: (B, 3, H, W) in [0, 1]. factors: (B,).
    """
    f = _per_sample(factors)
    return (f * images + (1 - f) * to_grayscale(images)).clamp(0.0, 1.0)


def adjust_hue(images: Tensor, shifts: Tensor) -> Tensor:
    """Rotate the HSV hue of each RGB image by a per-sample shift (in turns, in [-0.5, 0.5]).

    Equal to converting to HSV, adding the shift to the hue modulo 1 and converting back,
    but computed without forming saturation: with value v = max(r, g, b), chroma
    c = v - min(r, g, b) and hue h in sixths of a turn, channel n of the result is
    v - c * clamp(min(k, 4 - k), 0, 1) with k = (n + h) mod 6 and n = 5, 3, 1 for red,
    green, blue.

    Shape:
        images: (B, 3, H, W) in [0, 1]. shifts: (B,).
    """
    red, green, blue = images.unbind(dim=1)
    value = torch.maximum(torch.maximum(red, green), blue)
    chroma = value - torch.minimum(torch.minimum(red, green), blue)
    zeros = torch.zeros_like(chroma)
    inverse_chroma = torch.where(chroma > 0, 1.0 / chroma.clamp_min(1e-12), zeros)
    # Hue in sixths of a turn, measured from the channel that equals the value.
    from_green_or_blue = torch.where(
        value == green,
        (blue - red) * inverse_chroma + 2.0,
        (red - green) * inverse_chroma + 4.0,
    )
    sixths = torch.where(value == red, (green - blue) * inverse_chroma, from_green_or_blue)
    sixths = (sixths + 6.0 * shifts.view(-1, 1, 1)).unsqueeze(1)
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device)
    offsets = offsets.view(1, 3, 1, 1)
    k = torch.remainder(offsets + sixths, 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(1) - chroma.unsqueeze(1) * weight


_COLOUR_OPS = {
    BRIGHTNESS: adjust_brightness,
    CONTRAST: adjust_contrast,
    SATURATION: adjust_saturation,
    HUE: adjust_hue,
}


def colour_jitter(images: Tensor, params: ImageAugmentationParams) -> Tensor:
    """Apply the four colour operations in each sample's own order, where ``jitter`` is set.

    Saturation and hue are skipped for one-channel images.

    Shape:
        images: (B, C, H, W) in [0, 1]. return: same shape.
    """
    out = images.clone()
    rgb = images.shape[1] == 3
    for position in range(4):
        for op, function in _COLOUR_OPS.items():
            if op in (SATURATION, HUE) and not rgb:
                continue
            index = (params.jitter & (params.order[:, position] == op)).nonzero().squeeze(1)
            # On the CPU, slices of _CPU_CHUNK images keep the intermediates of the hue
            # conversion in cache, which made it about twice as fast in bench/augment_speed.py.
            chunk = _CPU_CHUNK if images.device.type == "cpu" else max(len(index), 1)
            for start in range(0, len(index), chunk):
                part = index[start : start + chunk]
                out[part] = function(out[part], params.factors[part, op])
    return out


def augment_images(
    images: Tensor,
    config: ImageAugmentationConfig,
    generator: torch.Generator | None = None,
    params: ImageAugmentationParams | None = None,
) -> Tensor:
    """Augment one view of every image in a batch; values stay in [0, 1] (not normalised).

    Args:
        images: uint8 images (values 0-255) or float images in [0, 1].
        config: the recipe.
        generator: source of the random parameters (default: torch's global generator).
        params: parameters to use instead of drawing them (for tests and replay).

    Shape:
        images: (B, C, H, W) with C in {1, 3}. return: (B, C, S, S) float32 on the
        images' device, S = ``config.output_size`` or H (square inputs keep their size).
    """
    batch, channels, height, width = images.shape
    if channels not in (1, 3):
        raise ValueError(
            f"image augmentation needs 1 or 3 channels, got {channels}; convert the images first"
        )
    x = images.to(torch.float32).div_(255.0) if images.dtype == torch.uint8 else images.float()
    if params is None:
        params = sample_image_params(batch, height, width, config, generator)
    params = params.to(x.device)
    size = config.output_size or height
    x = crop_and_flip(x, params.boxes, params.flip, size)
    x = colour_jitter(x, params)
    if channels == 3:
        gray = params.grayscale.nonzero().squeeze(1)
        if len(gray):
            x[gray] = to_grayscale(x[gray]).expand(-1, 3, -1, -1)
    return x
