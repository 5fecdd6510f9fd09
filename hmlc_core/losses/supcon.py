"""Supervised contrastive loss (SupCon, L_out form) and the shared per-level core.

SupCon follows Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
For anchor i with positive set P(i) (same label, i itself excluded):

    loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) )

The core in :func:`level_losses` computes this for several label levels at once.
It never builds a (2N, 2N) positive mask, because the positive term is linear
in the features: sum_{p in P(i)} z_i.z_p = z_i . (sum of the anchor's class) - z_i.z_i.
Class sums cost O(2N * D) per level, so only the log-denominator needs the
(2N, 2N) similarity matrix, and levels that share features share that matrix.

Shape letters used below: N images, V views, B = N * V samples,
D feature width, L levels, G feature sets (1 when all levels share features,
L when every level has its own masked features).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from hmlc_core.losses.distributed import distributed_world_size, gather_with_grad

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def supcon_loss(
    features: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    weights: Tensor | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    """Compute the SupCon L_out loss of a multi-view batch.

    The function L2-normalises ``features`` along D itself, so any norm may be
    passed in. Every one of the N * V samples is an anchor. An anchor without a
    positive (its image is the only one of its class and V = 1) contributes
    nothing. The result is the mean over anchors that have a positive; with
    ``weights`` it is the weighted mean

        sum_i w_i * loss_i / sum_i w_i,   both sums over anchors with a positive,

    where both views of image n share ``w_n``. When no anchor has a positive (or
    all their weights are 0) the loss is 0, still connected to ``features``.

    float16 and bfloat16 features are computed in float32 (autocast is turned
    off inside) and the loss is float32. float32 and float64 inputs are
    computed in their own dtype.

    Args:
        features: projections of V views of N images, any norm.
        labels: integer class index per image.
        temperature: softmax temperature t > 0.
        weights: optional non-negative anchor weight per image.
        gather_distributed: gather features, labels and weights from all ranks
            and compute the loss over the global batch on every rank. A no-op
            when no ``torch.distributed`` process group is initialised.

    Returns:
        Scalar loss.

    Shape:
        - features: (N, V, D)
        - labels: (N,)
        - weights: (N,)
        - output: ()

    Raises:
        ValueError: an argument has the wrong shape, dtype or value.
    """
    check_temperature(temperature)
    check_features(features)
    num_images = features.shape[0]
    labels = check_labels(labels, num_images, device=features.device, allow_levels=False)
    paths = labels.unsqueeze(1)
    anchor_weights = check_anchor_weights(weights, num_images, 1, features, name="weights")
    with autocast_disabled(features.device):
        features = to_compute_dtype(features)
        if gather_distributed:
            features, paths, anchor_weights = gather_batch(features, paths, anchor_weights)
        samples = normalize_views(features).unsqueeze(0)
        sample_paths = repeat_views(paths, features.shape[1])
        sample_weights = _repeat_optional(anchor_weights, features.shape[1])
        return level_losses(samples, sample_paths, temperature, sample_weights)[0]


def level_losses(
    features: Tensor, paths: Tensor, temperature: float, anchor_weights: Tensor | None = None
) -> Tensor:
    """Compute the SupCon loss of every level, with positives by label-path prefix.

    Samples i and j are positives at level l when ``paths[i, :l+1]`` equals
    ``paths[j, :l+1]`` and i != j. Level l's loss is the (weighted) mean of
    loss_i over anchors with a positive at level l, and 0 when there is none.

    Args:
        features: L2-normalised samples. G = 1 when all levels share them,
            G = L when level l uses ``features[l]``.
        paths: integer label path per sample, column 0 coarsest.
        temperature: softmax temperature t > 0.
        anchor_weights: optional non-negative weight per sample and level.

    Returns:
        Per-level losses, in the dtype of ``features``.

    Shape:
        - features: (G, B, D)
        - paths: (B, L)
        - anchor_weights: (B, L)
        - output: (L,)
    """
    num_levels = paths.shape[1]
    log_denominator = _log_denominator(features, temperature)
    mean_positive_logit, num_positives = _mean_positive_logit(
        features, paths, temperature, num_levels
    )
    per_anchor = log_denominator - mean_positive_logit
    has_positive = (num_positives > 0).to(per_anchor.dtype)
    if anchor_weights is None:
        weights = has_positive
    else:
        weights = anchor_weights.to(per_anchor.dtype).T * has_positive
    total_weight = weights.sum(dim=1)
    # With no weighted anchor the sum is exactly 0, so dividing by a tiny
    # number returns 0 that stays connected to the features.
    tiny = torch.finfo(per_anchor.dtype).tiny
    return (weights * per_anchor).sum(dim=1) / total_weight.clamp_min(tiny)


def _log_denominator(features: Tensor, temperature: float) -> Tensor:
    """Return log sum_{a != i} exp(z_i.z_a / t) for every anchor i.

    Shape:
        - features: (G, B, D)
        - output: (G, B)
    """
    logits = torch.matmul(features / temperature, features.transpose(-1, -2))
    # The anchor is excluded by masking its own logit. The product does not
    # need its output for backward, so the in-place fill is safe for autograd.
    logits.diagonal(dim1=-2, dim2=-1).fill_(-math.inf)
    row_max = logits.amax(dim=-1, keepdim=True).detach()
    # A one-sample batch has no other sample, so its row maximum is -inf.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    # In-place subtraction and exp save two (G, B, B) buffers. exp_ keeps its
    # output for backward, and nothing later overwrites it. The row maximum
    # contributes exp(0) = 1, so the sum is >= 1 whenever B >= 2, and the clamp
    # only keeps a one-sample batch finite.
    sum_exp = logits.sub_(row_max).exp_().sum(dim=-1)
    tiny = torch.finfo(sum_exp.dtype).tiny
    return row_max.squeeze(-1) + torch.log(sum_exp.clamp_min(tiny))


def _mean_positive_logit(
    features: Tensor, paths: Tensor, temperature: float, num_levels: int
) -> tuple[Tensor, Tensor]:
    """Return the mean z_i.z_p / t over positives p of i, and |P(i)|, per level.

    Uses per-class sums of the features, so no (B, B) mask is built.

    Shape:
        - features: (G, B, D)
        - paths: (B, L)
        - output: ((L, B), (L, B))
    """
    class_ids, class_sizes, num_classes = prefix_class_ids(paths)
    num_samples, width = features.shape[1], features.shape[2]
    per_level = features.expand(num_levels, num_samples, width)
    # index_put with accumulate=True sums the rows that share an id. On CPU
    # (torch 2.14) it stays single-threaded for small inputs, while scatter_add
    # and index_add start a parallel region that stalls when the cores are busy.
    class_sums = per_level.new_zeros(num_classes, width).index_put(
        (class_ids.reshape(-1),), per_level.reshape(-1, width), accumulate=True
    )
    same_class_dot = (per_level * class_sums[class_ids]).sum(dim=-1)
    self_dot = (features * features).sum(dim=-1)
    num_positives = class_sizes - 1
    positive_dot = same_class_dot - self_dot
    mean_positive_dot = positive_dot / num_positives.clamp_min(1).to(positive_dot.dtype)
    return mean_positive_dot / temperature, num_positives


def prefix_class_ids(paths: Tensor) -> tuple[Tensor, Tensor, int]:
    """Number the classes of every level by label-path prefix.

    Two samples get the same id at level l exactly when their paths agree on
    levels 0..l, so a fine label reused under two parents gives two classes.
    Ids are unique across levels (level l's ids follow level l-1's).

    Returns:
        ``(class_ids, class_sizes, num_classes)``: the id of each sample per
        level, the size of that class within the batch, and the number of ids.

    Shape:
        - paths: (B, L)
        - class_ids, class_sizes: (L, B)
    """
    ids, sizes = [], []
    offset = 0
    prefix = torch.zeros_like(paths[:, 0])
    for level in range(paths.shape[1]):
        values, label_ids = torch.unique(paths[:, level], return_inverse=True)
        # prefix < B and label_ids < len(values) <= B, so the code is unique per
        # (prefix, label) pair and stays below B * B, far from int64 overflow.
        code = prefix * values.numel() + label_ids
        _, prefix, counts = torch.unique(code, return_inverse=True, return_counts=True)
        ids.append(prefix + offset)
        sizes.append(counts[prefix])
        offset += counts.numel()
    return torch.stack(ids), torch.stack(sizes), offset


def normalize_views(features: Tensor) -> Tensor:
    """Flatten views into samples (image-major) and L2-normalise them.

    Shape:
        - features: (N, V, D)
        - output: (N * V, D), row n * V + v is view v of image n
    """
    num_images, num_views, width = features.shape
    return F.normalize(features.reshape(num_images * num_views, width), dim=-1)


def repeat_views(per_image: Tensor, num_views: int) -> Tensor:
    """Repeat per-image rows for every view, matching :func:`normalize_views`.

    Shape:
        - per_image: (N, ...)
        - output: (N * V, ...)
    """
    return per_image.repeat_interleave(num_views, dim=0)


def _repeat_optional(per_image: Tensor | None, num_views: int) -> Tensor | None:
    return None if per_image is None else repeat_views(per_image, num_views)


def gather_batch(
    features: Tensor, paths: Tensor, anchor_weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gather per-image tensors from all ranks (a no-op without a process group)."""
    if distributed_world_size() == 1:
        return features, paths, anchor_weights
    gathered_weights = None if anchor_weights is None else gather_with_grad(anchor_weights)
    return gather_with_grad(features), gather_with_grad(paths), gathered_weights


