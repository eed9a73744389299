"""Connections: the embedded PostgreSQL (pgserver) or a server named in [CLUSTER].

The embedded server listens on a unix socket inside its data directory and on no
network interface. It starts with the first script that needs it and stops when
the last one using it exits.
"""
import contextlib
import json
import logging
import os
import warnings
import weakref
from pathlib import Path

import psycopg2

import sql_queries
from errors import UserError, mask_secrets

log = logging.getLogger("sparkify")

LOCK_KEY = 0x5350524B  # 'SPRK': one ETL run per warehouse at a time
OPEN = weakref.WeakSet()  # every connection this process has open, for cancel_all()


def embedded_uri(data_dir):
    """Start (or join) the embedded server under data_dir; return its connection URI."""
    data_dir = Path(data_dir)
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver
            _forget_dead_handles(data_dir)
            created = not (data_dir / "PG_VERSION").exists()
            server = pgserver.get_server(data_dir, cleanup_mode="stop")
            if _tune_for_bulk_loads(server.get_uri()) and created:
                # Only a server this call created is restarted at once; any other reads the
                # settings at its next start (it stops when the last script using it exits).
                server.cleanup()
                server = pgserver.get_server(data_dir, cleanup_mode="stop")
    except OSError as e:
        raise UserError(f"cannot create the embedded database in {data_dir}: {e.strerror or e}")
    except Exception as e:
        raise UserError(f"the embedded PostgreSQL in {data_dir} did not start ({type(e).__name__}); "
                        f"its log is {data_dir / 'log'}")
    return server.get_uri()


# The embedded server is ours: set for loading a few GB of JSON on a laptop rather than for
# PostgreSQL's defaults (4MB WAL buffers, 1GB between checkpoints, a WAL fit for replicas).
EMBEDDED_SETTINGS = {
    "wal_buffers": "64MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "256MB",      # index builds after a first load
    "backend_flush_after": "2MB",         # write to disk as it goes: less to sync at commit and stop
    "wal_level": "minimal",               # no replicas: rows into a table created or truncated in the
    "max_wal_senders": "0",               # same transaction skip the WAL (etl.take_over_empty_tables)
}


def _tune_for_bulk_loads(uri):
    """Write EMBEDDED_SETTINGS once (ALTER SYSTEM); True if a restart is needed to apply them
    and this is the only connection."""
    conn = psycopg2.connect(uri)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM pg_settings WHERE name = ANY(%s) "
                        "AND COALESCE(sourcefile, '') NOT LIKE '%%postgresql.auto.conf'", (list(EMBEDDED_SETTINGS),))
            missing = [r[0] for r in cur.fetchall()]
            for name in missing:
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (EMBEDDED_SETTINGS[name],))
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            alone = cur.fetchone()[0] == 1
    finally:
        conn.close()
    return bool(missing) and alone


def _forget_dead_handles(data_dir):
    """pgserver stops the server when the last process using it exits; a process killed with
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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect(cfg, autocommit=False):
    """A psycopg2 connection to the configured warehouse. Errors name the server, never the password."""
    try:
        if cfg.embedded:
            conn = psycopg2.connect(embedded_uri(cfg.data_dir), application_name="sparkify")
        else:
            conn = psycopg2.connect(
                host=cfg.host, port=cfg.port, dbname=cfg.db_name, user=cfg.db_user,
                password=cfg.db_password, connect_timeout=10, application_name="sparkify",
                sslmode="require" if cfg.engine == "redshift" else "prefer")
    except psycopg2.OperationalError as e:
        reason = mask_secrets(" ".join(str(e).split()), cfg)
        raise UserError(f"cannot connect to {cfg.describe()}: {reason}")
    conn.autocommit = autocommit
    OPEN.add(conn)
    return conn


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
        cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        if not cur.fetchone()[0]:
            if not wait:
                raise UserError("another etl.py run is loading this warehouse; try again when it has "
                                "finished, or run without --no-wait to wait for it", exit_code=3)
            log.info("another etl.py run is loading this warehouse; waiting for it to finish")
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        yield
    finally:
        if not conn.closed:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
