"""A Tune run across a three-node local Ray cluster with results in S3 served by moto.

The cluster is a head with no CPUs (like the head in cluster/aws.yaml) and two
one-CPU worker nodes, all on 127.0.0.1. Trials report and checkpoint to
s3://<bucket>/runs on the moto server through pyarrow's S3 filesystem, the same code
path as `--storage-path s3://...` on AWS. The first run fails every trial on purpose
after two checkpoints, and Tuner.restore must resume each trial from its last
checkpoint read back from S3.

The second test runs the project's real smoke search (search/tune.py with --address
and an s3:// --storage-path) on the same kind of cluster: one Ray Train worker per
trial on each worker node, and one trial that fails once and resumes from its
checkpoint in S3.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import ray
from cluster_helpers import REGION, free_port
from ray import tune
from ray._private import ray_constants
from ray.cluster_utils import Cluster

pytestmark = pytest.mark.slow

WORKER_NODE_RESOURCES = ("node_a", "node_b")
STEPS = 4
FAIL_AT_STEP = 2


@dataclass(frozen=True)
class S3Results:
    """An S3 bucket on the moto server and the Tune storage path inside it."""

    bucket: str
    prefix: str
    endpoint: str

    @property
    def storage_path(self) -> str:
        """S3 URI for RunConfig.storage_path, with the moto endpoint as URI options.

        allow_delayed_open makes pyarrow upload objects under 10 MB (its part size) with
        one PutObject. Larger ones need a multipart upload, which fails against moto
        5.2.1 because its CompleteMultipartUpload reply uses the root element
        CompleteMultipartUploadResponse, and pyarrow 25 accepts only
        CompleteMultipartUploadResult.
        """
        host = self.endpoint.removeprefix("http://")
        options = f"endpoint_override={host}&scheme=http&allow_delayed_open=true&region={REGION}"
        return f"s3://{self.bucket}/{self.prefix}?{options}"

    def experiment_path(self, name: str) -> str:
        """S3 URI of one experiment, for Tuner.restore."""
        base, options = self.storage_path.split("?", 1)
        return f"{base}/{name}?{options}"

    def keys(self) -> list[str]:
        """All object keys under the prefix, listed through boto3."""
        s3 = boto3.client("s3", region_name=REGION)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture
def s3_results(aws_env: str) -> S3Results:
    bucket = f"hmlc-multinode-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    return S3Results(bucket=bucket, prefix="runs", endpoint=aws_env)


@pytest.fixture
def three_node_cluster(s3_results: S3Results, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Start a head (0 CPUs) and two worker nodes on 127.0.0.1 and connect to them.

    Depends on s3_results so that the AWS_* variables are set before the node
    processes start and inherit them.
    """
    # On Linux, Ray 2.60 replaces 127.0.0.1 with the machine's routable address when a
    # driver connects. With this setting it keeps the loopback address.
    monkeypatch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    # Ray workers import the trainable from this module by name.
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    try:
        for resource in WORKER_NODE_RESOURCES:
            cluster.add_node(num_cpus=1, resources={resource: 1}, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def checkpointing_trainable(config: dict[str, Any]) -> None:
    """Report STEPS steps with a checkpoint each, failing at FAIL_AT_STEP unless restored."""
    checkpoint = tune.get_checkpoint()
    start, restored_from = 0, -1
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, "state.json"), encoding="utf-8") as handle:
                restored_from = json.load(handle)["step"]
        start = restored_from + 1

    for step in range(start, STEPS):
        if checkpoint is None and step == FAIL_AT_STEP:
            raise RuntimeError(f"planned failure at step {step}")
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "state.json"), "w", encoding="utf-8") as handle:
                json.dump({"step": step}, handle)
            metrics = {
                "step": step,
                "restored_from": restored_from,
                "node_id": ray.get_runtime_context().get_node_id(),
                "node_ip": ray.util.get_node_ip_address(),
            }
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def pinned_to_node(trainable: Callable[[dict[str, Any]], None]) -> Any:
    """Give each trial 1 CPU plus the custom resource named by config["node"]."""
    return tune.with_resources(
        trainable,
        lambda config: tune.PlacementGroupFactory([{"CPU": 1, config["node"]: 1}]),
    )


def run_search_on_cluster(
    trainable: Callable[[dict[str, Any]], None],
    param_space: dict[str, Any],
    storage_path: str,
    name: str,
) -> tune.ResultGrid:
    """Run a Tune experiment whose trials are placed by config["node"]."""
    tuner = tune.Tuner(
        pinned_to_node(trainable),
        param_space=param_space,
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0),
    )
    return tuner.fit()


def restore_search_on_cluster(
    trainable: Callable[[dict[str, Any]], None], experiment_path: str
) -> tune.ResultGrid:
    """Resume an experiment from storage, retrying errored trials from their checkpoints."""
    tuner = tune.Tuner.restore(
        experiment_path, trainable=pinned_to_node(trainable), resume_errored=True
    )
    return tuner.fit()


