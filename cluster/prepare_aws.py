"""Create the AWS resources that cluster/aws.yaml expects, before `ray up`.

Usage: python cluster/prepare_aws.py cluster/aws.yaml

The script is idempotent and creates or updates:

* the security group named in provider.security_group, in the VPC that Ray's
  subnet selection picks. It allows all traffic between cluster nodes and the
  ingress rules listed in the config (SSH from the CIDR you set), and it revokes any
  ingress rule open to 0.0.0.0/0 or ::/0. Ray 2.60 adds SSH from 0.0.0.0/0 when it
  creates the group itself, but it leaves a group that already has ingress rules
  as it is, so this script has to run first.
* the worker instance profile: read and write access to the results bucket only.
* the head instance profile: the AWS managed policy AmazonEC2FullAccess (the
  autoscaler launches and terminates instances), the results bucket, and
  iam:PassRole for the worker role so that the head can launch workers with it.

The boto3 clients honour AWS_ENDPOINT_URL (boto3 >= 1.28), which the tests use to
point them at a local moto server.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml

logger = logging.getLogger("hmlc.cluster.prepare_aws")

PLACEHOLDER_PREFIX = "REPLACE_ME"
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
EC2_MANAGED_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonEC2FullAccess"
BUCKET_POLICY_NAME = "hmlc-results-bucket"
PASS_ROLE_POLICY_NAME = "hmlc-pass-worker-role"
EC2_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
_SETTING_PATTERN = re.compile(r"\b(HMLC_[A-Z_]+)=(\S+)")


class ClusterConfigError(ValueError):
    """Raised when cluster/aws.yaml is not ready for `ray up`."""


@dataclass(frozen=True)
class PrepareResult:
    """AWS resources that `prepare` created or found."""

    security_group_id: str
    vpc_id: str
    revoked_world_rules: tuple[str, ...]
    head_instance_profile_arn: str
    worker_instance_profile_arn: str


def load_cluster_config(path: str | Path) -> dict[str, Any]:
    """Load a cluster-launcher YAML file as a dict."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise ClusterConfigError(f"{path} does not contain a YAML mapping")
    return config


def find_placeholders(value: Any, path: str = "") -> list[str]:
    """Return the dotted paths of all strings that still contain REPLACE_ME."""
    if isinstance(value, dict):
        found: list[str] = []
        for key, item in value.items():
            found.extend(find_placeholders(item, f"{path}.{key}" if path else str(key)))
        return found
    if isinstance(value, list):
        found = []
        for index, item in enumerate(value):
            found.extend(find_placeholders(item, f"{path}[{index}]"))
        return found
    if isinstance(value, str) and PLACEHOLDER_PREFIX in value:
        return [path]
    return []


def cluster_settings(config: dict[str, Any]) -> dict[str, str]:
    """Return the HMLC_* settings written by the first setup command.

    Example: {"HMLC_REPO": "https://...", "HMLC_COMMIT": "...", "HMLC_BUCKET": "..."}.
    """
    commands = config.get("setup_commands") or []
    if not commands:
        raise ClusterConfigError(
            "setup_commands is empty, but its first command must set the HMLC_* settings"
        )
    return dict(_SETTING_PATTERN.findall(commands[0]))


def instance_profile_names(config: dict[str, Any]) -> tuple[str, str]:
    """Return (head profile name, worker profile name) from the node configs.

    Raises:
        ClusterConfigError: if a node type has no IamInstanceProfile.Name or the
            worker types do not share one profile.
    """
    head_type = config["head_node_type"]
    head_name = ""
    worker_names = set()
    for type_name, node_type in config["available_node_types"].items():
        name = node_type["node_config"].get("IamInstanceProfile", {}).get("Name")
        if not name:
            raise ClusterConfigError(
                f"node type {type_name!r} has no node_config.IamInstanceProfile.Name. "
                "Set it to the profile that this script creates"
            )
        if type_name == head_type:
            head_name = name
        else:
            worker_names.add(name)
    if len(worker_names) != 1:
        raise ClusterConfigError(
            f"worker node types use the instance profiles {sorted(worker_names)}. "
            "Give all of them the same IamInstanceProfile.Name"
        )
    return head_name, worker_names.pop()


