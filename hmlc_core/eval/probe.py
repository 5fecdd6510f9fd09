"""Linear probe: one multinomial logistic regression per hierarchy level on frozen features.

Protocol: the features are standardised with training-set statistics, one softmax
classifier per level is trained on the training split for every weight decay of a
grid, and each level keeps the weight decay with the best validation top-1 accuracy.

All (weight decay, level) classifiers are trained together as one batched problem:
a single weight tensor of shape (C, G, K) contains every classifier, where G is the
grid size and K the summed class count of all levels, so one matrix product gives
all logits. The objective is the sum of the per-classifier objectives, and no
parameter appears in two of them. The joint minimum is therefore every
classifier's own minimum, and Adam, being element-wise, even follows each
classifier's own trajectory.

Each classifier minimises mean cross-entropy + (wd / 2) * ||W||^2 (bias not
penalised), so ``wd`` is a weight decay in the usual sense: it adds ``wd * W`` to
the gradient. Accuracies are fractions in [0, 1].

Project choices (not stated by the method's sources): full-batch L-BFGS as the
default optimiser, zero initialisation, the default grid, and ties of validation
accuracy going to the largest weight decay.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from hmlc_core.config import ConfigBase, ConfigError, require

logger = logging.getLogger(__name__)

OptimizerName = Literal["lbfgs", "adam"]
_EVAL_CHUNK = 8192
_PRECONDITIONER_ROWS = 16384
Objective = Callable[[Tensor, Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class ProbeConfig(ConfigBase):
    """Settings of the linear probe.

    Attributes:
        weight_decays: grid of L2 weight decays (>= 0) searched per level on validation.
        optimizer: "lbfgs" (full batch, ``max_iter`` iterations, strong-Wolfe line search,
            step size 1) or "adam" (``epochs`` passes over minibatches of ``batch_size``
            with learning rate ``lr`` and cosine decay to zero).
        max_iter: L-BFGS iterations; unused by "adam".
        epochs: Adam passes over the training set; unused by "lbfgs".
            NOTE: Adam takes epochs x ceil(N / batch_size) steps, so with N below
            batch_size it takes only ``epochs`` steps and can stop far from the minimum.
            L-BFGS does not depend on N in this way.
        lr: Adam learning rate; unused by "lbfgs".
        batch_size: Adam minibatch size in samples, None for full-batch steps; unused by
            "lbfgs", which always uses the full batch.
        precondition: optimise in whitened coordinates (see ``_train_grid``). This changes
            the path of the optimiser, not the objective or its minimum.
        ridge: regulariser of the whitening, relative to the mean eigenvalue of the
            features' second-moment matrix; it bounds the rescaling of near-constant
            feature directions. Unused without ``precondition``.
        seed: seed of the Adam minibatch order (L-BFGS from zero weights is deterministic).
        device: device to train on, e.g. "cpu" or "cuda:0"; None uses the device of the
            training features.
    """

    weight_decays: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    optimizer: OptimizerName = "lbfgs"
    max_iter: int = 100
    epochs: int = 10
    lr: float = 0.1
    batch_size: int | None = 4096
    precondition: bool = True
    ridge: float = 1e-2
    seed: int = 0
    device: str | None = None

    def validate(self) -> None:
        require(
            isinstance(self.weight_decays, tuple) and len(self.weight_decays) > 0,
            f"weight_decays={self.weight_decays!r} is invalid: give a non-empty tuple of floats",
        )
        for value in self.weight_decays:
            require(
                isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                f"weight_decays contains {value!r}: every weight decay must be a finite "
                "float >= 0",
            )
        require(
            self.optimizer in ("lbfgs", "adam"),
            f"optimizer={self.optimizer!r} is invalid: use 'lbfgs' or 'adam'",
        )
        require(self.max_iter >= 1, f"max_iter={self.max_iter} is invalid: use >= 1")
        require(self.epochs >= 1, f"epochs={self.epochs} is invalid: use >= 1")
        require(
            math.isfinite(self.lr) and self.lr > 0,
            f"lr={self.lr} is invalid: use a finite learning rate > 0",
        )
        require(
            self.batch_size is None or self.batch_size >= 1,
            f"batch_size={self.batch_size} is invalid: use >= 1, or None for full batch",
        )
        require(
            isinstance(self.precondition, bool),
            f"precondition={self.precondition!r} is invalid: use True or False",
        )
        require(
            math.isfinite(self.ridge) and self.ridge > 0,
            f"ridge={self.ridge} is invalid: use a finite value > 0 (default 1e-2)",
        )
        if self.device is not None:
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ConfigError(
                    f"device={self.device!r} is invalid ({error}): use e.g. 'cpu' or 'cuda:0'"
                ) from error


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-channel standardisation with statistics of the training features.

    Channels whose standard deviation is below ``eps`` (constant on the training set)
    get a divisor of 1, so they are only centred and never divided by zero.

    Shape:
        mean: (C,); std: (C,).
    """

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, features: Tensor, eps: float = 1e-6) -> Standardizer:
        """Compute the channel mean and population std of ``features`` (N, C) in float32."""
        features = features.float()
        mean = features.mean(dim=0)
        # Chunks keep the centred copy small; torch.std_mean over dim 0 was several times
        # slower on a 54,000 x 512 CPU tensor (torch 2.14).
        squares = torch.zeros_like(mean)
        for start in range(0, features.shape[0], _EVAL_CHUNK):
            squares += (features[start : start + _EVAL_CHUNK] - mean).square().sum(dim=0)
        std = (squares / features.shape[0]).sqrt()
        std = torch.where(std > eps, std, torch.ones_like(std))
        return cls(mean=mean, std=std)

    def transform(self, features: Tensor) -> Tensor:
        """Return (features - mean) / std in float32 on this standardizer's device.

        Shape:
            features: (N, C); returns (N, C).
        """
        features = features.to(device=self.mean.device, dtype=torch.float32)
        return (features - self.mean) / self.std


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Fitted linear probe: the chosen classifier per level and its validation scores.

    Attributes:
        weight_decays: the searched grid, in config order.
        val_accuracy_grid: validation top-1 accuracy of every (weight decay, level) pair.
        val_accuracy: validation top-1 accuracy of the chosen classifier per level.
        weight_decay: chosen weight decay per level.
        standardizer: training-set standardisation applied before the classifiers.
        weights: classifier weight per level.
        biases: classifier bias per level.

    Shape:
        val_accuracy_grid: (G, L); weights[l]: (C, K_l); biases[l]: (K_l,).
    """

    weight_decays: tuple[float, ...]
    val_accuracy_grid: Tensor
    val_accuracy: tuple[float, ...]
    weight_decay: tuple[float, ...]
    standardizer: Standardizer
    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]

    @property
    def num_levels(self) -> int:
        """Number of hierarchy levels L."""
        return len(self.weights)

    def logits(self, features: Tensor) -> list[Tensor]:
        """Compute the logits of every level for raw (unstandardised) features.

        Shape:
            features: (N, C); returns L tensors of shape (N, K_l).
        """
        standardized = self.standardizer.transform(_check_matrix(features, "features"))
        return [standardized @ weight + bias for weight, bias in zip(self.weights, self.biases)]

    def predict(self, features: Tensor) -> Tensor:
        """Predict the class of every level, coarsest first.

        Shape:
            features: (N, C); returns (N, L) on this result's device.
        """
        chunks = []
        for start in range(0, features.shape[0], _EVAL_CHUNK):
            logits = self.logits(features[start : start + _EVAL_CHUNK])
            chunks.append(torch.stack([level.argmax(dim=1) for level in logits], dim=1))
        if not chunks:
            return torch.zeros(0, self.num_levels, dtype=torch.long, device=self.device)
        return torch.cat(chunks, dim=0)

    def evaluate(self, features: Tensor, paths: Tensor) -> list[float]:
        """Compute the top-1 accuracy per level, coarsest first, as fractions in [0, 1].

        Shape:
            features: (N, C); paths: (N, L).
        """
        _check_paths(paths, "paths", features.shape[0], self.num_levels)
        predictions = self.predict(features)
        correct = predictions == paths.to(predictions.device)
        return correct.double().mean(dim=0).tolist()

    def confusion_summary(
        self,
        features: Tensor,
        paths: Tensor,
        top: int = 5,
        class_names: Sequence[Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Summarise the errors of every level.

        Args:
            features: raw features to classify.
            paths: their true label paths.
            top: number of most-confused (true, predicted) pairs to list per level.
            class_names: optional names per level, coarsest first, added to the pairs.

        Returns:
            One dict per level, coarsest first, with keys "level" (1-based), "accuracy",
            "confusion" (nested lists, rows = true class, columns = predicted class) and
            "most_confused": up to ``top`` off-diagonal pairs with a non-zero count, largest
            count first, each a dict with "true", "predicted", "count" and "rate" (count
            divided by the number of samples of the true class), plus "true_name" and
            "predicted_name" when ``class_names`` is given.

        Shape:
            features: (N, C); paths: (N, L).
        """
        _check_paths(paths, "paths", features.shape[0], self.num_levels)
        predictions = self.predict(features).cpu()
        paths = paths.cpu().long()
        summaries = []
        for level in range(self.num_levels):
            names = None if class_names is None else class_names[level]
            summaries.append(
                _level_confusion(
                    paths[:, level],
                    predictions[:, level],
                    num_classes=self.weights[level].shape[1],
                    level=level,
                    top=top,
                    names=names,
                )
            )
        return summaries

    def metrics(self, prefix: str, accuracies: Sequence[float] | None = None) -> dict[str, float]:
        """Name accuracies with the project's metric keys.

        Args:
            prefix: "val" or "test" (any string works).
            accuracies: per-level accuracies, coarsest first; None uses ``val_accuracy``.

        Returns:
            ``{prefix}/probe_acc`` (finest level) and ``{prefix}/probe_acc_L{l}`` with
            l = 1 for the coarsest level.
        """
        values = self.val_accuracy if accuracies is None else tuple(accuracies)
        if len(values) != self.num_levels:
            raise ValueError(
                f"got {len(values)} accuracies for a probe with {self.num_levels} levels"
            )
        named = {f"{prefix}/probe_acc": float(values[-1])}
        for level, value in enumerate(values, start=1):
            named[f"{prefix}/probe_acc_L{level}"] = float(value)
        return named

    @property
    def device(self) -> torch.device:
        """Device of the classifier tensors."""
        return self.weights[0].device

    def to(self, device: str | torch.device) -> ProbeResult:
        """Return a copy with the standardizer and classifiers on ``device``."""
        return dataclasses.replace(
            self,
            standardizer=Standardizer(
                self.standardizer.mean.to(device), self.standardizer.std.to(device)
            ),
            weights=tuple(weight.to(device) for weight in self.weights),
            biases=tuple(bias.to(device) for bias in self.biases),
        )


