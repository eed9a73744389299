"""Answer the questions the warehouse exists for: most played songs, plays per hour and per day,
free vs paid plays, top users and locations. Or run one query of your own with --sql; list
the last loads with --runs; check the warehouse's data quality with --quality.

Queries run as the read-only reader (see db.connect), so no text can change data; --sql takes
exactly one SELECT (or VALUES), run through a server-side cursor, which streams its rows.
Plays per hour and per day are bar charts too, where an hour or day without plays is a bar of 0;
--html writes the report as one page.
--serve keeps the embedded server running for other tools, open to the reader only."""
import argparse
import contextlib
import datetime
import logging
import re
import shlex
import sys

import psycopg2

import cli
import db
import output
import quality
import sql_queries
from cli import main_entry
from errors import UserError

log = logging.getLogger("sparkify")

CURSOR = "sparkify_result"
PAGE = 1000  # rows per FETCH: the memory a result of any size takes


def section_name(title):
    """'Busiest hours (UTC)' -> 'busiest-hours-utc'"""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


SECTIONS = {section_name(title): (title, sql) for title, sql in sql_queries.analytics_queries}


def every_hour(rows):
    """(hour, plays) rows (at most one an hour, and NULL's), each hour 0-23 with none as 0."""
    rows = list(rows)
    hours = {hour: plays for hour, plays in rows if hour is not None}
    if not hours:  # no plays, no rows
        return rows
    return [(str(h), hours.get(str(h), "0")) for h in range(24)] + [r for r in rows if r[0] is None]


def every_day(rows):
    """(day, plays) rows in day order, with each day between the first and the last that has
    none as 0; a gap longer than GAP_DAYS is one row, its first and last day."""
    last = None
    for day, plays in rows:
        if day is not None:
            this = datetime.date.fromisoformat(day)
            gap = (this - last).days - 1 if last else 0
            if 0 < gap <= GAP_DAYS:
                yield from ((str(last + datetime.timedelta(days=n)), "0") for n in range(1, gap + 1))
            elif gap > GAP_DAYS:
                yield f"{last + datetime.timedelta(days=1)} to {this - datetime.timedelta(days=1)}", "0"
            last = this
        yield day, plays


GAP_DAYS = 62  # a longer run of days without plays is one bar's row, not one each
# Drawn as bar charts (in the terminal instead of the table), on a time axis: the rows of a chart,
# where a period without plays has a row of its own (a chart without it closes the gap).
CHARTS = {"plays-per-hour-utc": every_hour, "plays-per-day": every_day}


# One statement: a lexer just good enough to find the semicolons that end statements, outside
# quotes, dollar quotes and comments. A backslash escapes a quote on Redshift (and PostgreSQL with
# standard_conforming_strings off) but not on PostgreSQL's default: the text must be one statement
# read either way. The cursor then takes only a SELECT or VALUES, and the reader may only read.
_TOKENS = {
    backslash: re.compile(r"""
        \s+ | --[^\r\n]* | /\*
      | [eE]'(?:[^'\\]|\\.|'')*'?
      | '(?:""" + (r"[^'\\]|\\.|''" if backslash else r"[^']|''") + r""")*'?
      | "(?:[^"]|"")*"?
      | \$(?:[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*)?\$
      | [A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]* | \$\d+ | ; | .""", re.X | re.S)
    for backslash in (False, True)
}


def _scan(text, backslash):
    """Where each statement with content ends (its ';' or the end of the text), and the first
    word of the first (a comment, however nested, or a '(' before it skipped)."""
    ends, content, pos, first = [], False, 0, ""
    while pos < len(text):
        m = _TOKENS[backslash].match(text, pos)
        tok, pos = m.group(), m.end()
        if not ends and not first and tok not in ("(", "/*", ";") and not (tok.isspace() or tok.startswith("--")):
            first = tok  # a dollar-quoted string too: no SELECT begins with one
        if tok == "/*":
            depth = 1
            while depth and pos < len(text):
                step = text[pos:pos + 2]
                depth += (step == "/*") - (step == "*/")
                pos += 2 if step in ("/*", "*/") else 1
        elif tok.startswith("$") and tok.endswith("$") and len(tok) > 1:
            close = text.find(tok, pos)
            pos, content = (len(text) if close < 0 else close + len(tok)), True
        elif tok == ";":
            if content:
                ends.append(m.start())
            content = False
        elif not (tok.isspace() or tok.startswith("--")):
            content = True
    return (ends + [len(text)] if content else ends), first


def one_statement(text):
    """The text's one statement, without a final ';'; UserError if it holds none or more, or
    anything but a SELECT or VALUES."""
    (standard, first), (escaped, _) = _scan(text, False), _scan(text, True)
    if len(standard) == 1 and standard != escaped:
        raise UserError("--sql reads as one statement only where a backslash does not escape a quote (Redshift "
                        "reads it otherwise): write such a quote as ''")
    if len(standard) != 1 or standard != escaped:
        raise UserError("--sql takes exactly one statement (a SELECT or VALUES)"
                        if standard or escaped else "--sql is empty")
    statement = text[:standard[0]]
    if first.upper() not in ("SELECT", "VALUES", "WITH", "TABLE"):
        raise UserError(f"--sql takes a SELECT or VALUES, not {(first.upper() or statement.strip())[:20]!r}")
    return statement


