"""The embedded PostgreSQL: started with its bulk-load settings in effect (also where an earlier
version wrote others; and none of autovacuum's work on a load's prepared rows), started again
when it stopped under a process that had joined it, and a data directory from an older
PostgreSQL refused in one line before anything starts."""
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest

import db
import etl
from config import load_config
from conftest import query, reset, run_script
from errors import UserError
from sql_queries import SCRATCH_TABLES


@contextlib.contextmanager
def new_server():
    """A new embedded server in a data directory of its own; yields its URI, then removes it."""
    # Not under pytest's folder: any pytest run on the machine resets it to 0700, which the
    # server's own user (as root) could then not enter while starting.
    parent = Path(tempfile.mkdtemp(prefix="sparkify-test-"))
    data_dir = parent / "pgdata"
    try:
        yield data_dir, db.embedded_uri(data_dir)
    finally:
        db.embedded_server(data_dir).cleanup()
        shutil.rmtree(parent)


def server_query(uri, sql, params=None):
    """Rows of one statement on its own connection to uri (None for a statement without rows)."""
    conn = psycopg2.connect(uri)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def test_a_new_embedded_server_runs_with_every_bulk_load_setting():
    """Each of db.EMBEDDED_SETTINGS is accepted by this PostgreSQL and in effect once the server
    that created the data directory is back (some need a restart)."""
    with new_server() as (_, uri):
        found = server_query(uri, "SELECT name, current_setting(name), pending_restart FROM pg_settings "
                                  "WHERE name = ANY(%s) ORDER BY name", (list(db.EMBEDDED_SETTINGS),))
        checksums = server_query(uri, "SHOW data_checksums")
    assert found == sorted((name, value, False) for name, value in db.EMBEDDED_SETTINGS.items())
    assert checksums == [("off",)]  # PostgreSQL 18's initdb default is on (db.py says why not)


def test_a_setting_an_earlier_version_wrote_otherwise_is_written_again():
    """A data directory holding another value for one of db.EMBEDDED_SETTINGS (an earlier version
    of the toolkit wrote backend_flush_after = 2MB) gets ours when a script next uses it."""
    with new_server() as (data_dir, uri):
        server_query(uri, "ALTER SYSTEM SET backend_flush_after = '2MB'")
        server_query(uri, "SELECT pg_reload_conf()")
        deadline = time.monotonic() + 60  # the server applies a reload in its own time (a busy machine's)
        while server_query(uri, "SHOW backend_flush_after") != [("2MB",)]:
            assert time.monotonic() < deadline, "the server did not take backend_flush_after = 2MB within 60 s"
            time.sleep(0.05)
        db.embedded_uri(data_dir)
        written = server_query(uri, "SELECT setting FROM pg_file_settings WHERE name = 'backend_flush_after' "
                                    "ORDER BY seqno DESC LIMIT 1")
    assert written == [(db.EMBEDDED_SETTINGS["backend_flush_after"],)] == [("0",)]


def test_a_data_directory_from_an_older_postgresql_is_refused_in_one_line(tmp_path):
    data_dir = tmp_path / "pgdata"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("16\n")
    cfg = tmp_path / "dwh.cfg"
    cfg.write_text(f"[LOCAL]\nDATA_DIR = {data_dir}\n")
    for script in ("create_tables.py", "etl.py", "analytics.py"):
        out = run_script(script, "--config", str(cfg))
        assert out.returncode == 1
        assert out.stderr.splitlines() == [
            f"{script}: error: {data_dir} was made by PostgreSQL 16; the embedded server is PostgreSQL 18 "
            f"and cannot open it: delete it (rm -rf {data_dir}) and load again (make run), "
            f"or upgrade it with pg_upgrade"]
    assert [p.name for p in data_dir.iterdir()] == ["PG_VERSION"]  # nothing started, nothing written


def test_a_data_directory_whose_creation_was_killed_says_how_to_mend_it(tmp_path):
    """kill -9 during initdb left PG_VERSION and template1 only: every script then said 'did not
    start (AssertionError); its log is .../log', a log that did not exist, ever after."""
    data_dir = tmp_path / "pgdata"
    (data_dir / "base" / "1").mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("18\n")
    cfg = tmp_path / "dwh.cfg"
    cfg.write_text(f"[LOCAL]\nDATA_DIR = {data_dir}\n")
    out = run_script("etl.py", "--config", str(cfg))
    assert (out.returncode, out.stderr) == (1, f"etl.py: error: [LOCAL] DATA_DIR {data_dir} is a database whose "
                                               f"creation was interrupted (its server never started); delete it "
                                               f"(rm -rf {data_dir}) and run again\n")


def test_the_embedded_server_runs_under_a_path_with_a_space_and_unicode(tmp_path):
    """The scripts as a user runs them, with the project's data under `my projects/ünï`."""
    folder = tmp_path / "my projects" / "ünï"
    folder.mkdir(parents=True)
    cfg = folder / "dwh.cfg"
    cfg.write_text("[LOCAL]\nDATA_DIR = pg data\n")
    data_dir = folder / "pg data"
    try:
        assert run_script("create_tables.py", "--config", str(cfg)).returncode == 0
        out = run_script("etl.py", "--config", str(cfg))
        assert out.returncode == 0, out.stderr
        out = run_script("analytics.py", "--config", str(cfg), "--csv", "--sql", "SELECT COUNT(*) FROM songplays")
        assert out.stdout.splitlines() == ["count", "6820"]
        assert data_dir.is_symlink() and db.PLAIN.match(str(data_dir.resolve()))
    finally:
        shutil.rmtree(data_dir.resolve(), ignore_errors=True)


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    cfg = tmp_path / "dwh.cfg"
    cfg.write_text("[LOCAL]\nDATA_DIR = afile\n")
    out = run_script("create_tables.py", "--config", str(cfg))
    assert (out.returncode, out.stderr) == (
        1, f"create_tables.py: error: [LOCAL] DATA_DIR {tmp_path / 'afile'} is a file; "
           "name a folder for the embedded database\n")


