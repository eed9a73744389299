"""Create the Redshift warehouse described in dwh.cfg, safely: an IAM role that can read
only the configured S3 prefixes, then an encrypted provisioned cluster (or, with
DWH_CLUSTER_TYPE = serverless, a Redshift Serverless namespace and workgroup capped by a
daily usage limit), private unless you name a CIDR. Every setting it uses is checked
before anything is created. Writes the endpoint, the role ARN, the connection settings and
the data's region back into dwh.cfg. Safe to re-run: what exists is reused, a paused
cluster is resumed."""
import ipaddress
import json
import logging
import os
import re
import sys

import config
from aws_common import (aws_clients, aws_errors, aws_session, check_host_names_this_warehouse, close_rules,
                        cluster_security_group, describe_cluster, error_code, get_namespace, get_workgroup,
                        ingress_permission, our_ingress_rules, require_cfg_file, security_group_id, wait_for,
                        wait_for_workgroup)
from cli import main_entry
from errors import UserError

log = logging.getLogger("sparkify")

POLICY_NAME = "sparkify-s3-read"
# Node types AWS accepts for new clusters (docs/redshift.md and tests/aws_rules.py name the sources).
NODE_TYPES = ("ra3.large", "ra3.xlplus", "ra3.4xlarge", "ra3.16xlarge")
MIN_MULTI_NODE = 2  # RA3 multi-node clusters start at 2 nodes (docs/redshift.md)
RETIRED_NODE_FAMILIES = ("dc1.", "dc2.", "ds1.", "ds2.")
CLUSTER_TYPES = ("multi-node", "single-node", "serverless")
SERVERLESS_NAME = re.compile(r"^[a-z0-9-]{3,64}$")
PORTS = (range(5431, 5456), range(8191, 8216))  # a workgroup's, and an RA3 cluster's (CreateCluster, Port)


# --- Checking the whole configuration before any AWS call ---------------------------------------
def check_cidr(cidr, allow_anywhere):
    """The CIDR allowed to reach the warehouse, checked; refuse the whole internet unless asked."""
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
    # CreateCluster's rule (tests/aws_rules.py): printable ASCII (33-126) but ' " \ / @
    if not (8 <= len(password) <= 64 and re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
            and re.search(r"[0-9]", password)) or any(not 33 <= ord(c) <= 126 or c in "'\"\\/@" for c in password):
        raise UserError("the database password must be 8 to 64 characters with an upper-case letter, a "
                        "lower-case letter and a digit, each a printable ASCII character but ' \" \\ / @ "
                        "(no space) (Redshift's rule)")


def check_node_type(node_type):
    if node_type.startswith(RETIRED_NODE_FAMILIES):
        raise UserError(f"[DWH] DWH_NODE_TYPE {node_type} is no longer available for new Redshift clusters; "
                        "set DWH_NODE_TYPE=ra3.large (the smallest current node type)")
    if node_type not in NODE_TYPES:
        raise UserError(f"[DWH] DWH_NODE_TYPE must be one of {', '.join(NODE_TYPES)}, not {node_type!r}")


# CreateCluster's names (its API Reference; tests/aws_rules.py): the identifier 1 to 63 letters,
# digits or hyphens, a letter first, no two hyphens together nor one at the end (config keeps it in
# lower case); the database 1 to 64 lowercase letters or digits; the admin user 1 to 128 lowercase
# letters, digits, _ + . @ or -, a letter first, not PUBLIC. (Nor a reserved word, for either: the
# server says so.)
CLUSTER_NAMES = {
    "DWH_CLUSTER_IDENTIFIER": (re.compile(r"[a-z](?:-?[a-z0-9])*"), 63, "letters, digits or hyphens, a letter "
                               "first, no two hyphens together or one at the end"),
    "DWH_DB": (re.compile(r"[a-z0-9]+"), 64, "lowercase letters or digits"),
    "DWH_DB_USER": (re.compile(r"(?!public$)[a-z][a-z0-9_+.@-]*"), 128, "lowercase letters, digits or _ + . @ -, "
                    "a letter first, not public"),
}


def check_cluster_names(c):
    for key, value in (("DWH_CLUSTER_IDENTIFIER", c.identifier), ("DWH_DB", c.db_name), ("DWH_DB_USER", c.db_user)):
        shape, longest, rule = CLUSTER_NAMES[key]
        if not (shape.fullmatch(value) and len(value) <= longest):
            raise UserError(f"[DWH] {key} {value!r} is not a name Redshift takes: 1 to {longest} {rule}")


