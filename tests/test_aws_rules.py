"""setup_cluster.py and teardown_cluster.py held to what AWS documents (tests/aws_rules.py):
node types, the data's region, the IAM policy, ingress rules, role attachment, pause/resume and
Redshift Serverless. moto where it has the service; botocore's Stubber (which checks every
parameter against the service model) where it does not."""
import dataclasses
import json
import re

import boto3
import pytest
from botocore.stub import Stubber

import aws_common
import config
import setup_cluster
import sql_queries
import teardown_cluster
import aws_rules as rules
from conftest import ROOT
from errors import UserError

ROLE_ARN = "arn:aws:iam::123456789012:role/dwhRole"
from test_cloud import course_cfg, ingress_rules, setup


def stubbed(service):
    client = boto3.client(service, region_name="us-west-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    return client, Stubber(client)


# --- Node types ------------------------------------------------------------------------------------
def test_accepted_node_types_are_the_documented_ones():
    assert set(setup_cluster.NODE_TYPES) == rules.NODE_TYPES_FOR_NEW_CLUSTERS
    assert set(setup_cluster.CLUSTER_TYPES) - {"serverless"} == rules.CLUSTER_TYPES


@pytest.mark.parametrize("node_type", sorted(rules.RETIRED_NODE_TYPES))
def test_retired_node_types_are_refused_naming_ra3_large(node_type):
    with pytest.raises(UserError) as e:
        setup_cluster.check_node_type(node_type)
    assert len(str(e.value).splitlines()) == 1 and "DWH_NODE_TYPE=ra3.large" in str(e.value)


def test_the_master_password_is_checked_as_aws_documents_it():
    """An accented letter or a tab passed the check: CreateCluster then refused the password,
    after the IAM role had been made."""
    shortest, longest = rules.MASTER_PASSWORD_LENGTH
    allowed = sorted(rules.MASTER_PASSWORD_CHARACTERS)
    for at in range(0, len(allowed), longest - 3):  # every allowed character, in passwords AWS takes
        setup_cluster.check_password(("Aa1" + "".join(allowed[at:at + longest - 3])).ljust(shortest, "x"))
    refused = ["Aa1" + "x" * (shortest - 4), "Aa1" + "x" * (longest - 2), "aa1xxxxx", "AA1XXXXX", "Aaaxxxxx"]
    refused += ["Aa1xxxx" + chr(c) for c in range(256) if chr(c) not in rules.MASTER_PASSWORD_CHARACTERS]
    refused += ["Pässw0rdX", "Passw0rd\tX", "Passw0rd€"]
    for password in refused:
        with pytest.raises(UserError, match="^the database password must be 8 to 64 characters"):
            setup_cluster.check_password(password)


def follows(rule, name):
    """Whether name is one CreateCluster takes, by the rule as AWS words it."""
    shortest, longest = rule["length"]
    return (shortest <= len(name) <= longest and set(name) <= set(rule["chars"])
            and name[:1] in rule.get("first", rule["chars"]) and not any(s in name for s in rule.get("never", ()))
            and not name.endswith(tuple(rule.get("not_last", ""))) and name not in rule.get("not_equal", ()))


def test_cluster_names_are_checked_as_aws_documents_them(tmp_path):
    """A DWH_DB of dwh_db, or an identifier ending in a hyphen, passed the checks: CreateCluster
    then refused it, after the IAM role had been made."""
    c = config.load_config(str(course_cfg(tmp_path))).cluster
    field = {"DWH_CLUSTER_IDENTIFIER": "identifier", "DWH_DB": "db_name", "DWH_DB_USER": "db_user"}
    for key, rule in rules.CLUSTER_NAME_RULES.items():
        longest = rule["length"][1]
        names = ["a" * longest, "a" * (longest + 1), "", "a--b", "ab-", "a-b", "public", "Abc"]
        names += [f"{ch}bc" for ch in map(chr, range(32, 127))] + [f"a{ch}c" for ch in map(chr, range(32, 127))]
        names += ["aé", "a\tb"]
        for name in names:
            with_name = dataclasses.replace(c, **{field[key]: name})
            if follows(rule, name):
                setup_cluster.check_cluster_names(with_name)
            else:
                with pytest.raises(UserError, match=rf"^\[DWH\] {key} .* is not a name Redshift takes"):
                    setup_cluster.check_cluster_names(with_name)


def test_a_final_snapshot_name_is_checked_as_aws_documents_it(aws, tmp_path):
    """A name DeleteCluster refuses is refused before anything is deleted (it failed after the
    confirmation, at the cluster's deletion)."""
    path = course_cfg(tmp_path)
    setup(path)
    cfg = config.load_config(str(path))
    rule = rules.FINAL_SNAPSHOT_RULE
    names = ["a" * 255, "a" * 256, "", "a--b", "ab-", "A-b1", "1ab"] + [f"a{ch}c" for ch in map(chr, range(32, 127))]
    for name in names:
        if follows(rule, name):
            teardown_cluster.check_snapshot_name(cfg, name)
        else:
            with pytest.raises(UserError, match=r"^--final-snapshot .* is not a name Redshift takes"):
                teardown_cluster.teardown(cfg, name)
    assert aws["redshift"].describe_clusters()["Clusters"][0]["ClusterStatus"] == "available"
    assert [r["RoleName"] for r in aws["iam"].list_roles()["Roles"]] == ["dwhRole"]


def test_serverless_names_are_checked_as_aws_documents_them():
    shortest, longest = rules.SERVERLESS_NAME_LENGTH
    names = ["a" * (shortest - 1), "a" * shortest, "a" * longest, "a" * (longest + 1), "dwh-cluster-2",
             "dwh_cluster", "DWH", "dwh.cluster", "dwh cluster", "déjà-vu", "dwh\n"]
    for name in names:
        documented = shortest <= len(name) <= longest and bool(rules.SERVERLESS_NAME_PATTERN.fullmatch(name))
        assert bool(setup_cluster.SERVERLESS_NAME.fullmatch(name)) == documented, name


def test_host_is_matched_to_the_warehouse_by_the_documented_endpoints(tmp_path):
    """An endpoint belongs to the identifier and type that make it, and to no other (the
    identifier as the course writes it, in any case: config keeps it in lower case, as AWS does)."""
    path = course_cfg(tmp_path)
    for (owner_type, owner), endpoint in rules.REDSHIFT_ENDPOINTS.items():
        for cluster_type, identifier in rules.REDSHIFT_ENDPOINTS:
            path.write_text(re.sub(r"DWH_CLUSTER_IDENTIFIER=\w+", f"DWH_CLUSTER_IDENTIFIER={identifier.upper()}",
                                   course_cfg(tmp_path).read_text()))
            cfg = config.load_config(str(path))
            c = dataclasses.replace(cfg, host=endpoint.upper() if owner_type == "serverless" else endpoint,
                                    cluster=dataclasses.replace(cfg.cluster, cluster_type=cluster_type))
            if (cluster_type, identifier) == (owner_type, owner):
                aws_common.check_host_names_this_warehouse(c)
            else:
                with pytest.raises(UserError, match=r"^\[CLUSTER\] HOST is "):
                    aws_common.check_host_names_this_warehouse(c)


def test_ports_and_node_counts_are_the_documented_ones():
    assert setup_cluster.PORTS == rules.RA3_PORT_RANGES == rules.SERVERLESS_PORT_RANGES
    assert setup_cluster.MIN_MULTI_NODE == rules.MIN_MULTI_NODE_RA3


def test_defaults_are_the_smallest_configuration_aws_accepts():
    d = config.Cluster()
    assert (d.node_type, d.cluster_type, d.num_nodes) == (rules.SMALLEST_NODE_TYPE, "multi-node",
                                                         rules.MIN_MULTI_NODE_RA3)
    assert d.base_rpu == rules.MIN_BASE_RPU and rules.base_rpu_accepted(d.base_rpu)


def test_the_example_configuration_names_no_retired_node_type(tmp_path):
    text = (ROOT / "dwh.cfg.example").read_text()
    assert "dc2" not in text.lower() and "'auto' also works" not in text
    path = tmp_path / "dwh.cfg"
    path.write_text(text)
    cfg = config.load_config(str(path))
    assert (cfg.cluster.node_type, cfg.cluster.num_nodes) == (rules.SMALLEST_NODE_TYPE, rules.MIN_MULTI_NODE_RA3)
    assert (cfg.cluster.base_rpu, cfg.data_region) == (rules.MIN_BASE_RPU, "us-west-2")


def test_base_capacity_check_follows_the_documented_steps():
    refused = []
    for rpu in range(0, 1100):
        try:
            setup_cluster.check_serverless(dataclasses.replace(config.Cluster(), base_rpu=rpu))
        except UserError as e:
            assert "DWH_BASE_RPU" in str(e)
            refused.append(rpu)
    assert [rpu for rpu in range(0, 1100) if not rules.base_rpu_accepted(rpu)] == refused


# --- The data's region -----------------------------------------------------------------------------
def test_the_data_region_is_found_from_the_bucket_and_written_back(aws, tmp_path):
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="eu-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    path = course_cfg(tmp_path)
    path.write_text(path.read_text().replace("udacity-dend", "eu-data"))
    setup(path)
    cfg = config.load_config(str(path))
    assert (cfg.region, cfg.data_region) == ("us-west-2", "eu-west-1")
    songs, events = sql_queries.copy_table_queries(cfg)
    assert "REGION 'eu-west-1'" in songs and "REGION 'eu-west-1'" in events


def test_a_403_still_tells_the_region(tmp_path):
    s3, stub = stubbed("s3")
    stub.add_client_error("head_bucket", "403", http_status_code=403, expected_params={"Bucket": "udacity-dend"},
                          response_meta={"HTTPHeaders": {rules.BUCKET_REGION_HEADER: "us-west-2"}})
    with stub:
        assert setup_cluster.data_region(s3, config.load_config(str(course_cfg(tmp_path)))) == ("us-west-2", True)
    stub.assert_no_pending_responses()


def test_without_an_answer_the_cluster_region_is_used_and_said(tmp_path, caplog):
    s3, stub = stubbed("s3")
    stub.add_client_error("head_bucket", "404", http_status_code=404, expected_params={"Bucket": "udacity-dend"})
    cfg = dataclasses.replace(config.load_config(str(course_cfg(tmp_path))), region="us-east-1")
    with stub:
        assert setup_cluster.data_region(s3, cfg) == ("us-east-1", False)
    assert "could not find the region of the [S3] buckets; COPY will use [AWS] REGION us-east-1" in caplog.text


def test_a_configured_data_region_is_not_asked_for(tmp_path):
    s3, stub = stubbed("s3")  # no responses: any call would fail
    path = course_cfg(tmp_path)
    path.write_text(path.read_text().replace("[S3]\n", "[S3]\nREGION=eu-west-1\n"))
    with stub:
        assert setup_cluster.data_region(s3, config.load_config(str(path))) == ("eu-west-1", False)


def test_buckets_in_two_regions_are_refused(aws, tmp_path):
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="eu-data", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    path = course_cfg(tmp_path)
    path.write_text(path.read_text().replace("s3://udacity-dend/song_data", "s3://eu-data/song_data"))
    with pytest.raises(UserError, match="different regions .*eu-data: eu-west-1.*udacity-dend: us-west-2"):
        setup(path)
    assert aws["iam"].list_roles()["Roles"] == []


def test_copy_region_falls_back_to_the_cluster_region(tmp_path):
    cfg = dataclasses.replace(config.load_config(str(course_cfg(tmp_path))), iam_role_arn=ROLE_ARN)
    assert all("REGION 'us-west-2'" in q for q in sql_queries.copy_table_queries(cfg))
    cfg = dataclasses.replace(cfg, data_region="eu-central-1")
    assert all("REGION 'eu-central-1'" in q for q in sql_queries.copy_table_queries(cfg))


# --- The IAM policy ---------------------------------------------------------------------------------
def policy_for(tmp_path, song="s3://udacity-dend/song_data", log="s3://udacity-dend/log_data",
               jsonpath="s3://udacity-dend/log_json_path.json"):
    path = course_cfg(tmp_path)
    text = (path.read_text().replace("s3://udacity-dend/song_data", song).replace("s3://udacity-dend/log_data'", log + "'")
            .replace("s3://udacity-dend/log_json_path.json", jsonpath))
    path.write_text(text)
    return setup_cluster.s3_read_policy(config.load_config(str(path)))


def test_the_policy_grants_what_copy_needs_and_only_on_the_configured_prefixes(tmp_path):
    policy = policy_for(tmp_path)
    assert policy["Version"] == rules.POLICY_VERSION
    actions = {s["Action"] for s in policy["Statement"]}
    assert actions == rules.COPY_S3_ACTIONS
    listing, reading = policy["Statement"]
    assert listing == {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::udacity-dend",
                       "Condition": {rules.PREFIX_CONDITION_OPERATOR: {rules.PREFIX_CONDITION_KEY: [
                           "log_data", "log_data/*", "log_json_path.json", "log_json_path.json/*",
                           "song_data", "song_data/*"]}}}
    assert reading == {"Effect": "Allow", "Action": "s3:GetObject", "Resource": [
        "arn:aws:s3:::udacity-dend/log_data*", "arn:aws:s3:::udacity-dend/log_json_path.json",
        "arn:aws:s3:::udacity-dend/song_data*"]}


def test_the_prefix_condition_sits_only_on_list_statements(tmp_path):
    for statement in policy_for(tmp_path)["Statement"]:
        keys = {k for cond in statement.get("Condition", {}).values() for k in cond}
        if rules.PREFIX_CONDITION_KEY in keys:
            assert {statement["Action"]} <= rules.PREFIX_CONDITION_ACTIONS


def test_wildcards_in_a_prefix_are_literal(tmp_path):
    policy = policy_for(tmp_path, song="s3://udacity-dend/so*ngs", log="s3://udacity-dend/logs/",
                        jsonpath="auto")
    listing, reading = policy["Statement"]
    star = rules.POLICY_LITERALS["*"]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["logs/", "logs/*", f"so{star}ngs", f"so{star}ngs/*"]
    assert reading["Resource"] == ["arn:aws:s3:::udacity-dend/logs/*", f"arn:aws:s3:::udacity-dend/so{star}ngs*"]
    for char, literal in rules.POLICY_LITERALS.items():  # ? and $ cannot reach it through [S3], but still
        assert setup_cluster.policy_literal(f"a{char}b") == f"a{literal}b"


def test_a_whole_bucket_is_listed_without_a_condition(tmp_path):
    listing = policy_for(tmp_path, song="s3://other-bucket", jsonpath="auto")["Statement"][0]
    assert listing == {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::other-bucket"}


def trusted_services(iam, name="dwhRole"):
    """The services the role lets assume it (an Allow of sts:AssumeRole)."""
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    found = set()
    for st in trust["Statement"]:
        if st["Effect"] == "Allow" and st["Action"] == "sts:AssumeRole":
            service = st["Principal"]["Service"]
            found |= {service} if isinstance(service, str) else set(service)
    return found


def kind_cfg(tmp_path, kind):
    tmp_path.mkdir(exist_ok=True)
    return config.load_config(str(serverless_cfg(tmp_path) if kind == "serverless" else course_cfg(tmp_path)))


@pytest.mark.parametrize("kind", sorted(rules.ROLE_TRUSTED_SERVICES))
def test_the_role_trusts_the_services_aws_names_for_the_warehouse(aws, tmp_path, kind):
    setup_cluster.ensure_role(aws["iam"], kind_cfg(tmp_path, kind))
    assert trusted_services(aws["iam"]) == rules.ROLE_TRUSTED_SERVICES[kind]


def test_a_role_made_for_a_cluster_is_trusted_by_serverless_once_reused_for_a_workgroup(aws, tmp_path):
    setup_cluster.ensure_role(aws["iam"], kind_cfg(tmp_path / "p", "provisioned"))
    setup_cluster.ensure_role(aws["iam"], kind_cfg(tmp_path / "s", "serverless"))
    assert trusted_services(aws["iam"]) == rules.ROLE_TRUSTED_SERVICES["serverless"]


def test_a_reused_role_keeps_whom_it_trusted(aws, tmp_path):
    """Reused for a cluster, a role a workgroup (and another service) also used lost their trust:
    its whole trust policy was replaced."""
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    aws["iam"].create_role(RoleName="dwhRole", AssumeRolePolicyDocument=json.dumps(trust))
    setup_cluster.ensure_role(aws["iam"], kind_cfg(tmp_path / "s", "serverless"))
    setup_cluster.ensure_role(aws["iam"], kind_cfg(tmp_path / "p", "provisioned"))
    assert trusted_services(aws["iam"]) == rules.ROLE_TRUSTED_SERVICES["serverless"] | {"ec2.amazonaws.com"}


def policy_resources(policy):
    return [r for st in policy["Statement"] for r in ([st["Resource"]] if isinstance(st["Resource"], str)
                                                      else st["Resource"])]


@pytest.mark.parametrize("partition", sorted(set(rules.ARN_PARTITIONS.values())))
def test_the_policy_names_the_buckets_in_the_accounts_partition(tmp_path, partition):
    policy = setup_cluster.s3_read_policy(kind_cfg(tmp_path, "provisioned"), partition)
    assert policy_resources(policy) and all(r.startswith(f"arn:{partition}:s3:::") for r in policy_resources(policy))


def test_the_roles_policy_is_in_the_partition_of_the_role(aws, tmp_path):
    """In China (or GovCloud) the role's policy named arn:aws:s3:::... buckets, which IAM refuses
    there (MalformedPolicyDocument), after the role was made. (moto gives a China account's ARNs
    their partition; not GovCloud's.)"""
    iam = boto3.client("iam", region_name="cn-north-1")
    arn = setup_cluster.ensure_role(iam, kind_cfg(tmp_path, "provisioned"))
    assert arn.split(":")[1] == rules.ARN_PARTITIONS["cn-north-1"]
    policy = iam.get_role_policy(RoleName="dwhRole", PolicyName=setup_cluster.POLICY_NAME)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert all(r.startswith("arn:aws-cn:s3:::") for r in policy_resources(policy))


# --- Ingress rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cidr,field,key", [("203.0.113.7/32", "IpRanges", "CidrIp"),
                                            ("2001:db8::/64", "Ipv6Ranges", "CidrIpv6")])