def fit_linear_probe(
    train_features: Tensor,
    train_paths: Tensor,
    val_features: Tensor,
    val_paths: Tensor,
    config: ProbeConfig | None = None,
    num_classes: Sequence[int] | None = None,
) -> ProbeResult:
    """Fit the linear probe of every level and pick each level's weight decay on validation.

    Args:
        train_features: frozen features of the training split.
        train_paths: label paths of the training split, column 0 the coarsest level.
        val_features: frozen features of the validation split.
        val_paths: label paths of the validation split.
        config: probe settings; None uses ``ProbeConfig()``.
        num_classes: classes per level; None uses 1 + the largest label seen in
            ``train_paths`` or ``val_paths``.

    Returns:
        The fitted probe with validation accuracies (see :class:`ProbeResult`).

    Raises:
        ValueError: shapes disagree, a split is empty, or a label is negative or
            not below its level's ``num_classes``.

    Shape:
        train_features: (M, C); train_paths: (M, L); val_features: (V, C); val_paths: (V, L).
    """
    config = config or ProbeConfig()
    _check_inputs(train_features, train_paths, val_features, val_paths)
    num_classes = _resolve_num_classes(train_paths, val_paths, num_classes)
    device = torch.device(config.device) if config.device else train_features.device

    standardizer = Standardizer.fit(train_features.to(device))
    train_x = standardizer.transform(train_features)
    val_x = standardizer.transform(val_features)
    train_y = train_paths.to(device=device, dtype=torch.long)
    val_y = val_paths.to(device=device, dtype=torch.long)

    weight, bias = _train_grid(train_x, train_y, num_classes, config)
    grid = _accuracy_grid(val_x, val_y, weight, bias, num_classes)
    chosen = _select_weight_decays(grid, config.weight_decays)

    offsets = _offsets(num_classes)
    weights = tuple(
        weight[:, g, offsets[level] : offsets[level + 1]].clone() for level, g in enumerate(chosen)
    )
    biases = tuple(
        bias[g, offsets[level] : offsets[level + 1]].clone() for level, g in enumerate(chosen)
    )
    result = ProbeResult(
        weight_decays=tuple(float(value) for value in config.weight_decays),
        val_accuracy_grid=grid,
        val_accuracy=tuple(float(grid[g, level]) for level, g in enumerate(chosen)),
        weight_decay=tuple(float(config.weight_decays[g]) for g in chosen),
        standardizer=standardizer,
        weights=weights,
        biases=biases,
    )
    logger.info(
        "linear probe: val accuracy %s with weight decays %s",
        result.val_accuracy,
        result.weight_decay,
    )
    return result


