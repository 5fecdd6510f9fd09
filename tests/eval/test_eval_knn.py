"""Tests of the cosine k-nearest-neighbour evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from hmlc_core.eval import knn_accuracy, knn_accuracy_per_level, knn_predict


def _unit(degrees: float) -> list[float]:
    radians = math.radians(degrees)
    return [math.cos(radians), math.sin(radians)]


def _reference_predict(bank: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, k: int):
    """Plain-loop k-NN vote: most votes, then largest summed similarity, then smallest class."""
    bank = bank / bank.norm(dim=1, keepdim=True)
    queries = queries / queries.norm(dim=1, keepdim=True)
    predictions = []
    for query in queries:
        similarities = [float(query @ row) for row in bank]
        order = sorted(range(len(similarities)), key=lambda i: -similarities[i])[:k]
        votes: dict[int, int] = {}
        summed: dict[int, float] = {}
        for index in order:
            label = int(labels[index])
            votes[label] = votes.get(label, 0) + 1
            summed[label] = summed.get(label, 0.0) + similarities[index]
        best = max(votes.values())
        tied = [label for label in votes if votes[label] == best]
        predictions.append(min(tied, key=lambda label: (-summed[label], label)))
    return torch.tensor(predictions)


def test_knn_k1_hand_computed():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    bank_labels = torch.tensor([0, 1, 2, 3])
    queries = torch.tensor([[2.0, 0.1], [0.1, -3.0], [-5.0, 1.0], [0.2, 0.9]])
    # Nearest bank rows by angle: 0, 3, 2, 1; the last query is labelled wrongly.
    query_labels = torch.tensor([0, 3, 2, 0])

    predictions = knn_predict(bank, bank_labels, queries, k=1)

    assert predictions[:, 0].tolist() == [0, 3, 2, 1]
    assert knn_accuracy(bank, bank_labels, queries, query_labels, k=1) == 0.75


def test_knn_k3_majority_vote():
    bank = torch.tensor([_unit(0), _unit(10), _unit(20), _unit(90), _unit(180)])
    bank_labels = torch.tensor([0, 1, 1, 0, 2])
    # At 5 degrees the three nearest are 0, 10 and 20 degrees: labels 0, 1, 1.
    # At 100 degrees they are 90, 20 and 180 degrees: labels 0, 1, 2, a three-way tie that
    # the summed similarity breaks in favour of 90 degrees (label 0).
    queries = torch.tensor([_unit(5), _unit(100)])

    predictions = knn_predict(bank, bank_labels, queries, k=3)

    assert predictions[:, 0].tolist() == [1, 0]
    assert knn_accuracy(bank, bank_labels, queries, torch.tensor([1, 2]), k=3) == 0.5


def test_knn_vote_tie_uses_similarity_then_class():
    bank = torch.tensor([_unit(0), _unit(10)])
    labels = torch.tensor([0, 1])
    near_first = knn_predict(bank, labels, torch.tensor([_unit(3)]), k=2)
    near_second = knn_predict(bank, labels, torch.tensor([_unit(7)]), k=2)
    # Both neighbours have exactly the same similarity 1/sqrt(2) to the query (1, 0).
    exact_tie = knn_predict(
        torch.tensor([[1.0, -1.0], [1.0, 1.0]]),
        torch.tensor([1, 0]),
        torch.tensor([[1.0, 0.0]]),
        k=2,
    )

    assert near_first.item() == 0
    assert near_second.item() == 1
    assert exact_tie.item() == 0


def test_knn_matches_loop_reference():
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(60, 5, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    queries = torch.randn(25, 5, generator=generator)

    for k in (1, 4, 7):
        expected = _reference_predict(bank, labels, queries, k)
        predictions = knn_predict(bank, labels, queries, k=k, chunk_size=6)
        assert torch.equal(predictions[:, 0], expected), f"k={k}"


def test_knn_chunk_size_does_not_change_predictions():
    generator = torch.Generator().manual_seed(1)
    bank = torch.randn(50, 8, generator=generator)
    labels = torch.randint(0, 5, (50,), generator=generator)
    queries = torch.randn(33, 8, generator=generator)

    reference = knn_predict(bank, labels, queries, k=5, chunk_size=1000)
    for chunk_size in (1, 4, 32):
        predictions = knn_predict(bank, labels, queries, k=5, chunk_size=chunk_size)
        assert torch.equal(predictions, reference), f"chunk_size={chunk_size}"


def test_knn_is_scale_invariant():
    generator = torch.Generator().manual_seed(2)
    bank = torch.randn(40, 6, generator=generator)
    labels = torch.randint(0, 3, (40,), generator=generator)
    queries = torch.randn(20, 6, generator=generator)
    query_labels = torch.randint(0, 3, (20,), generator=generator)
    bank_scales = torch.rand(40, 1, generator=generator) * 100 + 0.01
    query_scales = torch.rand(20, 1, generator=generator) * 100 + 0.01

    plain = knn_predict(bank, labels, queries, k=5)
    scaled = knn_predict(bank * bank_scales, labels, queries * query_scales, k=5)

    assert torch.equal(plain, scaled)
    assert knn_accuracy(bank, labels, queries, query_labels, k=5) == knn_accuracy(
        bank * bank_scales, labels, queries * query_scales, query_labels, k=5
    )


def test_knn_per_level_equals_single_level_calls():
    generator = torch.Generator().manual_seed(3)
    bank = torch.randn(80, 6, generator=generator)
    queries = torch.randn(30, 6, generator=generator)
    fine_bank = torch.randint(0, 8, (80,), generator=generator)
    fine_query = torch.randint(0, 8, (30,), generator=generator)
    bank_paths = torch.stack([fine_bank // 4, fine_bank // 2, fine_bank], dim=1)
    query_paths = torch.stack([fine_query // 4, fine_query // 2, fine_query], dim=1)

    per_level = knn_accuracy_per_level(bank, bank_paths, queries, query_paths, k=6)
    single = [
        knn_accuracy(bank, bank_paths[:, level], queries, query_paths[:, level], k=6)
        for level in range(3)
    ]

    assert len(per_level) == 3
    assert per_level == single


def test_knn_rejects_invalid_arguments():
    bank = torch.randn(5, 3)
    labels = torch.arange(5)
    with pytest.raises(ValueError, match="k=6"):
        knn_accuracy(bank, labels, bank, labels, k=6)
    with pytest.raises(ValueError, match="k=0"):
        knn_accuracy(bank, labels, bank, labels, k=0)
    with pytest.raises(ValueError, match="channels"):
        knn_accuracy(bank, labels, torch.randn(2, 4), labels[:2], k=1)
    with pytest.raises(ValueError, match="1-D"):
        knn_accuracy(bank, labels[:, None], bank, labels, k=1)
    with pytest.raises(ValueError, match="non-negative"):
        knn_accuracy(bank, labels - 1, bank, labels, k=1)
    with pytest.raises(ValueError, match="shape"):
        knn_accuracy(bank, labels, bank, labels[:3], k=1)