def check_serverless(c):
    if not SERVERLESS_NAME.fullmatch(c.identifier):
        raise UserError(f"[DWH] DWH_CLUSTER_IDENTIFIER {c.identifier!r} cannot name a serverless namespace: "
                        "3 to 64 letters, digits or hyphens")
    if not (c.base_rpu == 4 or (8 <= c.base_rpu <= 512 and c.base_rpu % 8 == 0)
            or (512 < c.base_rpu <= 1024 and c.base_rpu % 32 == 0)):
        raise UserError(f"[DWH] DWH_BASE_RPU must be 4, a multiple of 8 up to 512, or a multiple of 32 "
                        f"up to 1024, not {c.base_rpu}")


def check_port(c):
    if not any(c.port in ports for ports in PORTS):
        what = "Redshift Serverless" if c.cluster_type == "serverless" else f"{c.node_type} cluster"
        raise UserError(f"[DWH] DWH_PORT {c.port} is not a {what} port (5431-5455 or 8191-8215)")


def data_uris(cfg):
    """The S3 locations COPY reads: song and log data, the JSONPaths file if there is one, and
    the manifests' folder ([S3] MANIFEST_PREFIX) if set. AWS: with REGION, all of them, manifests
    included, must be in that one region."""
    for key, uri in (("SONG_DATA", cfg.song_data), ("LOG_DATA", cfg.log_data)):
        if not uri.startswith("s3://"):
            raise UserError(f"[S3] {key} must be an s3:// URI for Redshift to read it, not {uri!r}")
    return ([cfg.song_data, cfg.log_data] + ([cfg.log_jsonpath] if cfg.log_jsonpath.startswith("s3://") else [])
            + ([cfg.manifest_prefix] if cfg.manifest_prefix else []))


def validate(cfg, allow_anywhere=False):
    """Every check that needs no AWS call, so nothing is created for a configuration that would fail."""
    require_cfg_file(cfg, "setup_cluster.py")
    if not os.access(cfg.path, os.W_OK):
        raise UserError(f"{cfg.path} is not writable: setup_cluster.py writes the endpoint and role into it")
    check_password(cfg.db_password)
    cidr = check_cidr(cfg.cluster.allowed_cidr, allow_anywhere)
    data_uris(cfg)
    c = cfg.cluster
    if c.cluster_type not in CLUSTER_TYPES:
        raise UserError(f"[DWH] DWH_CLUSTER_TYPE must be one of {', '.join(CLUSTER_TYPES)}, not {c.cluster_type!r}")
    if c.cluster_type == "serverless":
        check_serverless(c)
    else:
        check_cluster_names(c)
        check_node_type(c.node_type)
        if c.cluster_type == "multi-node" and c.num_nodes < MIN_MULTI_NODE:
            raise UserError(f"[DWH] DWH_NUM_NODES must be at least {MIN_MULTI_NODE} for a multi-node cluster, "
                            f"not {c.num_nodes} (one node: DWH_CLUSTER_TYPE=single-node)")
    check_port(c)
    if aws_session(cfg).region_name is None:
        raise UserError("no AWS region: set [AWS] REGION in dwh.cfg (or AWS_DEFAULT_REGION)")
    return cidr


# --- What the warehouse may read ------------------------------------------------------------------
def policy_literal(text):
    """A policy string matching text literally: * ? $ become the ${*} ${?} ${$} policy variables."""
    return re.sub(r"[*?$]", lambda m: "${" + m.group(0) + "}", text)


def s3_read_policy(cfg, partition="aws"):
    """List and read exactly the configured prefixes and the JSONPaths file, nothing else.

    s3:ListBucket sits in a statement of its own: its s3:prefix condition key exists only on
    list requests, and a condition on a missing key is false. partition: the account's, as its
    role's ARN gives it (aws; aws-cn in China, aws-us-gov in GovCloud)."""
    listing, objects = {}, []
    for uri in data_uris(cfg):
        bucket, _, key = uri[len("s3://"):].partition("/")
        exact = uri == cfg.log_jsonpath
        objects.append(f"arn:{partition}:s3:::{bucket}/{policy_literal(key)}{'' if exact else '*'}")
        prefixes = listing.setdefault(bucket, [])
        if key:
            prefixes += [policy_literal(key), policy_literal(key) + ("*" if key.endswith("/") else "/*")]
        else:
            prefixes.append(None)  # the whole bucket
    statements = []
    for bucket, prefixes in sorted(listing.items()):
        statement = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:{partition}:s3:::{bucket}"}
        if None not in prefixes:
            statement["Condition"] = {"StringLike": {"s3:prefix": sorted(set(prefixes))}}
        statements.append(statement)
    statements.append({"Effect": "Allow", "Action": "s3:GetObject", "Resource": sorted(set(objects))})
    return {"Version": "2012-10-17", "Statement": statements}