def check_ingress_rules(ip_permissions: list[dict[str, Any]]) -> None:
    """Reject placeholder, malformed and world-open CIDRs in the configured rules.

    Raises:
        ClusterConfigError: naming the offending CIDR.
    """
    for rule in ip_permissions:
        ranges = [r["CidrIp"] for r in rule.get("IpRanges", [])]
        ranges += [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
        for cidr in ranges:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ClusterConfigError(
                    f"invalid CIDR {cidr!r} in provider.security_group.IpPermissions. "
                    "Set it to the address range that may reach SSH, e.g. 203.0.113.7/32"
                ) from None
            if network.prefixlen == 0:
                raise ClusterConfigError(
                    f"CIDR {cidr!r} opens port {rule.get('FromPort')} to the whole "
                    "internet. Use the address range of your office or VPN instead"
                )


def check_ready(config: dict[str, Any]) -> None:
    """Raise ClusterConfigError unless every placeholder is replaced and rules are safe."""
    placeholders = find_placeholders(config)
    if placeholders:
        raise ClusterConfigError(
            "replace the REPLACE_ME values in the cluster config first: "
            + ", ".join(placeholders)
        )
    check_ingress_rules(config["provider"].get("security_group", {}).get("IpPermissions", []))


def select_vpc_id(config: dict[str, Any]) -> str:
    """Return the VPC that `ray up` will launch into, using Ray's own subnet choice.

    NOTE: this calls private Ray 2.60 functions (prepare_config, _configure_subnet);
    tests/cluster/test_cluster_bootstrap_moto.py fails if a Ray upgrade changes them.
    """
    from ray.autoscaler._private.aws import config as ray_aws_config
    from ray.autoscaler._private.util import prepare_config

    prepared = prepare_config(copy.deepcopy(config))
    with_subnets = ray_aws_config._configure_subnet(prepared)
    head_type = with_subnets["head_node_type"]
    subnet_id = with_subnets["available_node_types"][head_type]["node_config"]["SubnetIds"][0]
    ec2 = boto3.client("ec2", region_name=config["provider"]["region"])
    subnets = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    return subnets[0]["VpcId"]


def world_open_rules(ip_permissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the parts of ingress rules that allow 0.0.0.0/0 or ::/0, one per CIDR."""
    open_rules = []
    for rule in ip_permissions:
        base = {k: rule[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in rule}
        for cidr_range in rule.get("IpRanges", []):
            if cidr_range.get("CidrIp") in WORLD_CIDRS:
                open_rules.append({**base, "IpRanges": [{"CidrIp": cidr_range["CidrIp"]}]})
        for cidr_range in rule.get("Ipv6Ranges", []):
            if cidr_range.get("CidrIpv6") in WORLD_CIDRS:
                open_rules.append(
                    {**base, "Ipv6Ranges": [{"CidrIpv6": cidr_range["CidrIpv6"]}]}
                )
    return open_rules


def _rule_cidrs(rule: dict[str, Any]) -> list[str]:
    cidrs = [cidr_range["CidrIp"] for cidr_range in rule.get("IpRanges", [])]
    return cidrs + [cidr_range["CidrIpv6"] for cidr_range in rule.get("Ipv6Ranges", [])]


def _describe_rule(rule: dict[str, Any]) -> str:
    ports = f"{rule.get('FromPort', 'all')}-{rule.get('ToPort', 'all')}"
    return f"{rule['IpProtocol']} {ports} from {','.join(_rule_cidrs(rule))}"


def _rule_keys(rule: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """Return one (protocol, from port, to port, CIDR) key per CIDR of the rule."""
    protocol = str(rule["IpProtocol"]).lower()
    ports = (rule.get("FromPort"), rule.get("ToPort"))
    return [(protocol, *ports, cidr) for cidr in _rule_cidrs(rule)]


def _missing_rules(
    requested: list[dict[str, Any]], existing: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return the requested rules, one per CIDR, that the group does not have yet."""
    have = {key for rule in existing for key in _rule_keys(rule)}
    missing = []
    for rule in requested:
        base = {k: rule[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in rule}
        for cidr_range in rule.get("IpRanges", []):
            key = _rule_keys({**base, "IpRanges": [cidr_range]})[0]
            if key not in have:
                missing.append({**base, "IpRanges": [cidr_range]})
        for cidr_range in rule.get("Ipv6Ranges", []):
            key = _rule_keys({**base, "Ipv6Ranges": [cidr_range]})[0]
            if key not in have:
                missing.append({**base, "Ipv6Ranges": [cidr_range]})
    return missing


def ensure_security_group(config: dict[str, Any], vpc_id: str) -> tuple[str, tuple[str, ...]]:
    """Create or repair the cluster security group and return (group id, revoked rules).

    The group allows all traffic from itself (node to node) and the configured
    ingress rules, and loses every ingress rule open to the whole internet.
    """
    ec2 = boto3.client("ec2", region_name=config["provider"]["region"])
    group_name = config["provider"]["security_group"]["GroupName"]
    filters = [
        {"Name": "vpc-id", "Values": [vpc_id]},
        {"Name": "group-name", "Values": [group_name]},
    ]
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if groups:
        group_id = groups[0]["GroupId"]
        logger.info("Found security group %s (%s) in %s", group_name, group_id, vpc_id)
    else:
        group_id = ec2.create_security_group(
            GroupName=group_name,
            Description=f"Ray cluster {config['cluster_name']} (hmlc-search)",
            VpcId=vpc_id,
        )["GroupId"]
        logger.info("Created security group %s (%s) in %s", group_name, group_id, vpc_id)

    existing = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    permissions = existing.get("IpPermissions", [])
    open_rules = world_open_rules(permissions)
    if open_rules:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=open_rules)
        for rule in open_rules:
            logger.warning("Revoked world-open ingress rule: %s", _describe_rule(rule))

    has_self_rule = any(
        pair.get("GroupId") == group_id
        for rule in permissions
        if rule.get("IpProtocol") == "-1"
        for pair in rule.get("UserIdGroupPairs", [])
    )
    configured = config["provider"]["security_group"].get("IpPermissions", [])
    to_add = _missing_rules(configured, permissions)
    if not has_self_rule:
        to_add.insert(0, {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]})
    if to_add:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=to_add)
    return group_id, tuple(_describe_rule(rule) for rule in open_rules)


