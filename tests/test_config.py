"""Reading dwh.cfg: defaults, course files as they are, the password from the environment, errors."""
import re

import pytest

import config
from conftest import run_script
from errors import UserError

COURSE_CFG = """\
[CLUSTER]
HOST='dwhcluster.abc123xyz.us-west-2.redshift.amazonaws.com'
DB_NAME='dwh'
DB_USER='dwhuser'
DB_PASSWORD='Passw0rd'
DB_PORT=5439

[IAM_ROLE]
ARN='arn:aws:iam::123456789012:role/dwhRole'

[S3]
LOG_DATA='s3://udacity-dend/log_data'
LOG_JSONPATH='s3://udacity-dend/log_json_path.json'
SONG_DATA='s3://udacity-dend/song_data'

[AWS]
KEY=AKIAEXAMPLE
SECRET=topsecretvalue
REGION=us-west-2

[DWH]
DWH_CLUSTER_TYPE=multi-node
DWH_NUM_NODES=4
DWH_NODE_TYPE=dc2.large
DWH_IAM_ROLE_NAME=dwhRole
DWH_CLUSTER_IDENTIFIER=dwhCluster
DWH_DB=dwh
DWH_DB_USER=dwhuser
DWH_DB_PASSWORD=Passw0rd
DWH_PORT=5439
"""


S3 = "[S3]\nLOG_DATA=s3://my-bucket/l\nSONG_DATA=s3://my-bucket/s\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DWH_CONFIG", raising=False)
    monkeypatch.delenv("DWH_DB_PASSWORD", raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text, name="dwh.cfg"):
    p = tmp_path / name
    p.write_text(text)
    p.chmod(0o600)
    return p


def test_no_configuration_runs_embedded_on_the_bundled_sample():
    cfg = config.load_config()
    assert cfg.embedded and cfg.engine == "postgres" and cfg.path is None
    assert cfg.data_dir == config.ROOT / ".dwh" / "pgdata"
    assert cfg.song_data == str(config.ROOT / "data" / "song_data")
    assert cfg.log_data == str(config.ROOT / "data" / "log_data")


def test_course_file_works_unchanged(tmp_path):
    cfg = config.load_config(str(write(tmp_path, COURSE_CFG)))
    assert (cfg.engine, cfg.embedded, cfg.host, cfg.port) == (
        "redshift", False, "dwhcluster.abc123xyz.us-west-2.redshift.amazonaws.com", 5439)
    assert (cfg.db_name, cfg.db_user, cfg.db_password) == ("dwh", "dwhuser", "Passw0rd")
    assert cfg.iam_role_arn == "arn:aws:iam::123456789012:role/dwhRole"
    assert (cfg.log_data, cfg.song_data) == ("s3://udacity-dend/log_data", "s3://udacity-dend/song_data")
    assert cfg.log_jsonpath == "s3://udacity-dend/log_json_path.json"
    assert (cfg.aws_key, cfg.aws_secret, cfg.region) == ("AKIAEXAMPLE", "topsecretvalue", "us-west-2")
    assert (cfg.cluster.identifier, cfg.cluster.num_nodes, cfg.cluster.node_type) == ("dwhcluster", 4, "dc2.large")


def test_secrets_never_appear_in_repr(tmp_path):
    cfg = config.load_config(str(write(tmp_path, COURSE_CFG)))
    assert "Passw0rd" not in repr(cfg) and "topsecretvalue" not in repr(cfg)
    assert "Passw0rd" not in cfg.describe()


@pytest.mark.parametrize("text, message", [
    ("[CLUSTER]\nHOST=a\nDB_PASSWORD Sup3rSecret!\n", "line 3: cannot parse it (expected KEY = value)"),
    ("DB_PASSWORD=Sup3rSecret!\n[CLUSTER]\n", "line 1: expected a [SECTION] header before key 'DB_PASSWORD'"),
    ("Sup3rSecret!\n[CLUSTER]\n", "line 1: expected a [SECTION] header before this line"),
    ("DB_PASSWORD Sup3r=Secret!\n[CLUSTER]\n", "line 1: expected a [SECTION] header before this line"),
    ("pass: Sup3r=Secret!\n[CLUSTER]\n", "line 1: expected a [SECTION] header before key 'pass'"),
])
def test_a_line_the_parser_cannot_read_is_named_not_shown(tmp_path, text, message):
    """It may hold a password, and the configuration is not read yet: nothing to mask it with."""
    with pytest.raises(UserError) as e:
        config.load_config(str(write(tmp_path, text)))
    assert str(e.value).endswith(message) and "Sup3r" not in str(e.value)


