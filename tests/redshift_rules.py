"""What AWS documents about Redshift SQL that the tests check our statements against.

Test data, not code: each rule is quoted or listed as the page has it, with the page named.
Where a test cannot run Redshift, it checks our SQL against these rules.
"""
import re

import aws_rules

# --- Reserved words ------------------------------------------------------------------------
# "Reserved words", https://docs.aws.amazon.com/redshift/latest/dg/r_pg_keywords.html: the list as
# archived in awsdocs (tests/aws_rules.py) and the words the current page adds to it (read 2025).
# "You can use the reserved words with delimited identifiers (double quotation marks)": we use
# none, so none may be an identifier.
RESERVED_WORDS_SOURCE = "https://docs.aws.amazon.com/redshift/latest/dg/r_pg_keywords.html"
ADDED_ON_THE_CURRENT_PAGE = frozenset({"MOSTLY16", "PIVOT", "UNNEST", "UNPIVOT"})
RESERVED_WORDS = aws_rules.RESERVED_WORDS | ADDED_ON_THE_CURRENT_PAGE
# Same page: "While START and CONNECT are not reserved words, use delimited identifiers or AS if
# you're using START and CONNECT as table aliases in your query to avoid failure at runtime."
NOT_AS_TABLE_ALIAS = frozenset({"START", "CONNECT"})

# --- COPY from JSON: how fields reach columns ------------------------------------------------
# "Data format parameters" (JSON), https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-format.html:
#   'auto': "COPY maps the data elements in the JSON source data to the columns in the target
#   table by matching object keys, or names, in the source name/value pairs to the names of
#   columns in the target table. The matching is case-sensitive. Column names in Amazon
#   Redshift tables are always lowercase, so when you use the 'auto' option, matching JSON
#   field names must also be lowercase."
#   'auto ignorecase': "COPY automatically loads fields from the JSON file while ignoring the
#   case of field names." (copy-usage_notes-copy-from-json.html)
# "COPY from JSON format", https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-json.html:
#   "Each JSONPath expression in the jsonpaths array corresponds to one column in the Amazon
#   Redshift target table. The order of the jsonpaths array elements must match the order of
#   the columns in the target table or the column list, if a column list is used."
COPY_JSON_SOURCE = "https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-format.html"


def auto_key(column, record_keys):
    """'auto': the key equal to the column name, exactly (case-sensitive), or None."""
    return column if column in record_keys else None


def auto_ignorecase_key(column, record_keys):
    """'auto ignorecase': a key equal to the column name ignoring case, or None."""
    return next((k for k in record_keys if k.lower() == column.lower()), None)


def jsonpaths_keys(columns, jsonpaths):
    """A JSONPaths file: the i-th path gives the i-th column (of the column list); {column: key}."""
    keys = [p.split("'")[1] for p in jsonpaths]
    return dict(zip(columns, keys)) if len(keys) == len(columns) else {}


# The course's JSONPaths file, s3://udacity-dend/log_json_path.json, as the Udacity Data
# Engineering course publishes it (reproduced verbatim, "Source: s3://udacity-dend/log_json_path.json",
# in the course projects' READMEs on GitHub).
COURSE_LOG_JSONPATHS = [
    "$['artist']", "$['auth']", "$['firstName']", "$['gender']", "$['itemInSession']",
    "$['lastName']", "$['length']", "$['level']", "$['location']", "$['method']", "$['page']",
    "$['registration']", "$['sessionId']", "$['song']", "$['status']", "$['ts']",
    "$['userAgent']", "$['userId']",
]

# --- MAXERROR ----------------------------------------------------------------------------------
# "Data load operations", https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-load.html
MAXERROR_SOURCE = "https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-load.html"
MAXERROR_WORDING = ("If the load returns the error_count number of errors or greater, the load fails. "
                    "If the load returns fewer errors, it continues and returns an INFO message that "
                    "states the number of rows that could not be loaded.")
MAXERROR_FIRST_ERROR = "Set this value to 0 or 1 if you want the load to fail as soon as the first error occurs."
MAXERROR_LIMIT = 100000  # "The MAXERROR default value is 0 and the limit is 100000."
MAXERROR_OVERSHOOT = ("The actual number of errors reported might be greater than the specified MAXERROR "
                      "because of the parallel nature of Amazon Redshift.")


def copy_fails(maxerror, errors):
    """The load fails when it returns maxerror errors or more (MAXERROR 0 fails at the first too)."""
    return errors >= max(maxerror, 1)