def stream(conn, query):
    """(column names, numeric flags, pages of rows) of one query, through a server-side cursor.

    DECLARE takes only a SELECT or VALUES (a data-modifying WITH, SELECT INTO, a COMMIT are
    errors) and fetching it runs the query as far as the page asked for, so the first rows come
    at once and memory holds one page. (On Redshift the first FETCH runs the whole query, whose
    result the leader node holds, up to a size per node type: docs/redshift.md.)"""
    cur = conn.cursor()
    _execute(conn, cur, f"DECLARE {CURSOR} CURSOR FOR {query}")
    _execute(conn, cur, f"FETCH FORWARD {PAGE} FROM {CURSOR}")
    columns = [d.name for d in cur.description]
    numeric = [d.type_code in output.NUMERIC_TYPES for d in cur.description]

    def pages():
        rows = cur.fetchall()
        while rows:
            yield rows
            if len(rows) < PAGE:
                break
            _execute(conn, cur, f"FETCH FORWARD {PAGE} FROM {CURSOR}")
            rows = cur.fetchall()
        _execute(conn, cur, f"CLOSE {CURSOR}")
    return columns, numeric, pages()


def _execute(conn, cur, statement):
    try:
        cur.execute(statement)
    except UnicodeEncodeError as e:  # not the output's: the database's encoding lacks a character of the query
        raise UserError(f"query failed: {ascii(e.object[e.start:e.end])} is not in the database's encoding "
                        f"({conn.encoding})")
    except psycopg2.Error as e:
        with contextlib.suppress(psycopg2.Error):  # a lost connection cannot roll back: say why it was lost
            conn.rollback()
        raise UserError(f"query failed: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")


def open_reader(cfg):
    """A connection as the reader, in a read-only transaction, values kept as the server's text."""
    conn = db.connect(cfg, reader=True)
    output.keep_server_text(conn)
    if cfg.engine == "postgres":
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            cur.execute("SET extra_float_digits = 3")  # shortest exact floats, whatever the server's default
    return conn


def write(out, columns, numeric, pages, as_csv):
    return output.write_csv(out, columns, pages) if as_csv else output.write_table(out, columns, numeric, pages)


def report(conn, names, charts=True):
    """The named sections, one query at a time: (title, columns, numeric, pages, chart) each."""
    for name in names:
        title, query = SECTIONS[name]
        yield (title, *stream(conn, query), CHARTS.get(name) if charts else None)
        conn.rollback()  # one cursor at a time (Redshift)


def main(cfg, args):
    if args.serve:
        return serve(cfg, args.port)
    if args.port is not None:
        raise UserError("--port is for --serve", exit_code=2)
    if args.html == "":
        raise UserError("--html needs a file name", exit_code=2)
    if args.sql is not None and db.reader_is_the_loader(cfg):
        raise UserError(f"--sql on {cfg.describe()} needs [CLUSTER] READER_USER, a user that may only read: "
                        "without it a query runs as the loading user (on PostgreSQL through SET ROLE, which a "
                        "query can undo); the report's sections need none", exit_code=2)
    if args.html and (args.sql is not None or args.runs or args.quality):
        other = "--sql" if args.sql is not None else "--runs" if args.runs else "--quality"
        raise UserError(f"--html writes the report (or one --section), not {other}", exit_code=2)
    if args.html not in (None, "-"):
        output.check_html_target(args.html, cfg.path)
    if (args.csv or args.html == "-") and hasattr(sys.stdout, "reconfigure"):
        # as COPY writes it, and as the page says it is: UTF-8 (Windows writes a redirect in the
        # ANSI code page), \n (not \r\n)
        sys.stdout.reconfigure(encoding="utf-8", newline="\n")
    conn = open_reader(cfg)
    try:
        db.require_tables(conn, sql_queries.STAR_TABLES)
        if args.sql is not None:  # --sql "" too: it says it is empty
            write(sys.stdout, *stream(conn, one_statement(args.sql)), args.csv)
            return
        if args.runs:
            return print_runs(conn, args.runs, args.csv)
        if args.quality:
            return print_quality(conn, cfg.engine, args.csv)
        names = [args.section] if args.section else list(SECTIONS)
        if args.html == "-":
            output.write_html(sys.stdout, "Sparkify plays", report(conn, names, not args.no_chart))
            return
        if args.html:
            n = output.write_html_file(args.html, "Sparkify plays", report(conn, names, not args.no_chart))
            log.info("wrote %s: %d section%s", args.html, n, "s" * (n != 1))
            return
        for n, (title, columns, numeric, pages, chart) in enumerate(report(conn, names)):
            if args.csv and not args.section:
                print(("\n" if n else "") + f"# {title}")
            elif not args.csv:
                print(("\n" if n else "") + f"== {title} ==")
            if chart and not (args.csv or args.no_chart):
                output.write_chart(sys.stdout, columns, [list(chart(row for page in pages for row in page))])
            else:
                write(sys.stdout, columns, numeric, pages, args.csv)
    finally:
        conn.close()


