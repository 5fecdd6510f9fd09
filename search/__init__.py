"""Hyperparameter search over the hmlc_core training methods (Ray Tune, Optuna, MLflow)."""