def _train_grid(
    features: Tensor, paths: Tensor, num_classes: Sequence[int], config: ProbeConfig
) -> tuple[Tensor, Tensor]:
    """Train every (weight decay, level) classifier at once from zero weights.

    With ``config.precondition`` the optimiser works on coordinates v with W = P v, where
    P = (S + ridge I)^(-1/2) and S is the second-moment matrix of the standardised
    training features. For any symmetric positive-definite P this change of variables
    leaves the objective and its minimum unchanged. It brings the data term's curvature
    in v closer to the identity when features are correlated, so the optimiser needs
    fewer passes over the data. S is estimated from evenly spaced rows,
    because P only has to be a good preconditioner, not an exact whitening.

    Shape:
        features: (N, C) standardised; paths: (N, L); returns weight (C, G, K) and
        bias (G, K) with G = len(config.weight_decays) and K = sum(num_classes).
    """
    num_channels = features.shape[1]
    grid_size = len(config.weight_decays)
    total_classes = sum(num_classes)
    device = features.device
    preconditioner = _preconditioner(features, config.ridge) if config.precondition else None

    coordinates = torch.zeros(
        num_channels, grid_size, total_classes, device=device, requires_grad=True
    )
    bias = torch.zeros(grid_size, total_classes, device=device, requires_grad=True)
    decays = torch.tensor(config.weight_decays, dtype=torch.float32, device=device)

    def objective(x_batch: Tensor, y_batch: Tensor) -> Tensor:
        """Return the objective on a batch and store its gradient in the parameters' .grad."""
        loss, coordinates.grad, bias.grad = grid_objective(
            x_batch, y_batch, coordinates, bias, decays, num_classes, preconditioner
        )
        return loss

    if config.optimizer == "lbfgs":
        _run_lbfgs(objective, [coordinates, bias], features, paths, config)
    else:
        _run_adam(objective, [coordinates, bias], features, paths, config)
    return _to_weight(coordinates.detach(), preconditioner), bias.detach()


