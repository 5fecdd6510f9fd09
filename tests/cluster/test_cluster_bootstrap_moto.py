"""Ray 2.60's AWS bootstrap and cluster/prepare_aws.py against a moto server on 127.0.0.1.

`ray up` is never run here: moto hands out public IP addresses and Ray would try to
SSH to them. The tests call the bootstrap step that `ray up` runs before launching
(IAM, key pair, subnets, security group) and the resource autodetection.
"""

from __future__ import annotations

import copy
import os
import stat
import types
from typing import Any

import boto3
import pytest
from cluster_helpers import AWS_YAML, REGION, load_cluster_module
from ray.autoscaler._private.aws import config as ray_aws_config
from ray.autoscaler._private.aws import utils as ray_aws_utils
from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
from ray.autoscaler._private.util import prepare_config
from test_cluster_config import FILLED_IN, allow_list, filled_config

pytestmark = pytest.mark.slow

WORLD = ("0.0.0.0/0", "::/0")
USER_CIDR = FILLED_IN["REPLACE_ME_SSH_CIDR"]
BUCKET = FILLED_IN["REPLACE_ME_BUCKET"]


@pytest.fixture
def no_propagation_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the two 15 s IAM propagation sleeps in Ray's bootstrap, which moto does not need."""
    fake_time = types.SimpleNamespace(sleep=lambda seconds: None)
    monkeypatch.setattr(ray_aws_config, "time", fake_time)


def ray_bootstrap(config: dict[str, Any]) -> dict[str, Any]:
    """Run the AWS bootstrap that `ray up` runs before it launches the head node."""
    return ray_aws_config.bootstrap_aws(prepare_config(copy.deepcopy(config)))


def without_instance_profiles(config: dict[str, Any]) -> dict[str, Any]:
    """The config as Ray's defaults would see it: no profiles, so Ray creates its own."""
    config = copy.deepcopy(config)
    for node_type in config["available_node_types"].values():
        node_type["node_config"].pop("IamInstanceProfile")
    return config


def ingress_cidrs(group: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """Return (protocol, from port, to port, CIDR) for every CIDR ingress of a group."""
    found = []
    for rule in group["IpPermissions"]:
        ports = (rule["IpProtocol"], rule.get("FromPort"), rule.get("ToPort"))
        found += [(*ports, r["CidrIp"]) for r in rule.get("IpRanges", [])]
        found += [(*ports, r["CidrIpv6"]) for r in rule.get("Ipv6Ranges", [])]
    return found


def describe_group(group_id: str) -> dict[str, Any]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]


def head_group_id(bootstrapped: dict[str, Any]) -> str:
    head = bootstrapped["available_node_types"][bootstrapped["head_node_type"]]
    (group_id,) = head["node_config"]["SecurityGroupIds"]
    return group_id


def test_ray_boto_clients_reach_moto(aws_env: str) -> None:
    ec2 = ray_aws_utils.resource_cache("ec2", REGION)
    iam = ray_aws_utils.resource_cache("iam", REGION)

    assert ec2.meta.client.meta.endpoint_url == aws_env
    assert iam.meta.client.meta.endpoint_url == aws_env
    assert aws_env.startswith("http://127.0.0.1:")


def test_ray_default_bootstrap_opens_ssh_to_world(
    fresh_aws: str, no_propagation_wait: None
) -> None:
    # Documents Ray 2.60's own behaviour, which prepare_aws.py exists to prevent: the
    # group Ray creates allows SSH from everywhere, in addition to the configured rule.
    bootstrapped = ray_bootstrap(without_instance_profiles(filled_config()))

    group = describe_group(head_group_id(bootstrapped))
    cidrs = ingress_cidrs(group)
    assert ("tcp", 22, 22, "0.0.0.0/0") in cidrs
    assert ("tcp", 22, 22, USER_CIDR) in cidrs

    iam = boto3.client("iam", region_name=REGION)
    attached = iam.list_attached_role_policies(RoleName="ray-autoscaler-v1")
    policy_names = sorted(p["PolicyName"] for p in attached["AttachedPolicies"])
    assert policy_names == ["AmazonEC2FullAccess", "AmazonS3FullAccess"]
    assert bootstrapped["head_node"]["IamInstanceProfile"]["Arn"].endswith(
        ":instance-profile/ray-autoscaler-v1"
    )
    # Workers get no instance profile from Ray, so they could not write to S3.
    worker_config = bootstrapped["available_node_types"]["gpu_single"]["node_config"]
    assert "IamInstanceProfile" not in worker_config