def to_compute_dtype(tensor: Tensor) -> Tensor:
    """Return float16/bfloat16 tensors as float32 and other tensors unchanged."""
    return tensor.float() if tensor.dtype in _LOW_PRECISION else tensor


@contextlib.contextmanager
def autocast_disabled(device: torch.device) -> Iterator[None]:
    """Turn autocast off on ``device`` so the loss runs in the input dtype."""
    if device.type in ("cpu", "cuda"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


def check_temperature(temperature: float) -> None:
    """Raise ValueError unless ``temperature`` is a finite real number > 0."""
    valid = (
        isinstance(temperature, numbers.Real)
        and not isinstance(temperature, bool)
        and math.isfinite(temperature)
        and temperature > 0
    )
    if not valid:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def check_features(features: Tensor) -> None:
    """Raise ValueError unless ``features`` is a floating (N, V, D) tensor, N, V, D >= 1."""
    if not isinstance(features, Tensor) or not features.dtype.is_floating_point:
        kind = features.dtype if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be a floating-point tensor, got {kind}")
    if features.dim() != 3 or 0 in features.shape:
        raise ValueError(
            "features must have shape (N, V, D) with N images, V views and width D, "
            f"all >= 1, got shape {tuple(features.shape)}; use features.unsqueeze(1) "
            "for a single view"
        )


def check_labels(
    labels: Tensor, num_images: int, device: torch.device, allow_levels: bool
) -> Tensor:
    """Validate integer labels (N,), or (N, L) when ``allow_levels``, and move them to ``device``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be an integer tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must have an integer dtype such as torch.long, got {labels.dtype}")
    expected = "(N,) or (N, L)" if allow_levels else "(N,)"
    valid_dims = (1, 2) if allow_levels else (1,)
    if labels.dim() not in valid_dims or labels.shape[0] != num_images:
        raise ValueError(
            f"labels must have shape {expected} with N = {num_images} (the first dimension "
            f"of features), got shape {tuple(labels.shape)}"
        )
    if labels.dim() == 2 and labels.shape[1] == 0:
        raise ValueError("labels must contain at least one level, got shape (N, 0)")
    return labels.to(device=device, dtype=torch.long)


def check_anchor_weights(
    weights: Tensor | None, num_images: int, num_levels: int, features: Tensor, name: str
) -> Tensor | None:
    """Validate anchor weights (N,) or (N, L) and return them as (N, L) on the features' device."""
    if weights is None:
        return None
    if not isinstance(weights, Tensor) or not weights.dtype.is_floating_point:
        kind = weights.dtype if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"{name} must be a floating-point tensor, got {kind}")
    if weights.dim() == 1 and weights.shape[0] == num_images:
        weights = weights.unsqueeze(1).expand(num_images, num_levels)
    elif weights.shape != (num_images, num_levels):
        allowed = f"({num_images},)" + (f" or ({num_images}, {num_levels})" if num_levels > 1 else "")
        raise ValueError(
            f"{name} must have shape {allowed} (one weight per image"
            f"{' and level' if num_levels > 1 else ''}), got shape {tuple(weights.shape)}"
        )
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got values in "
                         f"[{float(weights.min())}, {float(weights.max())}]")
    return weights.to(device=features.device)
