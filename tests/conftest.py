"""Shared fixtures: one real embedded PostgreSQL per test session, configs pointing at it,
and small source files written by the tests themselves."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # the scripts, and the bench's generator

import create_tables  # noqa: E402
import db  # noqa: E402
import etl  # noqa: E402
import sql_queries  # noqa: E402
from config import load_config  # noqa: E402

SAMPLE_SONGS = ROOT / "data" / "song_data"
SAMPLE_LOGS = ROOT / "data" / "log_data"
TS = 1543537327796  # 2018-11-30 00:22:07.796 UTC


@pytest.fixture(scope="session")
def pg_data_dir(tmp_path_factory):
    """The embedded server, started once, in a temporary directory, deleted at the end."""
    data_dir = tmp_path_factory.mktemp("pg") / "pgdata"
    server = db.embedded_server(data_dir, cleanup_mode="delete")
    yield data_dir
    db._forget_dead_handles(data_dir)  # scripts the tests killed with SIGKILL
    server.cleanup()


@pytest.fixture
def make_cfg(tmp_path, tmp_path_factory, pg_data_dir, monkeypatch):
    """make_cfg(songs=..., logs=..., s3={key: value}, **etl) -> Config read from a dwh.cfg the test wrote."""
    # The embedded server reads local source files itself (staging.read_on_server); as root it
    # runs as another user, so the test's folder (0700 from pytest) is opened to it.
    base = tmp_path_factory.getbasetemp()
    for folder in (base.parent, base, tmp_path):
        folder.chmod(0o755)
    monkeypatch.delenv("DWH_CONFIG", raising=False)
    monkeypatch.delenv("DWH_DB_PASSWORD", raising=False)

    def make(songs=SAMPLE_SONGS, logs=SAMPLE_LOGS, text="", name="dwh.cfg", s3=None, **etl):
        path = tmp_path / name
        etl_lines = "".join(f"{k.upper()} = {v}\n" for k, v in etl.items())
        s3_lines = "".join(f"{k.upper()} = {v}\n" for k, v in (s3 or {}).items())
        path.write_text(f"[LOCAL]\nDATA_DIR = {pg_data_dir}\n\n[S3]\nSONG_DATA = {songs}\n"
                        f"LOG_DATA = {logs}\n{s3_lines}\n[ETL]\n{etl_lines}\n{text}")
        path.chmod(0o600)
        return load_config(str(path))
    return make


@pytest.fixture
def warehouse(make_cfg):
    """A Config on freshly created tables (the bundled sample as its sources)."""
    cfg = make_cfg()
    reset(cfg)
    return cfg


def reset(cfg):
    """Every table empty, the run history too."""
    with db.connection(cfg) as conn:
        create_tables.reset_warehouse(cfg, conn, reset_history=True)


def query(cfg, sql, params=None):
    with db.connection(cfg, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def table(cfg, name):
    """Every row of a table, ordered by all its columns (songplay_id left out: ids may differ)."""
    with db.connection(cfg) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {name} LIMIT 0")
        cols = [d.name for d in cur.description if d.name != "songplay_id"]
        cur.execute(f"SELECT {', '.join(cols)} FROM {name} ORDER BY {', '.join(cols)}")
        return cur.fetchall()


def counts(cfg):
    with db.connection(cfg) as conn:
        return db.row_counts(conn, sql_queries.TABLES)


def star(cfg):
    """Every row of every table a load writes (the star and the catalogue's match keys)."""
    return {t: table(cfg, t) for t in sql_queries.LOADED_TABLES}


def keys(cfg):
    """The loaded tables' keys and indexes, as definitions."""
    return query(cfg, "SELECT tablename, indexdef FROM pg_indexes WHERE tablename = ANY(%s) ORDER BY 1, 2",
                 (list(sql_queries.LOADED_TABLES),)) + \
        query(cfg, "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE contype IN ('p', 'u') ORDER BY 1, 2")


# --- Source files --------------------------------------------------------------------------
def event(**fields):
    """A NextSong event; override any field."""
    e = {"artist": "Artist", "auth": "Logged In", "firstName": "Ann", "gender": "F", "itemInSession": 0,
         "lastName": "Lee", "length": 200.5, "level": "free", "location": "Town, ST", "method": "PUT",
         "page": "NextSong", "registration": 1540991795796.0, "sessionId": 1, "song": "Song",
         "status": 200, "ts": TS, "userAgent": "Mozilla/5.0", "userId": "1"}
    e.update(fields)
    return e


def song(**fields):
    s = {"num_songs": 1, "artist_id": "AR1", "artist_latitude": None, "artist_longitude": None,
         "artist_location": "", "artist_name": "Artist", "song_id": "SO1", "title": "Song",
         "duration": 200.5, "year": 2000}
    s.update(fields)
    return s


def write_events(path, events, newline="\n", trailing=True):
    """A log file: one JSON object per line (or raw str/bytes lines as given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [e if isinstance(e, bytes) else (e if isinstance(e, str) else json.dumps(e)).encode()
             for e in events]
    data = newline.encode().join(lines) + (newline.encode() if trailing and lines else b"")
    path.write_bytes(data)
    return path


def write_song(path, record, indent=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record if isinstance(record, bytes) else json.dumps(record, indent=indent).encode())
    return path


def sigint_as_at_a_terminal():
    """preexec_fn of a child the test will Ctrl-C: SIGINT's default action, even when the test run
    itself was started in the background (a shell starts background jobs with SIGINT ignored,
    and children inherit that: the script would never see the Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_script(script, *args, env=None, timeout=120):
    """Run one of the scripts as a user would; returns CompletedProcess (text)."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("DWH_CONFIG", None) if env is None or "DWH_CONFIG" not in env else None
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


@pytest.fixture
def aws(monkeypatch):
    """moto's AWS (IAM, Redshift, EC2, S3) in us-west-2, with the course's bucket there."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-west-2"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DWH_DB_PASSWORD", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        clients = {s: boto3.client(s, region_name="us-west-2") for s in ("iam", "redshift", "ec2", "s3")}
        clients["s3"].create_bucket(Bucket="udacity-dend",
                                    CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield clients


@pytest.fixture
def redshift_transform(monkeypatch):
    """transform(conn): the transform as Redshift runs it (one session, one transaction, its own
    checks), on PostgreSQL: the same statements but the scratch tables' DISTKEY clause, which
    PostgreSQL does not have."""
    monkeypatch.setitem(sql_queries.DIALECT["redshift"], "scratch_by_time", "")
    return lambda conn: etl.insert_star_tables(conn, "redshift")


def fill_course_bucket(s3, bucket="udacity-dend"):
    """The course's bucket as the bundled sample has it: song_data/, log_data/ (the course's
    layout, log_data/2018/11/2018-11-05-events.json) and log_json_path.json."""
    for root, prefix in ((SAMPLE_SONGS, "song_data"), (SAMPLE_LOGS, "log_data")):
        for path in sorted(root.rglob("*.json")):
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())
    s3.put_object(Bucket=bucket, Key="log_json_path.json", Body=(ROOT / "data" / "log_json_path.json").read_bytes())


@pytest.fixture
def course_bucket(monkeypatch):
    """moto's S3 in us-west-2 with the course's bucket holding the sample: what a Redshift load
    (and its --dry-run) lists before it COPYs. Yields the S3 client."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-west-2"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket="udacity-dend", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        fill_course_bucket(s3)
        yield s3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def emulator(tmp_path):
    """moto_server on 127.0.0.1 and a free port, for scripts run as a user would (they reach it
    through AWS_ENDPOINT_URL); always stopped."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.fail("moto_server is missing: install requirements-dev.txt (moto[server])")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # until it answers (not a timing assertion: a readiness poll)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"moto_server exited: {(tmp_path / 'moto.log').read_text()[-500:]}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def emulated_course_bucket(url):
    """The course's bucket with the sample, in the emulator at url; the environment that reaches it."""
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-west-2"}
    s3 = boto3.client("s3", region_name="us-west-2", endpoint_url=url,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="udacity-dend", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    fill_course_bucket(s3)
    return s3, env
