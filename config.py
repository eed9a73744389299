"""Reads dwh.cfg once, validates it, and returns a small typed Config.

Where the file comes from: --config PATH, else $DWH_CONFIG, else ./dwh.cfg if it
exists, else built-in defaults (the embedded PostgreSQL and the bundled sample).
A course-style dwh.cfg works unchanged: keys are case-insensitive and values may
be wrapped in quotes. Secrets never appear in repr() or in any message.
"""
import codecs
import configparser
import difflib
import io
import ipaddress
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from errors import UserError

log = logging.getLogger("sparkify")

ROOT = Path(__file__).resolve().parent
ENGINES = ("postgres", "redshift")
REDSHIFT_HOST = re.compile(r"\.redshift(-serverless)?\.amazonaws\.com(\.cn)?$", re.I)

SECRET_KEYS = (("CLUSTER", "db_password"), ("CLUSTER", "reader_password"), ("DWH", "dwh_db_password"),
               ("AWS", "secret"))

# Every key some script reads, by section (dwh.cfg.example documents each); any other gets a
# warning naming the closest one, so a misspelled key is not silently ignored.
KNOWN_KEYS = {
    "CLUSTER": ("host", "engine", "db_name", "db_user", "db_password", "db_port", "allowed_cidr",
                "reader_user", "reader_password"),
    "IAM_ROLE": ("arn",),
    "S3": ("log_data", "log_jsonpath", "song_data", "region", "log_date_pattern", "manifest_prefix"),
    "AWS": ("key", "secret", "region", "anonymous"),
    "DWH": ("dwh_cluster_type", "dwh_num_nodes", "dwh_node_type", "dwh_base_rpu", "dwh_max_rpu_hours",
            "dwh_iam_role_name", "dwh_cluster_identifier", "dwh_db", "dwh_db_user", "dwh_db_password",
            "dwh_port", "dwh_publicly_accessible", "dwh_security_group_id"),
    "LOCAL": ("data_dir",),
    "ETL": ("max_errors", "workers"),
}
# What a script may need from the file; each checks only its own (cli.main_entry's `uses`), so a
# placeholder ARN does not stop analytics.py, nor a bad MAX_ERRORS teardown_cluster.py.
GROUPS = ("warehouse", "sources", "role", "etl", "aws")

# Shapes of the values that end up inside Redshift SQL or IAM policies.
# A bucket name, then an object key: any UTF-8 text but control characters, and a quote or
# backslash (S3 allows them; they are kept out of the SQL literals of Redshift's COPY).
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\x00-\x1f\x7f'\\]*)?$")
ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9+=,.@_\-/]{1,512}$")
REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
# A day's log files: their path under LOG_DATA starts with the day written in this strftime
# pattern (the course's log_data/2018/11/2018-11-05-events.json). Only date directives.
LOG_DATE_PATTERN = "%Y/%m/%Y-%m-%d"
DATE_DIRECTIVES = set("Ymdjy%")