# --- Load errors by COPY ---------------------------------------------------------------------
# "PG_LAST_COPY_ID", https://docs.aws.amazon.com/redshift/latest/dg/PG_LAST_COPY_ID.html: "Returns
# the query ID of the most recently completed COPY command in the current session. [...] If
# the COPY fails because of invalid load data, the COPY ID is updated, so you can use
# PG_LAST_COPY_ID when you query STL_LOAD_ERRORS table. If the COPY transaction is rolled back,
# the COPY ID is not updated. The COPY ID is not updated if the COPY command fails because of an
# error that occurs before the load process begins". A failed COPY's id is read after the
# rollback (an aborted transaction runs nothing); if it was not updated, the id is an earlier
# COPY's (or -1) and the error is said without its records' lines (etl.copy_failure): nothing
# wrong is shown. The same id finds a COPY's rows in the SYS views: AWS's own example
# (SYS_LOAD_DETAIL, https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_DETAIL.html) reads
# "select query_id, trim(file_name) as file, record_time from sys_load_detail where query_id =
# pg_last_copy_id()".
# The columns that hold that id and what we read, per kind of warehouse:
#   STL_LOAD_ERRORS (https://docs.aws.amazon.com/redshift/latest/dg/r_STL_LOAD_ERRORS.html):
#     query, filename, line_number, colname, err_reason, raw_line; "only contains queries run
#     on main provisioned clusters [...] not [...] serverless namespaces".
#   SYS_LOAD_ERROR_DETAIL (https://docs.aws.amazon.com/redshift/latest/dg/SYS_LOAD_ERROR_DETAIL.html):
#     query_id, file_name, line_number, column_name, error_message (no raw line).
LOAD_ERROR_COLUMNS = {
    "provisioned": ("stl_load_errors", {"query", "filename", "line_number", "colname", "err_reason", "raw_line"}),
    "serverless": ("sys_load_error_detail", {"query_id", "file_name", "line_number", "column_name",
                                             "error_message"}),
}

# --- Smaller rules -----------------------------------------------------------------------------
# "Window functions", https://docs.aws.amazon.com/redshift/latest/dg/c_Window_functions.html:
# "Amazon Redshift doesn't support string literals in ORDER BY clauses" (of a window): none in
# any window of ours.
WINDOW_ORDER_BY_TAKES_NO_STRING_LITERAL = True
# "COPY", https://docs.aws.amazon.com/redshift/latest/dg/r_COPY.html, COPY syntax: the format right
# after the authorization, the parameters after it.
COPY_SYNTAX = ("COPY table-name [ column-list ] FROM data_source authorization [ [ FORMAT ] [ AS ] data_format ] "
               "[ parameter [ argument ] [, ... ] ]")
# "CREATE TABLE AS", https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_TABLE_AS.html (and CREATE
# TABLE): "BACKUP { YES | NO }: A clause that specifies whether the table should be included in
# automated and manual cluster snapshots. For tables, such as staging tables, that won't contain
# critical data, specify BACKUP NO". Note ("Restoring a table from a snapshot", mgmt guide): "No-backup
# tables aren't supported for RG or RA3 provisioned clusters and Amazon Redshift Serverless
# workgroups" (there they are backed up like any other).
# "CREATE TABLE AS", https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_TABLE_AS.html:
CTAS_SYNTAX = ("CREATE [ [ LOCAL ] { TEMPORARY | TEMP } ] TABLE table_name [ ( column_name [, ... ] ) ] "
               "[ BACKUP { YES | NO } ] [ table_attributes ] AS query")
# "LOCK", https://docs.aws.amazon.com/redshift/latest/dg/r_LOCK.html: "LOCK [ TABLE ] table_name
# [, ...]" "This command is only meaningful when it is run inside a transaction block." "The
# lock is released when the transaction that contains the LOCK command completes."
# "Table constraints", https://docs.aws.amazon.com/redshift/latest/dg/t_Defining_constraints.html:
INFORMATIONAL_KEYS = ("Uniqueness, primary key, and foreign key constraints are informational only; "
                      "they are not enforced by Amazon Redshift")
PLANNER_TRUSTS_KEYS = ("The planner leverages these key relationships, but it assumes that all keys in "
                       "Amazon Redshift tables are valid as loaded. If your application allows invalid "
                       "foreign keys or primary keys, some queries could return incorrect results. For "
                       "example, a SELECT DISTINCT query might return duplicate rows if the primary key is "
                       "not unique.")

