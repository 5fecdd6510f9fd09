"""Shared fixtures: one local Ray cluster per test session, bound to 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """Start a 2-CPU local Ray cluster on 127.0.0.1 once and shut it down at the end.

    Tests that use it must fit in 2 CPUs (for example 2 Ray Train workers x 1 CPU).
    """
    import ray

    from hmlc_core.train.local_ray import init_local_ray

    if ray.is_initialized():
        yield
        return
    init_local_ray(num_cpus=2, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