@dataclass(frozen=True)
class Cluster:
    """[DWH]: what setup_cluster.py creates. cluster_type serverless: a Redshift Serverless
    namespace and workgroup, both named identifier, instead of a provisioned cluster. The
    identifier is kept in lower case, as AWS names a warehouse (CreateCluster: "Alphabetic
    characters must be lowercase"): the course's dwhCluster is the cluster dwhcluster."""
    identifier: str = "dwhcluster"
    cluster_type: str = "multi-node"  # multi-node | single-node | serverless
    num_nodes: int = 2                # the smallest multi-node cluster (see docs/redshift.md)
    node_type: str = "ra3.large"      # the smallest node type for new clusters
    base_rpu: int = 4                 # serverless: the smallest base capacity
    max_rpu_hours: int = 16           # serverless: usage limit, RPU-hours per day
    iam_role_name: str = "dwhRole"
    db_name: str = "dwh"
    db_user: str = "dwhuser"
    port: int = 5439
    publicly_accessible: bool = False
    allowed_cidr: str = ""
    security_group_id: str = ""


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    engine: str = "postgres"          # postgres | redshift: decides the SQL dialect
    embedded: bool = True             # no HOST: the embedded PostgreSQL under data_dir
    host: str = ""
    port: int = 5432
    db_name: str = "postgres"
    db_user: str = "postgres"
    db_password: str = field(default="", repr=False)
    reader_user: str = ""             # analytics.py's read-only user (else the role sparkify_reader)
    reader_password: str = field(default="", repr=False)
    data_dir: Path = ROOT / ".dwh" / "pgdata"
    song_data: str = str(ROOT / "data" / "song_data")
    log_data: str = str(ROOT / "data" / "log_data")
    log_jsonpath: str = "auto"
    log_date_pattern: str = LOG_DATE_PATTERN  # [S3] LOG_DATE_PATTERN: a day's files, by their path
    manifest_prefix: str = ""         # [S3] MANIFEST_PREFIX: where Redshift's COPY manifests are written
    iam_role_arn: str = ""
    region: str = ""                  # [AWS] REGION: where the cluster is
    data_region: str = ""             # [S3] REGION: where the data is (COPY's REGION)
    aws_key: str = field(default="", repr=False)
    aws_secret: str = field(default="", repr=False)
    anonymous: bool | None = None     # [AWS] ANONYMOUS: unsigned S3 requests; None: when no credentials
    max_errors: int = 0
    workers: int = 0                  # connections per source; 0: two per CPU core, at most 16
    cluster: Cluster = Cluster()
    problems: tuple = ()              # ((group, message)): settings found wrong, for require()

    def require(self, *groups):
        """Stop with the first problem in the settings of these groups (see GROUPS)."""
        for group, message in self.problems:
            if group in groups:
                raise UserError(message)

    @property
    def serverless(self):
        """Redshift Serverless: its endpoint says so, or [DWH] DWH_CLUSTER_TYPE does (a private
        workgroup reached through a tunnel, or by a name of one's own)."""
        return self.engine == "redshift" and ("redshift-serverless" in self.host
                                              or self.cluster.cluster_type == "serverless")

    def secrets(self):
        return tuple(s for s in (self.db_password, self.reader_password, self.aws_secret) if s)

    def describe(self, reader=False):
        """Where the warehouse is, for messages (never with the password)."""
        if self.embedded:
            return f"embedded PostgreSQL at {self.data_dir}"
        user = self.reader_user if reader and self.reader_user else self.db_user
        return f"{self.engine} at {user}@{self.host}:{self.port}/{self.db_name}"


def find_config_file(explicit=None):
    """--config, else $DWH_CONFIG, else ./dwh.cfg if present, else None (defaults)."""
    if explicit is not None:
        if not explicit.strip():
            raise UserError("--config is empty: name a configuration file")
        return Path(explicit), True
    if os.environ.get("DWH_CONFIG"):
        return Path(os.environ["DWH_CONFIG"]), True
    if Path("dwh.cfg").is_file():
        return Path("dwh.cfg"), False
    return None, False