def test_a_data_dir_holding_other_files_is_refused_and_left_as_it_was(tmp_path):
    """initdb refuses a folder with files in it, but only after the package, run as root, had
    made it its system user's (the bundled sample folder too, named by mistake)."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    owner = (folder.stat().st_uid, folder.stat().st_gid)
    (tmp_path / "dwh.cfg").write_text(f"[LOCAL]\nDATA_DIR = {folder}\n")
    out = run_script("create_tables.py", "--config", str(tmp_path / "dwh.cfg"), "--yes")
    assert out.returncode == 1 and out.stderr.splitlines() == [
        f"create_tables.py: error: [LOCAL] DATA_DIR {folder} holds other files and no database; "
        "name a new or empty folder for the embedded database"]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder.stat().st_uid, folder.stat().st_gid) == owner


def test_autovacuum_leaves_the_prepared_rows_alone(make_cfg):
    """The scratch tables live for one load, as staging does: autovacuum would only scan them
    (a 10M load saw it vacuum new_plays while the load ran)."""
    cfg = make_cfg()
    reset(cfg)
    try:
        for table in SCRATCH_TABLES:
            etl.prepare_table(cfg, table)
        options = query(cfg, "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", (list(SCRATCH_TABLES),))
        assert sorted(options) == sorted((t, ["autovacuum_enabled=false"]) for t in SCRATCH_TABLES)
    finally:
        with db.connection(cfg) as conn:
            etl.drop_scratch(conn)


def test_a_connection_after_the_server_stopped_starts_it_again(tmp_path):
    """A process reuses the address of the server it started or joined (db.JOINED); when that
    server has stopped since, its next connection starts it again."""
    parent = Path(tempfile.mkdtemp(prefix="sparkify-test-"))  # not under pytest's folder (see new_server)
    cfg_file = tmp_path / "dwh.cfg"
    cfg_file.write_text(f"[LOCAL]\nDATA_DIR = {parent / 'pgdata'}\n")
    cfg = load_config(str(cfg_file))
    try:
        db.connect(cfg).close()
        assert cfg.data_dir in db.JOINED
        db.embedded_server(cfg.data_dir).cleanup()  # this process was its only user: it stops
        conn = db.connect(cfg)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        conn.close()
    finally:
        db.embedded_server(cfg.data_dir).cleanup()
        shutil.rmtree(parent)


def test_a_full_server_is_said_so_in_one_line(make_cfg, monkeypatch):
    """Past the server's max_connections a connection says so: before, the process tried to start
    the running server again ("did not start"), or two threads that found it full both forgot
    its address (KeyError)."""
    cfg = make_cfg()
    db.connect(cfg).close()  # the process has joined the server

    def full(*args, **kwargs):
        raise psycopg2.OperationalError("connection to server failed: FATAL:  sorry, too many clients already")
    monkeypatch.setattr(psycopg2, "connect", full)
    monkeypatch.setattr(db, "embedded_uri", lambda data_dir: pytest.fail("started the running server again"))
    with pytest.raises(UserError, match="^cannot connect to .*: .*sorry, too many clients already$"):
        db.connect(cfg)
    assert cfg.data_dir in db.JOINED


class Kernel32:
    """kernel32 as its documentation answers, for this machine's processes: OpenProcess fails with
    ERROR_INVALID_PARAMETER (87) for a process that does not exist; GetExitCodeProcess gives
    STILL_ACTIVE (259) while it runs. Each function checks its arguments against the types the
    caller declared (argtypes), as ctypes would."""
    last_error = 0

    def __init__(self, name, use_last_error=False):
        assert name == "kernel32" and use_last_error
        self.OpenProcess = self.function(self.open_process)
        self.GetExitCodeProcess = self.function(self.exit_code)
        self.CloseHandle = self.function(lambda handle: 1)

    @staticmethod
    def function(body):
        def call(*args):
            converted = [t.from_param(a) if hasattr(t, "from_param") else t(a) for t, a in zip(call.argtypes, args)]
            assert len(converted) == len(args), "argtypes not declared"
            return body(*args)
        call.argtypes = ()
        return call

    @staticmethod
    def open_process(access, inherit, pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            Kernel32.last_error = 87
            return None  # NULL, as a HANDLE restype returns it
        return 4

    @staticmethod
    def exit_code(handle, code):
        code._obj.value = 259
        return 1


def test_a_killed_script_is_forgotten_on_windows_too(tmp_path, monkeypatch):
    """On Windows every pid counted as alive: after one script closed by its window (no exit
    handlers), the server was never stopped again, holding the data directory's files."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".handle_pids.json").write_text(json.dumps([os.getpid(), int(gone.stdout)]))
    with monkeypatch.context() as windows:  # undone before the assert (pytest's report makes paths)
        windows.setattr(os, "name", "nt")
        windows.setattr(ctypes, "WinDLL", Kernel32, raising=False)
        windows.setattr(ctypes, "get_last_error", lambda: Kernel32.last_error, raising=False)
        db._forget_dead_handles(tmp_path)
    assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [os.getpid()]

