"""Measure two-view augmentation throughput: the batched tensor pipeline against per-image PIL.

Both pipelines apply the same recipe (SupCon's CIFAR recipe, or its grayscale variant for
Fashion-MNIST) and produce two normalised float views per image. The batched pipeline
augments a whole uint8 batch with ``hmlc_core.data.build_two_view_augmentation``. The PIL
pipeline is the usual torchvision ``Compose`` applied image by image, as a ``Dataset``
``__getitem__`` would run it, without DataLoader worker processes.

Usage: python bench/augment_speed.py [--dataset cifar100] [--batch-size 256] [--batches 10]

The images are random uint8 pixels of the dataset's shape, because throughput depends on
the shape, not on the content. The two pipelines run on alternating batches and the
script reports wall-clock and CPU-time rates, so on a shared machine the ratio stays
comparable even when the absolute numbers move with the load. On an oversubscribed
machine (load average above the core count), ``--threads 2`` made the batched pipeline
several times slower than ``--threads 1``, because every tensor operation then waits for
a descheduled thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchvision.transforms as T
from PIL import Image

from hmlc_core.data import build_two_view_augmentation, default_augmentation_config
from hmlc_core.data.image_augment import ImageAugmentationConfig

SHAPES = {"cifar100": (3, 32, 32), "fashion-mnist": (1, 28, 28)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", choices=sorted(SHAPES), default="cifar100", help="image shape and recipe"
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="images per batch for both pipelines"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=10,
        help="timed batches per pipeline, after one warm-up batch",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of the batched pipeline; 1 compares one core with one core, "
        "since the PIL pipeline uses one core per DataLoader worker",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="device of the batched pipeline; the PIL pipeline always runs on the CPU",
    )
    return parser.parse_args()


def build_pil_pipeline(dataset: str) -> Callable[[Image.Image], torch.Tensor]:
    """Return torchvision's per-image version of the same recipe, ending in a normalised tensor."""
    config = default_augmentation_config(dataset)
    assert isinstance(config, ImageAugmentationConfig)
    normalize = build_two_view_augmentation(dataset).normalize
    assert normalize is not None
    steps: list[Callable] = [
        T.RandomResizedCrop(SHAPES[dataset][1], scale=config.crop_scale, ratio=config.crop_ratio),
        T.RandomHorizontalFlip(config.flip_prob),
        T.RandomApply(
            [T.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue)],
            p=config.jitter_prob,
        ),
    ]
    if config.grayscale_prob > 0:
        steps.append(T.RandomGrayscale(config.grayscale_prob))
    steps += [T.ToTensor(), T.Normalize(normalize.mean, normalize.std)]
    return T.Compose(steps)


@dataclass
class Timings:
    """Seconds per batch, by wall clock and by CPU time of this process."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def record(self, wall_start: float, cpu_start: float) -> None:
        self.wall.append(time.perf_counter() - wall_start)
        self.cpu.append(time.process_time() - cpu_start)


def make_batched_step(dataset: str, device: str) -> Callable[[torch.Tensor], None]:
    """Return a function that augments one uint8 batch with the batched pipeline."""
    augment = build_two_view_augmentation(dataset)
    generator = torch.Generator().manual_seed(0)

    def step(batch: torch.Tensor) -> None:
        views = augment(batch.to(device), generator)
        if views.is_cuda:
            torch.cuda.synchronize()

    return step


def make_pil_step(dataset: str) -> Callable[[list[Image.Image]], None]:
    """Return a function that augments a list of PIL images one by one, two views each."""
    pipeline = build_pil_pipeline(dataset)

    def step(images: list[Image.Image]) -> None:
        views = torch.stack([torch.stack([pipeline(img), pipeline(img)]) for img in images])
        assert views.shape[1] == 2

    return step


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Convert uint8 (B, C, H, W) images to PIL, as a dataset of PIL-ready arrays would."""
    arrays = images.permute(0, 2, 3, 1).numpy()
    if arrays.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in arrays]
    return [Image.fromarray(a, mode="RGB") for a in arrays]


def run(args: argparse.Namespace) -> tuple[Timings, Timings]:
    """Time both pipelines on alternating batches, so both see the same machine load."""
    generator = torch.Generator().manual_seed(0)
    shape = SHAPES[args.dataset]
    batched_step = make_batched_step(args.dataset, args.device)
    pil_step = make_pil_step(args.dataset)
    batched, pil = Timings(), Timings()
    for index in range(args.batches + 1):
        size = (args.batch_size, *shape)
        batch = torch.randint(0, 256, size, dtype=torch.uint8, generator=generator)
        pil_batch = to_pil(batch)
        wall, cpu = time.perf_counter(), time.process_time()
        batched_step(batch)
        if index > 0:  # the first batch warms both pipelines up
            batched.record(wall, cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        pil_step(pil_batch)
        if index > 0:
            pil.record(wall, cpu)
    return batched, pil


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    batched, pil = run(args)
    size = args.batch_size
    rates = {
        "wall": (size / statistics.median(batched.wall), size / statistics.median(pil.wall)),
        "cpu": (size / statistics.median(batched.cpu), size / statistics.median(pil.cpu)),
    }
    print(
        f"dataset {args.dataset} {SHAPES[args.dataset]}, batch {size}, {args.batches} timed "
        "batches per pipeline (alternating), median per batch"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), 1-minute load average before the run "
        f"{load_before:.1f}"
    )
    for clock, label in (("wall", "per wall-clock second"), ("cpu", "per CPU second")):
        batched_rate, pil_rate = rates[clock]
        print(f"{label}:")
        print(f"  batched tensor pipeline ({args.device}): {batched_rate:9.0f} two-view images/s")
        print(f"  per-image PIL pipeline (cpu): {pil_rate:9.0f} two-view images/s")
        print(f"  ratio batched / PIL: {batched_rate / pil_rate:.1f}x")


if __name__ == "__main__":
    main()
