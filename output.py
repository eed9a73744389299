"""Query results as text: aligned tables for people, exact CSV for programs (as PostgreSQL's COPY
writes it: NULL an empty field, an empty string ""), streamed page by page;
bar charts in the terminal, and one self-contained HTML page (inline SVG charts and tables).

Values are the text the database prints (keep_server_text): floats in their shortest exact form
(PostgreSQL 12+), booleans as t/f, intervals as `1 day 02:00:00`, JSON as sent, timestamps ISO
(`2018-11-30 00:22:07.796`), arrays as `{1,2}`. No value is converted to Python and back, so
nothing is rounded. Rows come in pages (lists of tuples), so a result of any size takes the
memory of one page.
"""
import codecs
import contextlib
import html
import math
import os
import shutil
import stat
import unicodedata
from pathlib import Path

import psycopg2.extensions

from errors import UserError

# int2, int4, int8, oid, float4, float8, numeric, money: right-aligned in tables
NUMERIC_TYPES = frozenset((21, 23, 20, 26, 700, 701, 1700, 790))


def keep_server_text(conn):
    """Make every value on this connection arrive as the text the server sent (or None)."""
    for oid in list(psycopg2.extensions.string_types):
        as_text = psycopg2.extensions.new_type((oid,), f"TEXT_{oid}", lambda value, cur: value)
        psycopg2.extensions.register_type(as_text, conn)


def _csv_field(value):
    """One field as PostgreSQL's COPY writes CSV, which COPY FROM reads back exactly: NULL an
    empty field, an empty string "", a field holding a comma, quote, carriage return or newline
    quoted (quotes doubled)."""
    if value is None:
        return ""
    if value and "," not in value and '"' not in value and "\n" not in value and "\r" not in value:
        return value
    return '"' + value.replace('"', '""') + '"'


def _lone_field(value):
    """The field of a one-column row: a lone \\. quoted too (it would read as COPY's end of data)."""
    return '"\\."' if value == "\\." else _csv_field(value)


def write_csv(out, columns, pages):
    """A header row, then every row, exactly as PostgreSQL's COPY ... (FORMAT csv, HEADER)
    writes them (tests/test_analytics.py compares). Returns the number of rows."""
    field = _lone_field if len(columns) == 1 else _csv_field
    out.write(",".join(map(field, columns)) + "\n")
    n = 0
    for page in pages:
        out.writelines(",".join(map(field, row)) + "\n" for row in page)
        n += len(page)
    return n


def write_table(out, columns, numeric, pages):
    """Aligned text: numbers right, text left, a rule under the header. Column widths come
    from the first page and only grow: a wider value in a later page widens the column from
    that page on. Widths are as a terminal shows them (an East Asian wide character takes two
    cells, a combining mark none); a control character is shown as its escape (\\n, \\t, \\x07),
    so a value keeps to its line. Returns the number of rows."""
    columns = [shown(c) for c in columns]
    widths = [cells(c) for c in columns]
    n, headed = 0, False
    for page in pages:
        texts = [["" if v is None else shown(v) for v in row] for row in page]
        widths = [max([w] + [cells(r[i]) for r in texts]) for i, w in enumerate(widths)]
        if not headed:  # once, with the first page's widths (an empty one's too)
            _header(out, columns, widths, numeric)
            headed = True
        out.writelines(_line(r, widths, numeric) + "\n" for r in texts)
        n += len(page)
    if not headed:
        _header(out, columns, widths, numeric)
    if n == 0:
        out.write("(no rows)\n")
    return n


def shown(text):
    """A value as a table shows it: control characters and line or paragraph separators as
    their escapes (\\n, \\x85, \\u2028), so a value keeps to its line."""
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def cells(text):
    """The terminal cells text takes: 2 for a wide or full-width character, 0 for a combining
    or enclosing mark or a zero-width format character, else 1."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.category(c) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text, width, right):
    gap = " " * (width - cells(text))
    return gap + text if right else text + gap


def _header(out, columns, widths, numeric):
    out.write(_line(columns, widths, numeric) + "\n" + "  ".join("-" * w for w in widths) + "\n")


def _line(values, widths, right):
    return "  ".join(_pad(v, w, r) for v, w, r in zip(values, widths, right)).rstrip()


# --- Bar charts in the terminal ----------------------------------------------------------------
EIGHTHS = " ▏▎▍▌▋▊▉"  # a bar's last character, in eighths of a cell; whole cells are █


def speaks_utf8(out):
    """Whether out encodes UTF-8 (else the charts are drawn in ASCII)."""
    try:
        return codecs.lookup(getattr(out, "encoding", None) or "ascii").name == "utf-8"
    except LookupError:
        return False


def write_chart(out, columns, pages, width=None):
    """A horizontal bar chart: a line per row, the first column as its label, the last as its bar
    and number; the longest bar fills the terminal's width (width, else the terminal's). Unicode
    blocks (eighths of a cell) when out speaks UTF-8, else '#'. A chart's rows are one per hour
    or day, so they are held to find the longest. Returns the number of rows."""
    rows = [("" if r[0] is None else r[0], "0" if r[-1] is None else r[-1]) for page in pages for r in page]
    width = width or shutil.get_terminal_size().columns
    label_w = max([len(columns[0])] + [len(label) for label, _ in rows])
    value_w = max([len(value) for _, value in rows], default=0)
    room = max(10, width - 1 - label_w - value_w - 3)  # one column spare: no wrap at the edge
    high = max([float(value) for _, value in rows] + [0.0])
    fine = speaks_utf8(out)
    out.write(f"{columns[0].rjust(label_w)}  {columns[-1]}\n")
    for label, value in rows:
        cells = room * max(float(value), 0.0) / high if high > 0 else 0.0
        out.write(f"{label.rjust(label_w)}  {_bar(cells, fine, float(value) > 0)} {value}\n")
    if not rows:
        out.write("(no rows)\n")
    return len(rows)


def _bar(cells, fine, nonzero):
    if not fine:
        return "#" * (round(cells) or int(nonzero))
    eighths = round(cells * 8) or int(nonzero)
    return "█" * (eighths // 8) + EIGHTHS[eighths % 8].strip()


# --- One self-contained HTML page ------------------------------------------------------------
# No script, no network: the page's policy forbids both, and every value from the data is
# escaped (text, attributes, SVG text alike): song titles and locations are anyone's input.
BAR_COLOUR = "#2b6cb0"
PAGE_MARK = '<meta name="generator" content="Sparkify analytics.py">'  # a page --html may replace has it
PAGE_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
""" + PAGE_MARK + """
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1a202c; }}
table {{ border-collapse: collapse; margin: 0.5em 0 2em; }}
th, td {{ padding: 2px 10px; border-bottom: 1px solid #e2e8f0; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
svg text {{ font: 11px sans-serif; fill: #4a5568; }}
</style></head><body>
<h1>{title}</h1>
"""