def test_each_address_family_goes_in_its_own_field(cidr, field, key):
    rule = aws_common.ingress_permission(5439, cidr)
    assert rule[field] == [{key: cidr, "Description": aws_common.RULE_DESCRIPTION}]
    assert set(rule) == {"IpProtocol", "FromPort", "ToPort", field}


def test_an_ipv6_cidr_is_opened_and_closed(aws, tmp_path):
    path = course_cfg(tmp_path, cidr="2001:db8::/64")
    setup(path)
    assert ingress_rules(aws) == ["2001:db8::/64"]
    teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)
    assert ingress_rules(aws) == []


def test_the_rule_description_is_one_aws_accepts():
    d = aws_common.RULE_DESCRIPTION
    assert len(d) <= rules.RULE_DESCRIPTION_MAX and rules.RULE_DESCRIPTION_CHARS.fullmatch(d)


def test_a_cidr_is_opened_in_the_canonical_form_aws_keeps():
    given, canonical = rules.CANONICAL_CIDR
    assert setup_cluster.check_cidr(given, allow_anywhere=False) == canonical


def described_group(*rules):
    """DescribeSecurityGroups' answer: one group, each rule (CIDR, port, description) its own permission."""
    return {"SecurityGroups": [{"GroupId": "sg-1", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
         "IpRanges": [{"CidrIp": cidr, **({"Description": d} if d else {})}]} for cidr, port, d in rules]}]}


