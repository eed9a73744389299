"""Answer the questions the warehouse exists for: most played songs, busiest hours,
free vs paid plays, top users and locations. Or run any query with --sql."""
import csv
import datetime
import decimal
import sys

import psycopg2

import db
import sql_queries
from cli import main_entry
from errors import UserError


def run_query(conn, sql):
    """(column names, rows) of one query, in a read-only transaction on PostgreSQL."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            if cur.description is None:
                return [], []
            return [d.name for d in cur.description], cur.fetchall()
    except psycopg2.Error as e:
        conn.rollback()
        raise UserError(f"query failed: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")


def cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def is_number(value):
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def format_table(columns, rows):
    """Aligned text: numbers right, text left, a rule under the header."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in texts]) for i, c in enumerate(columns)]
    right = [bool(rows) and all(is_number(r[i]) or r[i] is None for r in rows) for i in range(len(columns))]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right)).rstrip()
    out = [line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in texts]
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)


def write_csv(columns, rows, stream=sys.stdout):
    w = csv.writer(stream, lineterminator="\n")
    w.writerow(columns)
    w.writerows([[cell(v) for v in row] for row in rows])


def report(conn):
    """Every analytics query as (title, columns, rows)."""
    return [(title, *run_query(conn, sql)) for title, sql in sql_queries.analytics_queries]


def main(cfg, args):
    with db.connection(cfg) as conn:
        if cfg.engine == "postgres":
            conn.set_session(readonly=True)
        db.require_tables(conn, sql_queries.STAR_TABLES)
        results = [("", *run_query(conn, args.sql))] if args.sql else report(conn)
    for n, (title, columns, rows) in enumerate(results):
        if args.csv:
            write_csv(columns, rows)
            continue
        if title:
            print(("\n" if n else "") + f"== {title} ==")
        print(format_table(columns, rows))


def add_arguments(p):
    p.add_argument("--sql", metavar="QUERY", help="run this query instead of the report")
    p.add_argument("--csv", action="store_true", help="print CSV with a header row instead of tables")


if __name__ == "__main__":
    sys.exit(main_entry(main, __doc__, add_arguments, uses=("warehouse",)))