def read_ini(path):
    """Parse an ini file into {SECTION: {key: value}} with quotes stripped; errors name file and line."""
    p = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: configuration file not found") from None
    except (PermissionError, IsADirectoryError) as e:
        raise UserError(f"{path}: cannot read configuration file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        at = e.start + 3 * raw.startswith(codecs.BOM_UTF8)  # the decoder counts from after the BOM
        line = len(re.split(rb"\r\n|\r|\n", raw[:at]))
        raise UserError(f"{path}: line {line}: not UTF-8 text ({e.reason} at byte {at})") from None
    try:  # from None: the parser's own error shows the line, which may hold a password (-v prints it)
        p.read_file(io.StringIO(text, newline=None), source=str(path))  # \r\n and a lone \r end lines too
    except configparser.Error as e:
        raise UserError(f"{path}: {_ini_error(e)}") from None
    sections = {}
    for name in p.sections():
        if name.strip().upper() in sections:
            raise UserError(f"{path}: section [{name.strip().upper()}] appears twice (in any case)")
        merged = sections[name.strip().upper()] = {}
        for key, value in p.items(name):
            if "\n" in value:  # an indented line continues the value above: a key indented by mistake
                raise UserError(f"{path}: [{name}] {key.upper()}: its value goes on to an indented line "
                                "below; remove that line's indent")
            secret = (name.strip().upper(), key.lower()) in SECRET_KEYS  # a password keeps its edge spaces
            merged[key.lower()] = unquote(split_comment(value)[0], keep_spaces=secret)
    return sections


INLINE_COMMENT = re.compile(r"(?:^|[ \t]+)[;#]")


def split_comment(value):
    """(value, inline comment): a ; or # after whitespace (or first after the =) starts a comment,
    except inside quotes."""
    body = value.lstrip(" \t")
    if body[:1] in ("'", '"'):
        end = body.find(body[0], 1)
        if end != -1:
            rest = body[end + 1:]
            if not rest.strip() or INLINE_COMMENT.match(rest):
                cut = len(value) - len(rest)
                return value[:cut], value[cut:]
    found = INLINE_COMMENT.search(value)
    return (value[:found.start()], value[found.start():]) if found else (value, "")


def _ini_error(e):
    """The error in one line, naming the line but never showing its value: a line the parser
    cannot read may hold a password (DB_PASSWORD Sup3rSecret!, its = forgotten)."""
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno}: expected a [SECTION] header before {_key_of(e.line)}"
    if isinstance(e, configparser.DuplicateOptionError):
        return f"line {e.lineno}: key {e.option!r} appears twice in [{e.section}]"
    if isinstance(e, configparser.DuplicateSectionError):
        return f"line {e.lineno}: section [{e.section}] appears twice"
    if isinstance(e, configparser.ParsingError):
        lineno, _ = e.errors[0]
        return f"line {lineno}: cannot parse it (expected KEY = value)"
    return str(e).splitlines()[0]


def _key_of(line):
    """'key HOST' for a line HOST = ..., else 'this line': a key is no secret, a value may be
    (in DB_PASSWORD Sup3r=Secret, what comes before the = is not a key)."""
    key = re.match(r"\s*([A-Za-z0-9_.-]+)\s*[=:]", line)
    return f"key {key.group(1)!r}" if key else "this line"


