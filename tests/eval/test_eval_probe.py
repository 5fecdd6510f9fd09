"""Tests of the linear probe: accuracy on easy and impossible data, selection, standardisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hmlc_core.config import ConfigError
from hmlc_core.eval import ProbeConfig, ProbeResult, Standardizer, fit_linear_probe
from hmlc_core.eval.probe import grid_objective

# A balanced three-level tree: 2 coarse classes, 4 middle classes, 8 fine classes.
NUM_CLASSES = [2, 4, 8]


def _paths_from_fine(fine: torch.Tensor) -> torch.Tensor:
    return torch.stack([fine // 4, fine // 2, fine], dim=1)


def _blobs(num_samples: int, generator: torch.Generator, centres: torch.Tensor):
    """Return Gaussian blobs (N, C) around ``centres`` (8, C) and their label paths (N, 3)."""
    fine = torch.arange(num_samples) % 8
    features = centres[fine] + torch.randn(num_samples, centres.shape[1], generator=generator)
    return features, _paths_from_fine(fine)


def _fast_config(**changes) -> ProbeConfig:
    return ProbeConfig(max_iter=30).replace(**changes)


def test_probe_separates_far_apart_blobs():
    generator = torch.Generator().manual_seed(0)
    centres = 20.0 * torch.randn(8, 16, generator=generator)
    train_x, train_paths = _blobs(400, generator, centres)
    val_x, val_paths = _blobs(200, generator, centres)
    test_x, test_paths = _blobs(200, generator, centres)

    result = fit_linear_probe(train_x, train_paths, val_x, val_paths, _fast_config())

    assert result.val_accuracy == (1.0, 1.0, 1.0)
    assert result.evaluate(test_x, test_paths) == [1.0, 1.0, 1.0]
    assert torch.equal(result.predict(test_x), test_paths)
    assert [weight.shape for weight in result.weights] == [(16, 2), (16, 4), (16, 8)]


def test_probe_adam_separates_far_apart_blobs():
    generator = torch.Generator().manual_seed(1)
    centres = 20.0 * torch.randn(8, 16, generator=generator)
    train_x, train_paths = _blobs(400, generator, centres)
    val_x, val_paths = _blobs(200, generator, centres)

    config = ProbeConfig(optimizer="adam", epochs=20, batch_size=64, lr=0.05)
    result = fit_linear_probe(train_x, train_paths, val_x, val_paths, config)

    assert result.val_accuracy == (1.0, 1.0, 1.0)


def test_probe_is_at_chance_on_shuffled_labels():
    generator = torch.Generator().manual_seed(2)
    num_val = 2000
    train_x = torch.randn(600, 8, generator=generator)
    val_x = torch.randn(num_val, 8, generator=generator)
    train_paths = _paths_from_fine(torch.randint(0, 8, (600,), generator=generator))
    val_paths = _paths_from_fine(torch.randint(0, 8, (num_val,), generator=generator))

    result = fit_linear_probe(train_x, train_paths, val_x, val_paths, _fast_config())

    # With labels independent of the features, any classifier's accuracy is
    # Binomial(V, 1/K) / V. Six standard deviations bound all G x L grid entries
    # (union bound: below 1e-7 chance of a false failure).
    for level, num_classes in enumerate(NUM_CLASSES):
        chance = 1.0 / num_classes
        tolerance = 6.0 * math.sqrt(chance * (1.0 - chance) / num_val)
        accuracies = result.val_accuracy_grid[:, level]
        assert accuracies.max() <= chance + tolerance, f"level {level}: {accuracies.tolist()}"
        assert accuracies.min() >= chance - tolerance, f"level {level}: {accuracies.tolist()}"


def test_probe_weight_decay_is_argmax_of_grid():
    generator = torch.Generator().manual_seed(3)
    centres = 1.5 * torch.randn(8, 12, generator=generator)
    train_x, train_paths = _blobs(160, generator, centres)
    val_x, val_paths = _blobs(400, generator, centres)
    config = _fast_config(weight_decays=(0.0, 1e-4, 1e-2, 1e-1, 1.0))

    result = fit_linear_probe(train_x, train_paths, val_x, val_paths, config)

    assert result.val_accuracy_grid.shape == (5, 3)
    for level in range(3):
        column = result.val_accuracy_grid[:, level]
        best = column.max()
        tied = [config.weight_decays[g] for g in range(5) if column[g] == best]
        assert result.val_accuracy[level] == best.item()
        assert result.weight_decay[level] == max(tied)


def test_probe_picks_large_weight_decay_for_noisy_labels():
    # 100 training samples in 40 dimensions, 20 % of their labels flipped: without weight
    # decay the classifier fits the flips with the 39 noise dimensions. Only dimension 0
    # carries the class, and the validation labels are clean. With generator seeds 0-9 the
    # strong decay won by 0.002 to 0.16 validation accuracy (this test uses seed 4: 0.14).
    generator = torch.Generator().manual_seed(4)

    def sample(num_samples: int, flip: float):
        labels = torch.arange(num_samples) % 2
        features = torch.randn(num_samples, 40, generator=generator)
        features[:, 0] += 2.0 * (2.0 * labels - 1.0)
        flipped = torch.rand(num_samples, generator=generator) < flip
        return features, torch.where(flipped, 1 - labels, labels)[:, None]

    train_x, train_paths = sample(100, flip=0.2)
    val_x, val_paths = sample(1000, flip=0.0)
    config = ProbeConfig(weight_decays=(0.0, 1.0), max_iter=100)

    result = fit_linear_probe(train_x, train_paths, val_x, val_paths, config)

    assert result.weight_decay == (1.0,)
    assert result.val_accuracy_grid[1, 0] > result.val_accuracy_grid[0, 0]


def test_standardizer_uses_training_statistics_only():
    generator = torch.Generator().manual_seed(5)
    train_x = 3.0 * torch.randn(200, 6, generator=generator) + 5.0
    train_x[:, 4] = 7.0  # a constant channel
    train_paths = _paths_from_fine(torch.arange(200) % 8)
    val_x = torch.randn(80, 6, generator=generator)
    val_paths = _paths_from_fine(torch.arange(80) % 8)

    first = fit_linear_probe(train_x, train_paths, val_x, val_paths, _fast_config(max_iter=2))
    shifted = fit_linear_probe(
        train_x, train_paths, 100.0 * val_x + 50.0, val_paths, _fast_config(max_iter=2)
    )

    expected_mean = train_x.double().mean(dim=0).float()
    expected_std = train_x.double().std(dim=0, correction=0).float()
    expected_std[4] = 1.0
    for result in (first, shifted):
        torch.testing.assert_close(result.standardizer.mean, expected_mean)
        torch.testing.assert_close(result.standardizer.std, expected_std)
    for before, after in zip(first.weights, shifted.weights):
        torch.testing.assert_close(before, after)


def test_standardizer_transform_is_finite_for_constant_channel():
    standardizer = Standardizer.fit(torch.tensor([[1.0, 2.0], [3.0, 2.0]]))

    transformed = standardizer.transform(torch.tensor([[2.0, 5.0]]))

    assert standardizer.std.tolist() == [1.0, 1.0]
    assert transformed.tolist() == [[0.0, 3.0]]


def test_evaluate_reproduces_val_accuracy():
    generator = torch.Generator().manual_seed(6)
    centres = 1.2 * torch.randn(8, 10, generator=generator)
    train_x, train_paths = _blobs(200, generator, centres)
    val_x, val_paths = _blobs(150, generator, centres)

    result = fit_linear_probe(train_x, train_paths, val_x, val_paths, _fast_config())

    assert result.evaluate(val_x, val_paths) == list(result.val_accuracy)
    assert all(0.3 < accuracy < 1.0 for accuracy in result.val_accuracy)


def test_grid_objective_matches_autograd_loop():
    generator = torch.Generator().manual_seed(7)
    num_classes = [2, 3, 4]
    x = torch.randn(17, 5, generator=generator, dtype=torch.float64)
    y = torch.stack([torch.randint(0, k, (17,), generator=generator) for k in num_classes], 1)
    decays = torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64)
    root = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    for preconditioner in (None, root @ root.T + torch.eye(5, dtype=torch.float64)):
        coordinates = torch.randn(5, 3, 9, generator=generator, dtype=torch.float64)
        bias = torch.randn(3, 9, generator=generator, dtype=torch.float64)
        coordinates.requires_grad_(True)
        bias.requires_grad_(True)
        transform = torch.eye(5, dtype=torch.float64) if preconditioner is None else preconditioner

        loss, grad_coordinates, grad_bias = grid_objective(
            x, y, coordinates, bias, decays, num_classes, preconditioner
        )

        weight = (transform @ coordinates.reshape(5, -1)).view(5, 3, 9)
        reference = torch.zeros((), dtype=torch.float64)
        for g in range(3):
            start = 0
            for level, count in enumerate(num_classes):
                block = weight[:, g, start : start + count]
                logits = x @ block + bias[g, start : start + count]
                reference = reference + F.cross_entropy(logits, y[:, level])
                reference = reference + 0.5 * decays[g] * block.square().sum()
                start += count
        reference.backward()
        torch.testing.assert_close(loss, reference.detach())
        torch.testing.assert_close(grad_coordinates, coordinates.grad)
        torch.testing.assert_close(grad_bias, bias.grad)


def test_preconditioning_keeps_the_minimum():
    generator = torch.Generator().manual_seed(8)
    centres = torch.randn(8, 6, generator=generator)
    train_x, train_paths = _blobs(120, generator, centres)
    train_x[:, 1] = 0.9 * train_x[:, 0] + 0.1 * train_x[:, 1]  # ill-conditioned input
    config = ProbeConfig(weight_decays=(0.1,), max_iter=300)

    plain = fit_linear_probe(
        train_x, train_paths, train_x, train_paths, config.replace(precondition=False)
    )
    preconditioned = fit_linear_probe(train_x, train_paths, train_x, train_paths, config)

    def objective(result: ProbeResult) -> float:
        weight = torch.cat(result.weights, dim=1)[:, None, :]
        bias = torch.cat(result.biases)[None, :]
        features = result.standardizer.transform(train_x)
        decays = torch.tensor([0.1])
        return grid_objective(features, train_paths, weight, bias, decays, NUM_CLASSES)[0].item()

    # float32 L-BFGS stops within about 1e-6 of the minimum, where flat directions of the
    # objective still leave the parameters a few 1e-3 apart.
    assert objective(preconditioned) == pytest.approx(objective(plain), rel=1e-5)
    for level in range(3):
        torch.testing.assert_close(
            preconditioned.weights[level], plain.weights[level], atol=1e-2, rtol=0
        )
        torch.testing.assert_close(
            preconditioned.biases[level], plain.biases[level], atol=1e-2, rtol=0
        )


def _identity_probe(num_classes: int) -> ProbeResult:
    """Return a one-level probe whose prediction is the argmax of the raw features."""
    return ProbeResult(
        weight_decays=(0.0,),
        val_accuracy_grid=torch.zeros(1, 1, dtype=torch.float64),
        val_accuracy=(0.0,),
        weight_decay=(0.0,),
        standardizer=Standardizer(torch.zeros(num_classes), torch.ones(num_classes)),
        weights=(torch.eye(num_classes),),
        biases=(torch.zeros(num_classes),),
    )


def test_confusion_summary_counts_pairs():
    probe = _identity_probe(3)
    predicted = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 0, 2])
    true = torch.tensor([0, 0, 1, 0, 0, 2, 1, 2, 0, 2])
    features = F.one_hot(predicted, 3).float()

    (summary,) = probe.confusion_summary(
        features, true[:, None], top=2, class_names=[("cat", "dog", "fox")]
    )

    assert summary["level"] == 1
    assert summary["accuracy"] == 0.6
    assert summary["confusion"] == [[3, 2, 0], [0, 1, 1], [1, 0, 2]]
    assert summary["most_confused"] == [
        {"true": 0, "predicted": 1, "count": 2, "rate": 0.4,
         "true_name": "cat", "predicted_name": "dog"},
        {"true": 1, "predicted": 2, "count": 1, "rate": 0.5,
         "true_name": "dog", "predicted_name": "fox"},
    ]


def test_metrics_names_levels_one_based():
    generator = torch.Generator().manual_seed(9)
    centres = 20.0 * torch.randn(8, 8, generator=generator)
    train_x, train_paths = _blobs(80, generator, centres)
    result = fit_linear_probe(train_x, train_paths, train_x, train_paths, _fast_config())

    assert result.metrics("val") == {
        "val/probe_acc": 1.0,
        "val/probe_acc_L1": 1.0,
        "val/probe_acc_L2": 1.0,
        "val/probe_acc_L3": 1.0,
    }
    assert result.metrics("test", [0.5, 0.25, 0.125]) == {
        "test/probe_acc": 0.125,
        "test/probe_acc_L1": 0.5,
        "test/probe_acc_L2": 0.25,
        "test/probe_acc_L3": 0.125,
    }
    with pytest.raises(ValueError, match="2 accuracies"):
        result.metrics("test", [0.5, 0.5])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"weight_decays": ()}, "weight_decays"),
        ({"weight_decays": (0.0, -1e-3)}, "weight_decays"),
        ({"weight_decays": (float("nan"),)}, "weight_decays"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"max_iter": 0}, "max_iter"),
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"ridge": -1.0}, "ridge"),
        ({"device": "not-a-device"}, "device"),
    ],
)
def test_probe_config_rejects_invalid_values(changes, field):
    with pytest.raises(ConfigError, match=field):
        ProbeConfig(**changes)


def test_probe_config_from_dict_accepts_lists():
    config = ProbeConfig.from_dict({"weight_decays": [0.0, 1e-3], "batch_size": None})

    assert config.weight_decays == (0.0, 1e-3)
    assert config.batch_size is None


def test_fit_rejects_mismatched_inputs():
    features = torch.randn(10, 4)
    paths = _paths_from_fine(torch.arange(10) % 8)
    with pytest.raises(ValueError, match="channels"):
        fit_linear_probe(features, paths, torch.randn(5, 3), paths[:5])
    with pytest.raises(ValueError, match="levels"):
        fit_linear_probe(features, paths, features, paths[:, :2])
    with pytest.raises(ValueError, match="num_classes"):
        fit_linear_probe(features, paths, features, paths, num_classes=[2, 4, 3])
