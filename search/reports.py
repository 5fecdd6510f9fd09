"""Plots and models that a finished trial or search logs to MLflow for people to look at.

- :func:`log_embedding_plots`: a 2-D map (PCA or t-SNE, scikit-learn) of a trial's
  validation features, one panel per hierarchy level, coloured by that level's classes.
- :func:`log_optuna_plots`: the Optuna study's optimisation history, parameter
  importances and parallel coordinates, as one interactive HTML page and as PNGs.
- :func:`log_best_encoder`: the best trial's encoder as an MLflow PyTorch model,
  registered in the model registry on request.
- :func:`start_system_metrics`: MLflow's own CPU, memory, disk, network and GPU sampling
  for one run, with a node id per process, so several Ray Train workers logging to one
  run keep separate series (``system/<node_id>/cpu_utilization_percentage``).

Every function takes an :class:`mlflow.MlflowClient` and an explicit run id, like
``search.tracking``. Only :func:`log_best_encoder` needs MLflow's process-global
tracking URI, which it sets for the call and restores.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

EMBEDDING_METHODS: tuple[str, ...] = ("pca", "tsne")
_METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE"}
DEFAULT_MAX_POINTS = 2000
# Classes up to this count get a categorical colour each and a legend entry.
_LEGEND_MAX_CLASSES = 20
OPTUNA_PLOTS: tuple[str, ...] = ("optimization_history", "param_importances", "parallel_coordinate")
DEFAULT_TARGET_NAME = "val/probe_acc"
SYSTEM_METRICS_INTERVAL_S = 10.0


# Embedding plots --------------------------------------------------------------------------


def _as_array(values: Any, name: str, ndim: int) -> np.ndarray:
    """Return a tensor or array-like as a NumPy array, checking its number of dimensions."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    return array


