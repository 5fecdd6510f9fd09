"""Offline checks of cluster/aws.yaml: Ray's schema, the allow-list, security and pins."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from cluster_helpers import AWS_YAML, CLUSTER_DIR, REPO_ROOT, load_cluster_module
from packaging.requirements import Requirement
from packaging.version import Version
from ray.autoscaler._private.util import prepare_config, validate_config

# Values that replace the placeholders in the test copies, as a user would fill them in.
FILLED_IN = {
    "REPLACE_ME_SSH_CIDR": "198.51.100.7/32",
    "REPLACE_ME_GITHUB_ORG": "example-org",
    "REPLACE_ME_COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
    "REPLACE_ME_BUCKET": "hmlc-results-example",
}
PINNED_PACKAGES = ("torch", "torchvision", "ray", "mlflow", "optuna")
SECRET_PATTERNS = (
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"aws_secret_access_key", re.IGNORECASE),
    re.compile(r"aws_session_token", re.IGNORECASE),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


def raw_config() -> dict[str, Any]:
    with open(AWS_YAML, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def filled_config() -> dict[str, Any]:
    """aws.yaml with every placeholder replaced, as a user would before `ray up`."""
    text = AWS_YAML.read_text(encoding="utf-8")
    for placeholder, value in FILLED_IN.items():
        text = text.replace(placeholder, value)
    return yaml.safe_load(text)


def allow_list() -> dict[str, Any]:
    with open(CLUSTER_DIR / "allowed_instances.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def pip_pins(config: dict[str, Any]) -> dict[str, Requirement]:
    """Return the quoted `name==version` requirements of the setup commands by name."""
    pins = {}
    for command in config["setup_commands"]:
        if "pip install" not in command:
            continue
        for quoted in re.findall(r'"([^"]+)"', command):
            requirement = Requirement(quoted)
            pins[requirement.name] = requirement
    return pins


def project_dependencies() -> dict[str, Requirement]:
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(r for r in extra if not r.startswith("hmlc-search"))
    return {Requirement(r).name: Requirement(r) for r in requirements}


def test_aws_yaml_passes_ray_schema() -> None:
    prepared = prepare_config(raw_config())
    validate_config(prepared)

    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == {
        "head",
        "gpu_single",
        "gpu_single_spot",
        "gpu_multi",
    }
    # prepare_config merges setup_commands into the per-role lists.
    assert prepared["head_setup_commands"] == raw_config()["setup_commands"]


def test_misspelt_top_level_key_is_rejected() -> None:
    config = raw_config()
    config["max_worker"] = config.pop("max_workers")

    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(config))


def test_misspelt_node_type_key_is_rejected() -> None:
    config = raw_config()
    config["available_node_types"]["gpu_single"]["min_worker"] = 0

    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(config))


def test_node_configs_use_allowed_instances_and_images() -> None:
    allowed = allow_list()
    config = raw_config()

    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        assert node_config["InstanceType"] in allowed["instance_types"], name
        assert node_config["ImageId"] in allowed["images"], name
        image = allowed["images"][node_config["ImageId"]]
        assert image["region"] == config["provider"]["region"], name


def test_allow_list_gates_unknown_instance_type() -> None:
    allowed = allow_list()

    assert "p5.48xlarge" not in allowed["instance_types"]
    assert "ami-12345678" not in allowed["images"]


def test_head_is_cpu_only_and_schedules_no_trials() -> None:
    allowed = allow_list()
    head = raw_config()["available_node_types"]["head"]

    assert head["resources"] == {"CPU": 0}
    assert allowed["instance_types"][head["node_config"]["InstanceType"]]["gpus"] == 0


def test_gpu_node_types_have_expected_gpu_counts() -> None:
    allowed = allow_list()["instance_types"]
    node_types = raw_config()["available_node_types"]

    assert allowed[node_types["gpu_single"]["node_config"]["InstanceType"]]["gpus"] == 1
    assert allowed[node_types["gpu_multi"]["node_config"]["InstanceType"]]["gpus"] >= 2


def test_spot_type_is_opt_in() -> None:
    node_types = raw_config()["available_node_types"]
    spot = node_types["gpu_single_spot"]

    assert spot["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert spot["max_workers"] == 0
    assert "InstanceMarketOptions" not in node_types["gpu_single"]["node_config"]


def test_no_node_starts_idle_gpus() -> None:
    for name, node_type in raw_config()["available_node_types"].items():
        assert node_type.get("min_workers", 0) == 0, name


def test_instance_profiles_and_imdsv2_on_every_node() -> None:
    config = raw_config()
    head_name, worker_name = load_cluster_module("prepare_aws").instance_profile_names(config)

    assert head_name == "hmlc-ray-head"
    assert worker_name == "hmlc-ray-worker"
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["MetadataOptions"] == {"HttpTokens": "required"}, name


def test_security_group_opens_only_ssh_to_user_cidr() -> None:
    permissions = raw_config()["provider"]["security_group"]["IpPermissions"]

    assert len(permissions) == 1
    rule = permissions[0]
    assert (rule["FromPort"], rule["ToPort"], rule["IpProtocol"]) == (22, 22, "tcp")
    assert [r["CidrIp"] for r in rule["IpRanges"]] == ["REPLACE_ME_SSH_CIDR"]
    assert "Ipv6Ranges" not in rule


def test_no_rule_opens_ssh_or_dashboard_to_world() -> None:
    for rule in raw_config()["provider"]["security_group"]["IpPermissions"]:
        cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])]
        cidrs += [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
        for port in (22, 8265, 5000, 6379):
            # A rule without ports (protocol -1) covers every port.
            if rule.get("FromPort", 0) <= port <= rule.get("ToPort", 65535):
                assert "0.0.0.0/0" not in cidrs
                assert "::/0" not in cidrs


def test_dashboard_and_mlflow_bind_privately() -> None:
    config = raw_config()
    head_start = " ".join(config["head_start_ray_commands"])

    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    assert "bash ~/hmlc-search/cluster/start_mlflow.sh" in config["head_start_ray_commands"]
    script = (CLUSTER_DIR / "start_mlflow.sh").read_text(encoding="utf-8")
    assert "0.0.0.0" not in script
    assert "hostname -I" in script


def test_placeholders_listed_until_filled() -> None:
    prepare_aws = load_cluster_module("prepare_aws")

    placeholders = prepare_aws.find_placeholders(raw_config())

    assert placeholders == [
        "provider.security_group.IpPermissions[0].IpRanges[0].CidrIp",
        "setup_commands[0]",
    ]
    assert prepare_aws.find_placeholders(filled_config()) == []


def test_check_ready_rejects_placeholders() -> None:
    prepare_aws = load_cluster_module("prepare_aws")

    with pytest.raises(prepare_aws.ClusterConfigError, match="REPLACE_ME"):
        prepare_aws.check_ready(raw_config())
    prepare_aws.check_ready(filled_config())


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0", "10.0.0.0/33", "my-laptop"])
def test_check_ready_rejects_bad_cidr(cidr: str) -> None:
    prepare_aws = load_cluster_module("prepare_aws")
    config = filled_config()
    ranges = config["provider"]["security_group"]["IpPermissions"][0]
    if ":" in cidr:
        ranges["Ipv6Ranges"] = [{"CidrIpv6": cidr}]
    else:
        ranges["IpRanges"] = [{"CidrIp": cidr}]

    with pytest.raises(prepare_aws.ClusterConfigError, match=re.escape(cidr)):
        prepare_aws.check_ready(config)


def test_cluster_settings_parsed() -> None:
    settings = load_cluster_module("prepare_aws").cluster_settings(filled_config())

    assert settings == {
        "HMLC_REPO": "https://github.com/example-org/hmlc-search.git",
        "HMLC_COMMIT": FILLED_IN["REPLACE_ME_COMMIT_SHA"],
        "HMLC_BUCKET": FILLED_IN["REPLACE_ME_BUCKET"],
    }


def test_setup_installs_project_at_pinned_commit() -> None:
    commands = raw_config()["setup_commands"]
    joined = "\n".join(commands)

    assert 'git -C ~/hmlc-search checkout --quiet --detach "$HMLC_COMMIT"' in joined
    assert "^[0-9a-f]{40}$" in joined
    installs = [c for c in commands if "pip install" in c and "torch==" in c]
    assert len(installs) == 1
    assert installs[0].rstrip().endswith("-e ~/hmlc-search")
    checkout = next(c for c in commands if "checkout" in c)
    assert commands.index(installs[0]) > commands.index(checkout)


def test_setup_pins_satisfy_pyproject() -> None:
    pins = pip_pins(raw_config())
    dependencies = project_dependencies()

    for name in PINNED_PACKAGES:
        assert name in pins, f"setup_commands does not pin {name}"
    for name, pin in pins.items():
        (specifier,) = list(pin.specifier)
        assert specifier.operator == "==", f"{name} is not pinned exactly: {pin}"
        if name in dependencies:
            version = Version(specifier.version)
            assert dependencies[name].specifier.contains(version, prereleases=False), (
                f"{pin} is outside pyproject.toml's {dependencies[name]}"
            )


def test_setup_ray_extras_match_pyproject() -> None:
    pins = pip_pins(raw_config())
    dependencies = project_dependencies()

    assert pins["ray"].extras == dependencies["ray"].extras


def test_ray_pin_matches_local_ray() -> None:
    # `ray up` and `ray job submit` must run the same Ray version as the cluster.
    (specifier,) = list(pip_pins(raw_config())["ray"].specifier)

    assert Version(specifier.version) == Version(ray.__version__)


def test_cluster_files_hold_no_credentials() -> None:
    files = [
        path
        for path in CLUSTER_DIR.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert AWS_YAML in files

    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"{path.name} matches {pattern.pattern}"