def test_teardown_revokes_every_rule_setup_made_as_aws_describes_it(tmp_path):
    """Teardown revoked the configured CIDR as written (203.0.113.7/24: AWS keeps 203.0.113.0/24)
    and only that one; in a default VPC such a revoke removes nothing and raises no error."""
    cfg = config.load_config(str(course_cfg(tmp_path, cidr="203.0.113.7/24")))
    ec2, stub = stubbed("ec2")
    ours = aws_common.RULE_DESCRIPTION
    stub.add_response("describe_security_groups", described_group(
        ("198.51.100.0/24", 5439, ours), ("203.0.113.0/24", 5439, ours), ("192.0.2.1/32", 5439, "office"),
        ("192.0.2.2/32", 5439, None), ("192.0.2.3/32", 22, ours)), {"GroupIds": ["sg-1"]})
    stub.add_response("revoke_security_group_ingress", {"Return": True}, {"GroupId": "sg-1", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 5439, "ToPort": 5439, "IpRanges": [{"CidrIp": c}]}
        for c in ("198.51.100.0/24", "203.0.113.0/24")]})
    with stub:
        assert teardown_cluster.close_port(ec2, cfg, "sg-1")
    stub.assert_no_pending_responses()


def test_a_revoke_aws_did_not_match_is_an_error_not_a_closed_port(tmp_path):
    cfg = config.load_config(str(course_cfg(tmp_path, cidr="203.0.113.7/32")))
    ec2, stub = stubbed("ec2")
    stub.add_response("describe_security_groups", described_group(("203.0.113.7/32", 5439, aws_common.RULE_DESCRIPTION)),
                      {"GroupIds": ["sg-1"]})
    unknown = {"IpProtocol": "tcp", "FromPort": 5439, "ToPort": 5439, "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}
    stub.add_response("revoke_security_group_ingress", {"Return": True, "UnknownIpPermissions": [unknown]},
                      {"GroupId": "sg-1", "IpPermissions": [unknown]})
    with stub, pytest.raises(UserError, match="AWS did not close port 5439 of sg-1 to 203.0.113.7/32"):
        teardown_cluster.close_port(ec2, cfg, "sg-1")


def test_without_allowed_cidr_setup_and_teardown_need_only_what_amazonredshiftfullaccess_allows(aws, tmp_path,
                                                                                              monkeypatch):
    calls = []
    for module in (setup_cluster, teardown_cluster):
        real = module.aws_clients

        def recording(cfg, *names, real=real):
            clients = real(cfg, *names)
            for client in clients:
                client.meta.events.register("before-call.ec2", lambda model, **kw: calls.append(model.name))
            return clients
        monkeypatch.setattr(module, "aws_clients", recording)
    path = course_cfg(tmp_path)
    setup(path)
    teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)
    assert calls and set(calls) <= rules.REDSHIFT_FULL_ACCESS_EC2


