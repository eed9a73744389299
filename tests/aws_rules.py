"""What AWS documents, kept as test data: every rule the tests hold the code to, each with the
page it comes from. A passing emulator is not evidence; these are. When AWS changes a rule,
change it here (with its source) and let the tests say what must follow.

Sources were read through stored copies of the pages; where only an archived copy (the
awsdocs GitHub repositories, archived in 2023) was available, the commit is named.
"""
import re

# --- Provisioned clusters ------------------------------------------------------------------------
# Node types for CreateCluster. Source: Amazon Redshift API Reference, CreateCluster, NodeType
# "Valid Values: dc2.large | dc2.8xlarge | ra3.large | ra3.xlplus | ra3.4xlarge | ra3.16xlarge"
# (https://docs.aws.amazon.com/redshift/latest/APIReference/API_CreateCluster.html, as mirrored in
# https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/redshift/aws.sdk.kotlin.services.redshift.model/-create-cluster-request/node-type.html),
# less the DC2 family, which new clusters no longer get: "Invalid node type" reported on AWS re:Post,
# "Terraform redshift cluster can't create node type with dc2.large"
# (https://repost.aws/questions/QULBkUFiF4S3yFxOECb00zkQ), cited by Apache Airflow's commit
# "Update EOL AWS Redshift cluster node types (#55741)", 2025-09-16. DC1 and DS2 are not in the
# valid values at all.
NODE_TYPES_FOR_NEW_CLUSTERS = frozenset({"ra3.large", "ra3.xlplus", "ra3.4xlarge", "ra3.16xlarge"})
RETIRED_NODE_TYPES = frozenset({"dc1.large", "dc1.8xlarge", "dc2.large", "dc2.8xlarge", "ds2.xlarge", "ds2.8xlarge"})
SMALLEST_NODE_TYPE = "ra3.large"  # smallest RA3 size (large < xlplus < 4xlarge < 16xlarge); its specs
                                  # were not in any stored AWS page, so none are claimed

# ClusterType and NumberOfNodes. Source: API Reference, CreateCluster: ClusterType "Valid Values:
# multi-node | single-node", "multi-node, the NumberOfNodes parameter is required"; NumberOfNodes
# "Value must be at least 1 and no more than 100". Multi-node RA3 clusters start at 2 nodes:
# "Amazon Redshift clusters", Node type details, RA3 table "Node range with create cluster"
# (ra3.xlplus multi-node 2-16, ra3.4xlarge 2-32, ra3.16xlarge 2-128), awsdocs/amazon-redshift-
# management-guide doc_source/working-with-clusters.md @097850042d79. That table predates ra3.large:
# no stored page gave ra3.large's own node range, so the default stays at the documented
# multi-node minimum, 2 (docs/redshift.md says so).
CLUSTER_TYPES = frozenset({"multi-node", "single-node"})
MIN_MULTI_NODE_RA3 = 2

# CreateCluster MasterUserPassword. Source: API Reference, CreateCluster, MasterUserPassword
# (as mirrored in https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/redshift/aws.sdk.kotlin.services.redshift.model/-create-cluster-request/master-user-password.html):
# "Must be between 8 and 64 characters in length. Must contain at least one uppercase letter.
# Must contain at least one lowercase letter. Must contain one number. Can be any printable ASCII
# character (ASCII code 33-126) except ' (single quote), " (double quote), \, /, or @."
MASTER_PASSWORD_LENGTH = (8, 64)
MASTER_PASSWORD_CHARACTERS = frozenset(chr(c) for c in range(33, 127)) - set("'\"\\/@")

# CreateCluster's names. Source: API Reference, CreateCluster (botocore 1.44.8's model, the same text):
# ClusterIdentifier "Must contain from 1 to 63 alphanumeric characters or hyphens. Alphabetic
# characters must be lowercase. First character must be a letter. Cannot end with a hyphen or contain
# two consecutive hyphens."; DBName "Must contain 1 to 64 alphanumeric characters. Must contain only
# lowercase letters."; MasterUsername "Must be 1 - 128 alphanumeric characters or hyphens. The user
# name can't be PUBLIC. Must contain only lowercase letters, numbers, underscore, plus sign, period
# (dot), at symbol (@), or hyphen. The first character must be a letter. Must not contain a colon
# (:) or a slash (/)." The last two also "Cannot be a reserved word" (left to CreateCluster).
_LOWER, _DIGITS = "abcdefghijklmnopqrstuvwxyz", "0123456789"
CLUSTER_NAME_RULES = {
    "DWH_CLUSTER_IDENTIFIER": dict(length=(1, 63), chars=_LOWER + _DIGITS + "-", first=_LOWER, never=("--",),
                                   not_last="-"),
    "DWH_DB": dict(length=(1, 64), chars=_LOWER + _DIGITS),
    "DWH_DB_USER": dict(length=(1, 128), chars=_LOWER + _DIGITS + "_+.@-", first=_LOWER, not_equal=("public",)),
}

