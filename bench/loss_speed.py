"""Time forward + backward of the contrastive losses on the CPU.

Prints milliseconds per forward+backward (median of repeats after warm-up).
The variants are supcon_loss and hierarchical_loss as HMC, HMCE, HMCE with
(L, D) hard masks and HMCE with (N, V, L, D) soft masks. "x supcon" is
each variant's time over SupCon's at the same batch, for wall time and for
this process's CPU time. Run from the repository
root:

    python bench/loss_speed.py            # N = 512 and 2048 images, L = 2 and 3
    python bench/loss_speed.py --quick    # N = 512 only, fewer repeats
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from hmlc_core.losses import hierarchical_loss, supcon_loss

NUM_VIEWS = 2
WIDTH = 128
TEMPERATURE = 0.1
CLASSES_PER_LEVEL = (20, 100, 400)  # level l uses the first l + 1 entries


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 512 only, 1 warm-up, 3 repeats")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return parser.parse_args()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def label_paths(num_images: int, num_levels: int, generator: torch.Generator) -> Tensor:
    """Return random label paths (N, L) of a balanced tree: fine class // ratio = parent."""
    finest = CLASSES_PER_LEVEL[num_levels - 1]
    fine = torch.randint(0, finest, (num_images,), generator=generator)
    columns = [fine // (finest // CLASSES_PER_LEVEL[level]) for level in range(num_levels)]
    return torch.stack(columns, dim=1)


def time_variants(
    steps: dict[str, Callable[[], Tensor]], warmup: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Return the median wall and process-CPU milliseconds of step() plus backward().

    Variants run round-robin within each repeat, so a slow spell of a shared
    machine affects all of them alike instead of one. CPU time counts all of
    this process's threads, so it varies less than wall time on a busy machine.
    """
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for run in range(warmup + repeats):
        for name, step in steps.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            step().backward()
            if run >= warmup:
                wall[name].append((time.perf_counter() - wall_start) * 1000.0)
                cpu[name].append((time.process_time() - cpu_start) * 1000.0)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in steps}


def variants(features: Tensor, paths: Tensor, generator: torch.Generator) -> dict[str, Callable]:
    num_images, num_levels = paths.shape
    hard = torch.rand(num_levels, WIDTH, generator=generator) < 0.5
    soft = torch.rand(num_images, NUM_VIEWS, num_levels, WIDTH, generator=generator)
    soft.requires_grad_(True)
    fine = paths[:, -1]
    return {
        "supcon": lambda: supcon_loss(features, fine, TEMPERATURE),
        "hmc": lambda: hierarchical_loss(features, paths, TEMPERATURE),
        "hmce": lambda: hierarchical_loss(features, paths, TEMPERATURE, constraint="max"),
        "hmce_hard_masks": lambda: hierarchical_loss(
            features, paths, TEMPERATURE, constraint="max", masks=hard
        ),
        "hmce_soft_masks": lambda: hierarchical_loss(
            features, paths, TEMPERATURE, constraint="max", masks=soft
        ),
    }


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warmup, repeats = (1, 3) if args.quick else (args.warmup, args.repeats)
    sizes = (512,) if args.quick else (512, 2048)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_name()}")
    print(f"D = {WIDTH}, V = {NUM_VIEWS}, t = {TEMPERATURE}, warm-up {warmup}, median of {repeats}")
    print(f"load average at start (1, 5, 15 min): {os.getloadavg()}")
    header = f"{'N':>5} {'L':>2} {'variant':<16} {'wall ms':>9} {'x supcon':>9}"
    print(f"{header} {'cpu ms':>9} {'x supcon':>9}")
    for num_images in sizes:
        for num_levels in (2, 3):
            torch.manual_seed(0)
            generator = torch.Generator().manual_seed(0)
            features = torch.randn(num_images, NUM_VIEWS, WIDTH, requires_grad=True)
            paths = label_paths(num_images, num_levels, generator)
            steps = variants(features, paths, generator)
            medians = time_variants(steps, warmup, repeats)
            wall_base, cpu_base = medians["supcon"]
            for name, (wall_ms, cpu_ms) in medians.items():
                print(
                    f"{num_images:>5} {num_levels:>2} {name:<16} {wall_ms:>9.1f} "
                    f"{wall_ms / wall_base:>9.2f} {cpu_ms:>9.1f} {cpu_ms / cpu_base:>9.2f}"
                )
    print(f"load average at end (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    main()