def test_with_v_a_line_the_parser_cannot_read_is_still_not_shown(tmp_path):
    """The traceback -v prints chained the parser's own error, which quotes the line."""
    path = write(tmp_path, "[CLUSTER]\nDB_PASSWORD Sup3rSecret!\n")
    out = run_script("create_tables.py", "--config", str(path), "--dry-run", "-v")
    assert out.returncode == 1 and "Sup3r" not in out.stdout + out.stderr, out.stderr


def test_an_empty_config_option_is_an_error_not_another_file(tmp_path):
    """--config "$CFG" with CFG unset read ./dwh.cfg, another warehouse, silently."""
    write(tmp_path, "[CLUSTER]\nHOST=warehouse.example.com\n")
    with pytest.raises(UserError, match="--config is empty"):
        config.load_config("")


def test_a_byte_that_is_not_utf8_is_placed_by_line_and_byte_in_the_file(tmp_path):
    path = tmp_path / "dwh.cfg"
    raw = b"\xef\xbb\xbf[CLUSTER]\n# " + b"x" * 20000 + b"\n# caf\xe9\n"  # the decoder said byte 3634 (of a chunk)
    path.write_bytes(raw)
    at = raw.index(b"\xe9")
    with pytest.raises(UserError, match=rf"line 3: not UTF-8 text \(invalid continuation byte at byte {at}\)"):
        config.load_config(str(path))


def test_spaces_inside_quotes_are_kept_in_a_password_only(tmp_path):
    """A password may start or end with a space; a HOST that ends with one is no Redshift endpoint."""
    path = write(tmp_path, "[CLUSTER]\nDB_PASSWORD=' pa%ss wo\"rd '\nHOST='dwh.abc.us-west-2.redshift.amazonaws.com '\n")
    cfg = config.load_config(str(path), uses=())
    assert (cfg.db_password, cfg.engine) == (' pa%ss wo"rd ', "redshift")


def test_a_file_with_old_mac_line_ends_is_read_line_by_line(tmp_path):
    """A lone \\r ends a line (as update_file has it): read as one line, the file meant the embedded server."""
    path = tmp_path / "dwh.cfg"
    path.write_bytes(b"[CLUSTER]\rHOST=db.example.com\rDB_PORT=6543\r")
    cfg = config.load_config(str(path), uses=("warehouse",))
    assert (cfg.host, cfg.port) == ("db.example.com", 6543)


def test_a_password_that_starts_with_a_comment_sign_is_kept_when_quoted(tmp_path):
    """As dwh.cfg.example says: unquoted, a value that starts with # or ; is a comment."""
    cfg = config.load_config(str(write(tmp_path, '[CLUSTER]\nHOST=db.example.org\nDB_PASSWORD="#abc;d" ; mine\n')))
    assert cfg.db_password == "#abc;d"
    cfg = config.load_config(str(write(tmp_path, "[CLUSTER]\nHOST=db.example.org\nDB_PASSWORD=#abc\n")))
    assert cfg.db_password == ""


def test_keys_are_case_insensitive_and_quotes_optional(tmp_path):
    cfg = config.load_config(str(write(tmp_path, '[cluster]\nhost = "db.example.org"\nDb_Port = "6543"\n'
                                                 "[etl]\nmax_errors='5'\n")))
    assert (cfg.host, cfg.port, cfg.engine, cfg.max_errors) == ("db.example.org", 6543, "postgres", 5)


