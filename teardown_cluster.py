"""Delete the Redshift warehouse (provisioned cluster, or Serverless workgroup and namespace),
the ingress rules setup made and its IAM role, and clear HOST and ARN in dwh.cfg. Asks you to type the
warehouse's name first (--yes skips that). Without --final-snapshot every table is gone for
good. --pause pauses a provisioned cluster instead (nothing is lost; storage is still billed);
setup_cluster.py resumes it. Safe to re-run."""
import logging
import re
import sys

import config
from aws_common import (aws_clients, aws_errors, check_host_names_this_warehouse, close_rules, cluster_security_group,
                        describe_cluster, error_code, get_workgroup, our_ingress_rules, require_cfg_file,
                        security_group_id, wait_for, wait_for_cluster_status, wait_for_workgroup)
from cli import main_entry
from errors import UserError

log = logging.getLogger("sparkify")


def confirm(identifier, final_snapshot, answer=None):
    """The user types the warehouse's name, or nothing happens."""
    warning = (f"a final snapshot {final_snapshot} will be kept" if final_snapshot
               else "ALL DATA IN IT WILL BE GONE (no final snapshot; use --final-snapshot NAME to keep one)")
    print(f"This deletes Redshift warehouse {identifier}: {warning}.", file=sys.stderr)
    try:
        typed = answer if answer is not None else input(f"Type the warehouse name ({identifier}) to go on: ")
    except EOFError:
        typed = ""
    if typed.strip().lower() != identifier.lower():  # AWS keeps it in lower case: dwhCluster is dwhcluster
        raise UserError(f"not confirmed: nothing was deleted (type {identifier}, or pass --yes)")


# --- Provisioned --------------------------------------------------------------------------------
def delete_cluster(redshift, cfg, final_snapshot, poll_seconds):
    """Delete and wait until it is gone. Returns its description (None if it was already gone)."""
    identifier = cfg.cluster.identifier
    with aws_errors(f"deleting cluster {identifier}"):
        cluster = describe_cluster(redshift, identifier)
        if cluster is None:
            log.info("cluster %s does not exist; nothing to delete", identifier)
            return None
        if cluster["ClusterStatus"] == "deleting" and final_snapshot:
            raise UserError(f"cluster {identifier} is already being deleted, as an earlier teardown asked: "
                            f"no final snapshot {final_snapshot} can be taken now (its own, if it asked for "
                            "one, is kept); run teardown_cluster.py without --final-snapshot to wait for it")
        if cluster["ClusterStatus"] != "deleting":
            snapshot = ({"SkipFinalClusterSnapshot": False, "FinalClusterSnapshotIdentifier": final_snapshot}
                        if final_snapshot
                        else {"SkipFinalClusterSnapshot": True})
            try:
                redshift.delete_cluster(ClusterIdentifier=identifier, **snapshot)
            except redshift.exceptions.ClusterNotFoundFault:
                return cluster
            log.info("deleting cluster %s%s", identifier,
                     f", keeping final snapshot {final_snapshot}" if final_snapshot else "")
        wait_for(redshift, "cluster_deleted", identifier, poll_seconds)
    return cluster


def pause_cluster(redshift, cfg, poll_seconds):
    """Pause the cluster and wait until it is paused. Returns the status it had."""
    identifier = cfg.cluster.identifier
    with aws_errors(f"pausing cluster {identifier}"):
        cluster = describe_cluster(redshift, identifier)
        if cluster is None:
            raise UserError(f"cluster {identifier} does not exist; nothing to pause")
        status = cluster["ClusterStatus"]
        if status == "paused":
            log.info("cluster %s is already paused", identifier)
            return status
        if status != "pausing":
            redshift.pause_cluster(ClusterIdentifier=identifier)
            log.info("pausing cluster %s", identifier)
        wait_for_cluster_status(redshift, identifier, "paused", poll_seconds)
    return status


def close_port(ec2, cfg, group):
    """Remove every ingress rule setup_cluster.py made on the port (each ALLOWED_CIDR it was
    run with), if there are any; rules it did not make stay."""
    if group is None:
        return False
    port = cfg.cluster.port
    with aws_errors(f"removing the ingress rules of port {port}"):
        return close_rules(ec2, group, port, our_ingress_rules(ec2, group, port))


def delete_role(iam, cfg):
    """Detach and delete the role's policies, then the role. False if it was already gone."""
    name = cfg.cluster.iam_role_name
    with aws_errors(f"deleting IAM role {name}"):
        try:
            for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=policy)
            for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
            iam.delete_role(RoleName=name)
        except iam.exceptions.NoSuchEntityException:
            log.info("IAM role %s does not exist; nothing to delete", name)
            return False
    log.info("deleted IAM role %s", name)
    return True


def teardown_provisioned(cfg, clients, final_snapshot, poll_seconds):
    redshift, ec2 = clients["redshift"], clients["ec2"]
    cluster = delete_cluster(redshift, cfg, final_snapshot, poll_seconds)
    if cluster is None:
        return close_port(ec2, cfg, known_group(ec2, cfg))
    with aws_errors("finding the cluster's security group"):
        group = cluster_security_group(ec2, cfg, cluster)
    close_port(ec2, cfg, group)