def _preconditioner(features: Tensor, ridge: float) -> Tensor:
    """Return the symmetric (S + ridge * mean_eigenvalue * I)^(-1/2) of S = X^T X / N.

    S is computed from at most ``_PRECONDITIONER_ROWS`` evenly spaced rows.

    Shape:
        features: (N, C); returns (C, C) float32.
    """
    stride = max(1, features.shape[0] // _PRECONDITIONER_ROWS)
    rows = features[::stride]
    second_moment = (rows.T @ rows).double() / rows.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment)
    eigenvalues = eigenvalues.clamp_min(0.0)
    shift = ridge * max(float(eigenvalues.mean()), 1e-12)
    scales = (eigenvalues + shift).rsqrt()
    return ((eigenvectors * scales) @ eigenvectors.T).float()


def _to_weight(coordinates: Tensor, preconditioner: Tensor | None) -> Tensor:
    """Map optimiser coordinates v (C, G, K) to classifier weights W = P v (C, G, K)."""
    if preconditioner is None:
        return coordinates
    num_channels = coordinates.shape[0]
    return (preconditioner @ coordinates.reshape(num_channels, -1)).view_as(coordinates)


@torch.no_grad()
def grid_objective(
    x: Tensor,
    y: Tensor,
    coordinates: Tensor,
    bias: Tensor,
    decays: Tensor,
    num_classes: Sequence[int],
    preconditioner: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Compute the summed probe objective of all G x L classifiers and its gradient.

    The objective is the sum over weight decays g and levels l of the mean
    cross-entropy of classifier (g, l) plus (decays[g] / 2) * ||W_(g,l)||^2, where the
    weight is W = P v for the preconditioner P (the identity when None) and the
    coordinates v. The gradient is written out by hand (softmax minus one-hot,
    divided by B), which avoids the full-size buffers that autograd allocates for
    every level's slice of the logits.

    Args:
        x: standardised features of the batch.
        y: label paths of the batch, column 0 the coarsest level.
        coordinates: stacked coordinates v, levels concatenated along the class axis.
        bias: stacked classifier biases.
        decays: weight decay of each grid entry.
        num_classes: classes per level; they sum to K.
        preconditioner: symmetric P, or None for W = v.

    Returns:
        (loss, gradient with respect to the coordinates, gradient with respect to the bias).

    Shape:
        x: (B, C); y: (B, L); coordinates: (C, G, K); bias: (G, K); decays: (G,);
        preconditioner: (C, C); returns (), (C, G, K), (G, K).
    """
    weight = _to_weight(coordinates, preconditioner)
    logits = _grid_logits(x, weight, bias)
    batch, grid_size, total_classes = logits.shape
    offsets = _offsets(num_classes)
    loss = logits.new_zeros(())
    for level in range(len(num_classes)):
        level_logits = logits[:, :, offsets[level] : offsets[level + 1]]
        targets = y[:, level, None, None].expand(batch, grid_size, 1)
        log_normaliser = level_logits.logsumexp(dim=2, keepdim=True)
        loss += (log_normaliser - level_logits.gather(2, targets)).sum() / batch
        # The logits are not needed any more, so their block becomes the softmax minus one-hot.
        level_logits.sub_(log_normaliser).exp_()
        level_logits.scatter_add_(2, targets, level_logits.new_full(targets.shape, -1.0))
    logits /= batch
    flat_gradient = logits.view(batch, grid_size * total_classes)
    grad_weight = (x.T @ flat_gradient).view_as(weight) + decays[None, :, None] * weight
    grad_bias = logits.sum(dim=0)

    loss += 0.5 * (decays * weight.square().sum(dim=(0, 2))).sum()
    # W = P v with P symmetric, so the gradient with respect to v is P times that of W.
    return loss, _to_weight(grad_weight, preconditioner), grad_bias


def _grid_logits(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Compute the logits of all classifiers with one matrix product.

    Shape:
        x: (B, C); weight: (C, G, K); bias: (G, K); returns (B, G, K).
    """
    num_channels, grid_size, total_classes = weight.shape
    flat = x @ weight.reshape(num_channels, grid_size * total_classes)
    return flat.view(x.shape[0], grid_size, total_classes) + bias


def _run_lbfgs(
    objective: Objective, parameters: list[Tensor], x: Tensor, y: Tensor, config: ProbeConfig
) -> None:
    """Minimise the full-batch objective with L-BFGS and a strong-Wolfe line search."""
    optimizer = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=config.max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    optimizer.step(lambda: objective(x, y))


def _run_adam(
    objective: Objective, parameters: list[Tensor], x: Tensor, y: Tensor, config: ProbeConfig
) -> None:
    """Minimise the objective with minibatch Adam and a cosine learning-rate decay."""
    num_samples = x.shape[0]
    batch_size = min(config.batch_size or num_samples, num_samples)
    steps_per_epoch = math.ceil(num_samples / batch_size)
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch
    )
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    for _ in range(config.epochs):
        order = torch.randperm(num_samples, generator=generator).to(x.device)
        for start in range(0, num_samples, batch_size):
            indices = order[start : start + batch_size]
            objective(x[indices], y[indices])
            optimizer.step()
            scheduler.step()


