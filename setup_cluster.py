"""Create the Redshift cluster described in dwh.cfg, safely: an IAM role that can read
only the configured S3 prefixes, an encrypted cluster that is private unless you say
otherwise, and a port opened to one CIDR only if you name it. Writes the endpoint and
the role ARN back into dwh.cfg. Safe to re-run: what exists is reused."""
import ipaddress
import json
import logging
import re
import sys
import time
from contextlib import contextmanager

import config
from cli import main_entry
from errors import UserError

log = logging.getLogger("sparkify")

POLICY_NAME = "sparkify-s3-read"
RULE_DESCRIPTION = "sparkify: Redshift access"
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "redshift.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


# --- AWS plumbing shared with teardown_cluster.py ---------------------------------------------
def aws_clients(cfg, *services):
    """boto3 clients; [AWS] KEY/SECRET if both are set, else the standard credential chain."""
    import boto3
    kwargs = {"region_name": cfg.region or None}
    if cfg.aws_key and cfg.aws_secret:
        kwargs.update(aws_access_key_id=cfg.aws_key, aws_secret_access_key=cfg.aws_secret)
    session = boto3.session.Session(**kwargs)
    if session.region_name is None:
        raise UserError("no AWS region: set [AWS] REGION in dwh.cfg (or AWS_DEFAULT_REGION)")
    return [session.client(s) for s in services]


CREDENTIAL_ERRORS = {"InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
                     "AuthFailure", "ExpiredToken", "InvalidAccessKeyId"}
QUOTA_ERRORS = {"ClusterQuotaExceeded", "ClusterQuotaExceededFault", "NumberOfNodesQuotaExceeded",
                "NumberOfNodesPerClusterLimitExceeded", "LimitExceeded", "RulesPerSecurityGroupLimitExceeded"}


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


# --- What the cluster may read ------------------------------------------------------------------
def s3_read_policy(cfg):
    """Read access to exactly the configured S3 prefixes (and listing of their buckets)."""
    objects, buckets = [], []
    for uri in (cfg.song_data, cfg.log_data, cfg.log_jsonpath):
        if not uri.startswith("s3://"):
            continue
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        objects.append(f"arn:aws:s3:::{bucket}/{prefix}*")
        buckets.append(f"arn:aws:s3:::{bucket}")
    if not objects:
        raise UserError("[S3] SONG_DATA and LOG_DATA must be s3:// URIs for a Redshift cluster to read them")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": sorted(set(objects))},
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": sorted(set(buckets))},
        ],
    }


def check_cidr(cidr, allow_anywhere):
    """The CIDR allowed to reach the cluster, checked; refuse the whole internet unless asked."""
    if not cidr:
        return None
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise UserError(f"[CLUSTER] ALLOWED_CIDR is not a CIDR like 203.0.113.7/32: {cidr!r}")
    if network.prefixlen == 0 and not allow_anywhere:
        raise UserError(f"[CLUSTER] ALLOWED_CIDR {cidr} opens the database to the whole internet; "
                        "name your own address (e.g. 203.0.113.7/32) or pass --allow-anywhere")
    return str(network)


def check_password(password):
    if not password:
        raise UserError("no database password: set [CLUSTER] DB_PASSWORD in dwh.cfg or DWH_DB_PASSWORD")
    if not (8 <= len(password) <= 64 and re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
            and re.search(r"\d", password)) or re.search(r"['\"\\/@ ]", password):
        raise UserError("the database password must be 8 to 64 characters with an upper-case letter, a "
                        "lower-case letter and a digit, and no ' \" \\ / @ or space (Redshift's rule)")


# --- The steps ----------------------------------------------------------------------------------
def ensure_role(iam, cfg):
    """The role Redshift assumes, with the S3 read policy; created or reused. Returns its ARN."""
    name = cfg.cluster.iam_role_name
    with aws_errors(f"creating IAM role {name}"):
        try:
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                                  Description="Lets the Sparkify Redshift cluster read its S3 sources")["Role"]["Arn"]
            log.info("created IAM role %s", name)
        except iam.exceptions.EntityAlreadyExistsException:
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
            log.info("IAM role %s exists; reusing it", name)
        iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(s3_read_policy(cfg)))
    return arn


def ensure_cluster(redshift, cfg, role_arn):
    """Create the cluster (encrypted; public only if configured), or reuse it. Returns its description."""
    c = cfg.cluster
    params = dict(ClusterIdentifier=c.identifier, ClusterType=c.cluster_type, NodeType=c.node_type,
                  DBName=c.db_name, MasterUsername=c.db_user, MasterUserPassword=cfg.db_password,
                  Port=c.port, IamRoles=[role_arn], Encrypted=True, PubliclyAccessible=c.publicly_accessible)
    if c.cluster_type == "multi-node":
        params["NumberOfNodes"] = c.num_nodes
    with aws_errors(f"creating cluster {c.identifier}"):
        try:
            cluster = redshift.create_cluster(**params)["Cluster"]
            log.info("creating cluster %s: %s x %s, encrypted, %s", c.identifier,
                     c.num_nodes if c.cluster_type == "multi-node" else 1, c.node_type,
                     "publicly accessible" if c.publicly_accessible else "private")
        except redshift.exceptions.ClusterAlreadyExistsFault:
            cluster = describe_cluster(redshift, c.identifier)
            log.info("cluster %s exists (%s); reusing it", c.identifier, cluster["ClusterStatus"])
    return cluster