def find_data_region(s3, cfg):
    """The region of the configured buckets, from S3 HeadBucket's x-amz-bucket-region header
    (sent even with a 403). None when S3 does not say."""
    from botocore.exceptions import BotoCoreError, ClientError
    regions = {}
    for uri in data_uris(cfg):
        bucket = uri[len("s3://"):].partition("/")[0]
        if bucket in regions:
            continue
        try:
            response = s3.head_bucket(Bucket=bucket)
        except ClientError as e:
            response = e.response
        except BotoCoreError as e:
            log.warning("could not ask S3 where bucket %s is (%s)", bucket, e)
            return None
        regions[bucket] = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        if not regions[bucket]:
            return None
    if len(set(regions.values())) > 1:
        raise UserError("the [S3] buckets are in different regions "
                        f"({', '.join(f'{b}: {r}' for b, r in sorted(regions.items()))}); "
                        "COPY reads from one region: copy the data into one region")
    return next(iter(regions.values()))


def data_region(s3, cfg):
    """[S3] REGION, else the buckets' own region, else [AWS] REGION (said so). Returns (region, found)."""
    if cfg.data_region:
        return cfg.data_region, False
    found = find_data_region(s3, cfg)
    if found:
        log.info("the data is in %s (from S3)", found)
        return found, True
    region = cfg.region or s3.meta.region_name
    log.warning("could not find the region of the [S3] buckets; COPY will use [AWS] REGION %s "
                "(set [S3] REGION if the data is elsewhere)", region)
    return region, False


def trusted_services(cluster_type):
    """Who must be able to assume the role: Amazon Redshift, and for a Serverless workgroup Redshift
    Serverless too, as its guide asks (tests/aws_rules.py names the pages)."""
    return ["redshift.amazonaws.com"] + (["redshift-serverless.amazonaws.com"] if cluster_type == "serverless" else [])


def trust_statement(services):
    return {"Effect": "Allow", "Principal": {"Service": services}, "Action": "sts:AssumeRole"}


def services_trusted_by(document):
    """The services a trust policy lets assume its role."""
    def listed(value):
        return [value] if isinstance(value, str) else list(value or [])
    found = set()
    for statement in document.get("Statement", []):
        principal = statement.get("Principal")
        if (statement.get("Effect") == "Allow" and "sts:AssumeRole" in listed(statement.get("Action"))
                and isinstance(principal, dict)):
            found |= set(listed(principal.get("Service")))
    return found


# --- The steps ----------------------------------------------------------------------------------
def ensure_role(iam, cfg):
    """The role Redshift assumes, with the S3 read policy; created or reused (a reused role gains
    the trust this warehouse needs, keeping what it had: one made for a cluster may now serve a
    workgroup). Returns its ARN."""
    name, services = cfg.cluster.iam_role_name, trusted_services(cfg.cluster.cluster_type)
    with aws_errors(f"creating IAM role {name}"):
        try:
            trust = {"Version": "2012-10-17", "Statement": [trust_statement(services)]}
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                                  Description="Lets the Sparkify Redshift warehouse read its S3 sources")["Role"]["Arn"]
            log.info("created IAM role %s", name)
        except iam.exceptions.EntityAlreadyExistsException:
            role = iam.get_role(RoleName=name)["Role"]
            arn, trust = role["Arn"], role["AssumeRolePolicyDocument"]
            trust = json.loads(trust) if isinstance(trust, str) else trust
            missing = [s for s in services if s not in services_trusted_by(trust)]
            if missing:  # added to what it trusts (a role of a cluster may be a workgroup's too), none taken away
                trust["Statement"] = list(trust.get("Statement", [])) + [trust_statement(missing)]
                iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
                log.info("IAM role %s: trusted by %s too", name, ", ".join(missing))
            log.info("IAM role %s exists; reusing it", name)
        policy = s3_read_policy(cfg, arn.split(":")[1])  # an account's ARNs are all of its partition
        iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
    return arn


