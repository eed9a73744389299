"""The report's plays per hour and per day as bar charts: in the terminal (fitting its width,
ASCII when the output is not UTF-8, none with --no-chart), and in one self-contained HTML page
(inline SVG, every value escaped) that a real browser (headless Chromium) renders."""
import datetime
import html.parser
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

import analytics
import output
from conftest import ROOT, TS, event, reset, run_script, song, write_events, write_song

HOUR = 3600 * 1000
# TS is 2018-11-30 00:22 UTC: plays at hours 0 (x4), 2 (x2), 5 on the 30th, 23 on the 29th, and 2
# on the 27th (none on the 28th)
PLAYS = [TS] * 4 + [TS + 2 * HOUR] * 2 + [TS + 5 * HOUR, TS - HOUR, TS - 70 * HOUR]
PER_HOUR = {"0": 4, "2": 3, "5": 1, "23": 1}
PER_DAY = {"2018-11-27": 1, "2018-11-29": 1, "2018-11-30": 7}
# A chart has a bar's row for each hour, and each day from the first to the last, with no plays too
EVERY_HOUR = {str(h): PER_HOUR.get(str(h), 0) for h in range(24)}
EVERY_DAY = {"2018-11-27": 1, "2018-11-28": 0, "2018-11-29": 1, "2018-11-30": 7}
HOSTILE_TITLE = "</svg><script>alert(1)</script>"
HOSTILE_LOCATION = '"><img src=x onerror=alert(2)>'


@pytest.fixture
def plays(make_cfg, tmp_path):
    """A warehouse holding PLAYS; every play is of a song whose title (and location) is hostile."""
    write_events(tmp_path / "logs" / "e.json", [
        event(ts=ts, itemInSession=i, song=HOSTILE_TITLE, location=HOSTILE_LOCATION) for i, ts in enumerate(PLAYS)])
    write_song(tmp_path / "songs" / "s.json", song(title=HOSTILE_TITLE))
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    loaded = run_script("etl.py", "--config", str(cfg.path))
    assert loaded.returncode == 0, loaded.stderr
    return cfg


def chart(cfg, section, columns, *args, encoding="utf-8"):
    out = run_script("analytics.py", "--config", str(cfg.path), "--section", section, *args,
                     env={"COLUMNS": str(columns), "PYTHONIOENCODING": encoding})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def bars(lines, blocks):
    """{label: (bar length in eighths of a cell, number)} of a chart's lines."""
    found = {}
    for line in lines[2:]:
        label, bar, number = re.fullmatch(rf" *(\S+)  ([{blocks}]*) (\d+)", line).groups()
        eighths = sum(8 if c in "█#" else output.EIGHTHS.index(c) for c in bar)
        found[label] = (eighths, int(number))
    return found


@pytest.mark.parametrize("columns", [50, 100])
def test_plays_per_hour_is_a_bar_chart_as_wide_as_the_terminal(plays, columns):
    lines = chart(plays, "plays-per-hour-utc", columns)
    assert lines[:2] == ["== Plays per hour (UTC) ==", "hour  plays"]
    found = bars(lines, "█" + output.EIGHTHS.strip())
    assert {label: number for label, (_, number) in found.items()} == EVERY_HOUR
    assert list(found) == sorted(found, key=int)
    assert max(len(line) for line in lines) == columns - 1  # the longest bar fills the width, no wrap
    longest = found["0"][0]
    for label, (eighths, number) in found.items():  # each bar in proportion, to an eighth of a cell
        assert eighths == round(longest * number / 4), label


@pytest.mark.parametrize("pages", [[], [[]], [[], []]])
def test_no_rows_is_one_header_and_says_so(pages):
    """An empty first page (analytics.py --runs of an empty history) wrote the header twice."""
    out = io.StringIO()
    assert output.write_table(out, ["run_id", "files"], [False, True], iter(pages)) == 0
    assert out.getvalue().splitlines() == ["run_id  files", "------  -----", "(no rows)"]


def test_plays_per_day_is_a_bar_chart(plays):
    lines = chart(plays, "plays-per-day", 60)
    assert lines[:2] == ["== Plays per day ==", "       day  plays"]
    found = bars(lines, "█" + output.EIGHTHS.strip())
    assert {label: number for label, (_, number) in found.items()} == EVERY_DAY and list(found) == sorted(found)