def unquote(value, keep_spaces=False):
    """A value without its quotes; inside them, spaces at its edges are kept if keep_spaces (a
    password's), else dropped (a HOST with a space at its end is no Redshift endpoint)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1] if keep_spaces else value[1:-1].strip()
    return value


def load_config(explicit=None, environ=None, uses=GROUPS):
    """The one reader every script uses. Returns a Config whose settings of the groups `uses`
    are valid (a problem in another group stays in Config.problems)."""
    environ = os.environ if environ is None else environ
    path, named = find_config_file(explicit)
    if path is None:
        return Config(db_password=environ.get("DWH_DB_PASSWORD", ""))
    if named and not path.exists():
        raise UserError(f"{path}: configuration file not found")
    sections = read_ini(path)
    warn_unknown_keys(sections, path)
    cfg = build_config(sections, path, environ)
    if any(sections.get(s, {}).get(k) for s, k in SECRET_KEYS):
        warn_if_readable(path)
    cfg.require(*uses)
    return cfg


def warn_unknown_keys(sections, path):
    for section, values in sections.items():
        if section not in KNOWN_KEYS:
            log.warning("warning: %s: section [%s] is not read by any script%s", path, section,
                        _did_you_mean(section, KNOWN_KEYS, "[{}]"))
            continue
        for key in values:
            if key not in KNOWN_KEYS[section]:
                log.warning("warning: %s: [%s] %s is not read by any script%s", path, section, key.upper(),
                            _did_you_mean(key, KNOWN_KEYS[section], "{}"))


def _did_you_mean(word, choices, form):
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {form.format(close[0].upper())}?" if close else ""


def build_config(sections, path, environ):
    """Every setting, typed. A wrong one is recorded as a problem of its group (and its default
    kept) rather than raised: each script requires the groups it uses (Config.require)."""
    get = _getter(sections)
    base = path.resolve().parent
    defaults = Config()
    problems = []

    def checked(groups, compute, fallback):
        try:
            return compute()
        except UserError as e:
            problems.extend((g, str(e)) for g in ((groups,) if isinstance(groups, str) else groups))
            return fallback

    def engine_of(host):
        if re.match(r"[^/]*:\d+(/|$)", host) and not _is_ip(host):  # as the console shows an endpoint
            raise UserError(f"{path}: [CLUSTER] HOST is {host!r}, an endpoint with its port: put the host name "
                            "alone in HOST, the port in DB_PORT (and a database after the / in DB_NAME)")
        engine = get("CLUSTER", "engine").lower() or ("redshift" if REDSHIFT_HOST.search(host) else "postgres")
        if engine not in ENGINES:
            raise UserError(f"{path}: [CLUSTER] ENGINE must be one of {', '.join(ENGINES)}, not {engine!r}")
        if not host and engine == "redshift":
            raise UserError(f"{path}: [CLUSTER] HOST is empty; run setup_cluster.py first, "
                            "or set HOST to your Redshift endpoint")
        return engine

    host = get("CLUSTER", "host")
    engine = checked("warehouse", lambda: engine_of(host), "postgres")

    def source(key, default):
        value = get("S3", key)
        typos = [k for k in sections.get("S3", {}) if k not in KNOWN_KEYS["S3"]
                 and difflib.get_close_matches(k, KNOWN_KEYS["S3"], n=1, cutoff=0.6) == [key]]
        if not value and typos:  # else the bundled sample would load in its place
            raise UserError(f"{path}: [S3] {key.upper()} is not set, and [S3] {typos[0].upper()} is not a key any "
                            f"script reads: did you mean {key.upper()}?")
        if value.startswith("s3://"):
            return check_s3_uri(value, f"[S3] {key.upper()}", path)
        if engine == "redshift":
            raise UserError(f"{path}: [S3] {key.upper()} must be an s3:// URI for Redshift, "
                            + (f"not {value!r}" if value else "and is empty"))
        return str((base / Path(value).expanduser()).resolve()) if value else default  # relative to the cfg file

    def role_arn():
        arn = _optional(get("IAM_ROLE", "arn"), ROLE_ARN, "[IAM_ROLE] ARN", "arn:aws:iam::<12 digits>:role/<name>", path)
        if engine == "redshift" and not arn:
            raise UserError(f"{path}: [IAM_ROLE] ARN is empty; Redshift needs it to COPY from S3 "
                            "(setup_cluster.py writes it)")
        return arn

    def port():
        return (get_int(get, "CLUSTER", "db_port", 0, 1, 65535) or get_int(get, "DWH", "dwh_port", 0, 1, 65535)
                or (5439 if engine == "redshift" else 5432))

    return Config(
        path=path,
        engine=engine,
        embedded=not host,
        host=host,
        port=checked("warehouse", port, defaults.port),
        db_name=(get("CLUSTER", "db_name") or get("DWH", "dwh_db")
                 or ("dev" if engine == "redshift" else "postgres")),
        db_user=(get("CLUSTER", "db_user") or get("DWH", "dwh_db_user")
                 or ("awsuser" if engine == "redshift" else "postgres")),
        db_password=(environ.get("DWH_DB_PASSWORD") or get("CLUSTER", "db_password")
                     or get("DWH", "dwh_db_password")),
        reader_user=get("CLUSTER", "reader_user"),
        reader_password=environ.get("DWH_READER_PASSWORD") or get("CLUSTER", "reader_password"),
        data_dir=((base / Path(get("LOCAL", "data_dir")).expanduser()).resolve() if get("LOCAL", "data_dir")
                  else defaults.data_dir),
        song_data=checked("sources", lambda: source("song_data", defaults.song_data), defaults.song_data),
        log_data=checked("sources", lambda: source("log_data", defaults.log_data), defaults.log_data),
        log_jsonpath=checked("sources", lambda: _jsonpath(get("S3", "log_jsonpath"), path), "auto"),
        log_date_pattern=checked("sources", lambda: date_pattern(get("S3", "log_date_pattern"), path),
                                 LOG_DATE_PATTERN),
        manifest_prefix=checked("sources", lambda: _manifest_prefix(get, path), ""),
        iam_role_arn=checked("role", role_arn, ""),
        region=checked(("aws", "sources"), lambda: _optional(get("AWS", "region"), REGION, "[AWS] REGION",
                                                 "a region name like us-west-2", path), ""),
        data_region=checked("sources", lambda: _optional(get("S3", "region"), REGION, "[S3] REGION",
                                                          "a region name like us-west-2", path), ""),
        aws_key=get("AWS", "key"),
        aws_secret=get("AWS", "secret"),
        anonymous=checked("sources", lambda: get_bool(get, "AWS", "anonymous", None), None),
        max_errors=checked("etl", lambda: get_int(get, "ETL", "max_errors", 0, 0, 10**9), 0),
        workers=checked("etl", lambda: get_int(get, "ETL", "workers", 0, 0, 32), 0),
        cluster=checked("aws", lambda: build_cluster(get, path), defaults.cluster),
        problems=tuple(problems),
    )


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def build_cluster(get, path):
    d = Cluster()
    return Cluster(
        identifier=(get("DWH", "dwh_cluster_identifier") or d.identifier).lower(),
        cluster_type=(get("DWH", "dwh_cluster_type") or d.cluster_type).lower(),
        num_nodes=get_int(get, "DWH", "dwh_num_nodes", d.num_nodes, 1, 128),
        node_type=(get("DWH", "dwh_node_type") or d.node_type).lower(),
        base_rpu=get_int(get, "DWH", "dwh_base_rpu", d.base_rpu, 1, 1024),
        max_rpu_hours=get_int(get, "DWH", "dwh_max_rpu_hours", d.max_rpu_hours, 1, 10**6),
        iam_role_name=get("DWH", "dwh_iam_role_name") or d.iam_role_name,
        db_name=get("DWH", "dwh_db") or get("CLUSTER", "db_name") or d.db_name,
        db_user=get("DWH", "dwh_db_user") or get("CLUSTER", "db_user") or d.db_user,
        port=get_int(get, "DWH", "dwh_port", 0, 1150, 65535) or get_int(get, "CLUSTER", "db_port", d.port, 1, 65535),
        publicly_accessible=get_bool(get, "DWH", "dwh_publicly_accessible", False),
        allowed_cidr=get("CLUSTER", "allowed_cidr"),
        security_group_id=get("DWH", "dwh_security_group_id"),
    )


def _getter(sections):
    def get(section, key):
        return sections.get(section, {}).get(key, "")
    return get


def get_int(get, section, key, default, lo, hi):
    raw = get(section, key)
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"[{section}] {key.upper()} must be a whole number, not {raw!r}")
    if not lo <= value <= hi:
        raise UserError(f"[{section}] {key.upper()} must be between {lo} and {hi}, not {value}")
    return value


def get_bool(get, section, key, default):
    raw = get(section, key).lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise UserError(f"[{section}] {key.upper()} must be true or false, not {raw!r}")


def check_s3_uri(value, what, path=None):
    if not S3_URI.match(value):
        where = f"{path}: " if path else ""
        raise UserError(f"{where}{what} is not a valid s3://bucket/prefix URI: {value!r}")
    return value


def _optional(value, shape, what, expected, path):
    if value and not shape.match(value):
        raise UserError(f"{path}: {what} must be {expected}, not {value!r}")
    return value


def _jsonpath(value, path):
    if not value or value.lower() == "auto":
        return "auto"
    return check_s3_uri(value, "[S3] LOG_JSONPATH", path)


def date_pattern(value, path=None):
    """[S3] LOG_DATE_PATTERN, checked: date directives only, and a different text for every day."""
    where = f"{path}: " if path else ""
    pattern = value or LOG_DATE_PATTERN
    unknown = sorted({"%" + d for d in re.findall(r"%(.?)", pattern.replace("%%", ""))} - {"%" + d for d in DATE_DIRECTIVES})
    if unknown:
        raise UserError(f"{where}[S3] LOG_DATE_PATTERN may hold only the date directives %Y %m %d %j %y, "
                        f"not {unknown[0]!r}: {pattern!r}")
    if re.search(r"[\\'\x00-\x1f\x7f]", pattern) or pattern.startswith("/"):
        raise UserError(f"{where}[S3] LOG_DATE_PATTERN must be a path under LOG_DATA (no leading /, quote, "
                        f"backslash or control character): {pattern!r}")
    days = [date(2018, 11, 5), date(2018, 11, 6), date(2018, 12, 5), date(2019, 11, 5)]
    if len({d.strftime(pattern) for d in days}) < len(days):
        raise UserError(f"{where}[S3] LOG_DATE_PATTERN must tell every day apart (year, month and day, "
                        f"e.g. {LOG_DATE_PATTERN}): {pattern!r}")
    return pattern


def _manifest_prefix(get, path):
    """[S3] MANIFEST_PREFIX: an s3:// folder outside the sources (nothing is written to them)."""
    value = get("S3", "manifest_prefix")
    if not value:
        return ""
    check_s3_uri(value, "[S3] MANIFEST_PREFIX", path)
    for key in ("log_data", "song_data"):
        source = get("S3", key)
        if source.startswith("s3://") and (_inside(value, source) or _inside(source, value)):
            raise UserError(f"{path}: [S3] MANIFEST_PREFIX must be outside the sources, "
                            f"not overlap [S3] {key.upper()} ({value} and {source})")
    return value


