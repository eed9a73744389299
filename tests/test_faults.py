"""Faults mid-load, concurrent runs, and secrets: the star tables are never half-loaded."""
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
from botocore.stub import Stubber

import config
import db
import etl
import sql_queries
from errors import UserError
from conftest import ROOT, SAMPLE_LOGS, counts, keys, query, reset, run_script, sigint_as_at_a_terminal, star
from sql_queries import LOADED_TABLES


@pytest.fixture
def batches(make_cfg, tmp_path):
    """Batch A (the first half of the sample logs) loaded; batch B is all of them. (cfg_a, cfg_b)"""
    half = tmp_path / "first_half"
    half.mkdir()
    for path in sorted(SAMPLE_LOGS.rglob("*.json"))[:15]:
        (half / path.name).write_bytes(path.read_bytes())
    a, b = make_cfg(logs=half, name="a.cfg"), make_cfg(name="b.cfg")
    reset(a)
    etl.run_etl(a)
    return a, b


@pytest.fixture
def expected(batches):
    """The star tables after A then B loaded cleanly (then back to A alone)."""
    a, b = batches
    etl.run_etl(b)
    result = star(b)
    reset(a)
    etl.run_etl(a)
    return result


@contextlib.contextmanager
def table_locked(cfg, name="songplays"):
    """Hold a lock that lets etl.py read but not insert into a table: it stops there. On
    `songplays` that is mid-transform (songs, artists and time already inserted)."""
    conn = db.connect(cfg)
    with conn.cursor() as cur:
        cur.execute(f"LOCK TABLE {name} IN SHARE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def stopped_at(cfg, table, condition, stop):
    """Start etl.py, let it block at `table`, then stop(proc, backend pid). Returns (proc, stderr)."""
    with table_locked(cfg, table):
        proc = etl_process(cfg)
        backend = wait_for_backend(cfg, condition)
        stop(proc, backend)
        _, err = proc.communicate(timeout=60)
    return proc, err


def wait_until_rolled_back(cfg, timeout=30):
    """After a client is killed, the server notices and rolls its transaction back."""
    deadline = time.monotonic() + timeout
    while query(cfg, "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'sparkify' "
                     "AND pid <> pg_backend_pid()")[0][0]:
        assert time.monotonic() < deadline, f"the killed client's session was still there after {timeout} s"
        time.sleep(0.1)


def sigkill(proc, backend):
    proc.send_signal(signal.SIGKILL)


def etl_process(cfg, *args):
    return subprocess.Popen([sys.executable, str(ROOT / "etl.py"), "--config", str(cfg.path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=sigint_as_at_a_terminal)


def wait_for_backend(cfg, condition, timeout=60):
    """The pid of the etl.py backend whose pg_stat_activity row matches condition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(cfg, "SELECT pid FROM pg_stat_activity WHERE application_name = 'sparkify' "
                          f"AND pid <> pg_backend_pid() AND {condition}")
        if rows:
            return rows[0][0]
        time.sleep(0.1)
    raise AssertionError(f"no etl.py backend with {condition}")


BLOCKED_MID_TRANSFORM = "wait_event_type = 'Lock' AND query LIKE '%songplays%'"


def test_backend_terminated_mid_transform_changes_nothing_and_rerun_completes(batches, expected):
    a, b = batches
    before = star(b)
    proc, err = stopped_at(b, "songplays", BLOCKED_MID_TRANSFORM,
                           lambda proc, backend: query(b, "SELECT pg_terminate_backend(%s)", (backend,)))
    assert proc.returncode == 1
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("etl.py: error:")
    assert star(b) == before
    etl.run_etl(b)
    assert star(b) == expected


def test_process_killed_mid_transform_changes_nothing_and_rerun_completes(batches, expected):
    a, b = batches
    before = star(b)
    stopped_at(b, "songplays", BLOCKED_MID_TRANSFORM, sigkill)
    wait_until_rolled_back(b)
    assert star(b) == before
    etl.run_etl(b)
    assert star(b) == expected


def test_process_killed_mid_first_load_keeps_every_key_and_rerun_completes(warehouse):
    """Stopped while users waits for its prepared rows, with its keys dropped in the star
    transaction (those of songplays and time already built again): all of it is rolled back."""
    created = keys(warehouse)
    query(warehouse, "CREATE TABLE latest_users (x INT); SELECT 1")  # the prepare's DROP waits on it
    with table_locked(warehouse, "latest_users"):
        proc = etl_process(warehouse)
        wait_for_backend(warehouse, "state = 'idle in transaction' "
                                    "AND query LIKE 'ALTER TABLE songplays ADD CONSTRAINT%'")
        sigkill(proc, None)
        proc.communicate(timeout=60)
    wait_until_rolled_back(warehouse)
    assert star(warehouse) == {t: [] for t in LOADED_TABLES} and keys(warehouse) == created
    etl.run_etl(warehouse)
    assert counts(warehouse)["songplays"] == 6820 and keys(warehouse) == created


def test_process_killed_mid_staging_changes_nothing_and_rerun_completes(batches, expected, make_cfg, tmp_path):
    """Stopped while a connection sets a bad record aside (staging partly committed)."""
    a, b = batches
    logs = tmp_path / "logs_and_a_bad_line"
    shutil.copytree(SAMPLE_LOGS, logs)
    (logs / "zz-bad.json").write_text("not json\n")
    c = make_cfg(logs=logs, name="c.cfg", max_errors=1)
    before = star(c)
    stopped_at(c, "load_errors", "wait_event_type = 'Lock' AND query LIKE '%INSERT INTO load_errors%'", sigkill)
    wait_until_rolled_back(c)
    assert star(c) == before
    etl.run_etl(c)
    assert star(c) == expected


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # SIGTERM: a service manager's stop
def test_ctrl_c_stops_promptly_with_130_and_changes_nothing(batches, sig):
    a, b = batches
    before = star(b)
    proc, err = stopped_at(b, "songplays", BLOCKED_MID_TRANSFORM, lambda proc, backend: proc.send_signal(sig))
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "etl.py: interrupted; nothing was committed by the step that was running"
    assert "Traceback" not in err
    assert star(b) == before


# A script with a Ctrl-C while the embedded server starts, before any query runs.
CTRL_C_WHILE_STARTING = """
import os, runpy, signal, sys, time
import db
started = db.embedded_uri
def starting(*args, **kwargs):
    uri = started(*args, **kwargs)
    if not getattr(starting, "done", False):
        starting.done = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)  # the main thread takes it
    return uri
db.embedded_uri = starting
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script, args", [("etl.py", []), ("create_tables.py", ["--yes"])])
def test_ctrl_c_before_any_query_stops_the_script(batches, script, args):
    """Ctrl-C then cancelled nothing (no query was running): the load went on and committed (or
    create_tables.py dropped every table), and the script exited 0."""
    _, b = batches
    before = star(b)
    done = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_STARTING, script, "--config", str(b.path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, preexec_fn=sigint_as_at_a_terminal)
    assert done.returncode == 130, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"{script}: interrupted; nothing was committed by the step that was running"
    assert star(b) == before
    if script == "etl.py":
        assert query(b, "SELECT status, error FROM etl_runs ORDER BY started_at DESC LIMIT 1") == [
            ("interrupted", "interrupted (Ctrl-C)")]


def test_ctrl_c_in_a_preparing_connection_leaves_no_prepared_rows(batches, monkeypatch):
    """A Ctrl-C seen first by a preparing connection (it may not commit, nor a new one open) went
    past the clean-up, which caught only database and user errors: new_keys stayed on disk."""
    _, b = batches
    real = etl.prepare_table

    def stopped(cfg, table, rank_repeats=True):
        if table != "new_keys":
            raise KeyboardInterrupt
        return real(cfg, table, rank_repeats)
    monkeypatch.setattr(etl, "prepare_table", stopped)
    with pytest.raises(KeyboardInterrupt):
        etl.run_etl(b)
    assert query(b, "SELECT relname FROM pg_class WHERE relname = ANY(%s)", (list(sql_queries.SCRATCH_TABLES),)) == []


@contextlib.contextmanager
def reader_holding(cfg, table):
    """A reader's session with its transaction open on table (analytics.py's output left in a
    pager, a --serve client that has not committed); yields its pid."""
    reader = db.connect(cfg, reader=True)
    try:
        with reader.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
        yield reader.get_backend_pid()
    finally:
        reader.rollback()
        reader.close()


def said_while_waiting(process, words, timeout=60):
    """The first line of process's stderr with words in it, while it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if words in line:
            return line
        assert line or process.poll() is None, "it ended without saying it"
    raise AssertionError(f"nothing said with {words!r}")


def test_a_reader_holding_a_table_open_is_named_and_no_wait_stops(warehouse):
    """etl.py (--no-wait too) and create_tables.py waited on such a session in silence."""
    etl.run_etl(warehouse)
    with reader_holding(warehouse, "staging_events") as pid:
        refused = run_script("etl.py", "--config", str(warehouse.path), "--no-wait")
        assert refused.returncode == 3, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert f"needs a table another session holds open: pid {pid} ({sql_queries.READER_ROLE}, " in line
        waiting = etl_process(warehouse)
        assert f"the load waits for a lock held by pid {pid} " in said_while_waiting(waiting, "waits for a lock")
    assert waiting.wait(timeout=60) == 0
    with reader_holding(warehouse, "songplays") as pid:
        resetting = subprocess.Popen([sys.executable, str(ROOT / "create_tables.py"), "--config",
                                      str(warehouse.path), "--yes"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert f"create_tables.py waits for a lock held by pid {pid} " in said_while_waiting(resetting, "waits for")
    assert resetting.wait(timeout=60) == 0
    assert counts(warehouse)["songplays"] == 0


def test_second_run_waits_for_the_first_or_stops_by_option(warehouse):
    etl.run_etl(warehouse)
    before = star(warehouse)
    holder = db.connect(warehouse, autocommit=True)
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (db.LOCK_KEY,))
    try:
        refused = run_script("etl.py", "--config", str(warehouse.path), "--no-wait")
        assert refused.returncode == 3
        assert "another etl.py run is loading this warehouse" in refused.stderr
        waiting = etl_process(warehouse)
        wait_for_backend(warehouse, "wait_event_type = 'Lock' AND wait_event = 'advisory'")
        assert waiting.poll() is None
    finally:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (db.LOCK_KEY,))
        holder.close()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert star(warehouse) == before


def waiting_for_the_lock(cfg):
    return query(cfg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sparkify' "
                      "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")[0][0]


def test_two_runs_at_once_load_exactly_once(warehouse):
    """Both runs are started while the lock is held, and let go together once both wait for it
    (started one after the other, they overlapped only by chance)."""
    etl.run_etl(warehouse)
    expected = star(warehouse)
    reset(warehouse)
    holder = db.connect(warehouse, autocommit=True)
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (db.LOCK_KEY,))
    try:
        procs = [etl_process(warehouse) for _ in range(2)]
        deadline = time.monotonic() + 60
        while waiting_for_the_lock(warehouse) < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "both runs did not wait"
            time.sleep(0.1)
    finally:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (db.LOCK_KEY,))
        holder.close()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert star(warehouse) == expected


def test_s3_access_denied_is_reported_before_anything_changes(warehouse, make_cfg):
    etl.run_etl(warehouse)
    before = counts(warehouse)
    s3 = boto3.client("s3", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(s3) as stub:
        stub.add_client_error("list_objects_v2", service_error_code="AccessDenied", http_status_code=403)
        cfg = make_cfg(logs="s3://locked-bucket/log_data", name="s3.cfg")
        with pytest.raises(UserError, match=r"LOG_DATA: cannot list s3://locked-bucket/log_data: access denied"):
            etl.run_etl(cfg, s3=s3)
    after = counts(warehouse)
    assert after == dict(before, etl_runs=before["etl_runs"] + 1)  # the failed run is kept, nothing else
    assert query(warehouse, "SELECT status, error FROM etl_runs ORDER BY started_at DESC LIMIT 1") == [
        ("failed", "[S3] LOG_DATA: cannot list s3://locked-bucket/log_data: access denied")]


# --- Secrets and exposure ---------------------------------------------------------------------
@pytest.fixture
def password_role(warehouse, pg_data_dir):
    """A role that must give a password, reachable over the embedded server's socket."""
    hba = pg_data_dir / "pg_hba.conf"
    original = hba.read_text()
    query(warehouse, "DROP ROLE IF EXISTS pwuser; CREATE ROLE pwuser LOGIN PASSWORD 'right-pass-9x'; "
                     "GRANT ALL ON ALL TABLES IN SCHEMA public TO pwuser; GRANT sparkify_reader TO pwuser; SELECT 1")
    hba.write_text("local all pwuser scram-sha-256\n" + original)
    query(warehouse, "SELECT pg_reload_conf()")
    socket_dir = parse_qs(urlparse(db.embedded_uri(pg_data_dir)).query)["host"][0]
    yield socket_dir
    hba.write_text(original)
    query(warehouse, "SELECT pg_reload_conf()")


def test_wrong_password_is_never_printed(password_role, tmp_path):
    secret = "wr0ng-Secret-value-77"
    cfg = tmp_path / "pw.cfg"
    cfg.write_text(f"[CLUSTER]\nHOST={password_role}\nDB_USER=pwuser\nDB_NAME=postgres\n"
                   f"DB_PASSWORD={secret}\n")
    cfg.chmod(0o644)  # also triggers the permission warning, which must not print it either
    for script in ("create_tables.py", "etl.py", "analytics.py"):
        for flags in ((), ("-v",)):
            out = run_script(script, "--config", str(cfg), *flags)
            assert out.returncode == 1
            assert "password authentication failed" in out.stderr
            assert secret not in out.stdout + out.stderr
    env_run = run_script("etl.py", "--config", str(cfg), "-v", env={"DWH_DB_PASSWORD": "env-" + secret})
    assert "env-" + secret not in env_run.stdout + env_run.stderr and env_run.returncode == 1


def test_right_password_connects(password_role, tmp_path, monkeypatch):
    cfg = tmp_path / "pw.cfg"
    cfg.write_text(f"[CLUSTER]\nHOST={password_role}\nDB_USER=pwuser\nDB_NAME=postgres\n")
    cfg.chmod(0o600)
    out = run_script("analytics.py", "--config", str(cfg), "--section", "top-users",
                     env={"DWH_DB_PASSWORD": "right-pass-9x"})
    assert out.returncode == 0, out.stderr
    monkeypatch.setenv("DWH_DB_PASSWORD", "right-pass-9x")
    with db.connection(config.load_config(str(cfg))) as conn, conn.cursor() as cur:
        cur.execute("SELECT session_user")
        assert cur.fetchone() == ("pwuser",)


def test_embedded_server_listens_on_no_network_interface(warehouse):
    assert query(warehouse, "SHOW listen_addresses") == [("",)]
    assert query(warehouse, "SELECT inet_server_addr()") == [(None,)]  # connected over the unix socket
