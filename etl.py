"""Load the Sparkify warehouse: the source files into staging, then the star tables
(songplays, users, songs, artists, time) in one transaction, then a summary.

--date DAY, or --from DAY --to DAY, loads only the log files of those days (found by the
date in their path, [S3] LOG_DATE_PATTERN); song data as configured.

Running it again over the same input changes nothing; a later batch of logs adds its
plays and moves users to their newest level. Bad records are set aside in load_errors
(up to --max-errors of them); past that nothing in the star tables changes.
"""
import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import psycopg2
import psycopg2.errors

import db
import history
import quality
import sql_queries
import staging
from cli import main_entry
from errors import UserError

log = logging.getLogger("sparkify")


@dataclass
class EtlResult:
    run_id: str
    days: list = field(default_factory=list)        # the log days loaded ([] : every log file)
    staged: list = field(default_factory=list)      # [staging.StagingResult]
    before: dict = field(default_factory=dict)      # loaded table, load_errors -> rows before the run
    after: dict = field(default_factory=dict)       # every table -> rows after the run
    changed: list = field(default_factory=list)     # [(table, action, label, rows)]: update, delete steps
    steps: dict = field(default_factory=dict)       # step -> seconds
    checks: list = field(default_factory=list)      # [quality.Outcome] of the load's checks

    def record_staging(self, staged):
        self.staged = staged
        self.steps.update({f"staging {staging.SOURCES[r.source][0]}": r.seconds for r in staged})
        self.after.update({staging.SOURCES[r.source][1]: r.loaded for r in staged})  # emptied, then loaded

    def record_star(self, star):
        before, after, self.changed, seconds = star
        self.before.update(before)
        self.after.update(after)
        self.steps.update(seconds)

    def added(self, table):
        """The rows the run added to a table: its change in rows, and the rows its steps deleted."""
        deleted = sum(rows for t, action, _, rows in self.changed if t == table and action == "delete")
        return self.after[table] - self.before[table] + deleted


def new_run_id():
    """UTC time to the millisecond and the process: unique, also for runs one process makes."""
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}-{os.getpid()}"


def find_sources(cfg, s3=None, days=None):
    """Every source file (of the log files, those of `days` if given), listed and checked
    readable before anything changes: a missing or empty source, or a day without a log
    file, stops here. Returns ({source: staging.Found}, the S3 client if any)."""
    if any(loc.startswith("s3://") for loc in (cfg.song_data, cfg.log_data)) and s3 is None:
        s3 = staging.s3_client(cfg)
    sources = {source: staging.discover(getattr(cfg, source), f"[S3] {source.upper()}", s3)
               for source in staging.SOURCES}
    if days:
        sources["log_data"] = staging.select_days(sources["log_data"], cfg.log_data, days,
                                                  cfg.log_date_pattern, "[S3] LOG_DATA")
    for source, found in sources.items():  # those the summary counts (of the days loaded)
        for path in found.skipped:
            log.debug("[S3] %s: skipped %s", source.upper(), path)
    return sources, s3


STOPPED = (KeyboardInterrupt, psycopg2.errors.QueryCanceled)  # how a source stopped by another ends


def load_staging(cfg, conn, sources, run_id, s3=None):
    """Empty the staging tables and stream every source into them; return StagingResults."""
    with conn.cursor() as cur:
        for q in sql_queries.clear_staging["postgres"]:
            cur.execute(q)
    conn.commit()
    for source, found in sources.items():
        log.info("staging %s: %s", staging.SOURCES[source][0], staging.plural(len(found.files), "file"))
    # Both sources at once: song files are many and small (waiting on the file system),
    # log files few and large (waiting on the database); together they keep every core busy.
    cancel = threading.Event()  # set when a source fails: the other stops too, uncommitted
    with ThreadPoolExecutor(len(sources), thread_name_prefix="source") as pool:
        futures = [pool.submit(staging.load_source, cfg, source, found.files, run_id, s3, cancel=cancel)
                   for source, found in sources.items()]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() for f in futures):
                cancel.set()
                wait(futures)  # the other stops at its next chunk
                errors = [f.exception() for f in futures if f.exception()]
                # the failure, not the other source's stop (seen first if the failing one was
                # still closing its connections): Ctrl-C's, or its COPY's, cancelled
                raise next((e for e in errors if not isinstance(e, STOPPED)), errors[0])
        except BaseException:
            cancel.set()
            raise
        results = [f.result() for f in futures]
    for r in results:
        r.skipped = len(sources[r.source].skipped)
        if r.empty and not db.is_dry_run(conn):  # a dry run loads nothing, empty or not
            log.warning("warning: %s: every file is empty; nothing was loaded from %s",
                        staging.SOURCES[r.source][0], getattr(cfg, r.source))
    with conn.cursor() as cur:
        # The transform's plans need row counts and rough distinct counts: a small sample will do.
        cur.execute("SET LOCAL default_statistics_target = 10")
        cur.execute("ANALYZE staging_events, staging_songs")
    conn.commit()
    return results