def test_the_fallback_group_is_the_default_group_of_the_clusters_vpc(aws, tmp_path):
    ec2 = aws["ec2"]
    other_vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    default_vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    groups = {g["VpcId"]: g["GroupId"] for g in ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]}
    cfg = config.load_config(str(course_cfg(tmp_path)))
    for vpc in (other_vpc, default_vpc):
        assert aws_common.cluster_security_group(ec2, cfg, {"VpcId": vpc}) == groups[vpc]
    assert aws_common.cluster_security_group(ec2, cfg, {}) == groups[default_vpc]


# --- Reusing a cluster -------------------------------------------------------------------------------
def test_a_reused_cluster_gets_the_role_attached(tmp_path):
    redshift, stub = stubbed("redshift")
    cluster = {"ClusterIdentifier": "dwhcluster", "ClusterStatus": "available", "IamRoles": []}
    stub.add_response("modify_cluster_iam_roles", {"Cluster": cluster},
                      {"ClusterIdentifier": "dwhcluster", "AddIamRoles": [ROLE_ARN]})
    with stub:
        assert setup_cluster.attach_role(redshift, cluster, ROLE_ARN) is True
        attached = dict(cluster, IamRoles=[{"IamRoleArn": ROLE_ARN, "ApplyStatus": "in-sync"}])
        assert setup_cluster.attach_role(redshift, attached, ROLE_ARN) is False  # no second call
    stub.assert_no_pending_responses()


