"""Delete the Redshift cluster, its ingress rule and its IAM role, and clear HOST and ARN
in dwh.cfg. Asks you to type the cluster's name first (--yes skips that). Without
--final-snapshot every table in the cluster is gone for good. Safe to re-run."""
import logging
import sys

import config
from cli import main_entry
from errors import UserError
from setup_cluster import (aws_clients, aws_errors, describe_cluster, error_code, ingress_permission,
                           require_cfg_file, security_group_id, wait_for)

log = logging.getLogger("sparkify")


def confirm(identifier, final_snapshot, answer=None):
    """The user types the cluster's name, or nothing happens."""
    warning = (f"a final snapshot {final_snapshot} will be kept" if final_snapshot
               else "ALL DATA IN IT WILL BE GONE (no final snapshot; use --final-snapshot NAME to keep one)")
    print(f"This deletes Redshift cluster {identifier}: {warning}.", file=sys.stderr)
    try:
        typed = answer if answer is not None else input(f"Type the cluster name ({identifier}) to go on: ")
    except EOFError:
        typed = ""
    if typed.strip() != identifier:
        raise UserError(f"not confirmed: nothing was deleted (type {identifier}, or pass --yes)")


def delete_cluster(redshift, cfg, final_snapshot, poll_seconds):
    """Delete and wait until it is gone. Returns its description (None if it was already gone)."""
    identifier = cfg.cluster.identifier
    with aws_errors(f"deleting cluster {identifier}"):
        cluster = describe_cluster(redshift, identifier)
        if cluster is None:
            log.info("cluster %s does not exist; nothing to delete", identifier)
            return None
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


def close_port(ec2, cfg, cluster):
    """Remove the ingress rule setup_cluster.py made, if it is there."""
    from botocore.exceptions import ClientError
    cidr = cfg.cluster.allowed_cidr
    if not cidr:
        return False
    with aws_errors(f"removing the ingress rule for {cidr}"):
        group = security_group_id(ec2, cfg, cluster)
        try:
            ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[ingress_permission(cfg, cidr)])
        except ClientError as e:
            if error_code(e) == "InvalidPermission.NotFound":
                return False
            raise
    log.info("closed port %d of %s to %s", cfg.cluster.port, group, cidr)
    return True


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


def teardown(cfg, final_snapshot=None, poll_seconds=15):
    require_cfg_file(cfg, "teardown_cluster.py")
    iam, redshift, ec2 = aws_clients(cfg, "iam", "redshift", "ec2")
    cluster = delete_cluster(redshift, cfg, final_snapshot, poll_seconds)
    close_port(ec2, cfg, cluster)
    delete_role(iam, cfg)
    config.update_file(cfg.path, {("CLUSTER", "HOST"): "", ("IAM_ROLE", "ARN"): ""})


def main(cfg, args):
    require_cfg_file(cfg, "teardown_cluster.py")
    if not args.yes:
        confirm(cfg.cluster.identifier, args.final_snapshot)
    teardown(cfg, args.final_snapshot, args.poll_seconds)
    print(f"cluster {cfg.cluster.identifier} and role {cfg.cluster.iam_role_name} are gone; "
          f"cleared [CLUSTER] HOST and [IAM_ROLE] ARN in {cfg.path}")


def add_arguments(p):
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--final-snapshot", metavar="NAME", help="keep a final snapshot with this name")
    p.add_argument("--poll-seconds", type=int, default=15,
                   help="seconds between status checks while waiting (default 15)")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__.split("\n")[0], add_arguments))