def check_set_aside(conn, staged, run_id, max_errors):
    """Stop, changing no star table, when more records were set aside than allowed."""
    total = sum(r.rejected for r in staged)
    if total <= max_errors:
        return total
    with conn.cursor() as cur:
        cur.execute(sql_queries.load_errors_first, (run_id, 10))
        first = cur.fetchall()
    conn.rollback()
    lines = "\n".join(f"  {file}:{line}: {reason}" for file, line, reason in first)
    raise UserError(f"{total} bad records, more than the {max_errors} allowed (--max-errors); "
                    f"no star table was changed. First {len(first)}:\n{lines}\n"
                    f"All of them: SELECT * FROM load_errors WHERE run_id = '{run_id}'")


def prepare_table(cfg, table, rank_repeats=True):
    """Make one scratch table of the transform's prepared rows, on its own connection, and
    commit it; return its row count."""
    started, rows = time.monotonic(), -1
    with db.connection(cfg) as conn:
        with conn.cursor() as cur:
            for q in (sql_queries.transform_settings["postgres"]
                      + sql_queries.prepare_statements(table, "postgres", rank_repeats)):
                cur.execute(q)
                rows = cur.rowcount if cur.rowcount >= 0 else rows  # the CREATE's, not a SET's or ANALYZE's
        conn.commit()
    log.debug("prepared %s: %d rows, %.2f s", table, rows, time.monotonic() - started)
    return rows


def check_batch(cfg, prepared):
    """The load's checks on PostgreSQL: on the prepared rows (sql_queries.load_checks), on their
    own connection; [quality.Outcome]."""
    for table in sql_queries.SCRATCH_TABLES:
        prepared[table].result()
    with db.connection(cfg) as conn:
        with conn.cursor() as cur:
            for q in sql_queries.transform_settings["postgres"]:  # no JIT, no parallel workers
                cur.execute(q)
        found = quality.run(conn, sql_queries.load_checks("postgres"))
        conn.rollback()
    return found


def prepare_star_rows(cfg, pool, retry_of=None):
    """Start preparing the scratch tables, and checking them, on other connections;
    return {scratch table or "checks": future}. The new catalogue keys (quick) and the plays
    (the longest; they wait for the keys) start first, then the times and the users; the
    checks, which wait for them all, last. The plays are prepared as if no event repeated;
    retry_of, the first try's futures (a repeat was found): the plays are prepared again, ranked,
    and checked again, and the other scratch tables kept."""
    prepared = {}
    for table in sql_queries.SCRATCH_TABLES:
        if retry_of and table != "new_plays":
            prepared[table] = retry_of[table]
            continue
        after = prepared.get(sql_queries.PREPARED_AFTER.get(table))
        prepared[table] = pool.submit(prepare_after, cfg, table, after, rank_repeats=retry_of is not None)
    prepared["checks"] = pool.submit(check_batch, cfg, prepared)
    return prepared


def prepare_after(cfg, table, after=None, rank_repeats=True):
    """prepare_table, once the scratch table it is made from (a future) is ready."""
    if after is not None:
        after.result()
    return prepare_table(cfg, table, rank_repeats)


class RepeatedEvent(Exception):
    """The batch's plays, prepared as if no event repeated, hold a repeat of an event loaded
    before: no key saw it (its insert skipped the event), but the checks counted each copy."""