def test_the_role_is_attached_to_a_resumed_cluster_only_once_it_is_available(aws, tmp_path):
    """A paused cluster without the role (its name changed since): resumed, waited for, then
    given the role, and waited for again. Attaching it while the cluster was resuming failed
    with InvalidClusterState."""
    redshift, stub = stubbed("redshift")
    cfg = config.load_config(str(course_cfg(tmp_path)))
    group = aws["ec2"].create_security_group(GroupName="dwh", Description="cluster")["GroupId"]
    cluster = {"ClusterIdentifier": "dwhcluster", "IamRoles": [], "DBName": "dwh", "MasterUsername": "dwhuser",
               "Endpoint": {"Address": "dwhcluster.abc123xyz789.us-west-2.redshift.amazonaws.com", "Port": 5439},
               "VpcSecurityGroups": [{"VpcSecurityGroupId": group}]}
    described = lambda status, **more: {"Clusters": [dict(cluster, ClusterStatus=status, **more)]}
    asked = {"ClusterIdentifier": "dwhcluster"}
    stub.add_client_error("create_cluster", "ClusterAlreadyExists", http_status_code=400)
    stub.add_response("describe_clusters", described("paused"), asked)
    stub.add_response("resume_cluster", {"Cluster": dict(cluster, ClusterStatus="resuming")}, asked)
    stub.add_response("describe_clusters", described("available"), asked)  # the waiter
    stub.add_response("describe_clusters", described(rules.MODIFY_IAM_ROLES_STATUS), asked)
    stub.add_response("modify_cluster_iam_roles", {"Cluster": cluster}, dict(asked, AddIamRoles=[ROLE_ARN]))
    stub.add_response("describe_clusters", described("available", IamRoles=[
        {"IamRoleArn": ROLE_ARN, "ApplyStatus": "in-sync"}]), asked)  # the waiter again
    with stub:
        assert setup_cluster.setup_provisioned(cfg, {"redshift": redshift, "ec2": aws["ec2"]}, ROLE_ARN, "", 0) == (
            cluster["Endpoint"]["Address"], 5439)
    stub.assert_no_pending_responses()


def test_pause_then_setup_resumes(aws, tmp_path, caplog):
    path = course_cfg(tmp_path)
    first = setup(path)
    caplog.set_level("INFO", logger="sparkify")
    assert teardown_cluster.pause(config.load_config(str(path)), poll_seconds=0) == "available"
    cluster = aws["redshift"].describe_clusters(ClusterIdentifier="dwhcluster")["Clusters"][0]
    assert cluster["ClusterStatus"] == rules.PAUSED_STATUS
    assert setup(path) == first
    assert "resuming paused cluster dwhcluster" in caplog.text
    assert aws["redshift"].describe_clusters(ClusterIdentifier="dwhcluster")["Clusters"][0]["ClusterStatus"] == "available"


def test_pause_needs_a_cluster_and_is_not_for_serverless(aws, tmp_path):
    path = course_cfg(tmp_path)
    with pytest.raises(UserError, match="cluster dwhcluster does not exist; nothing to pause"):
        teardown_cluster.pause(config.load_config(str(path)), poll_seconds=0)
    path.write_text(path.read_text().replace("DWH_CLUSTER_TYPE=multi-node", "DWH_CLUSTER_TYPE=serverless"))
    with pytest.raises(UserError, match="Serverless bills no compute while idle"):
        teardown_cluster.pause(config.load_config(str(path)), poll_seconds=0)


# --- Redshift Serverless (not in moto: every call stubbed against the service model) ----------------
SERVERLESS_CFG = "DWH_CLUSTER_TYPE=serverless\nDWH_MAX_RPU_HOURS=24\n"
WG_ARN = "arn:aws:redshift-serverless:us-west-2:123456789012:workgroup/0000"
ENDPOINT = "dwhcluster.123456789012.us-west-2.redshift-serverless.amazonaws.com"


def serverless_cfg(tmp_path, cidr=""):
    path = course_cfg(tmp_path, cidr=cidr)
    path.write_text(path.read_text().replace("DWH_CLUSTER_TYPE=multi-node\n", SERVERLESS_CFG))
    return path