def test_engine_can_be_stated(tmp_path):
    cfg = config.load_config(str(write(tmp_path, "[CLUSTER]\nHOST=10.0.0.5\nENGINE=redshift\n"
                                                 "[IAM_ROLE]\nARN=arn:aws:iam::123456789012:role/r\n"
                                                 "[S3]\nLOG_DATA=s3://my-bucket/l\nSONG_DATA=s3://my-bucket/s\n")))
    assert cfg.engine == "redshift" and cfg.port == 5439


def test_password_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DWH_DB_PASSWORD", "from-env")
    cfg = config.load_config(str(write(tmp_path, "[CLUSTER]\nHOST=db.example.org\n")))
    assert cfg.db_password == "from-env"


def test_dwh_config_environment_variable_and_cwd_file(tmp_path, monkeypatch):
    write(tmp_path, "[CLUSTER]\nHOST=from-cwd.example.org\n")
    assert config.load_config().host == "from-cwd.example.org"
    other = write(tmp_path, "[CLUSTER]\nHOST=from-env.example.org\n", name="other.cfg")
    monkeypatch.setenv("DWH_CONFIG", str(other))
    assert config.load_config().host == "from-env.example.org"
    assert config.load_config(str(tmp_path / "dwh.cfg")).host == "from-cwd.example.org"


def test_relative_local_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    p = write(tmp_path / "sub", "[S3]\nLOG_DATA=mylogs\n[LOCAL]\nDATA_DIR=db\n")
    monkeypatch.chdir("/")
    cfg = config.load_config(str(p))
    assert cfg.log_data == str(tmp_path / "sub" / "mylogs")
    assert cfg.data_dir == tmp_path / "sub" / "db"


@pytest.mark.parametrize("text,message", [
    (None, r"missing\.cfg: configuration file not found"),
    ("HOST=x\n", r"line 1: expected a \[SECTION\] header"),
    ("[CLUSTER]\nHOST=a\nHOST=b\n", r"line 3: key 'host' appears twice in \[CLUSTER\]"),
    ("[CLUSTER]\nDB_PORT=abc\n", r"\[CLUSTER\] DB_PORT must be a whole number, not 'abc'"),
    ("[CLUSTER]\nENGINE=mysql\n", r"\[CLUSTER\] ENGINE must be one of postgres, redshift"),
    ("[CLUSTER]\nENGINE=redshift\n", r"\[CLUSTER\] HOST is empty; run setup_cluster.py first"),
    ("[CLUSTER]\nHOST=x.redshift.amazonaws.com\n[IAM_ROLE]\nARN=arn:aws:iam::1:role/r\n" + S3,
     r"\[IAM_ROLE\] ARN must be arn:aws:iam::<12 digits>:role/<name>"),
    ("[CLUSTER]\nHOST=x.redshift.amazonaws.com\n[S3]\nSONG_DATA=s3://my-bucket/s\nLOG_DATA=/local/logs\n",
     r"\[S3\] LOG_DATA must be an s3:// URI for Redshift"),
    ("[S3]\nLOG_DATA=s3://bucket/x'; DROP TABLE users; --\n", r"\[S3\] LOG_DATA is not a valid s3://"),
    ("[AWS]\nREGION=us west\n", r"\[AWS\] REGION must be a region name"),
    ("[ETL]\nMAX_ERRORS=-1\n", r"\[ETL\] MAX_ERRORS must be between 0 and"),
    # each source opens WORKERS connections at once: 2 x 64 and the transform's passed a server's 100
    ("[ETL]\nWORKERS=33\n", r"\[ETL\] WORKERS must be between 0 and 32, not 33"),
    # merged silently, the later one winning (and setup's write-back going to the first)
    ("[cluster]\nHOST=''\n[CLUSTER]\nDB_USER=me\n", r"section \[CLUSTER\] appears twice \(in any case\)"),
    # an indented key joined the value above: HOST 'DB_NAME=dwh'
    ("[CLUSTER]\nHOST=\n  DB_NAME=dwh\n", r"\[CLUSTER\] HOST: its value goes on to an indented line below"),
    # pasted from the console: taken for a PostgreSQL host named '...:5439/dev'
    ("[CLUSTER]\nHOST=dwh.abc123xyz.us-west-2.redshift.amazonaws.com:5439/dev\n",
     r"HOST is 'dwh.abc.*:5439/dev', an endpoint with its port: put the host name alone in HOST"),
])
def test_bad_configuration_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "missing.cfg" if text is None else write(tmp_path, text)
    with pytest.raises(UserError, match=message):
        config.load_config(str(path))


