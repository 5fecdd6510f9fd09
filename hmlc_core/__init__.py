"""hmlc_core: hierarchical contrastive learning losses, models, data, training and evaluation."""

__version__ = "0.1.0"