def workgroup(status, groups=("sg-0123456789abcdef0",)):  # a well-formed id no group has
    return {"workgroup": {"workgroupName": "dwhcluster", "namespaceName": "dwhcluster", "status": status,
                          "workgroupArn": WG_ARN, "securityGroupIds": list(groups), "port": 5439,
                          "endpoint": {"address": ENDPOINT, "port": 5439}}}


def not_found(stub, method, params):
    stub.add_client_error(method, "ResourceNotFoundException", http_status_code=400, expected_params=params)


def expect_serverless_setup(stub, role_arn, sg="sg-0123456789abcdef0"):
    not_found(stub, "get_namespace", {"namespaceName": "dwhcluster"})
    stub.add_response("create_namespace", {"namespace": {"namespaceName": "dwhcluster"}}, {
        "namespaceName": "dwhcluster", "adminUsername": "dwhuser", "adminUserPassword": "Passw0rdX",
        "dbName": "dwh", "defaultIamRoleArn": role_arn, "iamRoles": [role_arn]})
    not_found(stub, "get_workgroup", {"workgroupName": "dwhcluster"})
    stub.add_response("create_workgroup", workgroup("CREATING", [sg]), {
        "workgroupName": "dwhcluster", "namespaceName": "dwhcluster", "baseCapacity": rules.MIN_BASE_RPU,
        "publiclyAccessible": False, "port": 5439})
    for status in ("CREATING", "AVAILABLE", "AVAILABLE"):
        stub.add_response("get_workgroup", workgroup(status, [sg]), {"workgroupName": "dwhcluster"})
    stub.add_response("list_usage_limits", {},  # none yet: the key is absent (the model wants 1+ items)
                      {"resourceArn": WG_ARN, "usageType": "serverless-compute"})
    stub.add_response("create_usage_limit", {"usageLimit": {"usageLimitId": "u-1"}}, {
        "resourceArn": WG_ARN, "usageType": "serverless-compute", "amount": 24, "period": "daily",
        "breachAction": "deactivate"})


def with_serverless(monkeypatch, module, client):
    real = module.aws_clients
    monkeypatch.setattr(module, "aws_clients", lambda cfg, *names: [
        client if n == "redshift-serverless" else real(cfg, n)[0] for n in names])


def test_serverless_setup_call_by_call(aws, tmp_path, monkeypatch, caplog):
    serverless, stub = stubbed("redshift-serverless")
    with_serverless(monkeypatch, setup_cluster, serverless)
    sg = aws["ec2"].create_security_group(GroupName="wg", Description="workgroup")["GroupId"]
    path = serverless_cfg(tmp_path, cidr="203.0.113.7/32")
    role_arn = ROLE_ARN
    expect_serverless_setup(stub, role_arn, sg)
    caplog.set_level("INFO", logger="sparkify")
    with stub:
        host, arn = setup(path)
    stub.assert_no_pending_responses()
    assert (host, arn) == (ENDPOINT, role_arn)
    assert "workgroup dwhcluster: CREATING" in caplog.text  # progress while polling
    cfg = config.load_config(str(path))
    assert (cfg.host, cfg.iam_role_arn, cfg.db_name, cfg.db_user) == (ENDPOINT, role_arn, "dwh", "dwhuser")
    groups = aws["ec2"].describe_security_groups(GroupIds=[sg])["SecurityGroups"]
    assert [r["CidrIp"] for p in groups[0]["IpPermissions"] for r in p["IpRanges"]] == ["203.0.113.7/32"]


def test_the_usage_limit_really_caps(tmp_path):
    serverless, stub = stubbed("redshift-serverless")
    cfg = config.load_config(str(serverless_cfg(tmp_path)))
    stub.add_response("list_usage_limits", {},  # none yet: the key is absent (the model wants 1+ items)
                      {"resourceArn": WG_ARN, "usageType": "serverless-compute"})
    stub.add_response("create_usage_limit", {"usageLimit": {"usageLimitId": "u-1"}}, {
        "resourceArn": WG_ARN, "usageType": "serverless-compute", "amount": 24, "period": "daily",
        "breachAction": "deactivate"})
    with stub:
        setup_cluster.ensure_usage_limit(serverless, cfg, WG_ARN)
    stub.assert_no_pending_responses()
    assert "daily" in rules.USAGE_LIMIT_PERIODS and "deactivate" in rules.USAGE_LIMIT_BREACH_ACTIONS
    assert ("daily", "deactivate") != tuple(rules.USAGE_LIMIT_API_DEFAULTS.values())


def test_an_existing_daily_cap_is_reused_with_the_configured_amount(tmp_path):
    serverless, stub = stubbed("redshift-serverless")
    cfg = config.load_config(str(serverless_cfg(tmp_path)))
    stub.add_response("list_usage_limits", {"usageLimits": [
        {"usageLimitId": "u-9", "amount": 8, "period": "daily", "breachAction": "deactivate"}]},
        {"resourceArn": WG_ARN, "usageType": "serverless-compute"})
    stub.add_response("update_usage_limit", {"usageLimit": {"usageLimitId": "u-9"}},
                      {"usageLimitId": "u-9", "amount": 24})
    with stub:
        assert setup_cluster.ensure_usage_limit(serverless, cfg, WG_ARN) == "u-9"
    stub.assert_no_pending_responses()