def describe_cluster(redshift, identifier):
    """The cluster's description, or None if there is no such cluster."""
    try:
        return redshift.describe_clusters(ClusterIdentifier=identifier)["Clusters"][0]
    except redshift.exceptions.ClusterNotFoundFault:
        return None


def wait_for(redshift, waiter_name, identifier, poll_seconds, timeout=3600):
    """boto3's waiter, one attempt at a time, so progress can be reported."""
    from botocore.exceptions import WaiterError
    waiter = redshift.get_waiter(waiter_name)
    started = time.monotonic()
    while True:
        try:
            waiter.wait(ClusterIdentifier=identifier, WaiterConfig={"Delay": poll_seconds, "MaxAttempts": 1})
            return
        except WaiterError as e:
            if "terminal failure" in str(e) or time.monotonic() - started > timeout:
                raise UserError(f"cluster {identifier}: {str(e).splitlines()[0]}")
            status = (e.last_response or {}).get("Clusters", [{}])[0].get("ClusterStatus", "pending")
            log.info("  cluster %s: %s (%d s)", identifier, status, time.monotonic() - started)
            time.sleep(poll_seconds)


def security_group_id(ec2, cfg, cluster):
    """The group that guards the cluster: configured, the cluster's own, or the default VPC's."""
    if cfg.cluster.security_group_id:
        return cfg.cluster.security_group_id
    groups = (cluster or {}).get("VpcSecurityGroups") or []
    if groups:
        return groups[0]["VpcSecurityGroupId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]}])
    return found["SecurityGroups"][0]["GroupId"]


def ingress_permission(cfg, cidr):
    return {"IpProtocol": "tcp", "FromPort": cfg.cluster.port, "ToPort": cfg.cluster.port,
            "IpRanges": [{"CidrIp": cidr, "Description": RULE_DESCRIPTION}]}


def open_port(ec2, cfg, cluster, cidr):
    """Allow cidr (and nothing wider) to reach the cluster's port; reuse an existing rule."""
    from botocore.exceptions import ClientError
    group = security_group_id(ec2, cfg, cluster)
    with aws_errors(f"opening port {cfg.cluster.port} to {cidr}"):
        try:
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[ingress_permission(cfg, cidr)])
            log.info("opened port %d of security group %s to %s", cfg.cluster.port, group, cidr)
        except ClientError as e:
            if error_code(e) == "InvalidPermission.Duplicate":
                log.info("port %d of %s is already open to %s; reusing the rule", cfg.cluster.port, group, cidr)
            else:
                raise
    return group


def setup(cfg, allow_anywhere=False, poll_seconds=15):
    """Every step, in order. Returns (endpoint host, role ARN)."""
    require_cfg_file(cfg, "setup_cluster.py")
    check_password(cfg.db_password)
    cidr = check_cidr(cfg.cluster.allowed_cidr, allow_anywhere)
    iam, redshift, ec2 = aws_clients(cfg, "iam", "redshift", "ec2")
    role_arn = ensure_role(iam, cfg)
    ensure_cluster(redshift, cfg, role_arn)
    log.info("waiting for cluster %s to be available (usually 5 to 15 minutes)", cfg.cluster.identifier)
    with aws_errors(f"waiting for cluster {cfg.cluster.identifier}"):
        wait_for(redshift, "cluster_available", cfg.cluster.identifier, poll_seconds)
        cluster = describe_cluster(redshift, cfg.cluster.identifier)
    if cidr:
        open_port(ec2, cfg, cluster, cidr)
    host = cluster["Endpoint"]["Address"]
    config.update_file(cfg.path, {("CLUSTER", "HOST"): host, ("IAM_ROLE", "ARN"): role_arn})
    return host, role_arn


def main(cfg, args):
    host, arn = setup(cfg, args.allow_anywhere, args.poll_seconds)
    print(f"cluster {cfg.cluster.identifier} is available at {host}:{cfg.cluster.port}\n"
          f"role {arn}\n"
          f"wrote [CLUSTER] HOST and [IAM_ROLE] ARN to {cfg.path}; next: python create_tables.py")
    if not cfg.cluster.allowed_cidr:
        print("no ingress rule was made: set [CLUSTER] ALLOWED_CIDR to your address to connect from outside the VPC")


def add_arguments(p):
    p.add_argument("--allow-anywhere", action="store_true",
                   help="allow [CLUSTER] ALLOWED_CIDR to be 0.0.0.0/0 (the whole internet)")
    p.add_argument("--poll-seconds", type=int, default=15,
                   help="seconds between status checks while waiting (default 15)")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__.split("\n")[0], add_arguments))