# DeleteCluster FinalClusterSnapshotIdentifier. Source: API Reference, DeleteCluster (botocore
# 1.44.8's model): "Must be 1 to 255 alphanumeric characters. First character must be a letter.
# Cannot end with a hyphen or contain two consecutive hyphens." (hyphens allowed, as the last implies)
FINAL_SNAPSHOT_RULE = dict(length=(1, 255), chars=_LOWER + _LOWER.upper() + _DIGITS + "-",
                           first=_LOWER + _LOWER.upper(), never=("--",), not_last="-")

# Redshift Serverless names. Namespace: Redshift Serverless API Reference, GetNamespace,
# namespaceName "Length Constraints: Minimum length of 3. Maximum length of 64. Pattern:
# ^[a-z0-9-]+$" (https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_GetNamespace.html);
# workgroup: the same constraints on workgroupName, Amazon DataZone API Reference,
# RedshiftServerlessStorage (https://docs.aws.amazon.com/datazone/latest/APIReference/API_RedshiftServerlessStorage.html).
SERVERLESS_NAME_LENGTH = (3, 64)
SERVERLESS_NAME_PATTERN = re.compile(r"^[a-z0-9-]+$")

# Endpoints, as AWS names them. A provisioned cluster's starts with its identifier: "jdbc:redshift://
# examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com:5439/dev" (Amazon Redshift
# Management Guide, "Finding your cluster connection string"). A Serverless workgroup's: "workgroup-
# name.account-number.aws-region.redshift-serverless.amazonaws.com:port/dev" (AWS re:Post, answered
# by AWS, https://repost.aws/questions/QUi3uYY3i3Qd-Rq32F2EG3-A). Identifiers are lower case in both.
REDSHIFT_ENDPOINTS = {
    ("multi-node", "examplecluster"): "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com",
    ("serverless", "workgroup-name"): "workgroup-name.123456789012.us-west-2.redshift-serverless.amazonaws.com",
}

# CreateCluster VpcSecurityGroupIds (as mirrored in
# https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/redshift/aws.sdk.kotlin.services.redshift.model/-create-cluster-request/vpc-security-group-ids.html):
# a group the cluster should have is named when it is created, or the ingress rule guards another.
VPC_SECURITY_GROUP_DEFAULT = "Default: The default VPC security group is associated with the cluster."

# CreateCluster Port. Source: API Reference, CreateCluster, Port, "Valid Values: For clusters with
# ra3 nodes - Select a port within the ranges 5431-5455 or 8191-8215. [...] For clusters with dc2
# nodes - Select a port within the range 1150-65535." (as mirrored in
# https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/redshift/aws.sdk.kotlin.services.redshift.model/-create-cluster-request/port.html).
# Every node type a new cluster may have is RA3.
RA3_PORT_RANGES = (range(5431, 5456), range(8191, 8216))

# Ingress rules. RevokeSecurityGroupIngress
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RevokeSecurityGroupIngress.html): "You
# can specify rules using either rule IDs or security group rule properties. [...] For a default VPC,
# if the values you specify do not match the existing rule's values, no error is returned" (and
# nothing is revoked; moto raises InvalidPermission.NotFound instead; what did not match is in the
# answer's UnknownIpPermissions): so rules are revoked as DescribeSecurityGroups gave them, and the
# answer is checked. IpRange
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_IpRange.html), Description: "Up to 255
# characters in length. Allowed characters are a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*";
# CidrIp: "AWS canonicalizes IPv4 and IPv6 CIDRs. For example, if you specify 100.68.0.18/18 [...]
# AWS canonicalizes the CIDR block to 100.68.0.0/18", which Describe* calls then return.
# The EC2 actions the managed policy AmazonRedshiftFullAccess allows (AWS Managed Policy Reference,
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonRedshiftFullAccess.html, v5):
# a user with it may run setup and teardown without ALLOWED_CIDR (DescribeSecurityGroupRules and
# the ingress writes are not among them).
REDSHIFT_FULL_ACCESS_EC2 = frozenset({"DescribeAccountAttributes", "DescribeAddresses", "DescribeAvailabilityZones",
                                      "DescribeSecurityGroups", "DescribeSubnets", "DescribeVpcs",
                                      "DescribeInternetGateways"})
