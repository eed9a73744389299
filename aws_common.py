"""What setup_cluster.py and teardown_cluster.py share: AWS clients, AWS errors as one line,
waiting with progress, and the describe helpers for a provisioned cluster and for a
Redshift Serverless namespace/workgroup. boto3 honours AWS_ENDPOINT_URL, so the same code
runs against a local emulator."""
import ipaddress
import logging
import time
from contextlib import contextmanager

from errors import UserError

log = logging.getLogger("sparkify")

# Every ingress rule setup_cluster.py makes carries this description: a later setup and the
# teardown find them by it (whatever ALLOWED_CIDR said then), and leave rules they did not make.
RULE_DESCRIPTION = "sparkify: Redshift access"
CREDENTIAL_ERRORS = {"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                     "AuthFailure", "ExpiredToken", "InvalidAccessKeyId"}
QUOTA_ERRORS = {"ClusterQuotaExceeded", "ClusterQuotaExceededFault", "NumberOfNodesQuotaExceeded",
                "NumberOfNodesPerClusterLimitExceeded", "LimitExceeded", "RulesPerSecurityGroupLimitExceeded",
                "ServiceQuotaExceededException"}
NOT_FOUND = {"ResourceNotFoundException", "ClusterNotFound", "ClusterNotFoundFault"}


def aws_session(cfg):
    """A boto3 session; [AWS] KEY/SECRET if both are set, else the standard credential chain."""
    import boto3
    kwargs = {"region_name": cfg.region or None}
    if cfg.aws_key and cfg.aws_secret:
        kwargs.update(aws_access_key_id=cfg.aws_key, aws_secret_access_key=cfg.aws_secret)
    return boto3.session.Session(**kwargs)


def aws_clients(cfg, *services):
    """One boto3 client per service name, in the order asked."""
    session = aws_session(cfg)
    if session.region_name is None:
        raise UserError("no AWS region: set [AWS] REGION in dwh.cfg (or AWS_DEFAULT_REGION)")
    return [session.client(s) for s in services]


def error_code(e):
    return e.response.get("Error", {}).get("Code", "")


@contextmanager
def aws_errors(action):
    """Turn AWS failures into one line saying what was being done and what to do."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, BotoCoreError
    try:
        yield
    except NoCredentialsError:
        raise UserError(f"{action}: no AWS credentials; set [AWS] KEY and SECRET in dwh.cfg, "
                        "or configure the AWS CLI (aws configure / AWS_PROFILE)")
    except NoRegionError:
        raise UserError(f"{action}: no AWS region; set [AWS] REGION in dwh.cfg")
    except ClientError as e:
        code, message = error_code(e), e.response.get("Error", {}).get("Message", "")
        if code in CREDENTIAL_ERRORS:
            raise UserError(f"{action}: AWS rejected the credentials ({code}); check [AWS] KEY and SECRET")
        if code in QUOTA_ERRORS:
            raise UserError(f"{action}: AWS quota reached ({code}): {message}")
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            raise UserError(f"{action}: access denied ({message or code})")
        raise UserError(f"{action}: {code}: {message}")
    except BotoCoreError as e:
        raise UserError(f"{action}: {e}")


def require_cfg_file(cfg, script):
    if cfg.path is None:
        raise UserError(f"{script} needs a dwh.cfg: copy dwh.cfg.example to dwh.cfg and fill in [DWH], "
                        "[CLUSTER] DB_PASSWORD (or set DWH_DB_PASSWORD) and [S3]")


def check_host_names_this_warehouse(cfg):
    """[CLUSTER] HOST, when set, names the warehouse [DWH] describes: a cluster's endpoint starts
    with its identifier, a workgroup's with its name and ends in .redshift-serverless.amazonaws.com
    (tests/aws_rules.py, REDSHIFT_ENDPOINTS). Else setup would write over the only record of a
    warehouse still running (and billed), and teardown would delete another, then empty HOST."""
    host = cfg.host.strip().lower()
    serverless, name = cfg.cluster.cluster_type == "serverless", cfg.cluster.identifier
    if host and (host.split(".")[0] != name or (".redshift-serverless." in host) != serverless):
        kind = "workgroup" if serverless else "cluster"
        raise UserError(f"[CLUSTER] HOST is {cfg.host}, not the {kind} {name} that [DWH] DWH_CLUSTER_IDENTIFIER "
                        "and DWH_CLUSTER_TYPE describe: tear that warehouse down with the settings that made it "
                        "(or empty HOST if it is gone); nothing was changed")


# --- Waiting ------------------------------------------------------------------------------------
def poll(what, check, poll_seconds, timeout=3600):
    """Call check() -> (done, status) until done, logging progress. Returns the last status."""
    started = time.monotonic()
    while True:
        done, status = check()
        elapsed = time.monotonic() - started
        if done:
            return status
        if elapsed > timeout:
            raise UserError(f"{what}: still {status} after {int(elapsed)} s; check the AWS console")
        log.info("  %s: %s (%d s)", what, status, elapsed)
        time.sleep(poll_seconds)


def wait_for(redshift, waiter_name, identifier, poll_seconds, timeout=3600):
    """boto3's cluster waiter, one attempt at a time, so progress can be reported."""
    from botocore.exceptions import WaiterError
    waiter = redshift.get_waiter(waiter_name)

    def check():
        try:
            waiter.wait(ClusterIdentifier=identifier, WaiterConfig={"Delay": 0, "MaxAttempts": 1})
            return True, "done"
        except WaiterError as e:
            # Its one attempt found the state still pending ("Max attempts exceeded"); anything else
            # is a failure state, or an error no acceptor expects (AccessDenied, expired credentials)
            if "Max attempts exceeded" not in str(e):
                raise UserError(f"cluster {identifier}: {str(e).splitlines()[0]}")
            return False, (e.last_response or {}).get("Clusters", [{}])[0].get("ClusterStatus", "pending")
    poll(f"cluster {identifier}", check, poll_seconds, timeout)


def wait_for_cluster_status(redshift, identifier, status, poll_seconds, timeout=3600):
    """Until the cluster reports `status` (pause and resume have no boto3 waiter)."""
    def check():
        cluster = describe_cluster(redshift, identifier)
        current = cluster["ClusterStatus"] if cluster else "gone"
        if current == "gone":
            raise UserError(f"cluster {identifier} disappeared while waiting for it to be {status}")
        return current == status, current
    return poll(f"cluster {identifier}", check, poll_seconds, timeout)


# --- Describe helpers ----------------------------------------------------------------------------
def _found(describe, key, **name):
    """describe(**name)[key], or None if AWS has nothing by that name."""
    from botocore.exceptions import ClientError
    try:
        found = describe(**name)[key]
    except ClientError as e:
        if error_code(e) in NOT_FOUND:
            return None
        raise
    return found[0] if isinstance(found, list) else found


def describe_cluster(redshift, identifier):
    """The cluster's description, or None if there is no such cluster."""
    return _found(redshift.describe_clusters, "Clusters", ClusterIdentifier=identifier)


def get_workgroup(serverless, name):
    """The Redshift Serverless workgroup, or None if there is none by that name."""
    return _found(serverless.get_workgroup, "workgroup", workgroupName=name)


def get_namespace(serverless, name):
    """The Redshift Serverless namespace, or None if there is none by that name."""
    return _found(serverless.get_namespace, "namespace", namespaceName=name)


def wait_for_workgroup(serverless, name, poll_seconds, gone=False, timeout=3600):
    """Until the workgroup is AVAILABLE (boto3 has no waiter for it), or gone. Returns it."""
    def check():
        workgroup = get_workgroup(serverless, name)
        if gone:
            return workgroup is None, workgroup["status"] if workgroup else "gone"
        if workgroup is None:
            raise UserError(f"workgroup {name} disappeared while waiting for it")
        return workgroup["status"] == "AVAILABLE", workgroup["status"]
    poll(f"workgroup {name}", check, poll_seconds, timeout)
    return None if gone else get_workgroup(serverless, name)


# --- The ingress rule ---------------------------------------------------------------------------
def security_group_id(ec2, cfg, groups=(), vpc_id=None):
    """The group that guards the warehouse: configured, its own, or the default group of its VPC
    (of the account's default VPC when the description names none)."""
    if cfg.cluster.security_group_id:
        return cfg.cluster.security_group_id
    if groups:
        return groups[0]
    if not vpc_id:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise UserError("no security group to open: set [DWH] DWH_SECURITY_GROUP_ID")
        vpc_id = vpcs[0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                  {"Name": "group-name", "Values": ["default"]}])
    if not found["SecurityGroups"]:
        raise UserError(f"VPC {vpc_id} has no default security group: set [DWH] DWH_SECURITY_GROUP_ID")
    return found["SecurityGroups"][0]["GroupId"]