def _inside(uri, folder):
    """Whether uri is folder or under it (as S3 key prefixes go, a folder is its name and a /)."""
    uri, folder = uri.rstrip("/") + "/", folder.rstrip("/") + "/"
    return uri.startswith(folder)


def warn_if_readable(path):
    """A file holding a secret should be readable by its owner only."""
    if os.name != "posix":
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("warning: %s holds a password or secret and is readable by others; "
                    "fix with: chmod 600 %s", path, path)


def update_file(path, changes):
    """Set {(SECTION, KEY): value} in an ini file in place, keeping every other line and comment.

    A key keeps its spelling, its quoting style and any inline comment after its value; the
    file keeps its line endings and its UTF-8 byte-order mark. A missing key is added at the
    top of its section, a missing section at the end of the file.
    """
    raw = Path(path).read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    lines = re.findall(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$", raw.decode("utf-8-sig"))
    newline = "\r\n" if any(line.endswith("\r\n") for line in lines) else "\n"
    pending = {(s.upper(), k.lower()): v for (s, k), v in changes.items()}
    section, headers = None, {}
    for i, line in enumerate(lines):
        header = re.match(r"[ \t]*\[([^\]]+)\]", line)
        if header:
            section = header.group(1).strip().upper()
            headers.setdefault(section, i)
            continue
        entry = re.match(r"([ \t]*)([^=:#;\s]+)([ \t]*[=:])(.*?)(\r\n|\n|\r)?$", line, re.S)
        if entry and (section, entry.group(2).lower()) in pending:
            value = pending.pop((section, entry.group(2).lower()))
            old, comment = split_comment(entry.group(4))
            space = old[:len(old) - len(old.lstrip(" \t"))]
            old = old.strip()
            if comment and not comment[0].isspace():  # HOST=# ...: the comment was the value's start
                comment = " " + comment
            quote = old[0] if len(old) >= 2 and old[0] == old[-1] and old[0] in "'\"" else ""
            end = entry.group(5) or newline
            lines[i] = f"{entry.group(1)}{entry.group(2)}{entry.group(3)}{space}{quote}{value}{quote}{comment}{end}"
    for (section, key), value in sorted(pending.items(), key=lambda kv: -headers.get(kv[0][0], -1)):
        if section in headers:
            if not lines[headers[section]].endswith(("\n", "\r")):  # a header on the file's last line
                lines[headers[section]] += newline
            lines.insert(headers[section] + 1, f"{key.upper()}={value}{newline}")
        else:
            if lines and not lines[-1].endswith(("\n", "\r")):
                lines[-1] += newline
            lines += [f"{newline}[{section}]{newline}", f"{key.upper()}={value}{newline}"]
            headers[section] = len(lines) - 2
    Path(path).write_bytes((b"\xef\xbb\xbf" if bom else b"") + "".join(lines).encode("utf-8"))