def trial_dirs(keys: list[str], name: str) -> set[str]:
    """Trial folder names under <prefix>/<name>/ that contain a checkpoint."""
    parts = [key.split("/") for key in keys if "/checkpoint_" in key]
    return {part[2] for part in parts if part[1] == name}


def test_search_spans_nodes_and_resumes_from_s3(
    three_node_cluster: Cluster, s3_results: S3Results
) -> None:
    worker_node_ids = {node.node_id for node in three_node_cluster.worker_nodes}
    head_node_id = three_node_cluster.head_node.node_id
    param_space = {"node": tune.grid_search(list(WORKER_NODE_RESOURCES))}

    first = run_search_on_cluster(
        checkpointing_trainable, param_space, s3_results.storage_path, "exp"
    )

    # Both trials failed on purpose after two steps, on different worker nodes.
    assert len(first) == 2
    assert all(result.error is not None for result in first)
    assert all("planned failure" in str(result.error) for result in first)
    first_nodes = {result.metrics["node_id"] for result in first}
    assert first_nodes == worker_node_ids
    assert head_node_id not in first_nodes
    assert {result.metrics["node_ip"] for result in first} == {"127.0.0.1"}
    assert [result.metrics["step"] for result in first] == [FAIL_AT_STEP - 1] * 2

    # Their checkpoints and the experiment state are objects in the S3 bucket.
    keys = s3_results.keys()
    assert any(key.startswith("runs/exp/experiment_state-") for key in keys)
    trials = trial_dirs(keys, "exp")
    assert len(trials) == 2
    for trial in trials:
        for index in range(FAIL_AT_STEP):
            assert f"runs/exp/{trial}/checkpoint_{index:06d}/state.json" in keys
        assert f"runs/exp/{trial}/checkpoint_{FAIL_AT_STEP:06d}/state.json" not in keys

    resumed = restore_search_on_cluster(
        checkpointing_trainable, s3_results.experiment_path("exp")
    )

    # Each trial continued from the last checkpoint it had written to S3.
    assert all(result.error is None for result in resumed)
    assert [result.metrics["restored_from"] for result in resumed] == [FAIL_AT_STEP - 1] * 2
    assert [result.metrics["step"] for result in resumed] == [STEPS - 1] * 2
    assert {result.metrics["node_id"] for result in resumed} == worker_node_ids
    keys = s3_results.keys()
    for trial in trials:
        assert f"runs/exp/{trial}/checkpoint_{STEPS - 1:06d}/state.json" in keys


# The project's smoke search on the same kind of cluster ------------------------------

SEARCH_NAME = "multinode-smoke"
SEARCH_EPOCHS = 2
SEARCH_EXPERIMENT = "multinode"