# --- Writing back (setup_cluster.py) and reading again -----------------------------------------
COURSE_STYLE = ('\ufeff[CLUSTER]\r\nHOST=\r\nDB_NAME="dwh"  ; the database\r\nDB_PASSWORD=\'Passw0rdX\'\r\n\r\n'
                '[IAM_ROLE]\r\nARN= # written by setup_cluster.py\r\n\r\n[S3]\r\n'
                'LOG_DATA=\'s3://udacity-dend/log_data\'\r\nSONG_DATA=\'s3://udacity-dend/song_data\'\r\n')
HOST = "dwhcluster.abc123xyz.us-west-2.redshift.amazonaws.com"
ARN = "arn:aws:iam::123456789012:role/dwhRole"


def test_an_empty_value_is_filled_on_its_own_line(tmp_path):
    path = tmp_path / "dwh.cfg"
    path.write_text("[CLUSTER]\nHOST=\nDB_NAME=dwh\n[IAM_ROLE]\nARN=\n")  # the value used to land on the next line
    config.update_file(path, {("CLUSTER", "HOST"): HOST, ("IAM_ROLE", "ARN"): ARN})
    assert path.read_text() == f"[CLUSTER]\nHOST={HOST}\nDB_NAME=dwh\n[IAM_ROLE]\nARN={ARN}\n"


def test_empty_values_are_filled_on_their_own_line_keeping_comments_crlf_and_bom(tmp_path):
    path = tmp_path / "dwh.cfg"
    path.write_bytes(COURSE_STYLE.encode("utf-8"))
    config.update_file(path, {("CLUSTER", "HOST"): HOST, ("IAM_ROLE", "ARN"): ARN, ("CLUSTER", "DB_NAME"): "dwh"})
    assert path.read_bytes().decode("utf-8") == (
        COURSE_STYLE.replace("HOST=\r\n", f"HOST={HOST}\r\n").replace("ARN= #", f"ARN={ARN} #"))
    cfg = config.load_config(str(path))
    assert (cfg.host, cfg.iam_role_arn, cfg.db_name, cfg.engine) == (HOST, ARN, "dwh", "redshift")


def test_quotes_key_spelling_and_inline_comments_are_kept(tmp_path):
    path = tmp_path / "dwh.cfg"
    path.write_text("[cluster]\nHost = '' ; endpoint\n[iam_role]\narn=\"\"\n")
    config.update_file(path, {("CLUSTER", "HOST"): HOST, ("IAM_ROLE", "ARN"): ARN})
    assert path.read_text() == f"[cluster]\nHost = '{HOST}' ; endpoint\n[iam_role]\narn=\"{ARN}\"\n"
    config.update_file(path, {("CLUSTER", "HOST"): "", ("IAM_ROLE", "ARN"): ""})  # teardown clears them
    assert path.read_text() == "[cluster]\nHost = '' ; endpoint\n[iam_role]\narn=\"\"\n"


@pytest.mark.parametrize("line,value", [
    ("HOST=db.example.org ; the server", "db.example.org"),
    ("HOST=db.example.org\t# the server", "db.example.org"),
    ("HOST='db.example.org' ; quoted", "db.example.org"),
    ("HOST=db.example.org;no-space", "db.example.org;no-space"),  # a comment needs whitespace before it
])
def test_inline_comments_are_not_part_of_the_value(tmp_path, line, value):
    assert config.load_config(str(write(tmp_path, f"[CLUSTER]\n{line}\n"))).host == value


def test_quoted_values_keep_their_comment_characters(tmp_path):
    cfg = config.load_config(str(write(tmp_path, "[CLUSTER]\nHOST=h.example.org\nDB_PASSWORD='Pa ss #1;x'\n")))
    assert cfg.db_password == "Pa ss #1;x"