def ensure_cluster(redshift, cfg, role_arn):
    """Create the cluster (encrypted; public only if configured), or reuse it, resuming it if
    paused. Returns its description."""
    c = cfg.cluster
    params = dict(ClusterIdentifier=c.identifier, ClusterType=c.cluster_type, NodeType=c.node_type,
                  DBName=c.db_name, MasterUsername=c.db_user, MasterUserPassword=cfg.db_password,
                  Port=c.port, IamRoles=[role_arn], Encrypted=True, PubliclyAccessible=c.publicly_accessible)
    if c.cluster_type == "multi-node":
        params["NumberOfNodes"] = c.num_nodes
    if c.security_group_id:  # else "the default VPC security group is associated" (CreateCluster)
        params["VpcSecurityGroupIds"] = [c.security_group_id]
    with aws_errors(f"creating cluster {c.identifier}"):
        try:
            cluster = redshift.create_cluster(**params)["Cluster"]
            log.info("creating cluster %s: %s x %s, encrypted, %s", c.identifier,
                     c.num_nodes if c.cluster_type == "multi-node" else 1, c.node_type,
                     "publicly accessible" if c.publicly_accessible else "private")
            return cluster
        except redshift.exceptions.ClusterAlreadyExistsFault:
            cluster = describe_cluster(redshift, c.identifier)
            log.info("cluster %s exists (%s); reusing it", c.identifier, cluster["ClusterStatus"])
    resume_cluster(redshift, cluster)
    return cluster


def resume_cluster(redshift, cluster):
    """A paused cluster is resumed (the wait for 'available' follows). True if it was paused."""
    if cluster["ClusterStatus"] != "paused":
        return False
    with aws_errors(f"resuming cluster {cluster['ClusterIdentifier']}"):
        redshift.resume_cluster(ClusterIdentifier=cluster["ClusterIdentifier"])
    log.info("resuming paused cluster %s", cluster["ClusterIdentifier"])
    return True


def attach_role(redshift, cluster, role_arn):
    """COPY's IAM_ROLE must be attached to the cluster: add it if missing (to an available
    cluster: ModifyClusterIamRoles refuses any other, tests/aws_rules.py). True if it was added."""
    if role_arn in [r["IamRoleArn"] for r in cluster.get("IamRoles") or []]:
        return False
    with aws_errors(f"attaching role {role_arn} to cluster {cluster['ClusterIdentifier']}"):
        redshift.modify_cluster_iam_roles(ClusterIdentifier=cluster["ClusterIdentifier"], AddIamRoles=[role_arn])
    log.info("attached role %s to cluster %s", role_arn, cluster["ClusterIdentifier"])
    return True


def sync_port(ec2, cfg, group, cidr):
    """Allow cidr (and nothing wider) to reach the port, reusing an existing rule; close the
    rules an earlier setup made for another ALLOWED_CIDR (your address changed), or for any
    when it is empty (the warehouse is private)."""
    from botocore.exceptions import ClientError
    port = cfg.cluster.port
    with aws_errors(f"opening port {port} to {cidr}" if cidr else f"closing port {port}"):
        if cidr:
            try:
                ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[ingress_permission(port, cidr)])
                log.info("opened port %d of security group %s to %s", port, group, cidr)
            except ClientError as e:
                if error_code(e) != "InvalidPermission.Duplicate":
                    raise
                log.info("port %d of %s is already open to %s; reusing the rule", port, group, cidr)
        earlier = [c for c in our_ingress_rules(ec2, group, port)
                   if not cidr or ipaddress.ip_network(c) != ipaddress.ip_network(cidr)]
        close_rules(ec2, group, port, earlier, " (an earlier [CLUSTER] ALLOWED_CIDR)")
    return group


def setup_provisioned(cfg, clients, role_arn, cidr, poll_seconds):
    redshift, ec2 = clients["redshift"], clients["ec2"]
    ensure_cluster(redshift, cfg, role_arn)
    log.info("waiting for cluster %s to be available (usually 5 to 15 minutes)", cfg.cluster.identifier)
    with aws_errors(f"waiting for cluster {cfg.cluster.identifier}"):
        wait_for(redshift, "cluster_available", cfg.cluster.identifier, poll_seconds)
        cluster = describe_cluster(redshift, cfg.cluster.identifier)
        check_reused(f"cluster {cfg.cluster.identifier}", cfg, {
            "DWH_PORT": cluster.get("Endpoint", {}).get("Port"), "DWH_DB": cluster.get("DBName"),
            "DWH_DB_USER": cluster.get("MasterUsername")})
        if attach_role(redshift, cluster, role_arn):  # a reused cluster, now available
            wait_for(redshift, "cluster_available", cfg.cluster.identifier, poll_seconds)
        sync_port(ec2, cfg, cluster_security_group(ec2, cfg, cluster), cidr)
    return cluster["Endpoint"]["Address"], cluster["Endpoint"].get("Port", cfg.cluster.port)