def insert_star_tables(conn, engine="postgres", prepared=None, checks=None, progress=None, ranked=True,
                       before_commit=None):
    """Staging -> star tables and the checks, in one transaction; return (before, after,
    changed, seconds): row counts, and [(table, action, label, rows)] of the steps that update
    or delete. A failing check rolls it all back (UserError naming it and the rows found);
    the checks' outcomes go into `checks` (a list) if given, failing or not. On an error the
    transaction is left to the caller to roll back.

    prepared: from prepare_star_rows() (PostgreSQL): each scratch table is waited for just
    before the first step that reads it. Without it the scratch tables are made, and the
    checks run, here in this transaction (Redshift). progress: a StarProgress, which says
    every few seconds which step is running. ranked=False: the plays were prepared as if no
    event repeated (RepeatedEvent if one did, unseen by the keys). before_commit(star): called
    in the transaction, just before it commits, with (before, after, changed, {}).
    """
    started = time.monotonic()
    progress = progress or StarProgress()
    before = db.row_counts(conn, sql_queries.LOADED_TABLES)
    with conn.cursor() as cur:
        for q in sql_queries.transform_settings[engine]:
            cur.execute(q)
        with progress.step("first load: taking over the empty tables"):
            first_load = take_over_empty_tables(cur, before) if engine == "postgres" else []
        if prepared is None:
            for table in sql_queries.SCRATCH_TABLES:
                with progress.step(f"prepare {table}"):
                    for q in sql_queries.prepare_statements(table, engine):
                        cur.execute(q)
        after, changed = apply_steps(cur, before, prepared, first_load, progress)
        if not ranked and (db.is_dry_run(conn)
                           or after["songplays"] - before["songplays"] < prepared["new_plays"].result()):
            # some plays were loaded before (the inserts skipped them): only then can a repeat go unseen
            with db.only_when(cur, "plays loaded before"):
                cur.execute(sql_queries.plays_repeat)
            if cur.fetchone()[0]:
                raise RepeatedEvent("one whose plays were loaded before")
    transform = time.monotonic() - started
    with progress.step("checks"):
        found = prepared["checks"].result() if prepared else quality.run(conn, sql_queries.load_checks(engine))
    if checks is not None:
        checks.extend(found)
    judge(found)
    with conn.cursor() as cur:
        for q in sql_queries.drop_scratch:
            cur.execute(q)
    after.update(db.row_counts(conn, ["load_errors"]))
    if before_commit:
        before_commit((before, after, changed, {}))
    committed = time.monotonic()
    conn.commit()
    log.debug("commit: %.2f s", time.monotonic() - committed)
    return before, after, changed, {"star tables": transform, "checks": time.monotonic() - started - transform}


MOVES = {"insert": 1, "update": 0, "delete": -1}  # how a step's row count moves its table's


def judge(outcomes):
    """Print each warning; raise a UserError naming every failing check and the rows it found."""
    for o in outcomes:
        if o.status == "warn":
            log.warning("warning: check %s", o.describe())
    failed = [o.describe() for o in outcomes if o.status == "fail"]
    if failed:
        raise UserError(f"check failed: {'; '.join(failed)}; nothing was committed")


def apply_steps(cur, before, prepared, first_load, progress):
    """sql_queries.apply_steps in order, each once the scratch table it reads is ready; a table
    of first_load gets its keys back after its last step. Returns the loaded tables' row counts,
    and [(table, action, label, rows)] for each step that updates or deletes."""
    after, changed = dict(before), []
    last_step = {s.table: i for i, s in enumerate(sql_queries.apply_steps)}
    for i, step in enumerate(sql_queries.apply_steps):
        if prepared and step.needs:
            with progress.step(f"waiting for the prepared {step.needs}"):
                prepared[step.needs].result()
        started = time.monotonic()
        with progress.step(f"{step.action} {step.table}"):
            cur.execute(step.sql)
        after[step.table] += MOVES[step.action] * cur.rowcount
        if step.action != "insert":
            changed.append((step.table, step.action, step.label, cur.rowcount))
        log.debug("%s %s: %d rows, %.2f s", step.action, step.table, cur.rowcount, time.monotonic() - started)
        if step.table in first_load and last_step[step.table] == i:
            started = time.monotonic()
            with db.only_when(cur, "first load"):
                for key, q in zip(sql_queries.TABLE[step.table].keys_for("postgres"), sql_queries.add_keys(step.table)):
                    with progress.step(f"build {key.name}", key_build=True):
                        cur.execute(q)
            log.debug("%s: keys built, %.2f s", step.table, time.monotonic() - started)
    return after, changed


