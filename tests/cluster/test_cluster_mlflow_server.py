"""cluster/start_mlflow.sh: two listen addresses, S3 artifacts through the server, restart.

On the head node the script binds the private address and 127.0.0.1. Here both
addresses are 127.0.0.1 with two ports, and the artifact bucket is on moto.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from cluster_helpers import CLUSTER_DIR, REGION, free_port
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class MlflowServer:
    """Ports, state folder and artifact bucket of a server started by the script."""

    port: int
    local_port: int
    state_dir: Path
    bucket: str
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return int((self.state_dir / "server.pid").read_text(encoding="utf-8"))


def wait_healthy(port: int, state_dir: Path) -> None:
    """Poll /health on 127.0.0.1:port until it returns OK."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                if reply.read() == b"OK":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    log = (state_dir / "server.log").read_text(encoding="utf-8", errors="replace")
    raise AssertionError(
        f"MLflow did not answer on port {port} within {STARTUP_TIMEOUT_S} s:\n{log}"
    )


def run_script(env: dict[str, str]) -> str:
    completed = subprocess.run(
        ["bash", str(CLUSTER_DIR / "start_mlflow.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout


def stop_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def mlflow_server(aws_env: str, tmp_path: Path) -> Iterator[MlflowServer]:
    bucket = f"hmlc-mlflow-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
    state_dir = tmp_path / "mlflow"
    port, local_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        HMLC_MLFLOW_HOST="127.0.0.1",
        HMLC_MLFLOW_PORT=str(port),
        HMLC_MLFLOW_LOCAL_PORT=str(local_port),
        HMLC_MLFLOW_DIR=str(state_dir),
        HMLC_BUCKET=bucket,
        HMLC_MLFLOW_WORKERS="1",
    )
    server = MlflowServer(port, local_port, state_dir, bucket, env)
    output = run_script(env)
    assert f"http://127.0.0.1:{port} and http://127.0.0.1:{local_port}" in output
    try:
        yield server
    finally:
        stop_group(server.pid)


def test_mlflow_server_addresses_artifacts_restart(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    wait_healthy(mlflow_server.port, mlflow_server.state_dir)
    wait_healthy(mlflow_server.local_port, mlflow_server.state_dir)

    private = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_server.port}")
    experiment_id = private.create_experiment("cluster-smoke")
    run = private.create_run(experiment_id)
    private.log_metric(run.info.run_id, "val/knn_acc", 0.5)
    artifact = tmp_path / "note.txt"
    artifact.write_text("stored through the tracking server", encoding="utf-8")
    private.log_artifact(run.info.run_id, str(artifact))
    private.set_terminated(run.info.run_id)

    # The same run is visible through the 127.0.0.1 address used by port forwarding.
    local = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_server.local_port}")
    assert local.get_run(run.info.run_id).data.metrics == {"val/knn_acc": 0.5}

    # The artifact went through the server into the bucket under mlflow-artifacts/.
    s3 = boto3.client("s3", region_name=REGION)
    listed = s3.list_objects_v2(Bucket=mlflow_server.bucket, Prefix="mlflow-artifacts/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert len(keys) == 1
    assert keys[0].endswith(f"{run.info.run_id}/artifacts/note.txt")
    body = s3.get_object(Bucket=mlflow_server.bucket, Key=keys[0])["Body"].read()
    assert body == b"stored through the tracking server"
    assert (mlflow_server.state_dir / "mlflow.db").is_file()

    # `ray up` on a running cluster runs head_start_ray_commands, and so the script,
    # again: the old server must stop and the runs must survive in SQLite.
    old_pid = mlflow_server.pid
    run_script(mlflow_server.env)

    assert mlflow_server.pid != old_pid
    assert not group_alive(old_pid)
    wait_healthy(mlflow_server.port, mlflow_server.state_dir)
    wait_healthy(mlflow_server.local_port, mlflow_server.state_dir)
    assert local.get_run(run.info.run_id).data.metrics == {"val/knn_acc": 0.5}


def test_mlflow_script_requires_bucket(aws_env: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("HMLC_BUCKET", None)
    env.pop("HMLC_MLFLOW_ARTIFACTS", None)
    env.update(HMLC_MLFLOW_HOST="127.0.0.1", HMLC_MLFLOW_DIR=str(tmp_path / "mlflow"))

    completed = subprocess.run(
        ["bash", str(CLUSTER_DIR / "start_mlflow.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 1
    assert "set HMLC_BUCKET" in completed.stderr
    assert not (tmp_path / "mlflow" / "server.pid").exists()
