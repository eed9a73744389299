"""analytics.py --serve: the embedded warehouse open to other tools until Ctrl-C, as the reader
only. Tested with a real client (psql, Debian's postgresql-client): over the unix socket by
default; over TCP (--port) only on 127.0.0.1, only as the reader, only with the session's
password, still only reading; on Ctrl-C the TCP access is gone and the server stops."""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg2
import pytest

import db
import sql_queries
from conftest import ROOT, free_port, run_script, sigint_as_at_a_terminal

pytestmark = pytest.mark.skipif(shutil.which("psql") is None,
                                reason="psql is not installed (Debian: apt-get install -y postgresql-client)")


@pytest.fixture(scope="module")
def sample():
    """The bundled sample loaded into a warehouse of its own, which no process holds open (so
    the server stops when a script ends, and --port may restart it). Not under pytest's folder:
    a pytest run elsewhere resets that to 0700, which the server's own user (as root) could not enter."""
    parent = Path(tempfile.mkdtemp(prefix="sparkify-serve-"))
    parent.chmod(0o755)
    cfg = parent / "dwh.cfg"
    cfg.write_text(f"[LOCAL]\nDATA_DIR = {parent / 'pgdata'}\n")
    for script, *args in (("create_tables.py", "--yes"), ("etl.py",)):
        done = run_script(script, "--config", str(cfg), *args, timeout=600)
        assert done.returncode == 0, done.stderr
    yield cfg, parent / "pgdata"
    if (parent / "pgdata" / "postmaster.pid").exists():  # a test failed while serving
        db.embedded_server(parent / "pgdata").cleanup()
    shutil.rmtree(parent, ignore_errors=True)