def known_group(ec2, cfg):
    """With the warehouse gone: the group its rules were on (configured, or the default VPC's
    default group), or None where no group is known (no default VPC), and teardown goes on."""
    try:
        with aws_errors("finding the warehouse's security group"):
            return security_group_id(ec2, cfg)
    except UserError as e:
        log.info("no ingress rule to close: %s", e)
        return None


# --- Redshift Serverless ------------------------------------------------------------------------
def delete_serverless(serverless, ec2, cfg, final_snapshot, poll_seconds):
    """Close the port, delete the workgroup, wait until it is gone, then delete the namespace
    (a namespace cannot go while its workgroup exists). Returns what was deleted."""
    from botocore.exceptions import ClientError
    name, deleted = cfg.cluster.identifier, []
    with aws_errors(f"deleting workgroup {name}"):
        workgroup = get_workgroup(serverless, name)
        if workgroup is None:
            log.info("workgroup %s does not exist; nothing to delete", name)
            close_port(ec2, cfg, known_group(ec2, cfg))  # the rules it had are on the group it would have
        else:
            close_port(ec2, cfg, security_group_id(ec2, cfg, workgroup.get("securityGroupIds") or []))
            if workgroup["status"] != "DELETING":
                serverless.delete_workgroup(workgroupName=name)
                log.info("deleting workgroup %s", name)
            wait_for_workgroup(serverless, name, poll_seconds, gone=True)
            deleted.append("workgroup")
    with aws_errors(f"deleting namespace {name}"):
        try:
            serverless.delete_namespace(namespaceName=name,
                                        **({"finalSnapshotName": final_snapshot} if final_snapshot else {}))
            log.info("deleting namespace %s%s", name,
                     f", keeping final snapshot {final_snapshot}" if final_snapshot else "")
            deleted.append("namespace")
        except ClientError as e:
            if error_code(e) != "ResourceNotFoundException":
                raise
            log.info("namespace %s does not exist; nothing to delete", name)
    return deleted


# --- All of it ----------------------------------------------------------------------------------
# DeleteCluster's FinalClusterSnapshotIdentifier: 1 to 255 letters, digits or hyphens, a letter
# first, no two hyphens together nor one at the end (its API Reference; tests/aws_rules.py)
SNAPSHOT_NAME = re.compile(r"[A-Za-z](?:-?[A-Za-z0-9])*")


def check_snapshot_name(cfg, final_snapshot):
    if (final_snapshot is not None and cfg.cluster.cluster_type != "serverless"
            and not (SNAPSHOT_NAME.fullmatch(final_snapshot) and len(final_snapshot) <= 255)):
        raise UserError(f"--final-snapshot {final_snapshot!r} is not a name Redshift takes: 1 to 255 letters, digits "
                        "or hyphens, a letter first, no two hyphens together or one at the end; nothing was deleted")


def teardown(cfg, final_snapshot=None, poll_seconds=15):
    require_cfg_file(cfg, "teardown_cluster.py")
    check_host_names_this_warehouse(cfg)
    check_snapshot_name(cfg, final_snapshot)
    serverless = cfg.cluster.cluster_type == "serverless"
    names = ("iam", "ec2", "redshift-serverless" if serverless else "redshift")
    clients = dict(zip(names, aws_clients(cfg, *names)))
    if serverless:
        delete_serverless(clients["redshift-serverless"], clients["ec2"], cfg, final_snapshot, poll_seconds)
    else:
        teardown_provisioned(cfg, clients, final_snapshot, poll_seconds)
    delete_role(clients["iam"], cfg)
    config.update_file(cfg.path, {("CLUSTER", "HOST"): "", ("IAM_ROLE", "ARN"): ""})


def pause(cfg, poll_seconds=15):
    require_cfg_file(cfg, "teardown_cluster.py")
    if cfg.cluster.cluster_type == "serverless":
        raise UserError("--pause is for provisioned clusters: Redshift Serverless bills no compute while idle")
    redshift, = aws_clients(cfg, "redshift")
    return pause_cluster(redshift, cfg, poll_seconds)


def main(cfg, args):
    require_cfg_file(cfg, "teardown_cluster.py")
    if args.pause:  # pausing loses nothing, so it asks for no confirmation
        pause(cfg, args.poll_seconds)
        print(f"cluster {cfg.cluster.identifier} is paused: compute is not billed, storage still is; "
              "python setup_cluster.py resumes it")
        return
    check_snapshot_name(cfg, args.final_snapshot)  # before asking
    if not args.yes:
        confirm(cfg.cluster.identifier, args.final_snapshot)
    teardown(cfg, args.final_snapshot, args.poll_seconds)
    print(f"warehouse {cfg.cluster.identifier} and role {cfg.cluster.iam_role_name} are gone; "
          f"cleared [CLUSTER] HOST and [IAM_ROLE] ARN in {cfg.path}")


def add_arguments(p):
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--pause", action="store_true",
                   help="pause the provisioned cluster instead of deleting it (setup_cluster.py resumes it)")
    p.add_argument("--final-snapshot", metavar="NAME", help="keep a final snapshot with this name")
    p.add_argument("--poll-seconds", type=int, default=15,
                   help="seconds between status checks while waiting (default 15)")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__.split("\n\n")[0], add_arguments, uses=("aws",),
                        interrupted="AWS goes on with a deletion already asked: run teardown_cluster.py "
                                    "again to see it through and empty HOST and ARN in dwh.cfg"))