def test_an_existing_namespace_gets_the_role_as_its_default(tmp_path):
    serverless, stub = stubbed("redshift-serverless")
    cfg = config.load_config(str(serverless_cfg(tmp_path)))
    old = "arn:aws:iam::123456789012:role/old"
    stub.add_response("get_namespace", {"namespace": {"namespaceName": "dwhcluster", "iamRoles": [old],
                                                      "defaultIamRoleArn": old}}, {"namespaceName": "dwhcluster"})
    stub.add_response("update_namespace", {"namespace": {"namespaceName": "dwhcluster"}}, {
        "namespaceName": "dwhcluster", "defaultIamRoleArn": ROLE_ARN, "iamRoles": [old, ROLE_ARN]})
    with stub:
        setup_cluster.ensure_namespace(serverless, cfg, ROLE_ARN)
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("form", rules.NAMESPACE_ROLE_FORMS)
def test_a_namespace_role_is_read_in_the_form_aws_gives_it(tmp_path, form):
    """Re-running setup on a namespace that has the role changes nothing; one that lacks it gets
    the ARNs back, not the wrapped text (which sent every re-run into an UpdateNamespace)."""
    serverless, stub = stubbed("redshift-serverless")
    cfg = config.load_config(str(serverless_cfg(tmp_path)))
    other = "arn:aws:iam::123456789012:role/other"
    stub.add_response("get_namespace", {"namespace": {"namespaceName": "dwhcluster", "dbName": "dwh",
                                                      "iamRoles": [form.format(arn=ROLE_ARN)],
                                                      "defaultIamRoleArn": ROLE_ARN}}, {"namespaceName": "dwhcluster"})
    stub.add_response("get_namespace", {"namespace": {"namespaceName": "dwhcluster", "dbName": "dwh",
                                                      "iamRoles": [form.format(arn=other)],
                                                      "defaultIamRoleArn": other}}, {"namespaceName": "dwhcluster"})
    stub.add_response("update_namespace", {"namespace": {"namespaceName": "dwhcluster"}}, {
        "namespaceName": "dwhcluster", "defaultIamRoleArn": ROLE_ARN, "iamRoles": [other, ROLE_ARN]})
    with stub:
        setup_cluster.ensure_namespace(serverless, cfg, ROLE_ARN)  # has it: no update
        setup_cluster.ensure_namespace(serverless, cfg, ROLE_ARN)
    stub.assert_no_pending_responses()


def test_a_reused_namespace_or_workgroup_with_other_settings_than_dwh_is_refused_before_any_change(tmp_path):
    """The namespace's database and admin user, and the workgroup's port, are its own (setup does
    not change them): a [DWH] that says otherwise wrote another database to dwh.cfg, or opened
    another port."""
    serverless, stub = stubbed("redshift-serverless")
    path = serverless_cfg(tmp_path)
    path.write_text(path.read_text().replace("DWH_PORT=5439", "DWH_PORT=5440").replace("DWH_DB=dwh", "DWH_DB=other"))
    cfg = config.load_config(str(path))
    stub.add_response("get_namespace", {"namespace": {"namespaceName": "dwhcluster", "dbName": "dwh",
                                                      "adminUsername": "dwhuser", "iamRoles": []}},
                      {"namespaceName": "dwhcluster"})
    stub.add_response("get_workgroup", workgroup("AVAILABLE"), {"workgroupName": "dwhcluster"})
    with stub:
        with pytest.raises(UserError, match=r"^namespace dwhcluster exists with other settings than \[DWH\] gives: "
                                            r"DWH_DB other \(it has dwh\); "):
            setup_cluster.ensure_namespace(serverless, cfg, ROLE_ARN)  # no update_namespace was stubbed
        with pytest.raises(UserError, match=r"^workgroup dwhcluster exists with other settings than \[DWH\] gives: "
                                            r"DWH_PORT 5440 \(it has 5439\); "):
            setup_cluster.ensure_workgroup(serverless, cfg)
    stub.assert_no_pending_responses()


def test_serverless_teardown_deletes_the_workgroup_waits_then_the_namespace(aws, tmp_path, monkeypatch):
    serverless, stub = stubbed("redshift-serverless")
    with_serverless(monkeypatch, teardown_cluster, serverless)
    path = serverless_cfg(tmp_path)
    stub.add_response("get_workgroup", workgroup("AVAILABLE"), {"workgroupName": "dwhcluster"})
    stub.add_response("delete_workgroup", workgroup("DELETING"), {"workgroupName": "dwhcluster"})
    stub.add_response("get_workgroup", workgroup("DELETING"), {"workgroupName": "dwhcluster"})
    not_found(stub, "get_workgroup", {"workgroupName": "dwhcluster"})
    stub.add_response("delete_namespace", {"namespace": {"namespaceName": "dwhcluster"}},
                      {"namespaceName": "dwhcluster", "finalSnapshotName": "dwh-final"})
    with stub:
        teardown_cluster.teardown(config.load_config(str(path)), final_snapshot="dwh-final", poll_seconds=0)
    stub.assert_no_pending_responses()
    assert "HOST=''" in path.read_text() and "ARN=''" in path.read_text()


def test_serverless_teardown_reruns_when_all_is_gone(tmp_path):
    serverless, stub = stubbed("redshift-serverless")
    ec2, ec2_stub = stubbed("ec2")
    not_found(stub, "get_workgroup", {"workgroupName": "dwhcluster"})
    not_found(stub, "delete_namespace", {"namespaceName": "dwhcluster"})
    ec2_stub.add_response("describe_vpcs", {"Vpcs": []}, {"Filters": [{"Name": "is-default", "Values": ["true"]}]})
    with stub, ec2_stub:  # no default VPC: no group is known, and teardown goes on
        assert teardown_cluster.delete_serverless(serverless, ec2, config.load_config(str(serverless_cfg(tmp_path))),
                                                  None, 0) == []
    stub.assert_no_pending_responses()
    ec2_stub.assert_no_pending_responses()