# --- Which files a COPY reads: a key prefix, or a manifest --------------------------------------
# "COPY from Amazon S3", https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-source-s3.html
# (the awsdocs text): "The s3://copy_from_s3_objectpath parameter can reference a single file or a
# set of objects or folders that have the same key prefix. For example, the name custdata.txt is
# a key prefix that refers to a number of physical files: custdata.txt, custdata.txt.1,
# custdata.txt.2, custdata.txt.bak, and so on. [...] If a key prefix might result in COPY
# attempting to load unwanted files, use a manifest file."
COPY_FROM_S3_SOURCE = "https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-source-s3.html"


def prefix_copy_reads(prefix, keys):
    """The keys a COPY FROM 's3://bucket/prefix' reads: every key that starts with the prefix."""
    return sorted(k for k in keys if k.startswith(prefix))


# Same page, MANIFEST: "COPY loads data from the files listed in the manifest"; the manifest is
# "a text file in JSON format that lists the URL of each file that is to be loaded [...] If a file
# is listed twice, the file is loaded twice"; "If mandatory is set to true, COPY terminates if it
# doesn't find the file for that entry"; "The manifest file must not be encrypted or compressed,
# even if the ENCRYPTED, GZIP, LZOP, BZIP2, or ZSTD options are specified"; "If the REGION parameter
# is specified, all resources, including a manifest file [...], must be located in the specified
# Region." And "Using a manifest to specify data files",
# https://docs.aws.amazon.com/redshift/latest/dg/loading-data-files-using-manifest.html: "The URL in
# the manifest must specify the bucket name and full object path for the file, not just a prefix."
MANIFEST_SOURCE = "https://docs.aws.amazon.com/redshift/latest/dg/loading-data-files-using-manifest.html"


def manifest_copy_reads(manifest):
    """The objects a COPY ... MANIFEST reads: each entry's url (a full object path), as listed."""
    assert set(manifest) == {"entries"}
    for entry in manifest["entries"]:
        assert set(entry) <= {"url", "mandatory"} and entry["url"].startswith("s3://")
    return [entry["url"] for entry in manifest["entries"]]


# "File compression parameters", https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-file-compression.html:
# "GZIP: A value that specifies that the input file or files are in compressed gzip format (.gz
# files). The COPY operation reads each compressed file and uncompresses the data as it loads."
# One option for the whole COPY, not chosen per file by its name: so every file one COPY reads is
# gzipped (GZIP given) or none is.
FILE_COMPRESSION_SOURCE = "https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-file-compression.html"


def copy_reads_gzip(statement):
    """Whether a COPY reads its files as gzip: the GZIP option given (outside its quoted values),
    whatever the file names."""
    return "GZIP" in re.sub(r"'[^']*'", "''", statement).upper().split()


# --- Cursors (analytics.py streams every result through one) -----------------------------------
# Amazon Redshift Database Developer Guide, "DECLARE" (https://docs.aws.amazon.com/redshift/latest/dg/declare.html):
# `DECLARE cursor_name CURSOR FOR query`, inside a transaction block, one cursor open per session;
# "FETCH" (https://docs.aws.amazon.com/redshift/latest/dg/fetch.html): `FETCH FORWARD count FROM cursor`,
# count at most 1000 on a single-node cluster.
CURSOR = {
    "declare": r"DECLARE (\w+) CURSOR FOR (?s:.+)",
    "fetch": r"FETCH FORWARD (\d+) FROM (\w+)",
    "close": r"CLOSE (\w+)",
    "max_fetch": 1000,
}


# --- Text columns hold bytes ----------------------------------------------------------------
# "Character types", https://docs.aws.amazon.com/redshift/latest/dg/r_Character_types.html:
CHARACTER_TYPES_SOURCE = "https://docs.aws.amazon.com/redshift/latest/dg/r_Character_types.html"
VARCHAR_IN_BYTES = ("CHAR and VARCHAR data types are defined in terms of bytes, not characters. [...] "
                    "For example, a VARCHAR(12) column can contain 12 single-byte characters, 6 two-byte "
                    "characters, 4 three-byte characters, or 3 four-byte characters.")


def fits_varchar(text, n):
    """Whether Redshift's VARCHAR(n) holds text: n bytes of UTF-8 (PostgreSQL's: n characters)."""
    return len(text.encode("utf-8")) <= n