@torch.no_grad()
def _accuracy_grid(
    x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, num_classes: Sequence[int]
) -> Tensor:
    """Compute the top-1 accuracy of every (weight decay, level) classifier.

    Shape:
        x: (V, C) standardised; y: (V, L); returns (G, L) float64 on the CPU.
    """
    offsets = _offsets(num_classes)
    correct = torch.zeros(weight.shape[1], len(num_classes), dtype=torch.float64)
    for start in range(0, x.shape[0], _EVAL_CHUNK):
        logits = _grid_logits(x[start : start + _EVAL_CHUNK], weight, bias)
        targets = y[start : start + _EVAL_CHUNK]
        for level in range(len(num_classes)):
            predicted = logits[:, :, offsets[level] : offsets[level + 1]].argmax(dim=2)
            hits = (predicted == targets[:, level, None]).sum(dim=0)
            correct[:, level] += hits.cpu().double()
    return correct / x.shape[0]


def _select_weight_decays(grid: Tensor, weight_decays: Sequence[float]) -> list[int]:
    """Pick per level the grid index with the best accuracy, ties to the largest decay.

    Shape:
        grid: (G, L); returns L indices into ``weight_decays``.
    """
    chosen = []
    for level in range(grid.shape[1]):
        best = grid[:, level].max()
        tied = [g for g in range(grid.shape[0]) if grid[g, level] == best]
        chosen.append(max(tied, key=lambda g: weight_decays[g]))
    return chosen