def serve(cfg, port):
    """Keep the embedded server running until Ctrl-C, open to the reader: over its unix socket,
    and with port over TCP on 127.0.0.1 and ::1 with a password made for this session."""
    if not cfg.embedded:
        raise UserError(f"--serve is for the embedded PostgreSQL; {cfg.describe()} is a server already: "
                        "connect to it directly", exit_code=2)
    conn = db.connect(cfg, reader=True)  # the reader exists
    try:
        db.require_tables(conn, sql_queries.STAR_TABLES)
    finally:
        conn.close()
    db.reset_reader(cfg.data_dir)  # and again when serving stops, whatever a client set for the role
    with contextlib.ExitStack() as stack:
        stack.callback(db.reset_reader, cfg.data_dir)
        password = stack.enter_context(db.reader_over_tcp(cfg.data_dir, port)) if port else None
        uri = db.reader_uri(cfg.data_dir)  # after a restart for TCP: the socket's number is the port
        lines = [f"Serving {cfg.describe()} to {sql_queries.READER_ROLE}, who may only read, until Ctrl-C.",
                 f"  {uri}", f"  psql {shlex.quote(uri)}"]
        if port:
            tcp = f"postgresql://{sql_queries.READER_ROLE}@127.0.0.1:{port}/postgres"
            lines += ["Over TCP (127.0.0.1 and ::1 only), with a password for this session (shown once):",
                      f"  {tcp}", f"  password: {password}", f"  psql {shlex.quote(tcp)}"]
        print("\n".join(lines), flush=True)
        cli.INTERRUPTED.wait()
    print("stopped serving", flush=True)


def print_runs(conn, n, as_csv):
    """The last n runs of etl.py (etl_runs), newest first."""
    db.require_tables(conn, ["etl_runs"])
    with conn.cursor() as cur:
        cur.execute(sql_queries.last_runs, (n,))
        columns = [d.name for d in cur.description]
        numeric = [d.type_code in output.NUMERIC_TYPES for d in cur.description]
        rows = cur.fetchall()
    write(sys.stdout, columns, numeric, [rows], as_csv)


def print_quality(conn, engine, as_csv):
    """Every data-quality check on the whole warehouse: pass, warn or fail, with what it found;
    UserError (exit 1) if any fails."""
    outcomes = quality.run(conn, sql_queries.warehouse_checks(engine))
    conn.rollback()
    rows = [(o.status, o.check.name, o.check.table, o.found_text(), o.examples_text()) for o in outcomes]
    write(sys.stdout, ["status", "check", "table", "found", "examples"], [False, False, False, True, False],
          [rows], as_csv)
    failed = [o.check.name for o in outcomes if o.status == "fail"]
    if failed:
        raise UserError(f"{len(failed)} of {len(outcomes)} checks failed: {', '.join(failed)}")


def positive(text):
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a whole number > 0, not {text!r}")
    return min(int(text), 2**63 - 1)  # past a bigint (the LIMIT's type): all of them anyway


def add_arguments(p):
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sql", metavar="QUERY", help="run this one SELECT (or VALUES) instead of the report")
    what.add_argument("--section", metavar="NAME", choices=list(SECTIONS),
                      help="only this section of the report: " + ", ".join(SECTIONS))
    what.add_argument("--runs", metavar="N", nargs="?", const=20, type=positive,
                      help="list the last N runs of etl.py (default 20): days, counts, checks, status")
    what.add_argument("--quality", action="store_true",
                      help="run every data-quality check on the whole warehouse: pass, warn or fail, "
                           "with the rows found (exit 1 if any fails)")
    what.add_argument("--serve", action="store_true",
                      help="keep the embedded PostgreSQL running until Ctrl-C and print how to connect "
                           "(psql, notebooks, DBeaver) as the read-only role, over its unix socket")
    p.add_argument("--port", metavar="N", type=port_number,
                   help="with --serve: also over TCP on 127.0.0.1 and ::1 at port N, for the read-only "
                        "role only, with a password made for the session")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true",
                      help="print CSV with a header row instead of tables, in UTF-8 as PostgreSQL's COPY "
                           "writes it (the whole report: each section after a '# title' line)")
    form.add_argument("--html", metavar="FILE",
                      help="write the report as one self-contained HTML page (charts and tables) to FILE "
                        "(- for standard output); it replaces only a page it wrote before")
    p.add_argument("--no-chart", action="store_true",
                   help="tables only: no bar charts of plays per hour and per day")


def port_number(text):
    if not text.isdigit() or not 1024 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port from 1024 to 65535: {text!r}")
    return int(text)


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__, add_arguments, uses=("warehouse",)))