def cluster_security_group(ec2, cfg, cluster):
    cluster = cluster or {}
    groups = [g["VpcSecurityGroupId"] for g in cluster.get("VpcSecurityGroups") or []]
    return security_group_id(ec2, cfg, groups, cluster.get("VpcId"))


def our_ingress_rules(ec2, group, port):
    """The CIDRs setup_cluster.py opened the group's port to (its rules, by their description),
    as AWS keeps them: canonical (203.0.113.0/24, not 203.0.113.7/24). DescribeSecurityGroups,
    which AmazonRedshiftFullAccess allows (DescribeSecurityGroupRules it does not). A group that
    is gone has none."""
    from botocore.exceptions import ClientError
    try:
        [found] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    except ClientError as e:
        if error_code(e) == "InvalidGroup.NotFound":
            return []
        raise
    return [r.get("CidrIp") or r.get("CidrIpv6") for p in found.get("IpPermissions", [])
            if p.get("IpProtocol") == "tcp" and p.get("FromPort") == port == p.get("ToPort")
            for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", []) if r.get("Description") == RULE_DESCRIPTION]


def close_rules(ec2, group, port, cidrs, why=""):
    """Revoke the port's rules for these CIDRs, as DescribeSecurityGroups gave them. In a default
    VPC a revoke that matches no rule removes nothing and raises no error (tests/aws_rules.py,
    Ingress rules): what AWS did not know is in the answer's UnknownIpPermissions."""
    if not cidrs:
        return False
    answer = ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[
        ingress_permission(port, c, described=False) for c in cidrs])
    if answer.get("UnknownIpPermissions"):
        raise UserError(f"AWS did not close port {port} of {group} to {', '.join(cidrs)} (no such rule); "
                        "check the group's inbound rules in the EC2 console")
    log.info("closed port %d of %s to %s%s", port, group, ", ".join(cidrs), why)
    return True


def ingress_permission(port, cidr, described=True):
    """The rule for one CIDR: IPv4 in IpRanges[].CidrIp, IPv6 in Ipv6Ranges[].CidrIpv6; with our
    description (a revoke needs none: "If the security group rule has a description, you do not
    need to specify the description to revoke the rule", RevokeSecurityGroupIngress)."""
    rule = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    ipv6 = ipaddress.ip_network(cidr, strict=False).version == 6
    field, key = ("Ipv6Ranges", "CidrIpv6") if ipv6 else ("IpRanges", "CidrIp")
    rule[field] = [{key: cidr, "Description": RULE_DESCRIPTION} if described else {key: cidr}]
    return rule
