"""Time the linear probe on random features of Fashion-MNIST size.

Prints the wall-clock seconds of fit_linear_probe (standardisation, the whole weight
decay grid and every level) on 54,000 x 512 Gaussian features with a three-level
hierarchy of 2, 6 and 10 classes, plus one run with a single 10-class level.
The labels are random, so the accuracies printed next to the times stay near chance.

Usage: python bench/probe_speed.py [--optimizer lbfgs|adam] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from hmlc_core.eval import ProbeConfig, fit_linear_probe

# Fashion-MNIST hierarchy: fine class -> level-2 class (Tops, Bottoms, Dresses, Outers,
# Accessories, Shoes) -> level-1 class (Clothes, Goods).
FINE_TO_MIDDLE = torch.tensor([0, 1, 0, 2, 3, 5, 0, 5, 4, 5])
MIDDLE_TO_COARSE = torch.tensor([0, 0, 0, 0, 1, 1])


def make_data(num_samples: int, channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return random features (N, C) and random three-level label paths (N, 3)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_samples, channels, generator=generator)
    fine = torch.randint(0, 10, (num_samples,), generator=generator)
    middle = FINE_TO_MIDDLE[fine]
    paths = torch.stack([MIDDLE_TO_COARSE[middle], middle, fine], dim=1)
    return features, paths


def time_probe(config: ProbeConfig, levels: slice, device: str) -> None:
    """Fit the probe on the levels selected by ``levels`` and print the wall-clock time."""
    train_x, train_paths = make_data(54_000, 512, seed=0)
    val_x, val_paths = make_data(6_000, 512, seed=1)
    train_x, val_x = train_x.to(device), val_x.to(device)
    start = time.perf_counter()
    result = fit_linear_probe(
        train_x, train_paths[:, levels], val_x, val_paths[:, levels], config
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(
        f"optimizer={config.optimizer} levels={train_paths[:, levels].shape[1]} "
        f"grid={len(config.weight_decays)} device={device} threads={torch.get_num_threads()}: "
        f"{seconds:.2f} s, val accuracy {[round(a, 3) for a in result.val_accuracy]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="probe optimiser"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ProbeConfig(optimizer=args.optimizer)
    # Build the optimiser once first: the first torch.optim use imports torch._dynamo,
    # which takes seconds and is no part of the probe's cost.
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])
    time_probe(config, slice(0, 3), args.device)
    time_probe(config, slice(2, 3), args.device)


if __name__ == "__main__":
    main()