def _level_confusion(
    true: Tensor,
    predicted: Tensor,
    num_classes: int,
    level: int,
    top: int,
    names: Sequence[str] | None,
) -> dict[str, Any]:
    """Build the confusion matrix and the most-confused pairs of one level.

    Shape:
        true: (N,); predicted: (N,).
    """
    size = max(num_classes, int(true.max()) + 1 if true.numel() else 0)
    confusion = torch.zeros(size, size, dtype=torch.long)
    confusion.index_put_((true, predicted), torch.ones_like(true), accumulate=True)
    row_totals = confusion.sum(dim=1)

    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    counts, flat_indices = off_diagonal.flatten().sort(descending=True, stable=True)
    pairs = []
    for count, flat_index in zip(counts[:top].tolist(), flat_indices[:top].tolist()):
        if count == 0:
            break
        true_class, predicted_class = divmod(flat_index, size)
        pair: dict[str, Any] = {
            "true": true_class,
            "predicted": predicted_class,
            "count": count,
            "rate": count / int(row_totals[true_class]),
        }
        if names is not None:
            pair["true_name"] = names[true_class]
            pair["predicted_name"] = names[predicted_class]
        pairs.append(pair)

    accuracy = float(confusion.diagonal().sum()) / max(int(confusion.sum()), 1)
    return {
        "level": level + 1,
        "accuracy": accuracy,
        "confusion": confusion.tolist(),
        "most_confused": pairs,
    }


def _offsets(num_classes: Sequence[int]) -> list[int]:
    """Return the start of each level's block in the stacked class axis, plus the end."""
    offsets = [0]
    for count in num_classes:
        offsets.append(offsets[-1] + count)
    return offsets


def _resolve_num_classes(
    train_paths: Tensor, val_paths: Tensor, num_classes: Sequence[int] | None
) -> list[int]:
    seen = torch.maximum(train_paths.max(dim=0).values, val_paths.max(dim=0).values.to(
        train_paths.device)) + 1
    if num_classes is None:
        return [int(count) for count in seen.tolist()]
    if len(num_classes) != train_paths.shape[1]:
        raise ValueError(
            f"num_classes has {len(num_classes)} entries but the paths have "
            f"{train_paths.shape[1]} levels"
        )
    for level, (given, needed) in enumerate(zip(num_classes, seen.tolist())):
        if given < needed:
            raise ValueError(
                f"num_classes[{level}]={given} but level {level} has label {needed - 1}: "
                f"pass at least {needed}"
            )
    return [int(count) for count in num_classes]


def _check_inputs(
    train_features: Tensor, train_paths: Tensor, val_features: Tensor, val_paths: Tensor
) -> None:
    _check_matrix(train_features, "train_features")
    _check_matrix(val_features, "val_features")
    if train_features.shape[0] == 0 or val_features.shape[0] == 0:
        raise ValueError(
            f"train ({train_features.shape[0]} rows) and validation ({val_features.shape[0]} "
            "rows) features must both be non-empty"
        )
    if train_features.shape[1] != val_features.shape[1]:
        raise ValueError(
            f"train features have {train_features.shape[1]} channels but validation features "
            f"have {val_features.shape[1]}: extract both with the same encoder"
        )
    _check_paths(train_paths, "train_paths", train_features.shape[0], None)
    _check_paths(val_paths, "val_paths", val_features.shape[0], train_paths.shape[1])


def _check_matrix(features: Tensor, name: str) -> Tensor:
    if features.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, C), got shape {tuple(features.shape)}")
    return features


def _check_paths(paths: Tensor, name: str, num_rows: int, num_levels: int | None) -> None:
    if paths.dim() != 2 or paths.shape[0] != num_rows:
        raise ValueError(
            f"{name} must have shape ({num_rows}, L) to match its features, "
            f"got {tuple(paths.shape)}; use labels[:, None] for a single level"
        )
    if num_levels is not None and paths.shape[1] != num_levels:
        raise ValueError(f"{name} has {paths.shape[1]} levels, expected {num_levels}")
    if paths.is_floating_point() or (paths.numel() > 0 and int(paths.min()) < 0):
        raise ValueError(f"{name} must contain non-negative integer class indices")
