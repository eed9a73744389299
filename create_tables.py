"""Drop and recreate every table of the warehouse (staging, star, load_errors)."""
import contextlib
import logging
import sys

import psycopg2.errors

import db
import sql_queries
from cli import main_entry
from errors import UserError

log = logging.getLogger("sparkify")


def drop_tables(conn):
    """Drop every table that exists; return their names."""
    missing = db.missing_tables(conn)
    existing = [t for t in sql_queries.TABLES if t not in missing]
    with conn.cursor() as cur:
        for q in sql_queries.drop_table_queries:
            try:
                cur.execute(q)
            except psycopg2.errors.DependentObjectsStillExist as e:
                conn.rollback()  # nothing dropped; the session usable again
                detail = (e.diag.message_detail or "").splitlines() or [e.diag.message_primary]
                raise UserError(f"cannot drop table {q.split()[-1]}: {detail[0]}"
                                + (f" (and {len(detail) - 1} more)" if len(detail) > 1 else "")
                                + "; drop it first, then run create_tables.py again; nothing was changed")
    return existing


def create_tables(conn, engine):
    """Create every table (and index) for the engine; return how many statements ran."""
    with conn.cursor() as cur:
        for q in sql_queries.create_table_queries[engine]:
            cur.execute(q)
    return len(sql_queries.create_table_queries[engine])


def reset_warehouse(cfg, conn):
    """Drop and create in one transaction, while no etl.py run is loading (PostgreSQL)."""
    lock = db.etl_lock(conn) if cfg.engine == "postgres" else contextlib.nullcontext()
    with lock:
        dropped = drop_tables(conn)
        create_tables(conn, cfg.engine)
        conn.commit()
    return dropped


def main(cfg, args):
    if args.dry_run:
        return db.print_dry_run(cfg, lambda: reset(cfg))
    dropped = reset(cfg)
    print(f"{cfg.describe()}: dropped {len(dropped)} existing tables, "
          f"created {len(sql_queries.TABLES)}: {', '.join(sql_queries.TABLES)}")


def reset(cfg):
    with db.connection(cfg) as conn:
        return reset_warehouse(cfg, conn)


def add_arguments(p):
    p.add_argument("--dry-run", action="store_true",
                   help="print every SQL statement it would run, connecting to nothing")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__, add_arguments, uses=("warehouse",)))
