"""Query results as text: aligned tables for people, exact CSV for programs, streamed page by page.

Values are the text the database prints (keep_server_text): floats in their shortest exact form
(PostgreSQL 12+), booleans as t/f, intervals as `1 day 02:00:00`, JSON as sent, timestamps ISO
(`2018-11-30 00:22:07.796`), arrays as `{1,2}`. No value is converted to Python and back, so
nothing is rounded. Rows come in pages (lists of tuples), so a result of any size takes the
memory of one page.
"""
import csv

import psycopg2.extensions

# int2, int4, int8, oid, float4, float8, numeric, money: right-aligned in tables
NUMERIC_TYPES = frozenset((21, 23, 20, 26, 700, 701, 1700, 790))


def keep_server_text(conn):
    """Make every value on this connection arrive as the text the server sent (or None)."""
    for oid in list(psycopg2.extensions.string_types):
        as_text = psycopg2.extensions.new_type((oid,), f"TEXT_{oid}", lambda value, cur: value)
        psycopg2.extensions.register_type(as_text, conn)


def write_csv(out, columns, pages):
    """A header row, then every row; NULL as an empty field. Returns the number of rows."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    n = 0
    for page in pages:
        w.writerows(page)
        n += len(page)
    return n


def write_table(out, columns, numeric, pages):
    """Aligned text: numbers right, text left, a rule under the header. Column widths come
    from the first page and only grow: a wider value in a later page widens the column from
    that page on. Returns the number of rows."""
    widths = [len(c) for c in columns]
    n = 0
    for page in pages:
        texts = [["" if v is None else v for v in row] for row in page]
        widths = [max([w] + [len(r[i]) for r in texts]) for i, w in enumerate(widths)]
        if n == 0:
            _header(out, columns, widths, numeric)
        out.writelines(_line(r, widths, numeric) + "\n" for r in texts)
        n += len(page)
    if n == 0:
        _header(out, columns, widths, numeric)
        out.write("(no rows)\n")
    return n


def _header(out, columns, widths, numeric):
    out.write(_line(columns, widths, numeric) + "\n" + "  ".join("-" * w for w in widths) + "\n")


def _line(values, widths, right):
    return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()
