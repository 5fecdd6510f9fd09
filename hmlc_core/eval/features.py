"""Extraction of frozen features from a model, batch by batch."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

Transform = Callable[[Tensor], Tensor]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    inputs: Tensor,
    transform: Transform | None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    output_device: str | torch.device | None = None,
) -> Tensor:
    """Compute the pooled features of ``inputs`` with ``model`` in eval mode.

    The feature of a batch is ``model.features(x)`` when the model has a ``features``
    method (a submodule of that name does not count), else ``model(x).pooled`` when
    the output has a ``pooled`` attribute (the encoder and the contrastive model), else
    ``model(x)`` itself. Every submodule's
    training flag is restored afterwards, also when the forward pass raises.

    Gradients are off through ``torch.no_grad`` rather than ``torch.inference_mode``,
    because inference tensors cannot be saved for backward, and the linear probe
    trains on these features.

    Args:
        model: the network; it is not moved, so it must already be on ``device``.
        inputs: the whole split (e.g. uint8 images); batches are moved to ``device``.
        transform: maps a raw batch on ``device`` to the model's float input (e.g. the
            evaluation normalisation); None feeds ``inputs.float()``.
        batch_size: samples per forward pass.
        device: where the forward pass runs; None uses the device of the model's first
            parameter, or of ``inputs`` for a model without parameters.
        output_device: where the result is gathered; None keeps it on ``device``.

    Returns:
        float32 features, one row per input, in input order.

    Raises:
        ValueError: batch_size < 1, ``inputs`` is empty, or the model output is not one
            (B, C) tensor per batch.

    Shape:
        inputs: (N, ...); returns (N, C).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: use a positive integer")
    if inputs.shape[0] == 0:
        raise ValueError("inputs is empty: there is nothing to extract features from")
    device = torch.device(device) if device is not None else _model_device(model, inputs)
    output_device = torch.device(output_device) if output_device is not None else device

    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        batches = []
        for start in range(0, inputs.shape[0], batch_size):
            batch = inputs[start : start + batch_size].to(device, non_blocking=True)
            x = transform(batch) if transform is not None else batch.float()
            features = _forward_features(model, x)
            batches.append(features.float().to(output_device))
    finally:
        for module, training in modes.items():
            module.train(training)

    return torch.cat(batches, dim=0)


def _forward_features(model: nn.Module, x: Tensor) -> Tensor:
    """Return the pooled feature of one batch (see extract_features for the order tried).

    Shape:
        x: (B, ...); returns (B, C).
    """
    # Only a bound method counts: torchvision's VGG, for one, has a `features` submodule
    # that returns a spatial map.
    features_method = getattr(model, "features", None)
    if inspect.ismethod(features_method):
        output = features_method(x)
    else:
        output = model(x)
        output = getattr(output, "pooled", output)
    if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != x.shape[0]:
        description = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"the model returned {description} for a batch of {x.shape[0]}: expected a "
            "(B, C) tensor, an output with a .pooled (B, C) tensor, or a .features method"
        )
    return output


def _model_device(model: nn.Module, inputs: Tensor) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else inputs.device
