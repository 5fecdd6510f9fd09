"""A Tune run across a three-node local Ray cluster with results in S3 served by moto.

The cluster is a head with no CPUs (like the head in cluster/aws.yaml) and two
one-CPU worker nodes, all on 127.0.0.1. Trials report and checkpoint to
s3://<bucket>/runs on the moto server through pyarrow's S3 filesystem, the same code
path as `--storage-path s3://...` on AWS. The first run fails every trial on purpose
after two checkpoints, and Tuner.restore must resume each trial from its last
checkpoint read back from S3.

`run_search_on_cluster` takes any trainable, so the smoke search of the project can
replace the trivial one here.
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
from conftest import REGION
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
