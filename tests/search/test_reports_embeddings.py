"""Per-level 2-D embedding plots: projections, the figure, and the MLflow artifacts."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from hmlc_core.data.fashion_mnist import HIERARCHY
from search import reports, tracking

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str]:
    uri = tracking.default_tracking_uri(tmp_path_factory.mktemp("mlflow"))
    client = tracking.make_client(uri)
    experiment_id = tracking.get_or_create_experiment(client, "reports", uri)
    return client, experiment_id


@pytest.fixture()
def client_and_run(store: tuple[object, str]) -> tuple[object, str]:
    client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id  # type: ignore[attr-defined]
    return client, run_id


def _clustered_features(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return features whose fine class shifts the first coordinate, and their paths."""
    generator = torch.Generator().manual_seed(seed)
    fine = torch.arange(rows) % 10
    paths = HIERARCHY.paths_from_fine(fine)
    features = 0.1 * torch.randn(rows, 8, generator=generator)
    features[:, 0] += 3.0 * fine.float()
    return features, paths


def test_subsample_indices_sorted_unique() -> None:
    index = reports.subsample_indices(100, 30, seed=1)
    assert index.shape == (30,)
    assert len(set(index.tolist())) == 30
    assert np.all(np.diff(index) > 0)
    assert index.min() >= 0
    assert index.max() < 100
    assert np.array_equal(index, reports.subsample_indices(100, 30, seed=1))
    assert np.array_equal(reports.subsample_indices(5, 30), np.arange(5))
    assert np.array_equal(reports.subsample_indices(5, None), np.arange(5))


def test_pca_matches_svd_reference() -> None:
    generator = np.random.default_rng(0)
    features = generator.normal(size=(50, 4)) * np.array([5.0, 2.0, 0.5, 0.1])
    points = reports.project_2d(features, "pca")
    centred = features - features.mean(axis=0)
    _, _, right = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ right[:2].T
    assert points.shape == (50, 2)
    # Principal axes are defined up to sign.
    for axis in range(2):
        assert np.allclose(np.abs(points[:, axis]), np.abs(reference[:, axis]), atol=1e-8)


def test_pca_of_points_on_line() -> None:
    steps = np.arange(10, dtype=float)
    features = np.stack([steps, 2.0 * steps, -steps], axis=1)
    points = reports.project_2d(features, "pca")
    assert np.allclose(np.abs(points[:, 0]), np.abs(steps - 4.5) * np.sqrt(6.0))
    assert np.allclose(points[:, 1], 0.0, atol=1e-9)


def test_tsne_keeps_clusters_apart() -> None:
    generator = np.random.default_rng(0)
    first = generator.normal(size=(15, 6))
    second = generator.normal(size=(15, 6)) + 20.0
    points = reports.project_2d(np.concatenate([first, second]), "tsne", seed=0)
    assert points.shape == (30, 2)
    assert np.isfinite(points).all()
    centre_gap = np.linalg.norm(points[:15].mean(axis=0) - points[15:].mean(axis=0))
    spread = max(points[:15].std(axis=0).max(), points[15:].std(axis=0).max())
    assert centre_gap > 3.0 * spread


def test_project_2d_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="umap"):
        reports.project_2d(np.zeros((10, 3)), "umap")
    with pytest.raises(ValueError, match="at least 3 rows"):
        reports.project_2d(np.zeros((2, 3)), "pca")
    with pytest.raises(ValueError, match="2 dimensions"):
        reports.project_2d(np.zeros(10), "pca")


def test_figure_has_panel_per_level() -> None:
    features, paths = _clustered_features(60)
    points = reports.project_2d(features, "pca")
    figure = reports.plot_level_embeddings(points, paths, HIERARCHY, title="t")
    axes = figure.get_axes()
    assert len(axes) == 3
    assert axes[0].get_title() == "L1 category (2 classes)"
    assert axes[2].get_title() == "L3 class (10 classes)"
    legend_names = [text.get_text() for text in axes[1].get_legend().get_texts()]
    assert legend_names == list(HIERARCHY.class_names[1])
    plotted = sum(len(collection.get_offsets()) for collection in axes[2].collections)
    assert plotted == 60
    matplotlib.pyplot.close(figure)


def test_figure_rejects_wrong_path_width() -> None:
    with pytest.raises(ValueError, match="3-level hierarchy"):
        reports.plot_level_embeddings(np.zeros((4, 2)), np.zeros((4, 2), dtype=int), HIERARCHY)


def test_log_embedding_plots_artifacts(client_and_run: tuple[object, str], tmp_path: Path) -> None:
    client, run_id = client_and_run
    features, paths = _clustered_features(120)
    png = reports.log_embedding_plots(client, run_id, features, paths, HIERARCHY, max_points=50, seed=3)
    assert png == "embeddings/val_pca.png"
    listed = {item.path for item in client.list_artifacts(run_id, "embeddings")}  # type: ignore[attr-defined]
    assert listed == {"embeddings/val_pca.png", "embeddings/val_pca.csv"}
    local = Path(client.download_artifacts(run_id, "embeddings", str(tmp_path)))  # type: ignore[attr-defined]
    image = matplotlib.image.imread(local / "val_pca.png")
    assert image.shape[1] > 2 * image.shape[0]
    table = np.loadtxt(local / "val_pca.csv", delimiter=",", skiprows=1)
    assert table.shape == (50, 5)
    index = reports.subsample_indices(120, 50, seed=3)
    assert np.array_equal(table[:, 2:].astype(int), paths[index].numpy())
    # The first principal axis follows the fine class, which shifts coordinate 0.
    correlation = np.corrcoef(table[:, 0], paths[index, 2].numpy())[0, 1]
    assert abs(correlation) > 0.99


def test_log_embedding_plots_row_mismatch(client_and_run: tuple[object, str]) -> None:
    client, run_id = client_and_run
    features, paths = _clustered_features(20)
    with pytest.raises(ValueError, match="20 rows but paths have 19"):
        reports.log_embedding_plots(client, run_id, features, paths[:19], HIERARCHY)