def escape(value):
    return "" if value is None else html.escape(str(value), quote=True)


def write_html(out, title, sections):
    """The page: per section its heading, its bar chart if it has one, and its table.
    sections: (title, columns, numeric, pages, chart) each, its pages read before the next;
    chart: None, or what makes the chart's rows from the table's. Returns the number of sections."""
    out.write(PAGE_HEAD.format(title=escape(title)))
    n = 0
    for name, columns, numeric, pages, chart in sections:
        out.write(f"<section>\n<h2>{escape(name)}</h2>\n")
        if chart:
            rows = [row for page in pages for row in page]  # one per hour or day
            out.write(svg_chart(name, list(chart(rows))))
            pages = [rows]
        _html_table(out, columns, numeric, pages)
        out.write("</section>\n")
        n += 1
    out.write("</body></html>\n")
    return n


def check_html_target(path, config_path=None):
    """The page may replace one it wrote before, or nothing: not the configuration, nor another file."""
    target = Path(os.path.realpath(path))
    if config_path and target == Path(os.path.realpath(config_path)):
        raise UserError(f"--html {path} is the configuration file; name another file", exit_code=2)
    if target.is_file() and target.stat().st_size:
        with open(target, "rb") as f:
            if PAGE_MARK.encode() not in f.read(1024):
                raise UserError(f"--html {path} exists and is not a page analytics.py wrote; not overwritten (name "
                                "another file, or remove it)", exit_code=2)


def write_html_file(path, title, sections):
    """write_html to path, whole or not at all: written beside the file it names (through a
    link), then renamed over it, keeping its permissions. What is there but not a file (a FIFO,
    /dev/stdout) is written straight."""
    try:
        if os.path.exists(path) and not os.path.isfile(path):
            with open(path, "w", encoding="utf-8", newline="\n") as out:
                return write_html(out, title, sections)
        target = Path(os.path.realpath(path))
        part = target.with_name(target.name + ".part")
        try:
            with open(part, "w", encoding="utf-8", newline="\n") as out:
                n = write_html(out, title, sections)
            if target.exists():
                os.chmod(part, stat.S_IMODE(target.stat().st_mode))
            os.replace(part, target)
        finally:
            with contextlib.suppress(OSError):  # a .part that is a folder is not ours to remove
                part.unlink(missing_ok=True)
    except BrokenPipeError:
        raise  # a pipe's reader stopped reading (| head): not an error
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}")
    return n


def svg_chart(title, rows, width=960, height=260):
    """Vertical bars, one per row (label: first column, value: last), in SVG; integer pixel
    edges, so a bar is one solid colour. Every few labels under the bars, as many as fit."""
    left, right, top, bottom = 64, 8, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [max(float(r[-1] or 0), 0.0) for r in rows]
    high = max(values, default=0.0)
    slot = plot_w / max(len(rows), 1)
    bar_w = max(1, int(slot * 0.8))
    every = max(1, math.ceil(7 * max([len(str(r[0] or "")) for r in rows] + [1]) / slot))
    base = top + plot_h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" shape-rendering="crispEdges" role="img" aria-label="{escape(title)}">',
           f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#a0aec0"/>']
    if rows:
        top_row = rows[values.index(high)]
        out.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{escape(top_row[-1])}</text>')
    out.append(f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>')
    for i, (row, value) in enumerate(zip(rows, values)):
        h = max(1, round(plot_h * value / high)) if value > 0 else 0  # a play is a bar, as in the terminal
        x = left + int(i * slot + (slot - bar_w) / 2)
        out.append(f'<rect class="bar" x="{x}" y="{base - h}" width="{bar_w}" height="{h}" fill="{BAR_COLOUR}">'
                   f'<title>{escape(row[0])}: {escape(row[-1])}</title></rect>')
        if i % every == 0:
            out.append(f'<text x="{x + bar_w // 2}" y="{base + 16}" text-anchor="middle">{escape(row[0])}</text>')
    return "\n".join(out) + "\n</svg>\n"


def _html_table(out, columns, numeric, pages):
    out.write("<table><thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr></thead><tbody>\n")
    cells = ['<td class="num">' if n else "<td>" for n in numeric]
    rows = 0
    for page in pages:
        out.writelines("<tr>" + "".join(f"{td}{escape(v)}</td>" for td, v in zip(cells, row)) + "</tr>\n"
                       for row in page)
        rows += len(page)
    if not rows:
        out.write(f'<tr><td colspan="{len(columns)}">(no rows)</td></tr>\n')
    out.write("</tbody></table>\n")
    return rows
