"""Tests of the batched two-view augmentation: recipe statistics, exact operations, determinism."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from hmlc_core.data import (
    HierarchicalDataset,
    Hierarchy,
    ImageAugmentationConfig,
    PointAugmentationConfig,
    augment_images,
    augment_points,
    build_eval_transform,
    build_two_view_augmentation,
    sample_image_params,
)
from hmlc_core.data.image_augment import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    colour_jitter,
    crop_and_flip,
    sample_crop_boxes,
)
from hmlc_core.data.point_augment import rotation_about_axis

CIFAR_MEAN = torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)


def _images(batch: int = 16, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, channels, size, size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_two_view_shapes_cifar() -> None:
    views = build_two_view_augmentation("cifar100")(_images(), _seeded(0))
    assert views.shape == (16, 2, 3, 32, 32)
    assert views.dtype == torch.float32


def test_two_view_shapes_fashion() -> None:
    images = _images(8, channels=1, size=28)
    views = build_two_view_augmentation("fashion-mnist")(images, _seeded(0))
    assert views.shape == (8, 2, 1, 28, 28)


def test_two_view_shapes_points() -> None:
    points = torch.randn(4, 100, 3)
    views = build_two_view_augmentation("modelnet40")(points, _seeded(0))
    assert views.shape == (4, 2, 100, 3)
    assert views.dtype == torch.float32


def test_normalised_range_matches_unit_interval() -> None:
    views = build_two_view_augmentation("cifar100")(_images(64), _seeded(1))
    low = ((0 - CIFAR_MEAN) / CIFAR_STD).view(1, 1, 3, 1, 1)
    high = ((1 - CIFAR_MEAN) / CIFAR_STD).view(1, 1, 3, 1, 1)
    assert (views >= low - 1e-5).all()
    assert (views <= high + 1e-5).all()


def test_unnormalised_output_in_unit_interval() -> None:
    out = augment_images(_images(64), ImageAugmentationConfig(), _seeded(2))
    assert out.min() >= 0.0
    assert out.max() <= 1.0


def test_deterministic_under_seed() -> None:
    augment = build_two_view_augmentation("cifar100")
    images = _images()
    first = augment(images, _seeded(7))
    second = augment(images, _seeded(7))
    other = augment(images, _seeded(8))
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_views_differ() -> None:
    views = build_two_view_augmentation("cifar100")(_images(32), _seeded(3))
    per_sample_gap = (views[:, 0] - views[:, 1]).abs().flatten(1).mean(dim=1)
    assert (per_sample_gap > 1e-3).all()


def test_two_views_are_one_doubled_batch() -> None:
    images = _images(8)
    views = build_two_view_augmentation("cifar100")(images, _seeded(4))
    single = augment_images(torch.cat([images, images]), ImageAugmentationConfig(), _seeded(4))
    normalised = (single - CIFAR_MEAN) / CIFAR_STD
    assert torch.allclose(views[:, 0], normalised[:8], atol=1e-6)
    assert torch.allclose(views[:, 1], normalised[8:], atol=1e-6)


def test_coin_frequencies_match_recipe() -> None:
    params = sample_image_params(20000, 32, 32, ImageAugmentationConfig(), _seeded(5))
    # Binomial standard error at n = 20,000 is at most 0.0036; allow about five of them.
    assert params.flip.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert params.jitter.float().mean().item() == pytest.approx(0.8, abs=0.02)
    assert params.grayscale.float().mean().item() == pytest.approx(0.2, abs=0.02)


def test_jitter_factor_ranges() -> None:
    factors = sample_image_params(5000, 32, 32, ImageAugmentationConfig(), _seeded(6)).factors
    ranges = (
        (BRIGHTNESS, 0.6, 1.4),
        (CONTRAST, 0.6, 1.4),
        (SATURATION, 0.6, 1.4),
        (HUE, -0.1, 0.1),
    )
    for column, low, high in ranges:
        values = factors[:, column]
        assert values.min() >= low
        assert values.max() <= high
        assert values.min() < low + 0.01
        assert values.max() > high - 0.01


def test_order_rows_are_permutations() -> None:
    order = sample_image_params(500, 32, 32, ImageAugmentationConfig(), _seeded(7)).order
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(500, 4))
    first_ops = torch.bincount(order[:, 0], minlength=4).float() / 500
    assert (first_ops > 0.15).all()


def test_crop_boxes_inside_image_and_in_range() -> None:
    boxes = sample_crop_boxes(20000, 32, 32, ImageAugmentationConfig(), _seeded(8))
    top, left, height, width = boxes.unbind(dim=1)
    assert (top >= 0).all()
    assert (left >= 0).all()
    assert (top + height <= 32).all()
    assert (left + width <= 32).all()
    area = height * width / 1024
    # Rounding the side lengths to pixels moves the area a little outside [0.2, 1].
    assert area.min() >= 0.17
    assert area.max() <= 1.0
    assert area.min() < 0.22
    assert area.max() > 0.95
    ratio = width / height
    assert ratio.min() >= 0.75 * 0.9
    assert ratio.max() <= (4 / 3) * 1.1
    assert torch.equal(boxes, boxes.round())


def test_crop_falls_back_to_centre() -> None:
    # A ratio range no draw can meet on a 32x8 image forces the fallback box.
    config = ImageAugmentationConfig(crop_scale=(0.9, 1.0), crop_ratio=(3.0, 4.0))
    boxes = sample_crop_boxes(4, 32, 8, config, _seeded(0))
    assert boxes.tolist() == [[14.0, 0.0, 3.0, 8.0]] * 4


def test_full_box_is_identity_and_flip_mirrors() -> None:
    images = _images(4).float() / 255
    full = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(4, 4)
    no_flip = torch.zeros(4, dtype=torch.bool)
    assert torch.allclose(crop_and_flip(images, full, no_flip, 32), images, atol=1e-6)
    flipped = crop_and_flip(images, full, torch.ones(4, dtype=torch.bool), 32)
    assert torch.allclose(flipped, images.flip(-1), atol=1e-6)


def test_box_at_native_size_is_exact_crop() -> None:
    images = _images(2).float() / 255
    box = torch.tensor([[4.0, 8.0, 16.0, 16.0], [0.0, 16.0, 16.0, 16.0]])
    out = crop_and_flip(images, box, torch.tensor([False, True]), 16)
    assert torch.allclose(out[0], images[0, :, 4:20, 8:24], atol=1e-6)
    assert torch.allclose(out[1], images[1, :, 0:16, 16:32].flip(-1), atol=1e-6)


def test_upscaled_crop_matches_torchvision_resize() -> None:
    images = _images(1).float() / 255
    box = torch.tensor([[2.0, 2.0, 28.0, 28.0]])
    out = crop_and_flip(images, box, torch.tensor([False]), 32)
    reference = TF.resize(images[:, :, 2:30, 2:30], [32, 32], antialias=False)
    # Interior pixels agree; the outermost ring differs because the grid reads the pixels
    # just outside the crop, where resize clamps at the crop edge.
    assert torch.allclose(out[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5)


@pytest.mark.parametrize(
    ("ours", "reference", "low", "high"),
    [
        (adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
        (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
        (adjust_saturation, TF.adjust_saturation, 0.6, 1.4),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_match_torchvision(ours, reference, low: float, high: float) -> None:
    images = _images(12).float() / 255
    images[0] = images[0].round()  # saturated pixels
    images[1] = images[1, :1].expand(3, -1, -1)  # gray pixels
    factors = torch.linspace(low, high, 12)
    expected = torch.stack([reference(images[i], float(factors[i])) for i in range(12)])
    assert torch.allclose(ours(images, factors), expected, atol=1e-5)


def test_jitter_follows_each_sample_order() -> None:
    images = _images(2).float() / 255
    params = sample_image_params(2, 32, 32, ImageAugmentationConfig(), _seeded(9))
    params = dataclasses.replace(
        params,
        jitter=torch.tensor([True, True]),
        order=torch.tensor(
            [[HUE, CONTRAST, BRIGHTNESS, SATURATION], [BRIGHTNESS, SATURATION, HUE, CONTRAST]]
        ),
        factors=torch.tensor([[1.3, 0.7, 1.2, 0.08], [0.8, 1.25, 0.65, -0.05]]),
    )
    ops = {
        BRIGHTNESS: TF.adjust_brightness,
        CONTRAST: TF.adjust_contrast,
        SATURATION: TF.adjust_saturation,
        HUE: TF.adjust_hue,
    }
    out = colour_jitter(images, params)
    for i in range(2):
        expected = images[i]
        for op in params.order[i].tolist():
            expected = ops[op](expected, float(params.factors[i, op]))
        assert torch.allclose(out[i], expected, atol=1e-5)


def test_grayscale_views_have_equal_channels() -> None:
    images = _images(64)
    params = sample_image_params(64, 32, 32, ImageAugmentationConfig(), _seeded(10))
    out = augment_images(images, ImageAugmentationConfig(), params=params)
    gray = out[params.grayscale]
    colour = out[~params.grayscale]
    assert len(gray) > 0
    assert len(colour) > 0
    assert torch.allclose(gray[:, 0], gray[:, 1])
    assert torch.allclose(gray[:, 1], gray[:, 2])
    assert not torch.allclose(colour[:, 0], colour[:, 1])


def test_pixel_statistics_match_torchvision_pipeline() -> None:
    # The same recipe through torchvision's per-image PIL transforms gives the same output
    # distribution: compare the mean and spread of many views of one image.
    image = _images(1, seed=11)[0]
    pipeline = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
        ]
    )
    pil_image = TF.to_pil_image(image)
    torch.manual_seed(0)
    views = 800
    reference = torch.stack([pipeline(pil_image) for _ in range(views)])
    ours = augment_images(image.expand(views, -1, -1, -1), ImageAugmentationConfig(), _seeded(12))
    assert ours.mean().item() == pytest.approx(reference.mean().item(), abs=0.015)
    assert ours.std().item() == pytest.approx(reference.std().item(), abs=0.015)
    ours_sample_means = ours.flatten(1).mean(dim=1)
    ref_sample_means = reference.flatten(1).mean(dim=1)
    assert ours_sample_means.std().item() == pytest.approx(ref_sample_means.std().item(), rel=0.15)


def test_fashion_recipe_only_brightness_contrast() -> None:
    augment = build_two_view_augmentation("fashion-mnist")
    assert augment.config.saturation == 0.0
    assert augment.config.hue == 0.0
    assert augment.config.grayscale_prob == 0.0
    assert augment.config.crop_scale == (0.2, 1.0)
    assert augment.config.jitter_prob == 0.8


def test_float_input_equals_uint8_input() -> None:
    images = _images(8)
    config = ImageAugmentationConfig()
    from_uint8 = augment_images(images, config, _seeded(13))
    from_float = augment_images(images.float() / 255, config, _seeded(13))
    assert torch.allclose(from_uint8, from_float, atol=1e-6)


def test_output_size_option() -> None:
    out = augment_images(_images(4), ImageAugmentationConfig(output_size=24), _seeded(0))
    assert out.shape == (4, 3, 24, 24)


def test_eval_transform_normalises_exactly() -> None:
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    images[1] = 255
    out = build_eval_transform("cifar100")(images)
    assert torch.allclose(out[0], (-CIFAR_MEAN / CIFAR_STD)[0].expand(3, 4, 4))
    assert torch.allclose(out[1], ((1 - CIFAR_MEAN) / CIFAR_STD)[0].expand(3, 4, 4))
    white = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    fashion = build_eval_transform("fashion-mnist")(white)
    assert torch.allclose(fashion, torch.full((1, 1, 2, 2), (1 - 0.2860) / 0.3530))


def test_rotation_matrices_right_handed() -> None:
    quarter = torch.tensor([math.pi / 2])
    # About y: z goes to x. About z: x goes to y. About x: y goes to z.
    x, y, z = torch.eye(3)
    assert torch.allclose(rotation_about_axis(quarter, 1)[0] @ z, x, atol=1e-6)
    assert torch.allclose(rotation_about_axis(quarter, 2)[0] @ x, y, atol=1e-6)
    assert torch.allclose(rotation_about_axis(quarter, 0)[0] @ y, z, atol=1e-6)


def test_point_rotation_keeps_up_axis() -> None:
    points = torch.randn(64, 50, 3)
    config = PointAugmentationConfig(scale_range=(1.0, 1.0), jitter_sigma=0.0)
    out = augment_points(points, config, _seeded(0))
    assert torch.allclose(out[..., 1], points[..., 1], atol=1e-6)
    assert torch.allclose(out.norm(dim=2), points.norm(dim=2), atol=1e-5)
    assert not torch.allclose(out, points, atol=1e-3)


def test_point_scale_and_jitter_bounds() -> None:
    points = torch.randn(500, 40, 3)
    scale_only = PointAugmentationConfig(rotate=False, jitter_sigma=0.0)
    scaled = augment_points(points, scale_only, _seeded(1))
    factors = (scaled.norm(dim=2) / points.norm(dim=2)).mean(dim=1)
    assert factors.min() >= 0.8 - 1e-5
    assert factors.max() <= 1.25 + 1e-5
    assert factors.min() < 0.82
    assert factors.max() > 1.23
    jitter_only = PointAugmentationConfig(rotate=False, scale_range=(1.0, 1.0))
    jittered = augment_points(points, jitter_only, _seeded(2))
    noise = jittered - points
    assert noise.abs().max() <= 0.05 + 1e-6
    assert noise.std().item() == pytest.approx(0.01, rel=0.05)


def test_point_views_deterministic() -> None:
    augment = build_two_view_augmentation("modelnet40")
    points = torch.randn(4, 30, 3)
    assert torch.equal(augment(points, _seeded(5)), augment(points, _seeded(5)))
    views = augment(points, _seeded(5))
    assert not torch.allclose(views[:, 0], views[:, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_views_match_cpu() -> None:
    images = _images(32)
    augment = build_two_view_augmentation("cifar100")
    on_cpu = augment(images, _seeded(20))
    on_gpu = augment(images.cuda(), _seeded(20))
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-4)
    points = torch.randn(4, 64, 3)
    point_augment = build_two_view_augmentation("modelnet40")
    points_on_gpu = point_augment(points.cuda(), _seeded(21)).cpu()
    assert torch.allclose(points_on_gpu, point_augment(points, _seeded(21)), atol=1e-5)


def test_default_normalisation_for_plain_dataset() -> None:
    hierarchy = Hierarchy(("coarse", "fine"), (("a",), ("x", "y")), ((), (0, 0)))
    dataset = HierarchicalDataset(
        name="synthetic",
        modality="image",
        inputs=_images(2, channels=3, size=8),
        paths=hierarchy.paths_from_fine(torch.tensor([0, 1])),
        hierarchy=hierarchy,
    )
    assert dataset.mean == (0.5, 0.5, 0.5)
    out = build_eval_transform(dataset)(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(out, torch.ones(1, 3, 2, 2))