def take_over_empty_tables(cur, before):
    """A first load: the loaded tables that are empty (but for those the prepare statements
    read, sql_queries.TAKEN_OVER_WHEN_EMPTY) are truncated inside the transaction and
    their keys dropped, to be built once after their rows are in (apply_steps); returns those
    tables. With the embedded server's wal_level = minimal, rows added to a table truncated in
    the same transaction skip the write-ahead log (the table is synced once, at commit), and
    one index build costs less than a million index inserts."""
    empty = [t for t in sql_queries.TAKEN_OVER_WHEN_EMPTY if before[t] == 0]
    if empty:
        with db.only_when(cur, "first load"):
            cur.execute("TRUNCATE " + ", ".join(empty))
            for table in empty:
                for q in sql_queries.drop_keys(table):
                    cur.execute(q)
    return empty


def drop_scratch(conn):
    """After a failed transform: nothing of it committed, and no prepared rows left behind (each
    drop committed as it runs: after Ctrl-C too, when the connection commits nothing else)."""
    conn.rollback()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for q in sql_queries.drop_scratch:
                cur.execute(q)
    finally:
        conn.autocommit = False


PROGRESS_EVERY = 5.0  # seconds between progress lines


class StarProgress:
    """While the star transaction runs: at most every few seconds, a line saying which step is
    running and for how long, and for a key build (PostgreSQL) the rows so far, read from
    pg_stat_progress_create_index on a connection of its own, opened only if a build lasts
    that long. Without a cfg (Redshift), the step and its time."""

    def __init__(self, cfg=None, conn=None, every=None):
        self.cfg, self.every = cfg, every or PROGRESS_EVERY
        self.backend = conn.info.backend_pid if cfg is not None and not db.is_dry_run(conn) else None
        self.what, self.key_build, self.started, self.begun = None, False, 0.0, time.monotonic()
        self.done, self.reader, self.thread = threading.Event(), None, None

    def __enter__(self):
        self.thread = threading.Thread(target=self._report, name="star-progress", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        if self.reader is not None:
            self.reader.close()

    @contextlib.contextmanager
    def step(self, what, key_build=False):
        self.what, self.key_build, self.started = what, key_build, time.monotonic()
        try:
            yield
        finally:
            self.what = None

    def _report(self):
        while not self.done.wait(self.every):
            what, key_build, started = self.what, self.key_build, self.started
            if what is None:
                continue
            rows = self._key_build_rows() if key_build else ""
            now = time.monotonic()
            log.info("  star tables: %s%s, %.1f s (%.1f s in all)", what, rows, now - started, now - self.begun)

    def _key_build_rows(self):
        if self.backend is None:
            return ""
        try:
            if self.reader is None:
                self.reader = db.connect(self.cfg, autocommit=True)
            with self.reader.cursor() as cur:
                cur.execute(sql_queries.key_build_progress, (self.backend,))
                row = cur.fetchone()
        except (psycopg2.Error, UserError):
            return ""
        if not row:
            return ""
        phase, tuples_done, tuples_total, blocks_done, blocks_total = row
        if tuples_total:
            return f", {phase}: {tuples_done:,} of {tuples_total:,} rows"
        return f", {phase}: {blocks_done:,} of {blocks_total:,} blocks" if blocks_total else f", {phase}"


def run_etl(cfg, max_errors=None, wait=True, s3=None, days=None):
    """The whole load on PostgreSQL (of the log files, those of `days` if given). Returns an EtlResult."""
    max_errors = cfg.max_errors if max_errors is None else max_errors
    result = EtlResult(new_run_id(), days=list(days or []))
    started = time.monotonic()
    # The source folders are walked while the server starts (20,000 song files: 0.2 s).
    with ThreadPoolExecutor(1, thread_name_prefix="list") as lister:
        listing = lister.submit(find_sources, cfg, s3, days)
        with db.connection(cfg) as conn:
            db.require_tables(conn)
            with (db.etl_lock(conn, wait), history.recorded(cfg, result, conn),
                  db.waits_explained(cfg, conn, wait)):  # a reader's open transaction: said, not waited on in silence
                sources, s3 = listing.result()  # a missing source or day: a failed run, kept too
                result.before.update(db.row_counts(conn, ["load_errors"]))  # this run's: the difference
                conn.commit()
                result.record_staging(load_staging(cfg, conn, sources, result.run_id, s3))
                check_set_aside(conn, result.staged, result.run_id, max_errors)
                # the run's row says succeeded in the star's own commit: a process killed just
                # after it left a committed load marked interrupted
                result.record_star(transform(cfg, conn, result.checks,
                                             lambda star: history.succeeded_within(cfg, result, star, conn)))
    result.steps["total"] = time.monotonic() - started
    return result


def transform(cfg, conn, checks=None, before_commit=None):
    """Staging -> star on PostgreSQL; returns insert_star_tables()'s result (the checks'
    outcomes into `checks`). The heavy SELECTs run on their own connections, one per core, and
    this one applies their results to the star tables as each is ready. The plays are first
    prepared as if no event repeated; a repeat fails a unique key of the plays (or, when the
    inserts skipped plays loaded before, sql_queries.plays_repeat finds it), and the star
    transaction runs again with the plays ranked (sql_queries.RANK_REPEATS)."""
    try:
        with ThreadPoolExecutor(min(len(sql_queries.SCRATCH_TABLES), os.cpu_count() or 1),
                                thread_name_prefix="prepare") as pool, StarProgress(cfg, conn) as progress:
            first_try, started = prepare_star_rows(cfg, pool), time.monotonic()
            try:
                return insert_star_tables(conn, "postgres", first_try, checks, progress, ranked=False,
                                          before_commit=before_commit)
            except (psycopg2.errors.UniqueViolation, RepeatedEvent) as e:
                key = getattr(e, "diag", None)
                if key is not None and key.constraint_name not in sql_queries.REPEAT_KEYS:
                    raise
                conn.rollback()
                log.info("the batch repeats an event (%s): its plays again, each event once",
                         e if key is None else key.message_detail)
                first_seconds = time.monotonic() - started
            # Only after a repeat; outside the except, so that its own error stands alone.
            before, after, changed, seconds = insert_star_tables(
                conn, "postgres", prepare_star_rows(cfg, pool, retry_of=first_try), checks, progress,
                before_commit=before_commit)
            seconds["star tables"] += first_seconds  # the step's time is both tries'
            return before, after, changed, seconds
    except (UserError, psycopg2.Error, KeyboardInterrupt):
        with contextlib.suppress(psycopg2.Error):  # the connection may be what failed
            drop_scratch(conn)
        raise


def load_staging_redshift(cfg, conn, run_id, max_errors, sources, copies):
    """Run the COPYs (staging.copy_plan) from S3, inside the caller's transaction (which holds
    sql_queries.load_lock); return a StagingResult per source.

    Each COPY lets through what remains of max_errors; the records it skipped are copied from
    Redshift's load-error table (by the COPY's query id) into load_errors and counted. More
    than max_errors in all: everything is rolled back.
    """
    kind = "serverless" if cfg.serverless else "provisioned"
    results = {source: staging.StagingResult(source, files=len(found.files), location=getattr(cfg, source))
               for source, found in sources.items()}
    copy_ids = []
    with conn.cursor() as cur:
        for q in sql_queries.clear_staging["redshift"]:
            cur.execute(q)
        for copy in copies:
            started = time.monotonic()
            what, table = staging.SOURCES[copy.source]
            set_aside = sum(r.rejected for r in results.values())
            log.info("staging %s: COPY from %s%s", what, copy.uri, " (gzip)" * copy.gzip)
            try:
                cur.execute(sql_queries.copy_query(cfg, copy, max_errors - set_aside))
            except psycopg2.Error as e:
                conn.rollback()
                raise UserError(copy_failure(conn, kind, table, e, copy_ids))
            cur.execute(sql_queries.last_copy_id)
            copy_ids.append(cur.fetchone()[0])
            cur.execute(sql_queries.copy_errors_to_load_errors[kind],
                        {"run_id": run_id, "source": copy.source, "query_id": copy_ids[-1]})
            result = results[copy.source]
            result.rejected += cur.rowcount
            cur.execute(sql_queries.count_rows.format(table=table))
            result.loaded = cur.fetchone()[0]
            result.seconds += time.monotonic() - started
            total = sum(r.rejected for r in results.values())
            if total > max_errors:
                conn.rollback()
                first = first_load_errors(conn, kind, copy_ids)
                raise UserError(f"{total} bad records, more than the {max_errors} allowed "
                                f"(--max-errors); nothing was committed{first}")
    return list(results.values())


def first_load_errors(conn, kind, copy_ids):
    """The first load errors of these COPYs as indented lines: file, line, column, reason."""
    if not copy_ids:
        return ""
    try:
        with conn.cursor() as cur:
            cur.execute(sql_queries.load_error_queries[kind], {"query_ids": tuple(copy_ids)})
            rows = cur.fetchall()
        conn.rollback()
    except psycopg2.Error:
        conn.rollback()
        rows = []
    return "".join(f"\n  {file}:{line}: {column}: {reason}" for file, line, column, reason in rows)


def copy_failure(conn, kind, table, error, earlier_ids=()):
    """Why a Redshift COPY failed, from its load-error table: file, line, column, reason. The
    COPY's id is read after the rollback (tests/redshift_rules.py: AWS says it is updated when
    invalid data fails a COPY, and not when the COPY's transaction rolls back): an id no newer
    than the earlier COPYs' says only the error, without its records' lines."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    try:
        with conn.cursor() as cur:
            cur.execute(sql_queries.last_copy_id)
            copy_id = cur.fetchone()[0]
        conn.rollback()
    except psycopg2.Error:
        conn.rollback()
        copy_id = -1
    loaded = copy_id not in (-1, *earlier_ids)
    lines = first_load_errors(conn, kind, [copy_id]) if loaded else ""
    return f"COPY {table} failed: {first}; no star table was changed{lines}"


def run_redshift(cfg, conn, max_errors=None, days=None, s3=None):
    """The whole load on Redshift in one transaction: COPY from S3 into staging (of the log
    files, those of `days` if given: a COPY per day), then the star. The sources are listed
    first, so that the COPYs read exactly the files found (staging.copy_plan)."""
    max_errors = cfg.max_errors if max_errors is None else max_errors
    sql_queries.copy_table_queries(cfg)  # a configuration it cannot load stops here
    result = EtlResult(new_run_id(), days=list(days or []))
    started = time.monotonic()
    sources, s3 = find_sources(cfg, s3, days)
    copies, manifests = staging.copy_plan(cfg, sources, result.run_id, days)
    if db.is_dry_run(conn):
        for uri, manifest in manifests.items():
            log.info("dry run: would write manifest %s (%s)", uri, staging.plural(len(manifest["entries"]), "file"))
    else:
        staging.write_manifests(s3, manifests)
    db.require_tables(conn)
    with conn.cursor() as cur:
        cur.execute(sql_queries.load_lock)  # one load at a time, until commit: the ETL lock
    with history.recorded(cfg, result, conn):
        result.record_staging(load_staging_redshift(cfg, conn, result.run_id, max_errors, sources, copies))
        with StarProgress() as progress:
            result.record_star(insert_star_tables(conn, "redshift", checks=result.checks, progress=progress))
    result.steps["total"] = time.monotonic() - started
    return result


def summary(result):
    """The run as two tables, steps with seconds and tables with rows, each column as wide as
    its widest value."""
    plural = staging.plural
    notes = {}
    for r in result.staged:
        note = (f"{plural(r.files, 'file')}, {plural(r.loaded, 'record')} loaded, {r.rejected:,} set aside"
                + (f", {r.skipped:,} skipped (-v lists them)" if r.skipped else "")
                + ("; warning: every file is empty" if r.empty else ""))
        notes[f"staging {staging.SOURCES[r.source][0]}"] = note
    steps = [[step, f"{seconds:.2f}", notes.get(step, "")] for step, seconds in result.steps.items()]
    changed = {}
    for table, action, label, rows in result.changed:
        changed.setdefault(table, []).append(f"{label} {'-' if action == 'delete' else '+'}{rows:,}")
    tables = [[t, f"{result.after[t]:,}",
               f"{result.added(t):+,}" if t in result.before else "",
               ", ".join(changed.get(t, []))]
              for t in sql_queries.TABLES if t in result.after]
    sources = "; ".join(f"{staging.SOURCES[r.source][0]} from {r.location}" for r in result.staged)
    n = quality.counts(result.checks)
    checks = f"checks: {n['pass']} passed, {n['warn']} warned" + "".join(
        f"\n  warning: {o.describe()}" for o in result.checks if o.status == "warn")
    return "\n".join([f"run {result.run_id}{describe_days(result.days)}", sources, ""]
                     + columns(["step", "seconds", "notes"], steps, "<><")
                     + [""] + columns(["table", "rows", "added", "notes"], tables, "<>><") + ["", checks])


def describe_days(days):
    if not days:
        return ""
    return f" (log days {days[0]} to {days[-1]})" if len(days) > 1 else f" (log day {days[0]})"


def columns(header, rows, align):
    """Lines of a table: columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(str(cell)) for cell in col) for col in zip(header, *rows)]
    return [("  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths))).rstrip()
            for row in [header] + rows]


def as_json(result):
    """The summary's facts as JSON."""
    return json.dumps({"run_id": result.run_id, "days": [str(d) for d in result.days], "steps": result.steps, "before": result.before,
                       "after": result.after, "added": {t: result.added(t) for t in result.before if t in result.after},
                       "changed": [{"table": t, "action": action, "counted_as": label, "rows": rows}
                                   for t, action, label, rows in result.changed],
                       "staged": [dict(dataclasses.asdict(r), empty=r.empty) for r in result.staged],
                       "checks": [{"check": o.check.name, "status": o.status, "found": o.found,
                                   "examples": [[str(v) for v in e] for e in o.examples]} for o in result.checks]})


def main(cfg, args):
    if args.dry_run:
        note = ("as for a first load; a later load (star tables not empty) skips the statements "
                "marked 'first load only'" if cfg.engine == "postgres" else "")
        return db.print_dry_run(cfg, lambda: load(cfg, args), note)
    result = load(cfg, args)
    try:
        print(as_json(result) if args.json else summary(result), flush=True)
    except BrokenPipeError:
        raise  # its reader stopped reading (| head): not an error
    except OSError as e:  # a full disk, a lost terminal
        raise UserError(f"run {result.run_id} loaded and committed, but its summary could not be written: "
                        f"{e.strerror or e}; analytics.py --runs shows it") from None


def load(cfg, args):
    days = days_to_load(args)
    if cfg.engine == "redshift":
        with db.connection(cfg) as conn:
            return run_redshift(cfg, conn, args.max_errors, days)
    return run_etl(cfg, args.max_errors, wait=not args.no_wait, days=days)


def days_to_load(args):
    """The days of --date, or of --from to --to (both included), in order; None: every log file."""
    # "given" is not None: an empty --date "$DAY" (its variable unset) is an error, not every day
    days, first, last = (getattr(args, name, None) for name in ("date", "from_day", "to_day"))
    for option, given in (("--date", days), ("--from", first), ("--to", last)):
        if isinstance(given, list) and len(given) > 1:  # the last one given was loaded, the others said nothing
            raise UserError(f"{option} is given {len(given)} times: one day (several: --from and --to)", exit_code=2)
    day, first, last = (given[0] if isinstance(given, list) else given for given in (days, first, last))
    if day is not None and (first is not None or last is not None):
        raise UserError("--date and --from/--to cannot be used together: one day, or a range", exit_code=2)
    if day is not None:
        return [iso_day(day, "--date")]
    if first is None and last is None:
        return None
    if first is None or last is None:
        raise UserError("--from and --to go together: --from 2018-11-01 --to 2018-11-07 loads those 7 days", exit_code=2)
    first, last = iso_day(first, "--from"), iso_day(last, "--to")
    if first > last:
        raise UserError(f"--from {first} is after --to {last}", exit_code=2)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def iso_day(text, option):
    """A YYYY-MM-DD argument as a date; a bad one exits 2, as argparse's own errors do."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise UserError(f"{option} must be a date as YYYY-MM-DD, not {text!r}", exit_code=2)
    try:
        return date.fromisoformat(text)
    except ValueError as e:  # 2018-11-31
        raise UserError(f"{option} {text} is no day: {e}", exit_code=2)


def non_negative(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {text!r}")
    return int(text)


def add_arguments(p):
    p.add_argument("--max-errors", type=non_negative, metavar="N", default=None,
                   help="set aside up to N bad records and load the rest "
                        "(default: [ETL] MAX_ERRORS, else 0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--dry-run", action="store_true",
                   help="print every SQL statement the load would run, connecting to no database")
    p.add_argument("--date", metavar="DAY", action="append", help="load only the log files of this day (YYYY-MM-DD)")
    p.add_argument("--from", dest="from_day", metavar="DAY", action="append",
                   help="with --to: load only the log files of the days from DAY to --to, both included")
    p.add_argument("--to", dest="to_day", metavar="DAY", action="append", help="the last day of --from")
    p.add_argument("--no-wait", action="store_true",
                   help="stop instead of waiting when another etl.py is loading this warehouse, or a "
                        "session holds a table open (a reader's transaction)")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__.split("\n\n")[0], add_arguments, uses=("warehouse", "sources", "role", "etl")))
