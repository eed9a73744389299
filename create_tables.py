"""Drop and recreate every table of the warehouse (staging, star, load_errors), and let the
read-only reader query them. Asks first if tables to be dropped hold rows (--yes: do not ask).
The run history (etl_runs) is kept, or created if missing, unless --reset-history."""
import contextlib
import logging
import sys

import psycopg2
import psycopg2.errors

import db
import sql_queries
from cli import main_entry
from errors import UserError

log = logging.getLogger("sparkify")

KEPT = tuple(t.name for t in sql_queries.REGISTRY if t.role != "staging")  # staging is refilled every run


def dropped_tables(reset_history=False):
    """The tables a reset drops and creates: all but the run history, unless reset_history."""
    return [t for t in sql_queries.TABLES if reset_history or t not in sql_queries.HISTORY_TABLES]


def tables_with_rows(conn, reset_history=False):
    """{table: rows} of the tables a drop would lose (all but staging) that hold any."""
    lost = [t for t in KEPT if t in dropped_tables(reset_history)]
    present = [t for t in lost if t not in db.missing_tables(conn, lost)]
    counts = db.row_counts(conn, present)
    conn.rollback()
    return {t: n for t, n in counts.items() if n}


def confirm_drop(cfg, held):
    """Go on only if nothing would be lost, or the user says yes at the terminal."""
    if not held:
        return
    what = ", ".join(f"{t} ({n:,} row{'s' * (n != 1)})" for t, n in held.items())
    # asked on stderr, so that it shows when stdout goes to a file; the ETL lock is held meanwhile
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UserError(f"{cfg.describe()} holds data: {what}; run with --yes to drop it", exit_code=4)
    sys.stderr.write(f"{cfg.describe()} holds data: {what}.\nDrop every table and start empty? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()  # "" at the end of input (Ctrl-D): no
    if answer.strip().lower() not in ("y", "yes"):
        raise UserError("nothing was dropped", exit_code=4)


def drop_tables(conn, tables=sql_queries.TABLES):
    """Drop each of these tables that exists; return their names."""
    missing = db.missing_tables(conn)
    existing = [t for t in sql_queries.TABLES if t not in missing and t in tables]
    with conn.cursor() as cur:
        for q in sql_queries.drop_table_queries:
            if q.split()[-1] not in tables:
                continue
            try:
                cur.execute(q)
            except psycopg2.errors.DependentObjectsStillExist as e:
                conn.rollback()  # nothing dropped; the session usable again
                detail = (e.diag.message_detail or "").splitlines() or [e.diag.message_primary]
                raise UserError(f"cannot drop table {q.split()[-1]}: {detail[0]}"
                                + (f" (and {len(detail) - 1} more)" if len(detail) > 1 else "")
                                + "; drop it first, then run create_tables.py again; nothing was changed")
    return existing


def create_tables(conn, engine, tables=sql_queries.TABLES):
    """Create these tables (and indexes) for the engine, in registry order; return how many
    statements ran."""
    statements = [q for t in sql_queries.TABLES if t in tables for q in sql_queries.table_statements(t, engine)]
    with conn.cursor() as cur:
        for q in statements:
            cur.execute(q)
    return len(statements)


def grant_reader(cfg, conn):
    """Let analytics.py's reader SELECT every table: [CLUSTER] READER_USER if set (not embedded),
    else the role sparkify_reader (PostgreSQL), created if missing; return its name, or None
    (Redshift without READER_USER)."""
    own_user = cfg.reader_user and not cfg.embedded
    reader = cfg.reader_user if own_user else (sql_queries.READER_ROLE if cfg.engine == "postgres" else None)
    if reader is None:
        return None
    name = sql_queries.quote_ident(reader)
    with conn.cursor() as cur:
        if not own_user:
            cur.execute(sql_queries.reader_role_exists, (reader,))
            if not cur.fetchone():
                create = sql_queries.reader_role_create["embedded" if cfg.embedded else "postgres"]
                _run(cur, create.format(reader=name), reader)
            if cfg.embedded:
                for q in sql_queries.reader_defaults:
                    _run(cur, q.format(reader=name), reader)
            cur.execute(sql_queries.reader_is_member, (reader,))
            if not cfg.embedded and not cur.fetchone()[0]:
                _run(cur, sql_queries.reader_role_member.format(reader=name), reader)
        cur.execute(sql_queries.current_schema)
        schema = sql_queries.quote_ident(cur.fetchone()[0])
        tables = ", ".join(sql_queries.TABLES)
        for grant in sql_queries.reader_grants:
            _run(cur, grant.format(schema=schema, tables=tables, reader=name), reader)
    return reader


def _run(cur, statement, reader):
    try:
        cur.execute(statement)
    except psycopg2.Error as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot make {reader} the read-only reader: {first}; set [CLUSTER] READER_USER "
                        "to an existing user (see README)")


def reset_warehouse(cfg, conn, reset_history=False, confirm=False):
    """Drop and create in one transaction, while no etl.py run is loading (PostgreSQL); the run
    history is kept (created if missing) unless reset_history; confirm: ask first if that loses
    rows (PostgreSQL: counted once the ETL lock is held, so a load that was running has committed).
    Returns (tables dropped, kept)."""
    lock = db.etl_lock(conn) if cfg.engine == "postgres" else contextlib.nullcontext()
    with lock, db.waits_explained(cfg, conn, what="create_tables.py"):
        if confirm:
            confirm_drop(cfg, tables_with_rows(conn, reset_history))
        tables = dropped_tables(reset_history)
        kept = [t for t in sql_queries.TABLES if t not in tables and t not in db.missing_tables(conn, [t])]
        dropped = drop_tables(conn, tables)
        create_tables(conn, cfg.engine, [t for t in sql_queries.TABLES if t not in kept])
        grant_reader(cfg, conn)
        conn.commit()
    return dropped, kept


def main(cfg, args):
    if args.dry_run:
        return db.print_dry_run(cfg, lambda: reset(cfg, yes=True, reset_history=args.reset_history))
    dropped, kept = reset(cfg, args.yes, args.reset_history)
    created = [t for t in sql_queries.TABLES if t not in kept]
    print(f"{cfg.describe()}: dropped {len(dropped)} existing tables, "
          f"created {len(created)}: {', '.join(created)}"
          + (f"; kept {', '.join(kept)} (the run history; --reset-history empties it)" if kept else ""))


def reset(cfg, yes=True, reset_history=False):
    with db.connection(cfg) as conn:
        return reset_warehouse(cfg, conn, reset_history, confirm=not yes)


def add_arguments(p):
    p.add_argument("--yes", action="store_true",
                   help="drop tables that hold rows without asking (needed when not at a terminal)")
    p.add_argument("--reset-history", action="store_true",
                   help="also drop and recreate etl_runs, the history of etl.py runs (kept otherwise)")
    p.add_argument("--dry-run", action="store_true",
                   help="print every SQL statement it would run, connecting to nothing")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__, add_arguments, uses=("warehouse",)))