def check_reused(what, cfg, has):
    """A warehouse setup finds made keeps its port, database and user (setup does not change
    them): [DWH] must give what it has, or the port opened, and dwh.cfg, would be another's."""
    c = cfg.cluster
    given = {"DWH_PORT": c.port, "DWH_DB": c.db_name, "DWH_DB_USER": c.db_user}
    differ = [f"{key} {given[key]} (it has {value})" for key, value in has.items()
              if value is not None and str(value) != str(given[key])]
    if differ:
        raise UserError(f"{what} exists with other settings than [DWH] gives: {', '.join(differ)}; set them as it "
                        "has them (setup reuses a warehouse, it does not change it); no port was opened and "
                        "dwh.cfg was not written")


# --- Redshift Serverless ------------------------------------------------------------------------
# GetNamespace gives a role as its ARN, or wrapped: "IamRole(applyStatus=in-sync, iamRoleArn=arn:...)",
# its fields in either order (tests/aws_rules.py names where this is seen)
ROLE_ARN_IN = re.compile(r"arn:[a-z-]+:iam::\d{12}:role/[\w+=,.@/-]+?(?=\)|, |$)")


def namespace_roles(namespace):
    """The ARNs of the namespace's IAM roles."""
    return [m.group() for r in namespace.get("iamRoles") or [] if (m := ROLE_ARN_IN.search(r))]


def ensure_namespace(serverless, cfg, role_arn):
    """The namespace (admin user, password, database) with the role as its default IAM role."""
    c, name = cfg.cluster, cfg.cluster.identifier
    with aws_errors(f"creating namespace {name}"):
        namespace = get_namespace(serverless, name)
        if namespace is None:
            log.info("creating Redshift Serverless namespace %s", name)
            return serverless.create_namespace(
                namespaceName=name, adminUsername=c.db_user, adminUserPassword=cfg.db_password,
                dbName=c.db_name, defaultIamRoleArn=role_arn, iamRoles=[role_arn])["namespace"]
        log.info("namespace %s exists; reusing it", name)
        check_reused(f"namespace {name}", cfg, {"DWH_DB": namespace.get("dbName"),
                                                "DWH_DB_USER": namespace.get("adminUsername")})
        roles = namespace_roles(namespace)
        if role_arn not in roles or namespace.get("defaultIamRoleArn") != role_arn:
            roles = [r for r in roles if r != role_arn] + [role_arn]
            namespace = serverless.update_namespace(namespaceName=name, defaultIamRoleArn=role_arn,
                                                    iamRoles=roles)["namespace"]
            log.info("made %s the default IAM role of namespace %s", role_arn, name)
    return namespace


def ensure_workgroup(serverless, cfg):
    """The workgroup at the configured base capacity; private unless configured otherwise."""
    c, name = cfg.cluster, cfg.cluster.identifier
    with aws_errors(f"creating workgroup {name}"):
        workgroup = get_workgroup(serverless, name)
        if workgroup is not None:
            log.info("workgroup %s exists (%s); reusing it", name, workgroup["status"])
            check_reused(f"workgroup {name}", cfg, {"DWH_PORT": workgroup.get("port")})
            return workgroup
        params = dict(workgroupName=name, namespaceName=name, baseCapacity=c.base_rpu,
                      publiclyAccessible=c.publicly_accessible, port=c.port)
        if c.security_group_id:
            params["securityGroupIds"] = [c.security_group_id]
        log.info("creating Redshift Serverless workgroup %s: base capacity %d RPU, %s", name, c.base_rpu,
                 "publicly accessible" if c.publicly_accessible else "private")
        return serverless.create_workgroup(**params)["workgroup"]


