"""Answer the questions the warehouse exists for: most played songs, busiest hours,
free vs paid plays, top users and locations. Or run one query of your own with --sql.

Queries run as the read-only reader (see db.connect), so no text can change data; --sql takes
exactly one SELECT (or VALUES), run through a server-side cursor, which streams its rows."""
import re
import sys

import psycopg2

import db
import output
import sql_queries
from cli import main_entry
from errors import UserError

CURSOR = "sparkify_result"
PAGE = 1000  # rows per FETCH: the memory a result of any size takes


def section_name(title):
    """'Busiest hours (UTC)' -> 'busiest-hours-utc'"""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


SECTIONS = {section_name(title): (title, sql) for title, sql in sql_queries.analytics_queries}


# One statement: a lexer just good enough to find the semicolons that end statements, outside
# quotes, dollar quotes and comments. A backslash escapes a quote on Redshift (and PostgreSQL with
# standard_conforming_strings off) but not on PostgreSQL's default: the text must be one statement
# read either way. The cursor then takes only a SELECT or VALUES, and the reader may only read.
_TOKENS = {
    backslash: re.compile(r"""
        \s+ | --[^\n]* | /\*
      | [eE]'(?:[^'\\]|\\.|'')*'?
      | '(?:""" + (r"[^'\\]|\\.|''" if backslash else r"[^']|''") + r""")*'?
      | "(?:[^"]|"")*"?
      | \$(?:[A-Za-z_\x80-\U0010ffff][\w\x80-\U0010ffff]*)?\$
      | [A-Za-z_\x80-\U0010ffff][\w$\x80-\U0010ffff]* | \$\d+ | ; | .""", re.X | re.S)
    for backslash in (False, True)
}


def _statement_ends(text, backslash):
    """Where each statement with content ends (its ';' or the end of the text)."""
    ends, content, pos = [], False, 0
    while pos < len(text):
        m = _TOKENS[backslash].match(text, pos)
        tok, pos = m.group(), m.end()
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
    return ends + [len(text)] if content else ends


def one_statement(text):
    """The text's one statement, without a final ';'; UserError if it holds none or more."""
    standard, escaped = _statement_ends(text, False), _statement_ends(text, True)
    if len(standard) != 1 or standard != escaped:
        raise UserError("--sql takes exactly one statement (a SELECT or VALUES)"
                        if standard or escaped else "--sql is empty")
    statement = text[:standard[0]]
    first = re.match(r"(?:\s|--[^\n]*\n?|/\*.*?\*/|\()*(\w*)", statement, re.S).group(1)
    if first.upper() not in ("SELECT", "VALUES", "WITH", "TABLE"):
        raise UserError(f"--sql takes a SELECT or VALUES, not {first.upper() or statement.strip()[:20]!r}")
    return statement


def stream(conn, query):
    """(column names, numeric flags, pages of rows) of one query, through a server-side cursor.

    DECLARE takes only a SELECT or VALUES (a data-modifying WITH, SELECT INTO, a COMMIT are
    errors) and fetching it runs the query as far as the page asked for, so the first rows come
    at once and memory holds one page."""
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
    except psycopg2.Error as e:
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


def main(cfg, args):
    conn = open_reader(cfg)
    try:
        db.require_tables(conn, sql_queries.STAR_TABLES)
        if args.sql:
            write(sys.stdout, *stream(conn, one_statement(args.sql)), args.csv)
            return
        names = [args.section] if args.section else list(SECTIONS)
        for n, name in enumerate(names):
            title, query = SECTIONS[name]
            columns, numeric, pages = stream(conn, query)
            if args.csv and not args.section:
                print(("\n" if n else "") + f"# {title}")
            elif not args.csv:
                print(("\n" if n else "") + f"== {title} ==")
            write(sys.stdout, columns, numeric, pages, args.csv)
            conn.rollback()  # one cursor at a time (Redshift)
    finally:
        conn.close()


def add_arguments(p):
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sql", metavar="QUERY", help="run this one SELECT (or VALUES) instead of the report")
    what.add_argument("--section", metavar="NAME", choices=list(SECTIONS),
                      help="only this section of the report: " + ", ".join(SECTIONS))
    p.add_argument("--csv", action="store_true",
                   help="print CSV with a header row instead of tables (the whole report: each "
                        "section after a '# title' line)")

if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__, add_arguments, uses=("warehouse",)))
