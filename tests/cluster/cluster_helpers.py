"""Paths and helpers shared by the cluster tests.

They live here rather than in conftest.py because several test folders have a
conftest.py, and ``from conftest import ...`` then finds whichever was imported last.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "cluster"
AWS_YAML = CLUSTER_DIR / "aws.yaml"
REGION = "us-east-1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_cluster_module(name: str) -> ModuleType:
    """Import cluster/<name>.py, which is a script folder and not a package."""
    module_name = f"hmlc_cluster_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, CLUSTER_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