RULE_DESCRIPTION_MAX = 255
RULE_DESCRIPTION_CHARS = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*")
CANONICAL_CIDR = ("100.68.0.18/18", "100.68.0.0/18")

# ModifyClusterIamRoles takes only an available cluster: its errors, InvalidClusterStateFault "The
# specified cluster is not in the available state." (Amazon Redshift API Reference,
# ModifyClusterIamRoles, Errors; botocore 1.44.8's model); a resumed cluster is "resuming" first.
MODIFY_IAM_ROLES_STATUS = "available"

# Pause/resume: PauseCluster/ResumeCluster take only ClusterIdentifier (botocore's service model);
# a paused cluster reports ClusterStatus "paused" ("Amazon Redshift clusters", Cluster status).
PAUSED_STATUS = "paused"

# --- Redshift Serverless -------------------------------------------------------------------------
# Base capacity. Source: Amazon Redshift Management Guide, "Compute capacity for Amazon Redshift
# Serverless" (https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-capacity.html), current
# version (docs.amazonaws.cn and the ko_kr copy of the same page): "You can adjust the Base capacity
# setting from 4 RPUs to 512 RPUs. You can set the value to 4 RPUs, or in units of 8 (8,16,24...512)
# for 8 RPUs or more"; "1024 ... in units of 32" between 512 and 1024 in five regions. The older
# English copy says 8; AWS Big Data Blog "Amazon Redshift Serverless at 4 RPUs: High-value analytics
# at low cost" announces 4 as the new minimum. Default: 128.
MIN_BASE_RPU = 4
BASE_RPU_STEPS = ((4, 4, 4), (8, 512, 8), (512, 1024, 32))  # (from, to, step)
DEFAULT_BASE_RPU = 128

# Usage limits. Source: Redshift Serverless API Reference, CreateUsageLimit
# (https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_CreateUsageLimit.html):
# period "The default is monthly", breachAction "The default is log", amount "If time-based, this
# amount is in Redshift Processing Units (RPU) consumed per hour"; enums from the service model.
USAGE_LIMIT_PERIODS = frozenset({"daily", "weekly", "monthly"})
USAGE_LIMIT_BREACH_ACTIONS = frozenset({"log", "emit-metric", "deactivate"})
USAGE_LIMIT_USAGE_TYPES = frozenset({"serverless-compute", "cross-region-datasharing"})
USAGE_LIMIT_API_DEFAULTS = {"period": "monthly", "breachAction": "log"}  # which cap nothing
WORKGROUP_STATUSES = frozenset({"CREATING", "AVAILABLE", "MODIFYING", "DELETING"})
# How GetNamespace gives a namespace's IAM roles: the API Reference types iamRoles as a list of
# strings ("A list of IAM roles to associate with the namespace"); the service gives each role
# wrapped, its fields in either order: "IamRole(applyStatus=in-sync, iamRoleArn=arn:aws:iam::...)" and
# "IamRole(iamRoleArn=arn:aws:iam::..., applyStatus=in-sync)" (AWS Solutions Library, guidance-for-
# clickstream-analytics-on-aws, pull request #507, "parse the IamRole of redshift serverless namespace
# with different outputs", 2023-11-18: AWS's own sample code; no AWS page documents the form). The bare
# ARN too, as the type says.
NAMESPACE_ROLE_FORMS = ("{arn}", "IamRole(applyStatus=in-sync, iamRoleArn={arn})",
                        "IamRole(iamRoleArn={arn}, applyStatus=in-sync)")
# CreateWorkgroup port: "Valid port ranges are 5431-5455 and 8191-8215. The default is 5439."
SERVERLESS_PORT_RANGES = (range(5431, 5456), range(8191, 8216))

# --- IAM and S3 ----------------------------------------------------------------------------------
# Who may assume the role COPY names. A provisioned cluster: Amazon Redshift, "redshift.amazonaws.com"
# (Amazon Redshift Management Guide, "Authorizing Amazon Redshift to access AWS services on your
# behalf": the role is made for the AWS service Redshift, https://docs.aws.amazon.com/redshift/latest/mgmt/authorizing-redshift-service.html;
# its trust policy as JSON in "Setting permissions for scheduled query history",
# https://docs.aws.amazon.com/redshift/latest/mgmt/query-editor-v2-schedule-query-view-history.html).
# Serverless: "make sure that it contains redshift-serverless.amazonaws.com and
# redshift.amazonaws.com as principal service names" (Management Guide, "Granting permissions to
# Amazon Redshift Serverless", https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-security-other-services.html).
ROLE_TRUSTED_SERVICES = {"provisioned": frozenset({"redshift.amazonaws.com"}),
                         "serverless": frozenset({"redshift.amazonaws.com", "redshift-serverless.amazonaws.com"})}