def subsample_indices(num_rows: int, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Return sorted row indices of a random subset of at most ``max_points`` rows.

    Shape:
        output: (min(num_rows, max_points),) int64; all rows in order when
        ``max_points`` is None or not smaller than ``num_rows``.
    """
    if max_points is None or num_rows <= max_points:
        return np.arange(num_rows)
    if max_points < 1:
        raise ValueError(f"max_points {max_points} is invalid; use an integer >= 1 or None")
    generator = np.random.default_rng(seed)
    return np.sort(generator.choice(num_rows, size=max_points, replace=False))


def project_2d(features: Any, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project feature vectors to 2-D with scikit-learn's PCA or t-SNE.

    t-SNE uses a perplexity of ``min(30, (N - 1) / 3)``, so small sets work too
    (project choice; scikit-learn requires perplexity < N).

    Shape:
        features: (N, C) with N >= 3 and C >= 2.
        output: (N, 2) float64.

    Raises:
        ValueError: unknown ``method``, or too few rows or columns.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    matrix = _as_array(features, "features", 2).astype(np.float64)
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"embedding method {method!r} is unknown; use one of {list(EMBEDDING_METHODS)}")
    rows, columns = matrix.shape
    if rows < 3 or columns < 2:
        raise ValueError(f"a 2-D projection needs at least 3 rows and 2 columns, got features of shape {matrix.shape}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(matrix)
    perplexity = min(30.0, (rows - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(matrix)


def _class_colours(num_classes: int) -> np.ndarray:
    """Return one RGBA colour per class: categorical up to 20 classes, else a spectrum."""
    import matplotlib

    if num_classes <= 10:
        return matplotlib.colormaps["tab10"](np.arange(num_classes))
    if num_classes <= _LEGEND_MAX_CLASSES:
        return matplotlib.colormaps["tab20"](np.arange(num_classes))
    return matplotlib.colormaps["nipy_spectral"](np.linspace(0.0, 0.95, num_classes))


def plot_level_embeddings(points: Any, paths: Any, hierarchy: Any, title: str = "") -> Any:
    """Draw one scatter panel per hierarchy level, coloured by that level's classes.

    Levels with at most 20 classes get a legend of class names; finer levels get a
    colour spectrum without a legend.

    Args:
        points: 2-D coordinates, e.g. from :func:`project_2d`.
        paths: label paths, column 0 the coarsest level.
        hierarchy: a ``hmlc_core.data.Hierarchy`` (``level_names`` and ``class_names``).
        title: figure title.

    Returns:
        A matplotlib Figure; the caller closes it.

    Shape:
        points: (N, 2). paths: (N, L) with L = hierarchy.num_levels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coordinates = _as_array(points, "points", 2)
    labels = _as_array(paths, "paths", 2).astype(np.int64)
    num_levels = len(hierarchy.level_names)
    if coordinates.shape[1] != 2 or labels.shape != (coordinates.shape[0], num_levels):
        raise ValueError(
            f"points must be (N, 2) and paths (N, {num_levels}) for a {num_levels}-level "
            f"hierarchy, got {coordinates.shape} and {labels.shape}"
        )
    figure, axes = plt.subplots(1, num_levels, figsize=(5.0 * num_levels, 5.0), squeeze=False)
    for level, axis in enumerate(axes[0]):
        names = hierarchy.class_names[level]
        colours = _class_colours(len(names))
        column = labels[:, level]
        for index, name in enumerate(names):
            chosen = column == index
            if not chosen.any():
                continue
            axis.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=6, alpha=0.7,
                         color=colours[index], label=name, rasterized=True)
        axis.set_title(f"L{level + 1} {hierarchy.level_names[level]} ({len(names)} classes)")
        axis.set_xticks([])
        axis.set_yticks([])
        if len(names) <= _LEGEND_MAX_CLASSES:
            axis.legend(fontsize=7, markerscale=2.0, loc="best", framealpha=0.8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def _coordinates_csv(points: np.ndarray, labels: np.ndarray) -> str:
    """Return the 2-D points and their label paths as CSV text (columns x, y, L1..LL)."""
    header = ",".join(["x", "y", *[f"L{level + 1}" for level in range(labels.shape[1])]])
    buffer = io.StringIO()
    np.savetxt(buffer, np.column_stack([points, labels]), delimiter=",", fmt="%.6g", header=header, comments="")
    return buffer.getvalue()


def log_embedding_plots(
    client: Any,
    run_id: str,
    features: Any,
    paths: Any,
    hierarchy: Any,
    *,
    method: str = "pca",
    max_points: int | None = DEFAULT_MAX_POINTS,
    seed: int = 0,
    artifact_dir: str = "embeddings",
) -> str:
    """Log a per-level 2-D map of a trial's validation features and its coordinates.

    Writes ``<artifact_dir>/val_<method>.png`` (one panel per level) and
    ``<artifact_dir>/val_<method>.csv`` (x, y and the label path of each plotted point).
    At most ``max_points`` rows, drawn with ``seed``, are plotted, because t-SNE's cost
    grows quadratically with N.

    Args:
        client: an ``mlflow.MlflowClient``.
        run_id: the trial's MLflow run.
        features: pooled encoder features of validation images.
        paths: their label paths, column 0 the coarsest level.
        hierarchy: the dataset's ``Hierarchy``.
        method: ``"pca"`` or ``"tsne"``.
        max_points: cap on plotted rows, None for all.
        seed: seed of the subsample and of the projection.
        artifact_dir: artifact folder inside the run.

    Returns:
        The artifact path of the PNG.

    Shape:
        features: (N, C). paths: (N, L).
    """
    matrix = _as_array(features, "features", 2)
    labels = _as_array(paths, "paths", 2)
    if matrix.shape[0] != labels.shape[0]:
        raise ValueError(f"features have {matrix.shape[0]} rows but paths have {labels.shape[0]}; pass one label path per feature row")
    index = subsample_indices(matrix.shape[0], max_points, seed)
    points = project_2d(matrix[index], method=method, seed=seed)
    title = f"Validation features, {_METHOD_TITLES[method]} of {len(index)} images"
    figure = plot_level_embeddings(points, labels[index], hierarchy, title=title)
    png = f"{artifact_dir}/val_{method}.png"
    try:
        client.log_figure(run_id, figure, png)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    client.log_text(run_id, _coordinates_csv(points, labels[index]), f"{artifact_dir}/val_{method}.csv")
    return png


# Optuna plots -----------------------------------------------------------------------------


def _completed_trials(study: Any) -> list[Any]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _optuna_plot_function(name: str, backend: str) -> Any:
    """Return ``optuna.visualization[.matplotlib].plot_<name>``."""
    if backend == "plotly":
        import optuna.visualization as module
    else:
        import optuna.visualization.matplotlib as module
    return getattr(module, f"plot_{name}")


def _plot_skip_reason(name: str, study: Any) -> str | None:
    """Return why plot ``name`` cannot be drawn for ``study``, or None when it can."""
    completed = _completed_trials(study)
    if not completed:
        return "the study has no completed trial"
    if name == "param_importances":
        varied = {key for trial in completed for key in trial.params
                  if len({repr(other.params.get(key)) for other in completed}) > 1}
        if len(completed) < 2 or not varied:
            return "parameter importances need 2 or more completed trials whose parameters differ"
    if name == "parallel_coordinate" and not any(trial.params for trial in completed):
        return "the study has no parameters"
    return None


def optuna_figures(
    study: Any, target_name: str = DEFAULT_TARGET_NAME, backend: str = "plotly"
) -> dict[str, Any]:
    """Draw the study's optimisation history, parameter importances and parallel coordinates.

    A plot that the study cannot support yet (no completed trial, too few trials for
    importances) is left out with a log message, so a small search still gets the rest.

    Args:
        study: an ``optuna.Study`` with one objective.
        target_name: axis label of the objective.
        backend: ``"plotly"`` (returns plotly Figures) or ``"matplotlib"`` (returns
            matplotlib Figures; the caller closes them).

    Returns:
        Figures by name, in the order of :data:`OPTUNA_PLOTS`.
    """
    import optuna

    if backend not in ("plotly", "matplotlib"):
        raise ValueError(f"backend {backend!r} is unknown; use 'plotly' or 'matplotlib'")
    figures: dict[str, Any] = {}
    for name in OPTUNA_PLOTS:
        reason = _plot_skip_reason(name, study)
        if reason is not None:
            logger.info("skipping the Optuna %s plot of study %s: %s", name, study.study_name, reason)
            continue
        with warnings.catch_warnings():
            # Optuna 5.1 marks its matplotlib backend experimental on every call.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            result = _optuna_plot_function(name, backend)(study, target_name=target_name)
        figures[name] = result if backend == "plotly" else _axes_figure(result)
    return figures


def _axes_figure(axes: Any) -> Any:
    """Return the matplotlib Figure behind the Axes (or array of Axes) Optuna returns."""
    first = np.ravel(np.asarray(axes, dtype=object))[0]
    return first.get_figure()


def _plotly_page(figures: dict[str, Any], title: str) -> str:
    """Return one self-contained HTML page holding all figures (plotly.js embedded once)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>",
             f"<h1 style='font-family:sans-serif'>{title}</h1>"]
    for position, (name, figure) in enumerate(figures.items()):
        parts.append(f"<h2 style='font-family:sans-serif'>{name.replace('_', ' ')}</h2>")
        parts.append(figure.to_html(full_html=False, include_plotlyjs=position == 0))
    parts.append("</body></html>")
    return "\n".join(parts)


def log_optuna_plots(
    client: Any,
    parent_run_id: str,
    study: Any,
    *,
    target_name: str = DEFAULT_TARGET_NAME,
    artifact_dir: str = "optuna",
) -> list[str]:
    """Log the study's plots and trial table to the search's parent run.

    Writes ``<artifact_dir>/search_plots.html`` with the interactive plotly figures. The
    page embeds plotly.js (about 5 MB), so it opens offline. Writes one
    ``<artifact_dir>/<plot>.png`` per plot from Optuna's matplotlib backend, because
    plotly needs kaleido for PNGs, which is not a dependency. Writes
    ``<artifact_dir>/trials.csv`` (``study.trials_dataframe()``).

    Args:
        client: an ``mlflow.MlflowClient``.
        parent_run_id: the search's parent run.
        study: the search's ``optuna.Study``.
        target_name: axis label of the objective.
        artifact_dir: artifact folder inside the run.

    Returns:
        The artifact paths written, HTML first.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    interactive = optuna_figures(study, target_name, backend="plotly")
    if interactive:
        html = f"{artifact_dir}/search_plots.html"
        client.log_text(parent_run_id, _plotly_page(interactive, f"Optuna study {study.study_name}"), html)
        written.append(html)
    for name, figure in optuna_figures(study, target_name, backend="matplotlib").items():
        png = f"{artifact_dir}/{name}.png"
        # Optuna draws at matplotlib's default 6.4 x 4.8 inches, too narrow for many axes.
        axes_count = len(study.best_trial.params) + 1 if name == "parallel_coordinate" else 0
        figure.set_size_inches(max(9.0, 1.3 * axes_count), 5.5)
        try:
            figure.tight_layout()
            client.log_figure(parent_run_id, figure, png)
        finally:
            plt.close(figure)
        written.append(png)
    if study.trials:
        table = f"{artifact_dir}/trials.csv"
        client.log_text(parent_run_id, study.trials_dataframe().to_csv(index=False), table)
        written.append(table)
    return written


# Best encoder as an MLflow model ----------------------------------------------------------


class PooledEncoder(nn.Module):
    """The encoder with a tensor output: ``forward(x)`` returns the pooled features h.

    ``hmlc_core`` encoders return an ``EncoderOutput``; MLflow's pyfunc ``predict`` and
    signature inference need a tensor.

    Shape:
        x: (B, C_in, H, W) images or (B, P, 3) points. output: (B, C).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.encoder(x)
        return output.pooled if hasattr(output, "pooled") else output


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-global tracking URI at ``uri`` for the block, then restore it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def log_best_encoder(
    client: Any,
    run_id: str,
    model: Any,
    *,
    input_example: Any = None,
    name: str = "best_encoder",
    registered_model_name: str | None = None,
) -> Any:
    """Log a trained encoder as an MLflow PyTorch model in ``run_id``.

    The logged module is :class:`PooledEncoder` around ``model`` (a
    ``ContrastiveModel``'s ``.encoder``, or the ``ContrastiveModel``, whose encoder is
    taken), moved to the CPU. ``mlflow.pytorch.load_model(uri)(x)`` and
    ``mlflow.pyfunc.load_model(uri).predict(x)`` then return the pooled features h.
    Loading needs ``hmlc_core`` installed; the ``search`` package travels with the model
    as code. With ``input_example`` (a small float32 batch) MLflow also records the
    input and output signature.

    Args:
        client: an ``mlflow.MlflowClient``; its tracking URI receives the model.
        run_id: the run the model belongs to (the search's parent run).
        model: the encoder module, or a model with an ``encoder`` attribute.
        input_example: a float32 batch as a NumPy array or tensor, or None.
        name: the logged model's name.
        registered_model_name: also register the model under this name (a new version
            when the name exists), or None to skip the registry.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri`` loads it).

    Shape:
        input_example: (B, C_in, H, W) or (B, P, 3).
    """
    import copy

    import mlflow.pytorch

    encoder = getattr(model, "encoder", model)
    wrapper = PooledEncoder(copy.deepcopy(encoder).cpu()).eval()
    example = None
    if input_example is not None:
        example = input_example.detach().cpu().numpy() if hasattr(input_example, "detach") else np.asarray(input_example)
        example = example.astype(np.float32)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
    search_package = str(Path(__file__).resolve().parent)
    # MLflow 3.17 files a new model under the process's active experiment (the default one
    # when none is set) instead of the run's. Creating the model here keeps it in the run's.
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, model_type="encoder")
    with _global_tracking_uri(client.tracking_uri):
        return mlflow.pytorch.log_model(
            wrapper,
            name=name,
            run_id=run_id,
            model_id=logged.model_id,
            input_example=example,
            pip_requirements=requirements,
            code_paths=[search_package],
            registered_model_name=registered_model_name,
        )


# System metrics ---------------------------------------------------------------------------


def worker_node_id(world_rank: int, prefix: str = "worker") -> str:
    """Return the system-metrics node id of a Ray Train worker, e.g. ``worker0``."""
    if world_rank < 0:
        raise ValueError(f"world_rank {world_rank} is invalid; use the worker's rank >= 0")
    return f"{prefix}{world_rank}"


def start_system_metrics(
    tracking_uri: str,
    run_id: str,
    node_id: str,
    *,
    sampling_interval: float = SYSTEM_METRICS_INTERVAL_S,
) -> Any:
    """Start MLflow's system metrics sampling for ``run_id`` in a background thread.

    Metrics are logged as ``system/<node_id>/<name>`` (CPU and memory utilisation, disk,
    network, and GPU utilisation and memory when ``nvidia-ml-py`` finds a GPU), one step
    per ``sampling_interval`` seconds. Sampling stops on ``monitor.finish()`` or when
    the run leaves the RUNNING state. The ``node_id`` given here wins over the
    ``MLFLOW_SYSTEM_METRICS_NODE_ID`` environment variable, because every worker of one
    run needs its own.

    Args:
        tracking_uri: MLflow tracking URI (absolute).
        run_id: the run that receives the metrics; it must be RUNNING.
        node_id: a name unique among the processes logging to this run, e.g.
            ``worker_node_id(rank)``.
        sampling_interval: seconds between samples.

    Returns:
        The started ``mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor``;
        call ``finish()`` on it when the work ends.

    Raises:
        RuntimeError: ``psutil``, which MLflow's system metrics need, is not installed.
    """
    if not node_id or "/" in node_id:
        raise ValueError(f"node_id {node_id!r} is invalid; use a non-empty name without '/'")
    if not math.isfinite(sampling_interval) or sampling_interval <= 0:
        raise ValueError(f"sampling_interval {sampling_interval} is invalid; use seconds > 0")
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"MLflow system metrics need the missing module {error.name!r}; install it with "
            f"`pip install {error.name}`"
        ) from error
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=sampling_interval, node_id=node_id, tracking_uri=tracking_uri
    )
    monitor.node_id = node_id
    monitor.start()
    return monitor


__all__: Sequence[str] = (
    "EMBEDDING_METHODS",
    "OPTUNA_PLOTS",
    "PooledEncoder",
    "log_best_encoder",
    "log_embedding_plots",
    "log_optuna_plots",
    "optuna_figures",
    "plot_level_embeddings",
    "project_2d",
    "start_system_metrics",
    "subsample_indices",
    "worker_node_id",
)
