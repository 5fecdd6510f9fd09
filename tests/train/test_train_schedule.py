"""Warm-up + cosine schedule and the LARS optimiser against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hmlc_core.train.optim import LARS, build_optimizer
from hmlc_core.train.schedule import WarmupCosineLR, warmup_cosine_factor


def test_factor_warmup_and_cosine_values() -> None:
    # 10 steps, 4 of warm-up: (s + 1) / 4, then a cosine over the remaining 6 steps.
    assert warmup_cosine_factor(0, 10, 4, 0.0) == pytest.approx(0.25)
    assert warmup_cosine_factor(3, 10, 4, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(4, 10, 4, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(7, 10, 4, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine_factor(10, 10, 4, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(50, 10, 4, 0.1) == pytest.approx(0.1)


def test_scheduler_steps_learning_rate() -> None:
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = WarmupCosineLR(optimizer, total_steps=6, warmup_steps=2, min_lr=0.2)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    min_ratio = 0.1
    expected = [1.0, 2.0] + [
        2.0 * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * k / 4))) for k in range(4)
    ]
    assert seen == pytest.approx(expected)


def test_scheduler_state_round_trip() -> None:
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = WarmupCosineLR(optimizer, total_steps=20, warmup_steps=5)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    fresh_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = WarmupCosineLR(fresh_optimizer, total_steps=20, warmup_steps=5)
    fresh.load_state_dict(scheduler.state_dict())
    fresh_optimizer.step()
    fresh.step()
    optimizer.step()
    scheduler.step()
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


def test_scheduler_rejects_warmup_beyond_total() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(optimizer, total_steps=3, warmup_steps=4)


def test_lars_step_matches_hand_computation() -> None:
    weight = nn.Parameter(torch.tensor([3.0, 4.0]))  # norm 5
    bias = nn.Parameter(torch.tensor([1.0]))
    optimizer = LARS(
        [{"params": [weight]}, {"params": [bias], "lars_exclude": True}],
        lr=0.1,
        momentum=0.9,
        weight_decay=0.5,
        trust_coefficient=0.01,
        eps=0.0,
    )
    weight.grad = torch.tensor([0.0, 1.0])
    bias.grad = torch.tensor([2.0])
    optimizer.step()
    # g = grad + 0.5 * w = [1.5, 3.0], ||g|| = sqrt(11.25); trust = 0.01 * 5 / ||g||.
    grad = torch.tensor([1.5, 3.0])
    trust = 0.01 * 5.0 / math.sqrt(11.25)
    torch.testing.assert_close(weight.detach(), torch.tensor([3.0, 4.0]) - 0.1 * trust * grad)
    # Excluded group: plain momentum SGD without weight decay.
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - 0.1 * 2.0]))


def test_build_optimizer_lars_excludes_biases() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    optimizer = build_optimizer(model, "lars", lr=0.1, momentum=0.9, weight_decay=1e-4)
    excluded = [group["lars_exclude"] for group in optimizer.param_groups]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    assert excluded == [False, True]
    assert sizes == [1, 3]
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        build_optimizer(model, "adam", lr=0.1, momentum=0.9, weight_decay=0.0)
