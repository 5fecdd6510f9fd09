"""G-HMLC feature identification: hard per-level masks over the embedding dimensions.

G-HMLC (Ott et al., "Feature Identification for Hierarchical Contrastive Learning",
arXiv 2510.00837, 2025) lets a Gaussian Mixture Model decide which embedding
dimensions belong to which hierarchy level. The abstract states only that idea.
Every mechanism in this module is a project choice, not the paper's definition:

1. Each dimension d is described by its Fisher ratios s_d = (F[0, d], ..., F[L-1, d]),
   where F[l, d] is the between-class variance of z_d under the level-l labels
   divided by its total variance (:func:`fisher_ratios`).
2. A ``sklearn.mixture.GaussianMixture`` with K >= L components is fitted on the D
   points s_d.
3. L components are matched one-to-one to levels by the Hungarian method on the
   component means (maximising the total mean Fisher ratio). Every other component
   goes to the level where its mean Fisher ratio is highest.
4. Dimension d enters the mask of the level that owns its most probable component.
   A mask smaller than ``min_mask_size`` is filled with the dimensions that have the
   highest F[l, d] and are not yet in it, so a dimension can end up in two masks.

Levels are 0-based here, with level 0 the coarsest.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture
from torch import Tensor

from hmlc_core.config import ConfigBase, require

COVARIANCE_TYPES = ("diag", "full", "spherical", "tied")

# Substring of the ValueError that scikit-learn raises when a component's
# covariance is not positive definite (checked against scikit-learn 1.9.1).
_ILL_DEFINED_COVARIANCE = "ill-defined empirical covariance"

MixtureFactory = Callable[[int, float], GaussianMixture]
"""Builds an unfitted mixture from (n_components, reg_covar)."""


class MaskFallbackWarning(UserWarning):
    """Warning that ``fit_gmm_masks`` kept the previous masks instead of new ones."""


@dataclasses.dataclass(frozen=True)
class GMMMaskConfig(ConfigBase):
    """Settings of the G-HMLC mixture that assigns embedding dimensions to levels.

    The K >= L requirement is checked by :func:`fit_gmm_masks`, because L is known
    only there.
    """

    n_components: int = 3
    """Number K of mixture components. At least 1 here, and at least L when fitting."""
    covariance_type: str = "diag"
    """Covariance type of the mixture: "diag", "full", "spherical" or "tied"."""
    reg_covar: float = 1e-6
    """Value added to the covariance diagonals. Multiplied by 10 on each retry."""
    max_retries: int = 3
    """Refits with a larger reg_covar after an ill-defined covariance, before falling back."""
    min_mask_size: int | None = None
    """Minimum dimensions per mask. None means min(D, max(4, D // (4 L)))."""
    seed: int = 0
    """Random state of the k-means initialisation of the mixture."""
    max_iter: int = 200
    """Maximum EM iterations per initialisation."""
    n_init: int = 1
    """Number of initialisations. The mixture with the best likelihood is kept."""

    def validate(self) -> None:
        """Raise ConfigError when a field contains an invalid value."""
        _require_int(self.n_components, "n_components", 1)
        require(
            self.covariance_type in COVARIANCE_TYPES,
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}",
        )
        require(
            _is_real(self.reg_covar) and math.isfinite(self.reg_covar) and self.reg_covar > 0,
            f"reg_covar must be a finite number > 0, got {self.reg_covar!r}",
        )
        _require_int(self.max_retries, "max_retries", 0)
        if self.min_mask_size is not None:
            _require_int(self.min_mask_size, "min_mask_size", 1)
        _require_int(self.seed, "seed", 0)
        require(self.seed < 2**32, f"seed must be below 2**32, got {self.seed}")
        _require_int(self.max_iter, "max_iter", 1)
        _require_int(self.n_init, "n_init", 1)

    def resolve_min_mask_size(self, num_levels: int, dim: int) -> int:
        """Return the minimum mask size for L levels over D dimensions.

        Raises:
            ValueError: min_mask_size is set above D.
        """
        if self.min_mask_size is None:
            return min(dim, max(4, dim // (4 * num_levels)))
        if self.min_mask_size > dim:
            raise ValueError(
                f"min_mask_size={self.min_mask_size} exceeds the embedding width D={dim}. "
                f"Set min_mask_size to at most {dim} or to None."
            )
        return self.min_mask_size


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_int(value: object, name: str, minimum: int) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}",
    )


@dataclasses.dataclass(frozen=True)
class GMMMaskResult:
    """Masks and diagnostics of one G-HMLC mixture fit.

    Shape:
        - masks: (L, D) float32 0/1 on the embeddings' device
        - fisher: (L, D) float32 on the embeddings' device
        - component_levels: (K,) int64 on the CPU, level index of each component in
          the canonical component order (means sorted lexicographically), or (0,)
          after a fallback
    """

    masks: Tensor
    fisher: Tensor
    component_levels: Tensor
    fell_back: bool
    """True when the masks are ``previous_masks`` (or all ones) instead of a new fit."""
    reg_covar_used: float
    """reg_covar of the successful fit, or the last one tried before a fallback."""


def fisher_ratios(embeddings: Tensor, labels: Tensor) -> Tensor:
    """Compute the Fisher ratio of every embedding dimension under every level's labels.

    F[l, d] = between-class variance / total variance of z_d, with both variances
    taken over all M samples (classes weighted by their sample counts). The value
    lies in [0, 1]. A constant dimension gets 0. A level with one class in
    ``labels`` gets a row of zeros, because its between-class variance is 0. The
    computation runs in float64 on the embeddings' device, with no loop over
    samples or classes.

    Args:
        embeddings: real-valued sample embeddings (any norm).
        labels: integer class index per sample and level, level 0 coarsest. Any
            integer values work, they need not be contiguous.

    Returns:
        float32 Fisher ratios on the embeddings' device.

    Shape:
        - embeddings: (M, D)
        - labels: (M, L)
        - output: (L, D)

    Raises:
        ValueError: shapes disagree, M < 2, labels are not integers, or an
            embedding value is not finite.
    """
    embeddings, labels = _validated_inputs(embeddings, labels)
    return _fisher_ratios_float64(embeddings, labels).to(torch.float32)


def _validated_inputs(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels)
    if embeddings.dim() != 2 or not embeddings.dtype.is_floating_point:
        raise ValueError(
            f"embeddings must be a float tensor of shape (M, D), got dtype {embeddings.dtype} "
            f"and shape {tuple(embeddings.shape)}"
        )
    if labels.dim() != 2 or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(
            f"labels must be an integer tensor of shape (M, L), got dtype {labels.dtype} and "
            f"shape {tuple(labels.shape)}. Use labels.unsqueeze(1) for a single level."
        )
    num_samples, dim = embeddings.shape
    if labels.shape[0] != num_samples:
        raise ValueError(
            f"embeddings contain {num_samples} samples but labels contain {labels.shape[0]}. "
            "Pass one label path per embedding."
        )
    if num_samples < 2 or dim < 1 or labels.shape[1] < 1:
        raise ValueError(
            f"need at least 2 samples, 1 dimension and 1 level, got M={num_samples}, D={dim}, "
            f"L={labels.shape[1]}. Fill the embedding buffer before fitting masks."
        )
    non_finite = int((~torch.isfinite(embeddings)).sum())
    if non_finite:
        raise ValueError(
            f"embeddings contain {non_finite} non-finite value(s) (NaN or inf), so the Fisher "
            "ratios are undefined. Check the training loss for divergence first."
        )
    return embeddings, labels.to(device=embeddings.device, dtype=torch.int64)


def _fisher_ratios_float64(embeddings: Tensor, labels: Tensor) -> Tensor:
    z = embeddings.to(torch.float64)
    num_samples = z.shape[0]
    centered = z - z.mean(dim=0)
    total_variance = centered.square().mean(dim=0)
    # An exact max == min test, because a variance threshold would misjudge tiny scales.
    constant = z.amax(dim=0) == z.amin(dim=0)
    safe_total = torch.where(constant, torch.ones_like(total_variance), total_variance)

    rows = []
    for level in range(labels.shape[1]):
        _, class_index, class_counts = torch.unique(
            labels[:, level], return_inverse=True, return_counts=True
        )
        if class_counts.numel() == 1:
            # Exact zeros: the class sum of centred values is only 0 up to rounding.
            rows.append(torch.zeros_like(total_variance))
            continue
        class_sums = centered.new_zeros(class_counts.numel(), z.shape[1])
        class_sums.index_add_(0, class_index, centered)
        # sum_c n_c (mean_c - mean)^2 / M, with mean_c - mean = class_sum_c / n_c.
        between = (class_sums.square() / class_counts.unsqueeze(1)).sum(dim=0) / num_samples
        ratio = (between / safe_total).clamp(0.0, 1.0)
        rows.append(torch.where(constant, torch.zeros_like(ratio), ratio))
    return torch.stack(rows)


def fit_gmm_masks(
    embeddings: Tensor,
    labels: Tensor,
    config: GMMMaskConfig,
    previous_masks: Tensor | None = None,
    *,
    mixture_factory: MixtureFactory | None = None,
) -> GMMMaskResult:
    """Fit the G-HMLC mixture on per-dimension Fisher ratios and derive hard level masks.

    The steps, all project choices, are listed in this module's docstring. The result
    depends on the fitted mixture's components as a set, not on their order, because
    the components are sorted by their means before levels are assigned. Given the
    same inputs and ``config.seed``, the result is deterministic.

    Failure handling:

    - When scikit-learn reports an ill-defined covariance, the fit is retried with
      reg_covar multiplied by 10, up to ``config.max_retries`` times.
    - The previous masks (all ones if None) are kept when every retry fails, or when
      every Fisher ratio is 0 (no level has two classes in the buffer, or every
      dimension is constant). A :class:`MaskFallbackWarning` then names the cause,
      and ``fell_back`` is True.
    - K > D (more components than points) is clamped to K = D with a warning.

    A level with a single class in the buffer has a Fisher row of zeros. Its mask is
    then the dimensions of whichever component the Hungarian matching leaves it,
    grown to the minimum size from the lowest-indexed dimensions, so the mask
    carries no information about that level.

    Args:
        embeddings: buffer of recent embeddings, on any device.
        labels: integer label paths, level 0 coarsest.
        config: mixture settings.
        previous_masks: masks to keep on a fallback (0/1 or bool). None means all ones.
        mixture_factory: builds the unfitted mixture from (n_components, reg_covar).
            The default builds a ``GaussianMixture`` from ``config``. Tests use it to
            set the initial component order.

    Returns:
        masks and diagnostics. Masks and Fisher ratios are float32 on the
        embeddings' device.

    Shape:
        - embeddings: (M, D)
        - labels: (M, L)
        - previous_masks: (L, D)

    Raises:
        ValueError: invalid inputs (see :func:`fisher_ratios`), n_components < L,
            D < L, min_mask_size > D, or previous_masks with the wrong shape or
            values other than 0 and 1.
    """
    embeddings, labels = _validated_inputs(embeddings, labels)
    num_levels, dim = labels.shape[1], embeddings.shape[1]
    device = embeddings.device
    fallback_masks = _fallback_masks(previous_masks, num_levels, dim, device)
    n_components = _resolve_n_components(config.n_components, num_levels, dim)
    min_size = config.resolve_min_mask_size(num_levels, dim)

    fisher64 = _fisher_ratios_float64(embeddings, labels)
    fisher = fisher64.to(torch.float32)
    descriptors = fisher64.T.cpu().numpy()  # (D, L): one point per dimension

    if not np.any(descriptors > 0):
        warnings.warn(
            "every Fisher ratio is 0 (no level has two classes in the buffer, or every "
            "dimension is constant), so the mixture has nothing to separate. Keeping the "
            "previous masks.",
            MaskFallbackWarning,
            stacklevel=2,
        )
        return _fallback_result(fallback_masks, fisher, config.reg_covar)

    factory = mixture_factory or _default_factory(config)
    mixture, reg_covar_used, error = _fit_with_retries(
        factory, descriptors, n_components, config.reg_covar, config.max_retries
    )
    if mixture is None:
        warnings.warn(
            f"the Gaussian mixture failed {config.max_retries + 1} time(s) up to "
            f"reg_covar={reg_covar_used:g} ({error}). Keeping the previous masks. Raise "
            "reg_covar or max_retries, or use covariance_type='diag'.",
            MaskFallbackWarning,
            stacklevel=2,
        )
        return _fallback_result(fallback_masks, fisher, reg_covar_used)

    masks, component_levels = _masks_from_mixture(mixture, descriptors, min_size)
    return GMMMaskResult(
        masks=torch.from_numpy(masks).to(device=device, dtype=torch.float32),
        fisher=fisher,
        component_levels=torch.from_numpy(component_levels),
        fell_back=False,
        reg_covar_used=reg_covar_used,
    )


def _masks_from_mixture(
    mixture: GaussianMixture, descriptors: np.ndarray, min_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (L, D) bool masks and the (K,) component levels in canonical order."""
    num_levels = descriptors.shape[1]
    order = _canonical_component_order(mixture)
    component_levels = _assign_components_to_levels(mixture.means_[order])
    probabilities = mixture.predict_proba(descriptors)[:, order]
    dim_levels = component_levels[np.argmax(probabilities, axis=1)]
    masks = dim_levels[None, :] == np.arange(num_levels)[:, None]
    return _fill_small_masks(masks, descriptors.T, min_size), component_levels


def _resolve_n_components(n_components: int, num_levels: int, dim: int) -> int:
    if n_components < num_levels:
        raise ValueError(
            f"n_components={n_components} is smaller than the number of levels L={num_levels}. "
            f"G-HMLC needs one component per level, so set n_components >= {num_levels}."
        )
    if dim < num_levels:
        raise ValueError(
            f"the embedding width D={dim} is smaller than the number of levels L={num_levels}, "
            "but G-HMLC needs at least one dimension per level"
        )
    if n_components > dim:
        warnings.warn(
            f"n_components={n_components} exceeds the {dim} points (embedding dimensions) "
            f"the mixture is fitted on, so n_components={dim} is used",
            UserWarning,
            stacklevel=3,
        )
        return dim
    return n_components


def _fallback_masks(
    previous_masks: Tensor | None, num_levels: int, dim: int, device: torch.device
) -> Tensor:
    if previous_masks is None:
        return torch.ones(num_levels, dim, device=device)
    masks = torch.as_tensor(previous_masks).to(device=device, dtype=torch.float32)
    if masks.shape != (num_levels, dim):
        raise ValueError(
            f"previous_masks must have shape (L, D) = ({num_levels}, {dim}), got "
            f"{tuple(masks.shape)}"
        )
    if not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError("previous_masks must contain only 0 and 1, because G-HMLC masks are hard")
    return masks


def _fallback_result(masks: Tensor, fisher: Tensor, reg_covar: float) -> GMMMaskResult:
    return GMMMaskResult(
        masks=masks,
        fisher=fisher,
        component_levels=torch.empty(0, dtype=torch.int64),
        fell_back=True,
        reg_covar_used=reg_covar,
    )


def _default_factory(config: GMMMaskConfig) -> MixtureFactory:
    def build(n_components: int, reg_covar: float) -> GaussianMixture:
        return GaussianMixture(
            n_components=n_components,
            covariance_type=config.covariance_type,
            reg_covar=reg_covar,
            max_iter=config.max_iter,
            n_init=config.n_init,
            random_state=config.seed,
        )

    return build


def _fit_with_retries(
    factory: MixtureFactory,
    descriptors: np.ndarray,
    n_components: int,
    reg_covar: float,
    max_retries: int,
) -> tuple[GaussianMixture | None, float, ValueError | None]:
    """Fit, multiplying reg_covar by 10 after each ill-defined covariance error.

    Returns the fitted mixture (None when every attempt failed), the reg_covar of
    the last attempt and the last error.
    """
    error: ValueError | None = None
    current = reg_covar
    for attempt in range(max_retries + 1):
        current = reg_covar * 10.0**attempt
        try:
            return factory(n_components, current).fit(descriptors), current, None
        except ValueError as caught:
            if _ILL_DEFINED_COVARIANCE not in str(caught):
                raise
            error = caught
    return None, current, error


def _canonical_component_order(mixture: GaussianMixture) -> np.ndarray:
    """Return the permutation that sorts components by mean, then weight, then covariance.

    Lexicographic sorting of these values makes every later step independent of
    the order in which the mixture stores its components.
    """
    n_components = mixture.means_.shape[0]
    keys = [mixture.means_, mixture.weights_[:, None]]
    if mixture.covariance_type != "tied":
        keys.append(np.reshape(mixture.covariances_, (n_components, -1)))
    columns = np.concatenate(keys, axis=1)
    # np.lexsort uses its last key as the primary one.
    return np.lexsort(columns.T[::-1])


def _assign_components_to_levels(means: np.ndarray) -> np.ndarray:
    """Map each component (rows of ``means``, shape (K, L)) to a level.

    The Hungarian method gives L components one level each, maximising the summed
    mean Fisher ratio. Every other component goes to the level where its mean is
    highest, the coarsest level on ties.
    """
    # NOTE: with nested labels a finer partition never lowers the between-class
    # variance, so F[l + 1, d] >= F[l, d] and this argmax sends every unmatched
    # component to the finest level (the coarsest only on exact ties).
    levels = np.argmax(means, axis=1)
    matched_components, matched_levels = linear_sum_assignment(means, maximize=True)
    levels[matched_components] = matched_levels
    return levels.astype(np.int64)


def _fill_small_masks(masks: np.ndarray, fisher: np.ndarray, min_size: int) -> np.ndarray:
    """Grow each mask below ``min_size`` with its level's highest-F dimensions.

    Ties in F go to the lower dimension index. A dimension added here may already
    belong to another level's mask.
    """
    masks = masks.copy()
    for level in range(masks.shape[0]):
        missing = min_size - int(masks[level].sum())
        if missing <= 0:
            continue
        ranked = np.argsort(-fisher[level], kind="stable")
        candidates = ranked[~masks[level][ranked]]
        masks[level, candidates[:missing]] = True
    return masks
