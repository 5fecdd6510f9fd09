"""Fixtures for the cluster tests: the repository's cluster/ files and a local moto server.

Every AWS call in these tests goes to a moto server on 127.0.0.1. The access keys
set here are moto's dummy values, not credentials.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_helpers import REGION, free_port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start one moto server on 127.0.0.1 for the session and yield its URL."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as session_patch:
        # Ray's default IAM role attaches AWS managed policies, which moto loads only
        # when this is set before the IAM backend is created.
        session_patch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def aws_env(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """Point boto3 (and Ray's cached boto3 resources) at the moto server.

    HOME moves to a temporary folder because Ray's bootstrap writes its SSH key to
    ~/.ssh. Returns the endpoint URL.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws_config_absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws_credentials_absent"))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    _clear_ray_boto_caches()
    yield moto_endpoint
    _clear_ray_boto_caches()


def _clear_ray_boto_caches() -> None:
    """Drop Ray's lru-cached boto3 objects, which keep the endpoint they were built with."""
    from ray.autoscaler._private.aws import config as ray_aws_config
    from ray.autoscaler._private.aws import utils as ray_aws_utils

    ray_aws_utils.resource_cache.cache_clear()
    ray_aws_utils.client_cache.cache_clear()
    ray_aws_config._get_subnets_or_die.cache_clear()


@pytest.fixture
def fresh_aws(aws_env: str) -> str:
    """aws_env with all moto state (groups, roles, key pairs, buckets) deleted first.

    Each reset makes moto rebuild its EC2 and IAM backends, which takes seconds, so
    tests that only read use aws_env alone.
    """
    request = urllib.request.Request(f"{aws_env}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    return aws_env