class Serving:
    """analytics.py --serve running, its first lines read; always stopped (SIGINT, then kill)."""

    def __init__(self, cfg, *args, preexec_fn=sigint_as_at_a_terminal):
        self.process = subprocess.Popen([sys.executable, str(ROOT / "analytics.py"), "--config", str(cfg),
                                         "--serve", *args], cwd=ROOT, preexec_fn=preexec_fn, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.watchdog = threading.Timer(300, self.process.kill)  # a hung test still ends
        self.watchdog.start()
        self.lines = []
        while not self.lines or not (self.lines[-1].startswith("  psql ") and len(self.psql_lines()) == 1 + bool(args)):
            line = self.process.stdout.readline()
            if not line:
                self.watchdog.cancel()
                pytest.fail(f"--serve ended: {self.process.wait()} {self.process.stderr.read()}")
            self.lines.append(line.rstrip("\n"))

    def psql_lines(self):
        return [line.strip() for line in self.lines if line.startswith("  psql ")]

    def stop(self, sig=signal.SIGINT):
        """Ctrl-C (or another signal); (exit code, the rest of stdout, stderr)."""
        self.process.send_signal(sig)
        try:
            out, err = self.process.communicate(timeout=120)
        finally:
            self.watchdog.cancel()
            self.process.kill() if self.process.poll() is None else None
        return self.process.returncode, out, err


def psql(command_line, sql, password=None):
    """Run the psql command as printed (its URI), with one SQL command."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run([*shlex.split(command_line), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)


def gone(pid):
    """Whether the process has exited (a zombie waiting for its parent counts as exited)."""
    for _ in range(600):  # pg_ctl stop returns as the server's last act is under way: wait for it
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def server_pid(data_dir):
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def test_psql_reads_the_served_warehouse_over_its_socket_until_ctrl_c(sample):
    cfg, data_dir = sample
    serving = Serving(cfg)
    try:
        [command] = serving.psql_lines()
        assert "@/" in command and "host=" in command  # a unix socket: no TCP host
        pid = server_pid(data_dir)
        counted = psql(command, "SELECT count(*) FROM songplays")
        assert (counted.returncode, counted.stdout, counted.stderr) == (0, "6820\n", "")
        who = psql(command, "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
        assert who.stdout == f"{sql_queries.READER_ROLE}|f\n"
        refused = psql(command, "DELETE FROM users")
        assert refused.returncode != 0 and "read-only transaction" in refused.stderr, refused.stderr
        refused = psql(command, "BEGIN READ WRITE; DELETE FROM users")  # and past that, no privilege
        assert refused.returncode != 0 and "permission denied for table users" in refused.stderr, refused.stderr
        # --port restarts the server: refused while another process (this serve) uses it
        busy = run_script("analytics.py", "--config", str(cfg), "--serve", "--port", str(free_port()))
        assert busy.returncode == 1
        assert re.fullmatch(r"analytics.py: error: --port restarts the embedded PostgreSQL, which process "
                            rf"{serving.process.pid} is using; .*\n", busy.stderr)
    finally:
        code, out, err = serving.stop()
    assert (code, out, err) == (0, "stopped serving\n", "")
    assert gone(pid) and not (data_dir / "postmaster.pid").exists()
    assert json.loads((data_dir / ".handle_pids.json").read_text()) == []


def test_a_served_client_is_read_only_and_leaves_the_role_as_it_was(sample):
    """A client could make a large object (its session was read-write) and give the role a
    setting (statement_timeout 1ms) that broke every later analytics.py."""
    cfg, _ = sample
    serving = Serving(cfg)
    try:
        [command] = serving.psql_lines()
        refused = psql(command, "SELECT lo_from_bytea(0, 'x')")
        assert refused.returncode != 0 and "read-only transaction" in refused.stderr, refused.stderr
        lifted = psql(command, "BEGIN READ WRITE; ALTER ROLE CURRENT_USER SET statement_timeout = '1ms'; COMMIT")
        assert lifted.returncode == 0, lifted.stderr  # a client may lift it for its own session
    finally:
        serving.stop()
    out = run_script("analytics.py", "--config", str(cfg), "--section", "top-users")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # a service manager's stop; the terminal closed
def test_sigterm_stops_serving_as_ctrl_c_does(sample, sig):
    """Before, the script ended at once and left the server running (with --port, open to its
    TCP login and its password)."""
    cfg, data_dir = sample
    serving = Serving(cfg, "--port", str(free_port()))
    pid = server_pid(data_dir)
    assert serving.stop(sig) == (0, "stopped serving\n", "")
    assert gone(pid) and not (data_dir / "postmaster.pid").exists()
    assert sql_queries.READER_ROLE not in (data_dir / "pg_hba.conf").read_text()  # its TCP login closed


def as_under_nohup():
    sigint_as_at_a_terminal()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def test_under_nohup_a_closed_terminal_does_not_stop_serving(sample):
    """SIGHUP ignored from the start (nohup) stays ignored: a load or a setup meant to outlive
    its terminal went on after it closed, until SIGHUP was made to end every script."""
    cfg, data_dir = sample
    serving = Serving(cfg, preexec_fn=as_under_nohup)
    serving.process.send_signal(signal.SIGHUP)
    time.sleep(2)  # enough for the stop it used to start at once
    assert serving.process.poll() is None
    assert serving.stop() == (0, "stopped serving\n", "")


def test_over_tcp_only_the_reader_with_the_session_password_may_read(sample):
    cfg, data_dir = sample
    port = free_port()
    serving = Serving(cfg, "--port", str(port))
    try:
        [password] = [line.split(": ", 1)[1] for line in serving.lines if line.startswith("  password: ")]
        assert sum(password in line for line in serving.lines) == 1  # shown once
        tcp = f"psql postgresql://{sql_queries.READER_ROLE}@127.0.0.1:{port}/postgres"
        assert tcp in serving.psql_lines()
        pid = server_pid(data_dir)
        counted = psql(tcp, "SELECT count(*) FROM songplays", password)
        assert (counted.returncode, counted.stdout) == (0, "6820\n"), counted.stderr
        as_postgres = psql(f"psql postgresql://postgres@127.0.0.1:{port}/postgres", "SELECT 1", password)
        assert as_postgres.returncode == 2 and 'pg_hba.conf rejects connection for host "127.0.0.1", user "postgres"' \
            in as_postgres.stderr
        wrong = psql(tcp, "SELECT 1", password + "x")
        assert wrong.returncode == 2 and f'password authentication failed for user "{sql_queries.READER_ROLE}"' \
            in wrong.stderr
        users = psql(tcp, "SELECT count(*) FROM users", password).stdout
        for write in ("DELETE FROM users", "CREATE TABLE mine (n int)"):
            assert "read-only transaction" in psql(tcp, write, password).stderr  # read-only by default
            refused = psql(tcp, f"BEGIN READ WRITE; {write}", password)  # and without it, only SELECT
            assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr
        assert psql(tcp, "SELECT count(*) FROM users", password).stdout == users != "0\n"
        # the unix socket still serves the scripts and the reader (its number is now the port's)
        [socket_command] = [c for c in serving.psql_lines() if "host=" in c]
        assert psql(socket_command, "SELECT count(*) FROM songplays").stdout == "6820\n"
    finally:
        code, out, err = serving.stop()
    assert (code, out, err) == (0, "stopped serving\n", "")
    assert gone(pid) and not (data_dir / "postmaster.pid").exists()
    hba = (data_dir / "pg_hba.conf").read_text()
    assert sql_queries.READER_ROLE not in hba  # the session's lines are gone; the reject lines stay
    assert hba.startswith("host all all all reject")
    conn = psycopg2.connect(db.embedded_uri(data_dir))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = %s", (sql_queries.READER_ROLE,))
            assert cur.fetchone() == (True,)
    finally:
        conn.close()
        db.embedded_server(data_dir).cleanup()


def test_a_killed_serve_leaves_no_tcp_login_for_the_next_script(sample):
    """kill -9 skipped the exit that closes TCP: the reader's lines and its session password stayed
    (and the server listened on) until a later script stopped the server."""
    cfg, data_dir = sample
    serving = Serving(cfg, "--port", str(free_port()))
    serving.process.kill()
    serving.stop()
    assert "this session's" in (data_dir / "pg_hba.conf").read_text()
    out = run_script("analytics.py", "--config", str(cfg), "--section", "top-users")
    assert out.returncode == 0, out.stderr
    assert "this session's" not in (data_dir / "pg_hba.conf").read_text()
    with psycopg2.connect(db.embedded_uri(data_dir)) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = %s", (sql_queries.READER_ROLE,))
        assert cur.fetchone() == (True,)
    conn.close()
    db.embedded_server(data_dir).cleanup()  # as the other tests found it: stopped


def test_serve_is_for_the_embedded_server_only(tmp_path):
    cfg = tmp_path / "remote.cfg"
    cfg.write_text("[CLUSTER]\nHOST = warehouse.example.com\nDB_USER = analyst\nDB_NAME = dev\n")
    out = run_script("analytics.py", "--config", str(cfg), "--serve")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == ("analytics.py: error: --serve is for the embedded PostgreSQL; postgres at "
                          "analyst@warehouse.example.com:5432/dev is a server already: connect to it directly\n")
    alone = run_script("analytics.py", "--config", str(cfg), "--port", "5433")
    assert (alone.returncode, alone.stderr) == (2, "analytics.py: error: --port is for --serve\n")


def test_a_port_in_use_is_one_line_and_changes_nothing(sample):
    cfg, data_dir = sample
    hba = (data_dir / "pg_hba.conf").read_text()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        out = run_script("analytics.py", "--config", str(cfg), "--serve", "--port", str(port))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"analytics.py: error: cannot serve on 127.0.0.1:{port}: Address already in use\n"
    assert (data_dir / "pg_hba.conf").read_text() == hba and not (data_dir / "postmaster.pid").exists()
