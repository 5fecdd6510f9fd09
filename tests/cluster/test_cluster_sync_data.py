"""cluster/sync_data.py: copying dataset files from S3 (moto on 127.0.0.1) to a node."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
from cluster_helpers import REGION, load_cluster_module

pytestmark = pytest.mark.slow

FILES = {
    "data/cifar-100-python/meta": b"meta bytes",
    "data/cifar-100-python/train": b"train bytes" * 100,
    "data/fashion-mnist/t10k-labels-idx1-ubyte.gz": b"\x1f\x8b labels",
}


@pytest.fixture
def data_bucket(aws_env: str) -> str:
    bucket = f"hmlc-data-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    for key, body in FILES.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key="other/not-data.txt", Body=b"outside the prefix")
    return bucket


def test_sync_copies_data_prefix(data_bucket: str, tmp_path: Path) -> None:
    sync_data = load_cluster_module("sync_data")
    destination = tmp_path / "data"

    copied = sync_data.sync_datasets(f"s3://{data_bucket}/data", destination)

    assert copied == len(FILES)
    found = sorted(str(p.relative_to(destination)) for p in destination.rglob("*") if p.is_file())
    assert found == sorted(key.removeprefix("data/") for key in FILES)
    for key, body in FILES.items():
        assert (destination / key.removeprefix("data/")).read_bytes() == body


def test_sync_skips_missing_prefix(data_bucket: str, tmp_path: Path) -> None:
    sync_data = load_cluster_module("sync_data")
    destination = tmp_path / "data"

    copied = sync_data.sync_datasets(f"s3://{data_bucket}/absent", destination)

    assert copied == 0
    assert not destination.exists()


def test_sync_main_uses_bucket_from_env(
    data_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_data = load_cluster_module("sync_data")
    monkeypatch.setenv("HMLC_BUCKET", data_bucket)

    status = sync_data.main(["--destination", str(tmp_path / "data")])

    assert status == 0
    assert (tmp_path / "data" / "cifar-100-python" / "meta").read_bytes() == b"meta bytes"


def test_sync_main_requires_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sync_data = load_cluster_module("sync_data")
    monkeypatch.delenv("HMLC_BUCKET", raising=False)

    assert sync_data.main(["--destination", str(tmp_path / "data")]) == 2
