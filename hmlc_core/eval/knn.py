"""Cosine k-nearest-neighbour classification of frozen features.

This is the cheap per-epoch proxy of the linear probe: every query feature votes
with the labels of its ``k`` most cosine-similar bank features. The neighbour search
runs in chunks of queries, so memory stays at ``chunk_size x M`` similarities however
many queries there are. Computation happens on the device of the feature tensors.

Voting rule: each neighbour gives one vote to its class. When several classes get the
most votes, the one whose voting neighbours have the largest summed cosine similarity
wins, and an exact tie of that sum goes to the smallest class index. This rule is a
project choice, and it makes the prediction deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CHUNK_SIZE = 256


def knn_accuracy(
    bank_features: Tensor,
    bank_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    k: int = 20,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Compute the top-1 accuracy of cosine k-nearest-neighbour majority voting.

    Args:
        bank_features: features of the labelled reference set, any norm.
        bank_labels: class index of each bank feature (non-negative).
        query_features: features to classify, any norm.
        query_labels: true class index of each query.
        k: number of neighbours (1 <= k <= M).
        chunk_size: number of queries whose similarities are held in memory at once.

    Returns:
        The fraction of queries whose voted class equals their label, in [0, 1].

    Raises:
        ValueError: shapes disagree, a set is empty, labels are negative or k is out of range.

    Shape:
        bank_features: (M, C); bank_labels: (M,); query_features: (Q, C); query_labels: (Q,).
    """
    _check_labels_1d(bank_labels, "bank_labels")
    _check_labels_1d(query_labels, "query_labels")
    accuracies = knn_accuracy_per_level(
        bank_features,
        bank_labels[:, None],
        query_features,
        query_labels[:, None],
        k=k,
        chunk_size=chunk_size,
    )
    return accuracies[0]


