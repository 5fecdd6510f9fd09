"""Evaluation of frozen features: k-NN accuracy, linear probe and feature extraction."""

from hmlc_core.eval.features import extract_features
from hmlc_core.eval.knn import knn_accuracy, knn_accuracy_per_level, knn_predict
from hmlc_core.eval.probe import ProbeConfig, ProbeResult, Standardizer, fit_linear_probe

__all__ = [
    "ProbeConfig",
    "ProbeResult",
    "Standardizer",
    "extract_features",
    "fit_linear_probe",
    "knn_accuracy",
    "knn_accuracy_per_level",
    "knn_predict",
]