def test_connection_settings_come_from_cluster_else_dwh(tmp_path):
    base = f"[CLUSTER]\nHOST={HOST}\n[IAM_ROLE]\nARN={ARN}\n" + S3
    only_dwh = config.load_config(str(write(tmp_path, base + "[DWH]\nDWH_DB=dwh\nDWH_DB_USER=dwhuser\nDWH_PORT=5440\n")))
    assert (only_dwh.db_name, only_dwh.db_user, only_dwh.port) == ("dwh", "dwhuser", 5440)
    both = config.load_config(str(write(tmp_path, base.replace("[IAM_ROLE]", "DB_NAME=a\nDB_USER=b\nDB_PORT=5441\n[IAM_ROLE]")
                                         + "[DWH]\nDWH_DB=dwh\nDWH_DB_USER=dwhuser\nDWH_PORT=5440\n")))
    assert (both.db_name, both.db_user, both.port) == ("a", "b", 5441)


def test_a_misspelled_key_or_section_warns_with_the_closest_known_one(tmp_path, caplog):
    path = write(tmp_path, "[S3]\nLOG_DATA = logs\nSONG_DATA = songs\nLOG_DATE_PATERN = x\n[CLUSTR]\nHOST =\n")
    with caplog.at_level("WARNING", logger="sparkify"):
        config.load_config(str(path))
    assert (f"warning: {path}: [S3] LOG_DATE_PATERN is not read by any script; did you mean LOG_DATE_PATTERN?"
            in caplog.messages)
    assert f"warning: {path}: section [CLUSTR] is not read by any script; did you mean [CLUSTER]?" in caplog.messages
    assert len(caplog.messages) == 2  # SONG_DATA and the rest are known


@pytest.mark.parametrize("typo", ["LOG_DAT", "LOG_DATA_PATH", "LOGDATA"])
def test_a_misspelled_source_is_an_error_not_the_bundled_sample(tmp_path, typo):
    """With LOG_DATA misspelled the load read the bundled sample instead, after a warning."""
    path = write(tmp_path, f"[S3]\n{typo} = logs\nSONG_DATA = songs\n")
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}: \[S3\] LOG_DATA is not set, and \[S3\] {typo} is "
                                        r"not a key any script reads: did you mean LOG_DATA\?$"):
        config.load_config(str(path), uses=("sources",))
    config.load_config(str(path), uses=("warehouse",))  # a script that reads no source runs
    closer_to_another = write(tmp_path, "[S3]\nLOG_DATE_PATERN = x\nSONG_DATA = songs\n")  # LOG_DATA unset
    assert config.load_config(str(closer_to_another), uses=("sources",)).log_data == config.Config().log_data