def test_prepare_then_bootstrap_keeps_ssh_private(fresh_aws: str) -> None:
    prepare_aws = load_cluster_module("prepare_aws")
    config = filled_config()

    result = prepare_aws.prepare(config)
    bootstrapped = ray_bootstrap(config)

    # Security group: Ray reuses the prepared group and adds no rule to it.
    assert head_group_id(bootstrapped) == result.security_group_id
    for node_type in bootstrapped["available_node_types"].values():
        assert node_type["node_config"]["SecurityGroupIds"] == [result.security_group_id]
    group = describe_group(result.security_group_id)
    assert group["GroupName"] == "hmlc-search-ray"
    assert ingress_cidrs(group) == [("tcp", 22, 22, USER_CIDR)]
    for rule in group["IpPermissions"]:
        for cidr_range in rule.get("IpRanges", []):
            assert cidr_range["CidrIp"] not in WORLD
    self_rules = [r for r in group["IpPermissions"] if r["IpProtocol"] == "-1"]
    assert [p["GroupId"] for r in self_rules for p in r["UserIdGroupPairs"]] == [
        result.security_group_id
    ]

    # Subnets: every node type uses subnets of the group's VPC.
    ec2 = boto3.client("ec2", region_name=REGION)
    for name, node_type in bootstrapped["available_node_types"].items():
        subnet_ids = node_type["node_config"]["SubnetIds"]
        assert subnet_ids, name
        subnets = ec2.describe_subnets(SubnetIds=subnet_ids)["Subnets"]
        assert {s["VpcId"] for s in subnets} == {result.vpc_id}, name

    # Key pair: registered in EC2 and written under the temporary HOME with mode 0600.
    key_path = bootstrapped["auth"]["ssh_private_key"]
    assert key_path == os.path.join(os.environ["HOME"], ".ssh", f"ray-autoscaler_{REGION}.pem")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    key_names = {kp["KeyName"] for kp in ec2.describe_key_pairs()["KeyPairs"]}
    assert key_names == {f"ray-autoscaler_{REGION}"}
    for node_type in bootstrapped["available_node_types"].values():
        assert node_type["node_config"]["KeyName"] == f"ray-autoscaler_{REGION}"

    # IAM: Ray keeps the configured profiles and creates none of its own.
    iam = boto3.client("iam", region_name=REGION)
    profiles = {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    assert profiles == {"hmlc-ray-head", "hmlc-ray-worker"}
    head_config = bootstrapped["available_node_types"]["head"]["node_config"]
    assert head_config["IamInstanceProfile"] == {"Name": "hmlc-ray-head"}
    assert bootstrapped["head_node"] == {}

    # The AMI from the config is kept (Ray substitutes its own only for a missing one).
    assert head_config["ImageId"] == "ami-09ee1a996ac214ce7"


def test_prepare_grants_bucket_and_pass_role(fresh_aws: str) -> None:
    prepare_aws = load_cluster_module("prepare_aws")

    result = prepare_aws.prepare(filled_config())

    iam = boto3.client("iam", region_name=REGION)
    worker_role = iam.get_role(RoleName="hmlc-ray-worker")["Role"]
    assert worker_role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    assert iam.list_attached_role_policies(RoleName="hmlc-ray-worker")["AttachedPolicies"] == []
    assert iam.list_role_policies(RoleName="hmlc-ray-worker")["PolicyNames"] == [
        "hmlc-results-bucket"
    ]
    worker_policy = iam.get_role_policy(
        RoleName="hmlc-ray-worker", PolicyName="hmlc-results-bucket"
    )
    resources = sorted(s["Resource"] for s in worker_policy["PolicyDocument"]["Statement"])
    assert resources == [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]

    attached = iam.list_attached_role_policies(RoleName="hmlc-ray-head")["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonEC2FullAccess"]
    pass_role = iam.get_role_policy(RoleName="hmlc-ray-head", PolicyName="hmlc-pass-worker-role")
    (statement,) = pass_role["PolicyDocument"]["Statement"]
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == worker_role["Arn"]

    profile = iam.get_instance_profile(InstanceProfileName="hmlc-ray-worker")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["hmlc-ray-worker"]
    assert result.worker_instance_profile_arn == profile["Arn"]


def test_prepare_revokes_world_rule_of_ray_group(
    fresh_aws: str, no_propagation_wait: None
) -> None:
    # A user who ran `ray up` before prepare_aws.py has Ray's world-open group.
    prepare_aws = load_cluster_module("prepare_aws")
    config = filled_config()
    first = ray_bootstrap(without_instance_profiles(config))
    group_id = head_group_id(first)
    assert ("tcp", 22, 22, "0.0.0.0/0") in ingress_cidrs(describe_group(group_id))

    result = prepare_aws.prepare(config)
    ray_bootstrap(config)

    assert result.security_group_id == group_id
    assert result.revoked_world_rules == ("tcp 22-22 from 0.0.0.0/0",)
    assert ingress_cidrs(describe_group(group_id)) == [("tcp", 22, 22, USER_CIDR)]


def test_prepare_is_idempotent(fresh_aws: str) -> None:
    prepare_aws = load_cluster_module("prepare_aws")
    config = filled_config()

    first = prepare_aws.prepare(config)
    second = prepare_aws.prepare(config)

    assert second == first
    group = describe_group(first.security_group_id)
    assert ingress_cidrs(group) == [("tcp", 22, 22, USER_CIDR)]
    assert len(group["IpPermissions"]) == 2


def test_prepare_rejects_world_cidr_early(fresh_aws: str) -> None:
    prepare_aws = load_cluster_module("prepare_aws")
    config = filled_config()
    config["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] = (
        "0.0.0.0/0"
    )

    with pytest.raises(prepare_aws.ClusterConfigError, match="whole internet"):
        prepare_aws.prepare(config)

    ec2 = boto3.client("ec2", region_name=REGION)
    names = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert "hmlc-search-ray" not in names


def test_main_reports_placeholders(aws_env: str, caplog: pytest.LogCaptureFixture) -> None:
    prepare_aws = load_cluster_module("prepare_aws")

    status = prepare_aws.main([str(AWS_YAML)])

    assert status == 2
    assert "REPLACE_ME" in caplog.text


def test_autodetected_resources_match_allow_list(aws_env: str) -> None:
    config = prepare_config(filled_config())
    filled = AWSNodeProvider.fillout_available_node_types_resources(config)
    allowed = allow_list()["instance_types"]

    resources = {name: t["resources"] for name, t in filled["available_node_types"].items()}
    assert resources["head"]["CPU"] == 0
    assert "GPU" not in resources["head"]
    for name in ("gpu_single", "gpu_single_spot", "gpu_multi"):
        instance_type = filled["available_node_types"][name]["node_config"]["InstanceType"]
        assert resources[name]["GPU"] == allowed[instance_type]["gpus"], name
        assert resources[name]["CPU"] == allowed[instance_type]["vcpus"], name
        assert resources[name]["accelerator_type:A10G"] == 1, name
