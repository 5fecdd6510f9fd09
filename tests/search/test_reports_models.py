"""The best encoder as an MLflow PyTorch model, and per-worker system metrics."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest
import torch

from hmlc_core.models import EncoderConfig, ModelConfig, build_encoder, build_model
from search import reports, tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str, str]:
    uri = tracking.default_tracking_uri(tmp_path_factory.mktemp("mlflow"))
    client = tracking.make_client(uri)
    experiment_id = tracking.get_or_create_experiment(client, "models", uri)
    return client, experiment_id, uri


def test_best_encoder_round_trip(store: tuple[object, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, experiment_id, uri = store
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/other.db")
    run_id = client.create_run(experiment_id).info.run_id  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=EncoderConfig(name="small_cnn", in_channels=1, width=16)))
    images = torch.randn(3, 1, 28, 28)

    info = reports.log_best_encoder(client, run_id, model, input_example=images[:2], registered_model_name="hmlc-encoder")

    assert mlflow.get_tracking_uri() == f"sqlite:///{workdir}/other.db"
    logged = client.get_logged_model(info.model_id)  # type: ignore[attr-defined]
    assert logged.experiment_id == experiment_id
    assert logged.source_run_id == run_id
    version = client.get_model_version("hmlc-encoder", "1")  # type: ignore[attr-defined]
    assert version.run_id == run_id
    assert list(workdir.iterdir()) == [], "nothing may be written to the working directory"
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model("models:/hmlc-encoder/1")
    model.eval()
    with torch.no_grad():
        expected = model.encoder(images).pooled
        assert torch.allclose(loaded(images), expected, atol=1e-6)
    predicted = mlflow.pyfunc.load_model(info.model_uri).predict(images.numpy())
    assert predicted.shape == (3, 16)
    assert torch.allclose(torch.from_numpy(predicted), expected, atol=1e-6)
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 28, 28)


def test_pooled_encoder_passes_tensors() -> None:
    encoder = build_encoder(EncoderConfig(name="small_cnn", in_channels=1, width=8))
    wrapper = reports.PooledEncoder(encoder).eval()
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(wrapper(images), encoder(images).pooled)
        assert torch.equal(reports.PooledEncoder(torch.nn.Identity())(images), images)


def test_worker_node_id() -> None:
    assert reports.worker_node_id(0) == "worker0"
    assert reports.worker_node_id(3, prefix="trial-a-rank") == "trial-a-rank3"
    with pytest.raises(ValueError, match="world_rank -1"):
        reports.worker_node_id(-1)


def test_system_metrics_rejects_bad_node_id(store: tuple[object, str, str]) -> None:
    _, _, uri = store
    with pytest.raises(ValueError, match="node_id 'a/b'"):
        reports.start_system_metrics(uri, "unused", "a/b")
    with pytest.raises(ValueError, match="sampling_interval 0"):
        reports.start_system_metrics(uri, "unused", "worker0", sampling_interval=0)


def test_system_metrics_per_node(store: tuple[object, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psutil", reason="MLflow system metrics need psutil")
    client, experiment_id, uri = store
    # An environment-wide node id must not merge the workers' series.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_NODE_ID", "shared")
    run_id = client.create_run(experiment_id).info.run_id  # type: ignore[attr-defined]
    monitors = [reports.start_system_metrics(uri, run_id, reports.worker_node_id(rank), sampling_interval=0.2) for rank in range(2)]
    deadline = time.monotonic() + 30.0
    keys: set[str] = set()
    while time.monotonic() < deadline and not {"system/worker0/cpu_utilization_percentage", "system/worker1/cpu_utilization_percentage"} <= keys:
        time.sleep(0.5)
        for monitor in monitors:
            monitor.mlflow_logger.flush()
        keys = set(client.get_run(run_id).data.metrics)  # type: ignore[attr-defined]
    for monitor in monitors:
        monitor.finish()
    for rank in range(2):
        assert f"system/worker{rank}/cpu_utilization_percentage" in keys
        assert f"system/worker{rank}/system_memory_usage_megabytes" in keys
    assert not any(key.startswith("system/shared/") for key in keys)
