"""Compare the probe's L-BFGS and Adam optimisers on structured Fashion-MNIST features.

Random labels (bench/probe_speed.py) make the probe easy to optimise. Here the
features are a fixed random ReLU projection of Fashion-MNIST pixels to 512 channels,
correlated and ill-conditioned like encoder features, with the real three-level labels.
The script prints, per optimiser setting, the wall-clock seconds of fit_linear_probe
and the validation top-1 accuracy per level on the stratified 10 % validation split.

Usage: python bench/probe_optimizers.py [--data-dir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from hmlc_core.data import DataConfig, load_splits
from hmlc_core.eval import ProbeConfig, fit_linear_probe

SETTINGS = {
    "lbfgs max_iter=50": ProbeConfig(optimizer="lbfgs", max_iter=50),
    "lbfgs max_iter=100 (default)": ProbeConfig(optimizer="lbfgs", max_iter=100),
    "adam epochs=10": ProbeConfig(optimizer="adam", epochs=10),
}


def random_relu_features(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Project flattened pixels in [0, 1] to 512 channels and apply a shifted ReLU.

    Shape:
        images: (N, 1, 28, 28) uint8; returns (N, 512) float32.
    """
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(28 * 28, 512, generator=generator) / 28.0
    pixels = images.flatten(start_dim=1).float() / 255.0
    return torch.relu(pixels @ projection - 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    splits = load_splits(DataConfig(name="fashion-mnist", data_dir=args.data_dir))
    train_x = random_relu_features(splits.train.inputs)
    val_x = random_relu_features(splits.val.inputs)
    print(f"train {tuple(train_x.shape)}, val {tuple(val_x.shape)}, "
          f"threads={torch.get_num_threads()}")
    # The first torch.optim use imports torch._dynamo, which is no part of the probe's cost.
    torch.optim.LBFGS([torch.zeros(1, requires_grad=True)])

    for name, config in SETTINGS.items():
        start = time.perf_counter()
        result = fit_linear_probe(train_x, splits.train.paths, val_x, splits.val.paths, config)
        seconds = time.perf_counter() - start
        accuracies = [round(value, 4) for value in result.val_accuracy]
        print(f"{name}: {seconds:.1f} s, val accuracy {accuracies}, "
              f"weight decays {result.weight_decay}")


if __name__ == "__main__":
    main()
