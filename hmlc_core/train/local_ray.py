"""Start a single-machine Ray cluster whose every address is 127.0.0.1."""

from __future__ import annotations

import os
from typing import Any

# Ray 2.60 replaces a loopback node address with the machine's routable address on Linux
# unless this variable is "0" (see ray._private.services.get_node_ip_address).
_LOOPBACK_ENV_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def pin_ray_to_loopback() -> None:
    """Make Ray, in this process and the processes it starts, keep 127.0.0.1 as the node address.

    Call before ``ray.init`` of a local cluster; never for a driver that joins a multi-node
    cluster, whose nodes must reach each other on routable addresses.
    """
    os.environ[_LOOPBACK_ENV_VAR] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def init_local_ray(num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start a local Ray cluster bound to 127.0.0.1, with the dashboard on 127.0.0.1.

    The dashboard is on because Ray Train needs it to clean up trials that Tune stops.
    Keyword arguments go to ``ray.init``.
    """
    import ray

    pin_ray_to_loopback()
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        **kwargs,
    )
