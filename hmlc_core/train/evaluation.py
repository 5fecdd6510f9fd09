"""Evaluation during and after training: the per-epoch kNN proxy and the linear probe.

Both take the unwrapped model and datasets and return metric dicts with the project's
metric keys. Levels are 0-based in code and 1-based in keys (``_L1`` is the coarsest).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hmlc_core.data import HierarchicalDataset, build_eval_transform
from hmlc_core.eval import ProbeConfig, ProbeResult, extract_features, fit_linear_probe
from hmlc_core.eval.knn import knn_accuracy_per_level


def dataset_features(
    model: nn.Module, dataset: HierarchicalDataset, batch_size: int, device: torch.device
) -> Tensor:
    """Return the pooled features h of a dataset's unaugmented inputs, on the CPU.

    Shape:
        output: (len(dataset), C) float32.
    """
    transform = build_eval_transform(dataset)
    return extract_features(
        model, dataset.inputs, transform, batch_size=batch_size, device=device, output_device="cpu"
    )


def knn_metrics(
    model: nn.Module,
    bank: HierarchicalDataset,
    queries: HierarchicalDataset,
    k: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Compute the cosine kNN accuracy of ``queries`` against ``bank`` at every level.

    Returns:
        ``val/knn_acc`` (finest level) and ``val/knn_acc_L{l}`` for every level.
    """
    bank_features = dataset_features(model, bank, batch_size, device)
    query_features = dataset_features(model, queries, batch_size, device)
    k = min(k, bank_features.shape[0])
    accuracies = knn_accuracy_per_level(
        bank_features, bank.paths.cpu(), query_features, queries.paths.cpu(), k=k
    )
    metrics = {f"val/knn_acc_L{level + 1}": float(acc) for level, acc in enumerate(accuracies)}
    metrics["val/knn_acc"] = float(accuracies[-1])
    return metrics


def level_metrics(prefix: str, accuracies: list[float] | tuple[float, ...]) -> dict[str, float]:
    """Return ``{prefix}/probe_acc_L{l}`` per level and ``{prefix}/probe_acc`` (finest)."""
    metrics = {f"{prefix}/probe_acc_L{level + 1}": float(acc) for level, acc in enumerate(accuracies)}
    metrics[f"{prefix}/probe_acc"] = float(accuracies[-1])
    return metrics


def fit_probe(
    model: nn.Module,
    train: HierarchicalDataset,
    val: HierarchicalDataset,
    config: ProbeConfig,
    batch_size: int,
    device: torch.device,
) -> tuple[ProbeResult, dict[str, float]]:
    """Fit the linear probe on frozen pooled features, choosing weight decay on ``val``.

    Returns:
        The fitted probe and its ``val/probe_acc*`` metrics, plus the chosen weight
        decay per level as ``val/probe_weight_decay_L{l}``.
    """
    train_features = dataset_features(model, train, batch_size, device)
    val_features = dataset_features(model, val, batch_size, device)
    num_classes = [train.hierarchy.num_classes(level) for level in range(train.hierarchy.num_levels)]
    probe_device = config.device or str(device)
    result = fit_linear_probe(
        train_features.to(probe_device),
        train.paths.to(probe_device),
        val_features.to(probe_device),
        val.paths.to(probe_device),
        config,
        num_classes=num_classes,
    )
    metrics = level_metrics("val", result.val_accuracy)
    for level, decay in enumerate(result.weight_decay):
        metrics[f"val/probe_weight_decay_L{level + 1}"] = float(decay)
    return result, metrics


def test_metrics(
    model: nn.Module,
    probe: ProbeResult,
    test: HierarchicalDataset,
    batch_size: int,
    device: torch.device,
    probe_device: str | None = None,
) -> dict[str, float]:
    """Evaluate a fitted probe on the test split: ``test/probe_acc*`` metrics."""
    test.require_split("test")
    features = dataset_features(model, test, batch_size, device)
    target = probe_device or str(device)
    accuracies = probe.evaluate(features.to(target), test.paths.to(target))
    return level_metrics("test", accuracies)