def test_serverless_teardown_closes_the_port_of_a_workgroup_already_gone(aws, tmp_path):
    """The workgroup deleted elsewhere (the console): the rule setup had opened stayed open."""
    cfg = config.load_config(str(serverless_cfg(tmp_path, cidr="10.0.0.0/8")))
    group = aws_common.security_group_id(aws["ec2"], cfg)
    setup_cluster.sync_port(aws["ec2"], cfg, group, "10.0.0.0/8")
    assert ingress_rules(aws) == ["10.0.0.0/8"]
    serverless, stub = stubbed("redshift-serverless")
    not_found(stub, "get_workgroup", {"workgroupName": "dwhcluster"})
    not_found(stub, "delete_namespace", {"namespaceName": "dwhcluster"})
    with stub:
        teardown_cluster.delete_serverless(serverless, aws["ec2"], cfg, None, 0)
    assert ingress_rules(aws) == []


# --- What the scripts call, in the documentation ----------------------------------------------
def recording(monkeypatch, calls, *stubbed_clients):
    """Every AWS call setup and teardown make, as the IAM action that allows it (at
    before-parameter-build: a Stubber answers at before-call, before any later handler)."""
    def record(model, **kw):
        action = f"{model.service_model.signing_name}:{model.name}"
        calls.add(rules.IAM_ACTION_OF_CALL.get(action, action))
    for client in stubbed_clients:
        client.meta.events.register("before-parameter-build", record)
    for module in (setup_cluster, teardown_cluster):
        real = module.aws_clients

        def with_record(cfg, *names, real=real):
            clients = real(cfg, *names)
            for client in clients:
                if client not in stubbed_clients:
                    client.meta.events.register("before-parameter-build", record)
            return clients
        monkeypatch.setattr(module, "aws_clients", with_record)


def test_the_permissions_docs_list_are_the_calls_the_scripts_make(aws, tmp_path, monkeypatch):
    """docs/redshift.md names, as IAM actions, every AWS call of setup and teardown (and no other):
    both kinds of warehouse, with a reused role, a cluster that lost its role, a policy attached."""
    calls = set()
    serverless, stub = stubbed("redshift-serverless")
    for module in (setup_cluster, teardown_cluster):
        with_serverless(monkeypatch, module, serverless)
    recording(monkeypatch, calls, serverless)
    (tmp_path / "p").mkdir()
    path = course_cfg(tmp_path / "p", cidr="203.0.113.7/32")
    _, arn = setup(path)
    teardown_cluster.pause(config.load_config(str(path)), poll_seconds=0)
    setup(path)  # resumed
    redshift, attaching = stubbed("redshift")  # a cluster without the role (moto has no ModifyClusterIamRoles)
    recording(monkeypatch, calls, redshift)
    attaching.add_response("modify_cluster_iam_roles", {"Cluster": {}}, {"ClusterIdentifier": "dwhcluster",
                                                                        "AddIamRoles": [arn]})
    with attaching:
        setup_cluster.attach_role(redshift, {"ClusterIdentifier": "dwhcluster", "IamRoles": []}, arn)
    policy = aws["iam"].create_policy(PolicyName="mine", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}))["Policy"]["Arn"]
    aws["iam"].attach_role_policy(RoleName="dwhRole", PolicyArn=policy)
    teardown_cluster.teardown(config.load_config(str(path)), final_snapshot="dwh-final", poll_seconds=0)
    aws["iam"].create_role(RoleName="dwhRole", AssumeRolePolicyDocument=json.dumps({  # a cluster's, reused
        "Version": "2012-10-17", "Statement": [setup_cluster.trust_statement(["redshift.amazonaws.com"])]}))
    (tmp_path / "s").mkdir()
    sg = aws["ec2"].create_security_group(GroupName="wg", Description="workgroup")["GroupId"]
    path = serverless_cfg(tmp_path / "s", cidr="203.0.113.7/32")
    expect_serverless_setup(stub, ROLE_ARN, sg)
    stub.add_response("get_workgroup", workgroup("AVAILABLE", [sg]), {"workgroupName": "dwhcluster"})
    stub.add_response("delete_workgroup", workgroup("DELETING", [sg]), {"workgroupName": "dwhcluster"})
    not_found(stub, "get_workgroup", {"workgroupName": "dwhcluster"})
    stub.add_response("delete_namespace", {"namespace": {"namespaceName": "dwhcluster"}},
                      {"namespaceName": "dwhcluster"})
    old = "arn:aws:iam::123456789012:role/old"  # then a namespace and a usage limit reused
    stub.add_response("get_namespace", {"namespace": {"namespaceName": "dwhcluster", "iamRoles": [old]}},
                      {"namespaceName": "dwhcluster"})
    stub.add_response("update_namespace", {"namespace": {"namespaceName": "dwhcluster"}}, {
        "namespaceName": "dwhcluster", "defaultIamRoleArn": ROLE_ARN, "iamRoles": [old, ROLE_ARN]})
    stub.add_response("list_usage_limits", {"usageLimits": [
        {"usageLimitId": "u-9", "amount": 8, "period": "daily", "breachAction": "deactivate"}]},
        {"resourceArn": WG_ARN, "usageType": "serverless-compute"})
    stub.add_response("update_usage_limit", {"usageLimit": {"usageLimitId": "u-9"}}, {"usageLimitId": "u-9", "amount": 24})
    with stub:
        setup(path)
        teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)
        setup_cluster.ensure_namespace(serverless, config.load_config(str(path)), ROLE_ARN)
        setup_cluster.ensure_usage_limit(serverless, config.load_config(str(path)), WG_ARN)
    stub.assert_no_pending_responses()
    section = (ROOT / "docs" / "redshift.md").read_text().split("## Permissions the scripts need", 1)[1]
    documented = set(re.findall(r"`([a-z0-9-]+:[A-Za-z]+)`", section.split("\n## ", 1)[0]))
    assert calls == documented - rules.NEEDED_BUT_NOT_CALLED
