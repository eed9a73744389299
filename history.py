"""Run history: each etl.py run's row in etl_runs, on its own autocommit connection so a rollback
leaves it (PostgreSQL: 'succeeded' also in the load's commit).

A run is recorded once it holds the ETL lock (a run stopped by its arguments, or before the
tables exist, is not kept; on PostgreSQL, one missing a source or day is, as failed). It inserts its
row as running; any other row still running then belongs to a run that ended without updating
it (killed outright, its machine lost), since a live run would hold the lock: it is marked
interrupted. At the end the row says succeeded, or failed with its error (its lines joined into
one, after the rollback), or interrupted (Ctrl-C, SIGTERM or SIGHUP)."""
import contextlib
import copy
import json
import logging
from datetime import datetime, timezone

import psycopg2

import cli
import db
import quality
import sql_queries
import staging
from errors import UserError, mask_secrets

log = logging.getLogger("sparkify")


def utc_now():
    return datetime.now(timezone.utc).replace(tzinfo=None)  # etl_runs keeps UTC as TIMESTAMP


@contextlib.contextmanager
def recorded(cfg, result, conn):
    """Around a run that holds the ETL lock (conn: the load's connection): its row, from running
    to how it ended."""
    start(cfg, result)
    try:
        yield
    except BaseException as e:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
        status = "interrupted" if cli.INTERRUPTED.is_set() or isinstance(e, KeyboardInterrupt) else "failed"
        try:
            finish(cfg, result, status, f"interrupted ({cli.STOPPED_BY})" if status == "interrupted"
                   else mask_secrets(one_line(e), cfg))
        except (psycopg2.Error, UserError) as not_recorded:  # the error that stopped the run comes first
            log.debug("the run's end was not recorded in etl_runs: %s", not_recorded)
        raise
    finish(cfg, result, "succeeded")


def start(cfg, result):
    """Mark the runs left running interrupted, then insert this one as running."""
    days = result.days or [None]
    with db.connection(cfg, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql_queries.history_orphans, {
            "run_id": result.run_id, "error": "ended without finishing (killed, or its connection lost)"})
        if cur.rowcount:
            log.info("%s still marked running ended without finishing: marked interrupted",
                     staging.plural(cur.rowcount, "earlier run"))
        cur.execute(sql_queries.history_start, {
            "run_id": result.run_id, "engine": cfg.engine, "started_at": utc_now(),
            "first_day": days[0], "last_day": days[-1],
            "sources": json.dumps({s: {"location": getattr(cfg, s)} for s in staging.SOURCES})})


def succeeded_within(cfg, result, star, conn):
    """Mark the run succeeded, with what it did, on the load's connection, in the transaction
    about to commit its star tables (recorded() writes the same again after the commit). On a
    copy of the result: if the commit fails, the row is failed, with no counts of this try."""
    done = copy.deepcopy(result)
    done.record_star(star)
    finish(cfg, done, "succeeded", conn=conn)


def finish(cfg, result, status, error=None, conn=None):
    """Update the run's row: how it ended and what it did (on conn if given, else on its own)."""
    sources = {s: {"location": getattr(cfg, s)} for s in staging.SOURCES}
    for r in result.staged:
        sources[r.source].update(files=r.files, staged=r.loaded, set_aside=r.rejected)
    changes = {t: {"added": result.added(t)} for t in sql_queries.LOADED_TABLES
               if t in result.before and t in result.after}
    for table, _, label, rows in result.changed:
        changes[table][label] = changes[table].get(label, 0) + rows
    n = quality.counts(result.checks)
    with (contextlib.nullcontext(conn) if conn else db.connection(cfg, autocommit=True)) as c, c.cursor() as cur:
        cur.execute(sql_queries.history_finish, {
            "run_id": result.run_id, "status": status, "finished_at": utc_now(),
            "files": sum(r.files for r in result.staged) if result.staged else None,
            "staged": sum(r.loaded for r in result.staged) if result.staged else None,
            "set_aside": sum(r.rejected for r in result.staged) if result.staged else None,
            "plays_added": changes["songplays"]["added"] if "songplays" in changes else None,
            "checks_passed": n["pass"] if result.checks else None,
            "checks_warned": n["warn"] if result.checks else None,
            "checks_failed": n["fail"] if result.checks else None,
            "error": clip(error, ERROR_BYTES) if error else None,
            "sources": json.dumps(sources), "star_changes": json.dumps(changes),
            "warnings": json.dumps([o.describe() for o in result.checks if o.status == "warn"])})


ERROR_BYTES = 1024  # etl_runs.error is VARCHAR(1024): on Redshift, bytes ("Character types")


def clip(text, limit):
    """text cut to at most limit bytes of UTF-8, never inside a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def one_line(error):
    """A UserError whole, its lines joined (a bad-records error lists the first records after
    its first line); any other error, its type and first line."""
    first, *rest = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [""]
    if isinstance(error, UserError):
        return " ".join([first] + ["; ".join(rest)] * bool(rest))
    return f"{type(error).__name__}: {first}".rstrip(": ")