def test_the_chart_is_ascii_when_the_output_is_not_utf8(plays):
    lines = chart(plays, "plays-per-hour-utc", 50, encoding="latin-1")
    assert all(line.isascii() for line in lines)
    found = bars(lines, "#")
    assert {label: number for label, (_, number) in found.items()} == EVERY_HOUR
    assert max(len(line) for line in lines) == 49
    cells = found["0"][0] // 8
    for label, (eighths, number) in found.items():  # a '#' per whole cell
        assert eighths == 8 * round(cells * number / 4), label


def test_no_chart_and_csv_give_the_numbers_alone(plays):
    """The table is the query's rows: the days with plays."""
    assert chart(plays, "plays-per-day", 60, "--no-chart") == [
        "== Plays per day ==", "day         plays", "----------  -----", "2018-11-27      1", "2018-11-29      1",
        "2018-11-30      7"]
    assert chart(plays, "plays-per-day", 60, "--csv") == ["day,plays", "2018-11-27,1", "2018-11-29,1", "2018-11-30,7"]


def test_a_long_gap_is_one_row_and_no_plays_no_rows():
    rows = [("2018-01-01", "1"), ("2018-01-03", "2"), ("2019-01-01", "3"), (None, "4")]
    assert list(analytics.every_day(iter(rows))) == [
        ("2018-01-01", "1"), ("2018-01-02", "0"), ("2018-01-03", "2"), ("2018-01-04 to 2018-12-31", "0"),
        ("2019-01-01", "3"), (None, "4")]
    assert len(list(analytics.every_day([("2018-01-01", "1"), (str(datetime.date(2018, 1, 2) + datetime.timedelta(
        days=analytics.GAP_DAYS)), "1")]))) == analytics.GAP_DAYS + 2  # a gap of GAP_DAYS: a row each
    assert list(analytics.every_hour(iter([]))) == [] and list(analytics.every_day(iter([]))) == []
    assert [h for h, _ in analytics.every_hour(iter([("5", "1"), (None, "2")]))] == [
        *map(str, range(24)), None]