@pytest.fixture
def search_cluster(
    s3_results: S3Results, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """A head (0 CPUs, dashboard on 127.0.0.1) and two one-CPU worker nodes, not joined.

    The search joins it itself through --address. The dashboard serves Ray's state API,
    which the test reads to find the nodes of the Train workers.
    """

    monkeypatch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    # run_search sets this with os.environ.setdefault; setting it here restores it after.
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Ray Train records each run attempt and its workers' nodes in its state actor.
    monkeypatch.setenv("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(),
        },
    )
    try:
        for resource in WORKER_NODE_RESOURCES:
            cluster.add_node(num_cpus=1, resources={resource: 1}, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def smoke_budget_without_asha_rung(name: str) -> Any:
    """The smoke budget with grace_period = SEARCH_EPOCHS, so ASHA's only rung is the last epoch.

    FinalEpochSafeASHA never stops a trial there, so neither trial can be stopped early
    and the test does not depend on which trial has the better kNN accuracy.
    """
    import dataclasses

    from search.budgets import get_budget

    return dataclasses.replace(get_budget(name), grace_period=SEARCH_EPOCHS)


def train_worker_nodes() -> list[str]:
    """Node ids of every Ray Train worker actor of the job, alive or dead."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=1000, raise_on_missing_output=False)
    return [actor.node_id for actor in actors]


def train_attempts_by_trial() -> dict[str, list[Any]]:
    """Ray Train run attempts of the job, by Train run name (the Tune trial id), oldest first.

    Read from Ray Train V2's state actor, which records every attempt with the node of
    each of its workers. NOTE: the state actor is a Ray DeveloperAPI
    (ray.train.v2._internal); list_actors above is the public cross-check.
    """
    from ray.train.v2._internal.state.state_actor import get_state_actor

    actor = get_state_actor()
    assert actor is not None, "Ray Train's state actor is not running"
    runs = ray.get(actor.get_train_runs.remote())
    attempts = ray.get(actor.get_train_run_attempts.remote())
    by_trial: dict[str, list[Any]] = {}
    for run_id, run in runs.items():
        by_trial.setdefault(run.name, []).extend(attempts.get(run_id, {}).values())
    return {name: sorted(found, key=lambda a: a.start_time_ns) for name, found in by_trial.items()}


def test_smoke_search_spans_nodes_and_resumes_from_s3(
    search_cluster: Cluster,
    s3_results: S3Results,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real search (search/tune.py) on the 3-node cluster with s3:// storage.

    One Train worker of 1 CPU per trial and one CPU per worker node, so two trials at
    a time run on different nodes. --debug-fail-trial makes the first trial fail once
    after its epoch-1 report; Tune retries it and Ray Train resumes it from its
    epoch-1 checkpoint, which only exists in the S3 bucket.
    """
    import search.sweep
    from mlflow import MlflowClient
    from search.tune import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(search.sweep, "get_budget", smoke_budget_without_asha_rung)
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = main([
        "--method", "hmce",
        "--dataset", "fashion-mnist",
        "--budget", "smoke",
        "--num-samples", "2",
        "--epochs", str(SEARCH_EPOCHS),
        "--name", SEARCH_NAME,
        "--experiment-name", SEARCH_EXPERIMENT,
        "--address", search_cluster.address,
        "--storage-path", s3_results.storage_path,
        "--tracking-uri", tracking_uri,
        "--debug-fail-trial", "once-after-first-report",
    ])
    assert code == 0

    # Both trials completed and are on the leaderboard (written to the working folder
    # because the storage path is remote).
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(SEARCH_EXPERIMENT)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'search'")
    assert parent.info.status == "FINISHED"
    trials = client.search_runs([experiment.experiment_id], "tags.run_kind = 'trial'")
    trial_ids = sorted(run.data.tags["ray_trial_id"] for run in trials)
    assert len(trial_ids) == 2
    assert {run.data.tags["status"] for run in trials} == {"completed"}
    board = (tmp_path / f"{SEARCH_NAME}-leaderboard.csv").read_text()
    assert all(trial_id in board for trial_id in trial_ids)

    # The Train workers (two first attempts and the failed trial's retry) ran on both
    # worker nodes and never on the head.
    worker_node_ids = {node.node_id for node in search_cluster.worker_nodes}
    nodes = train_worker_nodes()
    assert len(nodes) == 3
    assert set(nodes) == worker_node_ids
    assert search_cluster.head_node.node_id not in nodes

    # Per trial: the first attempts of the two trials overlapped in time, each with its
    # one worker on another worker node.
    attempts = train_attempts_by_trial()
    assert sorted(attempts) == trial_ids
    first = [attempts[trial_id][0] for trial_id in trial_ids]
    first_nodes = [{worker.node_id for worker in attempt.workers} for attempt in first]
    assert all(len(found) == 1 for found in first_nodes)
    assert first_nodes[0] | first_nodes[1] == worker_node_ids
    assert first[0].start_time_ns < first[1].end_time_ns
    assert first[1].start_time_ns < first[0].end_time_ns

    # Search state, Tune state and both trials' epoch checkpoints are objects in S3.
    keys = s3_results.keys()
    prefix = f"{s3_results.prefix}/{SEARCH_NAME}"
    assert f"{prefix}/sweep.json" in keys
    assert any(key.startswith(f"{prefix}/experiment_state-") for key in keys)
    for trial_id in trial_ids:
        for epoch in range(1, SEARCH_EPOCHS + 1):
            folder = f"{prefix}/train_runs/{trial_id}/checkpoint_epoch_{epoch:04d}/"
            assert any(key.startswith(folder) for key in keys), (folder, keys)

    # What --resume reads: sweep.json back from S3 and restorable Tune state at the
    # search's URI, with the endpoint options after the path.
    from search.cli import join_storage
    from search.sweep import load_sweep_state

    state = load_sweep_state(s3_results.storage_path, SEARCH_NAME)
    assert state.sweep_id == parent.data.tags["sweep_id"]
    assert state.epochs == SEARCH_EPOCHS
    assert tune.Tuner.can_restore(join_storage(s3_results.storage_path, SEARCH_NAME))

    # The trial the hook failed logged each epoch once: its retry continued from the
    # epoch-1 checkpoint read back from S3 instead of training epoch 1 again.
    marker_dir = Path(tempfile.gettempdir()) / f"hmlc-debug-{parent.data.tags['sweep_id']}"
    failed_trial = (marker_dir / "failing-trial").read_text()
    assert failed_trial in trial_ids
    assert (marker_dir / f"failed-once-{failed_trial}").exists()
    assert {trial_id: len(found) for trial_id, found in attempts.items()} == {
        trial_id: 2 if trial_id == failed_trial else 1 for trial_id in trial_ids
    }
    for run in trials:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, SEARCH_EPOCHS + 1)), (run.data.tags["ray_trial_id"], steps)