def test_a_home_folder_in_a_local_path_is_the_users(tmp_path, monkeypatch):
    """~ was a folder named ~ beside the config file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = config.load_config(str(write(tmp_path, "[S3]\nLOG_DATA=~/logs\n[LOCAL]\nDATA_DIR=~/db\n")))
    assert (cfg.log_data, cfg.data_dir) == (str(tmp_path / "home" / "logs"), tmp_path / "home" / "db")


def test_the_example_documents_every_key_a_script_reads():
    example = config.read_ini(config.ROOT / "dwh.cfg.example")
    assert {s: set(keys) for s, keys in example.items()} == {s: set(keys) for s, keys in config.KNOWN_KEYS.items()}


@pytest.mark.parametrize("text, read", [
    ("[CLUSTER]\nHOST=# filled in by setup_cluster.py\nDB_PORT=;default\n", "HOST"),
    ("[CLUSTER]\nHOST=''\n[S3]", "REGION"),  # a header on the last line, no newline after it
])
def test_write_back_reads_back_as_written(tmp_path, text, read):
    """The value was glued to a comment that began the old one (HOST=new# ..., DB_PORT=5439;default),
    or a key to a header on the file's last line ([S3]REGION=...)."""
    path = write(tmp_path, text)
    config.update_file(path, {("CLUSTER", "HOST"): HOST, ("CLUSTER", "DB_PORT"): "5439", ("S3", "REGION"): "us-west-2"})
    cfg = config.load_config(str(path), uses=("warehouse",))
    assert (cfg.host, cfg.port, cfg.data_region) == (HOST, 5439, "us-west-2"), path.read_text()


@pytest.mark.parametrize("setting, key", [("[IAM_ROLE]\nARN = <your role arn>\n", "ARN"),
                                          ("[S3]\nLOG_JSONPATH = data/log_json_path.json\n", "LOG_JSONPATH"),
                                          ("[ETL]\nMAX_ERRORS = many\n", "MAX_ERRORS"),
                                          ("[DWH]\nDWH_NUM_NODES = four\n", "DWH_NUM_NODES")])
def test_a_setting_a_script_does_not_use_does_not_stop_it(tmp_path, setting, key):
    """analytics.py and create_tables.py read the warehouse's settings only; etl.py also the
    sources', the role and [ETL] (and stops on a bad one); all of them together, everything."""
    path = write(tmp_path, setting)
    assert config.load_config(str(path), uses=("warehouse",)).embedded
    with pytest.raises(UserError, match=rf"\b{key}\b"):
        config.load_config(str(path))


@pytest.mark.parametrize("script, text, not_said", [
    # teardown reads the cluster's settings and AWS's only: a bad MAX_ERRORS kept the cluster running
    ("teardown_cluster.py", "[ETL]\nMAX_ERRORS=10k\n", "MAX_ERRORS"),
    ("teardown_cluster.py", "[CLUSTER]\nHOST=dwhcluster.x.us-west-2.redshift.amazonaws.com\n[IAM_ROLE]\nARN=''\n", "ARN"),
    # setup fills HOST and ARN: it was told to run itself first to fill them
    ("setup_cluster.py", "[CLUSTER]\nHOST=''\nENGINE=redshift\n[IAM_ROLE]\nARN=''\n", "HOST is empty"),
])
def test_the_cluster_scripts_check_only_what_they_use(tmp_path, script, text, not_said):
    """Each goes on to its own first check (no password, no region), which needs no AWS call."""
    out = run_script(script, "--config", str(write(tmp_path, text)), *["--yes"] * (script == "teardown_cluster.py"))
    assert out.returncode == 1 and not_said not in out.stderr, out.stderr
    assert "password" in out.stderr or "region" in out.stderr, out.stderr


def test_etl_checks_the_region_it_uses(tmp_path):
    """[AWS] REGION (the S3 client's, and COPY's when [S3] REGION is unset) was left unchecked and dropped."""
    path = write(tmp_path, "[AWS]\nREGION=US-West-2\n")
    with pytest.raises(UserError, match=r"\[AWS\] REGION must be a region name"):
        config.load_config(str(path), uses=("warehouse", "sources", "role", "etl"))


def test_analytics_runs_with_a_placeholder_arn_and_etl_names_it(warehouse, tmp_path):
    path = write(tmp_path, warehouse.path.read_text() + "\n[IAM_ROLE]\nARN = <your role arn>\n", "placeholder.cfg")
    assert run_script("analytics.py", "--config", str(path)).returncode == 0
    out = run_script("etl.py", "--config", str(path))
    assert out.returncode == 1 and out.stderr.strip() == (
        f"etl.py: error: {path}: [IAM_ROLE] ARN must be arn:aws:iam::<12 digits>:role/<name>, not '<your role arn>'")


def test_make_run_always_loads_the_bundled_sample_whatever_dwh_cfg_says(tmp_path, monkeypatch):
    """make run passes data/sample.cfg to every script, so a ./dwh.cfg naming a Redshift cluster
    is never the target of its create_tables.py --yes."""
    write(tmp_path, "[CLUSTER]\nHOST = dwh.abc.us-west-2.redshift.amazonaws.com\n")  # the cwd's dwh.cfg
    run = (config.ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    scripts = [line.split()[1:] for line in run.strip().splitlines()[1:]]
    assert [s[0] for s in scripts] == ["create_tables.py", "etl.py", "analytics.py"]
    for args in scripts:
        cfg = config.load_config(args[args.index("--config") + 1].replace("data/", str(config.ROOT / "data") + "/"))
        assert (cfg.embedded, cfg.song_data, cfg.log_data) == (True, config.Config().song_data, config.Config().log_data)