def knn_accuracy_per_level(
    bank_features: Tensor,
    bank_paths: Tensor,
    query_features: Tensor,
    query_paths: Tensor,
    k: int = 20,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[float]:
    """Compute the k-NN accuracy at every hierarchy level from one neighbour search.

    The neighbours do not depend on the labels, so they are found once and every level
    votes with its own column of the label paths (see the module docstring for the vote).

    Args:
        bank_features: features of the labelled reference set, any norm.
        bank_paths: label path of each bank feature, column 0 the coarsest level.
        query_features: features to classify, any norm.
        query_paths: true label path of each query.
        k: number of neighbours (1 <= k <= M).
        chunk_size: number of queries whose similarities are held in memory at once.

    Returns:
        One accuracy in [0, 1] per level, coarsest first.

    Raises:
        ValueError: shapes disagree, a set is empty, labels are negative or k is out of range.

    Shape:
        bank_features: (M, C); bank_paths: (M, L); query_features: (Q, C); query_paths: (Q, L).
    """
    predictions = knn_predict(bank_features, bank_paths, query_features, k, chunk_size)
    _check_paths(query_paths, "query_paths", predictions.shape[0], predictions.shape[1])
    correct = predictions == query_paths.to(predictions.device)
    return correct.double().mean(dim=0).tolist()


def knn_predict(
    bank_features: Tensor,
    bank_paths: Tensor,
    query_features: Tensor,
    k: int = 20,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Predict the label path of every query by cosine k-NN voting, level by level.

    Args:
        bank_features: features of the labelled reference set, any norm.
        bank_paths: label path of each bank feature (a 1-D tensor counts as one level).
        query_features: features to classify, any norm.
        k: number of neighbours (1 <= k <= M).
        chunk_size: number of queries whose similarities are held in memory at once.

    Returns:
        The voted class per query and level, on the features' device.

    Shape:
        bank_features: (M, C); bank_paths: (M, L) or (M,); query_features: (Q, C);
        returns (Q, L), or (Q, 1) for 1-D bank_paths.
    """
    if bank_paths.dim() == 1:
        bank_paths = bank_paths[:, None]
    _check_features(bank_features, query_features)
    _check_paths(bank_paths, "bank_paths", bank_features.shape[0], None)
    num_bank = bank_features.shape[0]
    if not 1 <= k <= num_bank:
        raise ValueError(f"k={k} is out of range: use 1 <= k <= {num_bank} (the bank size)")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} is invalid: use a positive integer")

    device = bank_features.device
    bank = _normalise(bank_features)
    queries = _normalise(query_features)
    bank_paths = bank_paths.to(device=device, dtype=torch.long)
    num_classes = [int(bank_paths[:, level].max()) + 1 for level in range(bank_paths.shape[1])]

    chunks = []
    for start in range(0, queries.shape[0], chunk_size):
        similarities = queries[start : start + chunk_size] @ bank.T
        top_similarities, top_indices = similarities.topk(k, dim=1)
        neighbour_paths = bank_paths[top_indices]
        levels = [
            _vote(neighbour_paths[:, :, level], top_similarities, num_classes[level])
            for level in range(bank_paths.shape[1])
        ]
        chunks.append(torch.stack(levels, dim=1))
    return torch.cat(chunks, dim=0)


def _vote(neighbour_labels: Tensor, similarities: Tensor, num_classes: int) -> Tensor:
    """Return the majority class per query, ties broken by summed similarity.

    Shape:
        neighbour_labels: (Q, k); similarities: (Q, k); returns (Q,).
    """
    num_queries = neighbour_labels.shape[0]
    votes = torch.zeros(num_queries, num_classes, dtype=torch.long, device=similarities.device)
    votes.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels))
    summed = torch.zeros(
        num_queries, num_classes, dtype=similarities.dtype, device=similarities.device
    )
    summed.scatter_add_(1, neighbour_labels, similarities)
    is_top = votes == votes.max(dim=1, keepdim=True).values
    tie_score = summed.masked_fill(~is_top, float("-inf"))
    # torch.argmax returns the first maximal index, so an exact tie goes to the smaller class.
    return tie_score.argmax(dim=1)


def _normalise(features: Tensor) -> Tensor:
    """Return L2-normalised rows in float32 (float64 stays float64)."""
    if features.dtype != torch.float64:
        features = features.float()
    return F.normalize(features, dim=1)


def _check_features(bank_features: Tensor, query_features: Tensor) -> None:
    if bank_features.dim() != 2 or query_features.dim() != 2:
        raise ValueError(
            f"features must be 2-D (N, C); got bank {tuple(bank_features.shape)} "
            f"and query {tuple(query_features.shape)}"
        )
    if bank_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"bank features have {bank_features.shape[1]} channels but query features have "
            f"{query_features.shape[1]}: extract both with the same encoder"
        )
    if bank_features.shape[0] == 0 or query_features.shape[0] == 0:
        raise ValueError(
            f"the bank ({bank_features.shape[0]} rows) and the queries "
            f"({query_features.shape[0]} rows) must both be non-empty"
        )
    if bank_features.device != query_features.device:
        raise ValueError(
            f"bank features are on {bank_features.device} but query features are on "
            f"{query_features.device}: move both to one device"
        )


def _check_labels_1d(labels: Tensor, name: str) -> None:
    if labels.dim() != 1:
        raise ValueError(
            f"{name} must be 1-D (N,), got shape {tuple(labels.shape)}; "
            "use knn_accuracy_per_level for label paths"
        )


def _check_paths(paths: Tensor, name: str, num_rows: int, num_levels: int | None) -> None:
    if paths.dim() != 2 or paths.shape[0] != num_rows:
        raise ValueError(
            f"{name} must have shape ({num_rows}, L) to match its features, "
            f"got {tuple(paths.shape)}"
        )
    if num_levels is not None and paths.shape[1] != num_levels:
        raise ValueError(
            f"{name} has {paths.shape[1]} levels but the bank paths have {num_levels}"
        )
    if paths.is_floating_point() or (paths.numel() > 0 and int(paths.min()) < 0):
        raise ValueError(f"{name} must contain non-negative integer class indices")