# --- The HTML page -----------------------------------------------------------------------------
class Page(html.parser.HTMLParser):
    """Every element as (tag, attributes, the aria-label of the svg it is in), and the text
    inside each kind of element."""
    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self, text):
        super().__init__()
        self.elements, self.open, self.text = [], [], {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        svgs = [a.get("aria-label") for t, a in self.open if t == "svg"]
        self.elements.append((tag, attrs, svgs[-1] if svgs else None))
        if tag not in self.VOID:
            self.open.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.open.pop()

    def handle_endtag(self, tag):
        tags = [t for t, _ in self.open]
        if tag in tags:
            del self.open[len(tags) - 1 - tags[::-1].index(tag):]

    def handle_data(self, data):
        self.text.setdefault(self.open[-1][0] if self.open else "", []).append(data)

    def tags(self):
        return [tag for tag, _, _ in self.elements]


def assert_inert(page):
    """No script, no event handler, nothing fetched from anywhere."""
    assert "script" not in page.tags()
    for tag, attrs, _ in page.elements:
        assert not [a for a in attrs if a.startswith("on") or a in ("src", "href")], (tag, attrs)


def test_the_html_report_escapes_every_value(plays, tmp_path):
    report = tmp_path / "report.html"
    out = run_script("analytics.py", "--config", str(plays.path), "--html", str(report))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == f"wrote {report}: 7 sections\n"
    page = Page(report.read_text(encoding="utf-8"))
    assert_inert(page)
    assert HOSTILE_TITLE in page.text["td"] and HOSTILE_LOCATION in page.text["td"]  # shown as text
    assert [tag for tag in page.tags() if tag == "svg"] == ["svg", "svg"]
    assert not list(tmp_path.glob("*.part"))


def test_a_day_of_one_play_beside_one_of_500_has_a_bar(plays):
    """It was drawn 0 pixels high, as a day with none (the terminal chart gives it a mark)."""
    heights = [int(h) for h in re.findall(r'<rect class="bar"[^>]* height="(\d+)"', output.svg_chart("t", [("d1", "500"), ("d2", "1"), ("d3", "0")]))]
    assert heights[0] > heights[1] > heights[2] == 0


def test_svg_text_is_escaped_too():
    svg = output.svg_chart(HOSTILE_TITLE, [(HOSTILE_TITLE, "3"), ('"><b onclick=x>', "1")])
    page = Page(f"<!DOCTYPE html><body>{svg}</body>")
    assert_inert(page)
    assert page.tags().count("b") == 0 and page.tags().count("svg") == 1
    assert page.text["text"].count(HOSTILE_TITLE) == 1 and f"{HOSTILE_TITLE}: 3" in page.text["title"]
    assert [attrs["aria-label"] for tag, attrs, _ in page.elements if tag == "svg"] == [HOSTILE_TITLE]


def test_html_with_sql_is_refused_and_an_unwritable_file_named(plays, tmp_path):
    both = run_script("analytics.py", "--config", str(plays.path), "--html", "x.html", "--sql", "SELECT 1")
    assert (both.returncode, both.stderr) == (2, "analytics.py: error: --html writes the report (or one "
                                                 "--section), not --sql\n")
    nowhere = tmp_path / "missing" / "report.html"
    out = run_script("analytics.py", "--config", str(plays.path), "--html", str(nowhere))
    assert (out.returncode, out.stderr) == (1, f"analytics.py: error: cannot write {nowhere}: "
                                               "No such file or directory\n")


def test_html_through_a_link_keeps_the_link_and_the_reports_permissions(plays, tmp_path):
    """The page was renamed over the link itself (so written at neither), and a private report
    came back readable by all (0644)."""
    target, link = tmp_path / "reports" / "plays.html", tmp_path / "latest.html"
    target.parent.mkdir()
    target.write_text(f"<!DOCTYPE html>\n<html><head>{output.PAGE_MARK}</head><body>an earlier report</body></html>\n")
    target.chmod(0o600)
    link.symlink_to(target)
    out = run_script("analytics.py", "--config", str(plays.path), "--html", str(link))
    assert out.returncode == 0, out.stderr
    assert link.is_symlink() and target.read_text().startswith("<!DOCTYPE html>")
    assert target.stat().st_mode & 0o777 == 0o600


def test_html_to_what_is_not_a_file_is_written_straight(plays, tmp_path):
    """A link to /dev/stdout (as /dev/stdout itself is): the page was renamed over the link, and
    nothing reached stdout (as root, /dev/stdout itself was replaced by a file)."""
    link = tmp_path / "out.html"
    link.symlink_to("/dev/stdout")
    out = run_script("analytics.py", "--config", str(plays.path), "--html", str(link))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("<!DOCTYPE html>") and link.is_symlink()


def test_a_folder_where_the_page_is_first_written_is_one_line(plays, tmp_path):
    """'unexpected IsADirectoryError': the clean-up's error hid the one that said why."""
    (tmp_path / "r.html.part").mkdir()
    out = run_script("analytics.py", "--config", str(plays.path), "--html", str(tmp_path / "r.html"))
    assert (out.returncode, out.stderr) == (1, f"analytics.py: error: cannot write {tmp_path / 'r.html'}: "
                                               "Is a directory\n")


def test_html_never_replaces_the_configuration_or_another_file_and_dash_is_standard_output(plays, tmp_path):
    """--html dwh.cfg wrote the page over the configuration it had read; - was a file named -."""
    notes, index = tmp_path / "notes.txt", tmp_path / "index.html"
    notes.write_text("mine\n")
    index.write_text("<!DOCTYPE html>\n<p>a page of my own</p>\n")
    kept = {path: path.read_text() for path in (plays.path, notes, index)}
    for target in kept:
        out = run_script("analytics.py", "--config", str(plays.path), "--html", str(target))
        says = ("is the configuration file; name another file" if target == plays.path else
                "exists and is not a page analytics.py wrote; not overwritten (name another file, or remove it)")
        assert (out.returncode, out.stderr) == (2, f"analytics.py: error: --html {target} {says}\n")
    assert {path: path.read_text() for path in kept} == kept
    page = tmp_path / "page.html"
    for _ in range(2):  # a page replaces the page it wrote
        assert run_script("analytics.py", "--config", str(plays.path), "--html", str(page)).returncode == 0
    out = run_script("analytics.py", "--config", str(plays.path), "--html", "-")
    assert out.returncode == 0 and out.stdout == page.read_text() and not (ROOT / "-").exists()


def test_the_page_on_standard_output_is_utf8_as_it_says(make_cfg, tmp_path):
    """With an output encoding that lacks a character of the data, --html - stopped; a file took it."""
    write_events(tmp_path / "logs" / "e.json", [event(location="Zoë Ωmega")])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    assert run_script("etl.py", "--config", str(cfg.path)).returncode == 0
    page = tmp_path / "page.html"
    assert run_script("analytics.py", "--config", str(cfg.path), "--html", str(page)).returncode == 0
    out = subprocess.run([sys.executable, str(ROOT / "analytics.py"), "--config", str(cfg.path), "--html", "-"],
                         capture_output=True, cwd=ROOT, env=dict(os.environ, PYTHONIOENCODING="latin-1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == page.read_bytes() and "Zoë Ωmega" in out.stdout.decode("utf-8")


def test_no_chart_leaves_the_charts_out_of_the_html_too(plays, tmp_path):
    page = tmp_path / "r.html"
    for args, charts in (([], 2), (["--no-chart"], 0)):
        out = run_script("analytics.py", "--config", str(plays.path), "--html", str(page), *args)
        assert out.returncode == 0, out.stderr
        assert page.read_text().count("<svg") == charts, args


# --- In a real browser -------------------------------------------------------------------------
BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium to render the HTML report in "
                                   "(Debian: apt-get install -y chromium; .ci/run installs it)")


def browse(page, tmp_path, *what):
    """Headless Chromium on the page: --screenshot=PATH or --dump-dom (its stdout)."""
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-color-profile=srgb", f"--user-data-dir={tmp_path / 'browser'}", *what,
                           page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_pixels(data):
    """(width, height, rows of RGB tuples) of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert (depth, interlace) == (8, 0) and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw, stride, prev, rows = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # undo the row's filter (PNG spec, section 9)
            a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                line[i] = (line[i] + min((abs(p - a), 0, a), (abs(p - b), 1, b), (abs(p - c), 2, c))[2]) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


@needs_browser
def test_a_browser_draws_the_charts(plays, tmp_path):
    """The hour chart alone in a screenshot: the bars' colour is there, and the lowest row of
    it crosses one bar per hour with plays; the whole report's DOM: one rect per hour and day."""
    hours = tmp_path / "hours.html"
    assert run_script("analytics.py", "--config", str(plays.path), "--section", "plays-per-hour-utc",
                      "--html", str(hours)).returncode == 0
    shot = tmp_path / "hours.png"
    browse(hours, tmp_path, f"--screenshot={shot}", "--window-size=1000,600")
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 600)
    colour = tuple(int(output.BAR_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    is_bar = [[all(abs(p - q) <= 2 for p, q in zip(pixel, colour)) for pixel in row] for row in rows]
    assert len({pixel for row in rows for pixel in row}) > 2  # not blank
    lowest = max(y for y, row in enumerate(is_bar) if any(row))
    runs = sum(1 for x in range(width) if is_bar[lowest][x] and (x == 0 or not is_bar[lowest][x - 1]))
    assert runs == len(PER_HOUR)
    tallest = sum(1 for row in is_bar if any(row))  # the hour with most plays: its bar's height
    assert tallest == 260 - 12 - 36  # the chart's plot height: the busiest hour fills it

    report = tmp_path / "report.html"
    assert run_script("analytics.py", "--config", str(plays.path), "--html", str(report)).returncode == 0
    dom = Page(browse(report, tmp_path, "--dump-dom"))
    assert_inert(dom)
    charts = [attrs["aria-label"] for tag, attrs, _ in dom.elements if tag == "svg"]
    assert charts == ["Plays per hour (UTC)", "Plays per day"]
    drawn = [svg for tag, attrs, svg in dom.elements if tag == "rect" and attrs.get("class") == "bar"]
    assert [drawn.count(c) for c in charts] == [len(EVERY_HOUR), len(EVERY_DAY)] and None not in drawn
    assert HOSTILE_TITLE in dom.text["td"]