def bucket_statements(bucket: str) -> list[dict[str, Any]]:
    """IAM statements for listing the bucket and reading and writing its objects."""
    return [
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
            "Resource": f"arn:aws:s3:::{bucket}",
        },
        {
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": f"arn:aws:s3:::{bucket}/*",
        },
    ]


def _ensure_role_and_profile(iam: Any, name: str) -> tuple[str, str]:
    """Create the EC2 role and the instance profile called `name`; return both ARNs."""
    try:
        role_arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role_arn = iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY)
        )["Role"]["Arn"]
        logger.info("Created IAM role %s", name)
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        logger.info("Created IAM instance profile %s", name)
    if name not in [role["RoleName"] for role in profile.get("Roles", [])]:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return role_arn, profile["Arn"]


def ensure_instance_profiles(config: dict[str, Any], bucket: str) -> tuple[str, str]:
    """Create or update the head and worker roles and profiles; return the profile ARNs."""
    iam = boto3.client("iam", region_name=config["provider"]["region"])
    head_name, worker_name = instance_profile_names(config)

    worker_role_arn, worker_profile_arn = _ensure_role_and_profile(iam, worker_name)
    bucket_policy = json.dumps({"Version": "2012-10-17", "Statement": bucket_statements(bucket)})
    iam.put_role_policy(
        RoleName=worker_name, PolicyName=BUCKET_POLICY_NAME, PolicyDocument=bucket_policy
    )

    _, head_profile_arn = _ensure_role_and_profile(iam, head_name)
    iam.attach_role_policy(RoleName=head_name, PolicyArn=EC2_MANAGED_POLICY_ARN)
    iam.put_role_policy(
        RoleName=head_name, PolicyName=BUCKET_POLICY_NAME, PolicyDocument=bucket_policy
    )
    pass_role = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": worker_role_arn}
    iam.put_role_policy(
        RoleName=head_name,
        PolicyName=PASS_ROLE_POLICY_NAME,
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [pass_role]}),
    )
    return head_profile_arn, worker_profile_arn


def prepare(config: dict[str, Any]) -> PrepareResult:
    """Check the config, then create or update the security group and instance profiles."""
    check_ready(config)
    bucket = cluster_settings(config).get("HMLC_BUCKET")
    if not bucket:
        raise ClusterConfigError("setup_commands[0] does not set HMLC_BUCKET")
    vpc_id = select_vpc_id(config)
    group_id, revoked = ensure_security_group(config, vpc_id)
    head_arn, worker_arn = ensure_instance_profiles(config, bucket)
    return PrepareResult(
        security_group_id=group_id,
        vpc_id=vpc_id,
        revoked_world_rules=revoked,
        head_instance_profile_arn=head_arn,
        worker_instance_profile_arn=worker_arn,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="path of the cluster config, e.g. cluster/aws.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = prepare(load_cluster_config(args.config))
    except ClusterConfigError as error:
        logger.error("%s: %s", args.config, error)
        return 2
    logger.info("Security group %s in %s is ready", result.security_group_id, result.vpc_id)
    logger.info("Head instance profile: %s", result.head_instance_profile_arn)
    logger.info("Worker instance profile: %s", result.worker_instance_profile_arn)
    logger.info("New IAM profiles can take about a minute to become usable by EC2.")
    logger.info("Next: ray up %s", args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