def ensure_usage_limit(serverless, cfg, workgroup_arn):
    """A cap that really caps: DWH_MAX_RPU_HOURS per day, then the workgroup is deactivated
    (the API's defaults, monthly and log-only, cap nothing)."""
    amount = cfg.cluster.max_rpu_hours
    with aws_errors("setting the workgroup's usage limit"):
        limits = serverless.list_usage_limits(resourceArn=workgroup_arn, usageType="serverless-compute")
        for limit in limits.get("usageLimits", []):
            if limit.get("period") == "daily" and limit.get("breachAction") == "deactivate":
                if limit["amount"] != amount:
                    serverless.update_usage_limit(usageLimitId=limit["usageLimitId"], amount=amount)
                log.info("usage limit: %d RPU-hours per day, then the workgroup is deactivated", amount)
                return limit["usageLimitId"]
        limit = serverless.create_usage_limit(resourceArn=workgroup_arn, usageType="serverless-compute",
                                              amount=amount, period="daily", breachAction="deactivate")
    log.info("usage limit: %d RPU-hours per day, then the workgroup is deactivated", amount)
    return limit["usageLimit"]["usageLimitId"]


def setup_serverless(cfg, clients, role_arn, cidr, poll_seconds):
    serverless, ec2 = clients["redshift-serverless"], clients["ec2"]
    name = cfg.cluster.identifier
    ensure_namespace(serverless, cfg, role_arn)
    ensure_workgroup(serverless, cfg)
    log.info("waiting for workgroup %s to be available (usually a few minutes)", name)
    with aws_errors(f"waiting for workgroup {name}"):
        workgroup = wait_for_workgroup(serverless, name, poll_seconds)
    ensure_usage_limit(serverless, cfg, workgroup["workgroupArn"])
    with aws_errors(f"finding the security group of workgroup {name}"):
        group = security_group_id(ec2, cfg, workgroup.get("securityGroupIds") or [])
    sync_port(ec2, cfg, group, cidr)
    return workgroup["endpoint"]["address"], workgroup["endpoint"].get("port", cfg.cluster.port)


# --- All of it ----------------------------------------------------------------------------------
def setup(cfg, allow_anywhere=False, poll_seconds=15):
    """Every step, in order. Returns (endpoint host, role ARN)."""
    cidr = validate(cfg, allow_anywhere)
    check_host_names_this_warehouse(cfg)
    serverless = cfg.cluster.cluster_type == "serverless"
    names = ("iam", "s3", "ec2", "redshift-serverless" if serverless else "redshift")
    clients = dict(zip(names, aws_clients(cfg, *names)))
    region, found = data_region(clients["s3"], cfg)
    role_arn = ensure_role(clients["iam"], cfg)
    host, port = (setup_serverless if serverless else setup_provisioned)(cfg, clients, role_arn, cidr, poll_seconds)
    c = cfg.cluster
    changes = {("CLUSTER", "HOST"): host, ("IAM_ROLE", "ARN"): role_arn, ("CLUSTER", "DB_NAME"): c.db_name,
               ("CLUSTER", "DB_USER"): c.db_user, ("CLUSTER", "DB_PORT"): str(port)}
    if found:
        changes[("S3", "REGION")] = region
    config.update_file(cfg.path, changes)
    return host, role_arn


def main(cfg, args):
    host, arn = setup(cfg, args.allow_anywhere, args.poll_seconds)
    kind = "workgroup" if cfg.cluster.cluster_type == "serverless" else "cluster"
    print(f"{kind} {cfg.cluster.identifier} is available at {host}:{cfg.cluster.port}\n"
          f"role {arn}\n"
          f"wrote the endpoint, role and connection settings to {cfg.path}; next: python create_tables.py")
    if not cfg.cluster.allowed_cidr:
        print("no ingress rule was made: set [CLUSTER] ALLOWED_CIDR to your address to connect from outside the VPC")


# AWS carries on with what it was asked: a Ctrl-C stops only the waiting
INTERRUPTED = ("AWS goes on creating what was asked (a warehouse is billed from its start): run setup_cluster.py "
               "again to wait for it and write dwh.cfg, or teardown_cluster.py to delete it")


def add_arguments(p):
    p.add_argument("--allow-anywhere", action="store_true",
                   help="allow [CLUSTER] ALLOWED_CIDR to be 0.0.0.0/0 or ::/0 (the whole internet)")
    p.add_argument("--poll-seconds", type=int, default=15,
                   help="seconds between status checks while waiting (default 15)")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__.split("\n\n")[0], add_arguments, uses=("sources", "aws"),
                        interrupted=INTERRUPTED))