# ARNs. Source: AWS General Reference, "Amazon Resource Names (ARNs)"
# (https://docs.aws.amazon.com/general/latest/gr/aws-arns-and-namespaces.html): "arn:partition:service:
# region:account-id:...", partition "A partition is a group of AWS Regions. Each AWS account is scoped to
# one partition", the supported ones aws, aws-cn (China Regions), aws-us-gov (AWS GovCloud (US)).
ARN_PARTITIONS = {"us-west-2": "aws", "cn-north-1": "aws-cn", "us-gov-west-1": "aws-us-gov"}  # a region of each

# What COPY needs. Source: Amazon Redshift Database Developer Guide, "Permissions to access other
# AWS Resources", "IAM permissions for COPY, UNLOAD, and CREATE LIBRARY"
# (https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-access-permissions.html):
# "For COPY from Amazon S3, permission to LIST the Amazon S3 bucket and GET the Amazon S3 objects
# that are being loaded" and "permission to LIST and GET the JSONPaths file on Amazon S3".
COPY_S3_ACTIONS = frozenset({"s3:ListBucket", "s3:GetObject"})

# s3:prefix exists only on list requests. Sources: Service Authorization Reference, "Actions,
# resources, and condition keys for Amazon S3" (s3:prefix "Filters access by key name prefix",
# a condition key of ListBucket; https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html)
# and IAM User Guide, "IAM JSON policy elements: Condition operators": "If the key that you specify
# in a policy condition is not present in the request context, the values do not match and the
# condition is false." So a statement that grants GetObject under an s3:prefix condition never
# matches a GetObject request: ListBucket needs a statement of its own.
PREFIX_CONDITION_KEY = "s3:prefix"
PREFIX_CONDITION_ACTIONS = frozenset({"s3:ListBucket"})
PREFIX_CONDITION_OPERATOR = "StringLike"  # the IAM User Guide's own example for s3:prefix

# Literal wildcards. Source: IAM User Guide, "IAM policy elements: Variables and tags", Special
# characters (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html,
# awsdocs/iam-user-guide doc_source/reference_policies_variables.md @2e6b89d02c8e):
# "${*} - use where you need an * (asterisk) character", "${?} ... ? (question mark)", "${$} ... $".
# Variables need "Version": "2012-10-17".
POLICY_LITERALS = {"*": "${*}", "?": "${?}", "$": "${$}"}
POLICY_VERSION = "2012-10-17"

# The data's region. Sources: Developer Guide, COPY, "REGION [AS] 'aws-region': Specifies the AWS
# Region where the source data is located. REGION is required for COPY from an Amazon S3 bucket ...
# when the AWS resource that contains the data isn't in the same Region as the Amazon Redshift
# cluster"; "If the REGION parameter is specified, all resources, including a manifest file or
# multiple Amazon S3 buckets, must be located in the specified Region."
# (https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-source-s3.html).
# Amazon S3 API Reference, HeadBucket (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html):
# "regardless of the permissions on the bucket, you will receive a response header with the correct
# bucket location"; GetBucketLocation's page recommends HeadBucket for region discovery.
BUCKET_REGION_HEADER = "x-amz-bucket-region"

# --- For the SQL side (issue 10, other half): not yet used by tests here ------------------------
# Reserved words. Source: Developer Guide, "Reserved words"
# (https://docs.aws.amazon.com/redshift/latest/dg/r_pg_keywords.html; awsdocs/amazon-redshift-
# developer-guide doc_source/r_pg_keywords.md @0a7e3b2a58b4). "You can use the reserved words with
# delimited identifiers (double quotes)"; "Names and identifiers": a standard identifier must
# "Not be a reserved SQL key word".
RESERVED_WORDS = frozenset("""
AES128 AES256 ALL ALLOWOVERWRITE ANALYSE ANALYZE AND ANY ARRAY AS ASC AUTHORIZATION AZ64 BACKUP BETWEEN
BINARY BLANKSASNULL BOTH BYTEDICT BZIP2 CASE CAST CHECK COLLATE COLUMN CONSTRAINT CREATE CREDENTIALS
CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURRENT_USER_ID DEFAULT DEFERRABLE
DEFLATE DEFRAG DELTA DELTA32K DESC DISABLE DISTINCT DO ELSE EMPTYASNULL ENABLE ENCODE ENCRYPT
ENCRYPTION END EXCEPT EXPLICIT FALSE FOR FOREIGN FREEZE FROM FULL GLOBALDICT256 GLOBALDICT64K GRANT
GROUP GZIP HAVING IDENTITY IGNORE ILIKE IN INITIALLY INNER INTERSECT INTERVAL INTO IS ISNULL JOIN
LANGUAGE LEADING LEFT LIKE LIMIT LOCALTIME LOCALTIMESTAMP LUN LUNS LZO LZOP MINUS MOSTLY13 MOSTLY32
MOSTLY8 NATURAL NEW NOT NOTNULL NULL NULLS OFF OFFLINE OFFSET OID OLD ON ONLY OPEN OR ORDER OUTER
OVERLAPS PARALLEL PARTITION PERCENT PERMISSIONS PLACING PRIMARY RAW READRATIO RECOVER REFERENCES
REJECTLOG RESORT RESPECT RESTORE RIGHT SELECT SESSION_USER SIMILAR SNAPSHOT SOME SYSDATE SYSTEM TABLE
TAG TDES TEXT255 TEXT32K THEN TIMESTAMP TO TOP TRAILING TRUE TRUNCATECOLUMNS UNION UNIQUE USER USING
VERBOSE WALLET WHEN WHERE WITH WITHOUT
""".split())

# MAXERROR. Source: Developer Guide, COPY, "Data load operations", MAXERROR
# (https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-load.html; awsdocs
# doc_source/copy-parameters-data-load.md @019959fd3fae): "If the load returns the error_count
# number of errors or greater, the load fails. If the load returns fewer errors, it continues and
# returns an INFO message that states the number of rows that could not be loaded." "The MAXERROR
# default value is 0 and the limit is 100000." "The actual number of errors reported might be
# greater than the specified MAXERROR because of the parallel nature of Amazon Redshift."
# "Set this value to 0 or 1 if you want the load to fail as soon as the first error occurs."
MAXERROR_LIMIT = 100000
MAXERROR_DEFAULT = 0
MAXERROR_WORDING = "If the load returns the error_count number of errors or greater, the load fails."

# COPY JSON mapping. Source: Developer Guide, COPY, "Data format parameters", JSON 'auto' and
# JSONPaths file (https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-format.html;
# awsdocs doc_source/copy-parameters-data-format.md @03e05c6153fc): 'auto' "COPY maps the data
# elements in the JSON source data to the columns in the target table by matching object keys ...
# to the names of columns in the target table. The matching is case-sensitive. Column names in
# Amazon Redshift tables are always lowercase, so when you use the 'auto' option, matching JSON
# field names must also be lowercase." "If COPY attempts to assign NULL to a column that is defined
# as NOT NULL, the COPY command fails." JSONPaths: "The order of the JSONPath array elements must
# match the order of the columns in the target table or the column list"; "If the key name is any
# string other than "jsonpaths", the COPY command does not return an error, but it ignores
# jsonpaths_file and uses the 'auto' argument instead."
JSON_AUTO_MATCH = "case-sensitive exact key = column name (columns are lowercase)"
JSONPATHS_MATCH = "positional: n-th expression -> n-th column"
JSONPATHS_TOP_KEY = "jsonpaths"


def json_auto_maps(key, column):
    """COPY JSON 'auto': does object key `key` load into column `column`?"""
    return key == column


def base_rpu_accepted(rpu):
    return any(lo <= rpu <= hi and (rpu - lo) % step == 0 for lo, hi, step in BASE_RPU_STEPS)


# --- The permissions setup and teardown need ---------------------------------------------------
# An API call's IAM action is named service:Operation (Service Authorization Reference, each
# service's "Actions defined by" table), but for HeadBucket: "To use this operation, you must have
# permissions to perform the s3:ListBucket action" (Amazon S3 API Reference, HeadBucket).
IAM_ACTION_OF_CALL = {"s3:HeadBucket": "s3:ListBucket"}
# Not a call, a permission: "To pass a role (and its permissions) to an AWS service, a user must have
# permissions to pass the role to the service" (IAM User Guide, "Grant a user permissions to pass a
# role to an AWS service"): the role goes to CreateCluster, ModifyClusterIamRoles, CreateNamespace.
NEEDED_BUT_NOT_CALLED = frozenset({"iam:PassRole"})
