"""analytics.py: no text changes data, exact CSV, bounded memory on large results, the report's
sections, and a reader that stops reading (`| head`)."""
import contextlib
import csv
import io
import os
import pty
import re
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import pytest

import analytics
import cli
import config
import create_tables
import db
import output
import redshift_rules
import sql_queries
from conftest import ROOT, event, query, reset, run_script, song, table, write_events, write_song
from errors import UserError


@pytest.fixture
def loaded(make_cfg, tmp_path):
    write_events(tmp_path / "logs" / "e.json", [event(userId="5", itemInSession=0),
                                                event(userId="6", level="paid", itemInSession=1)])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    assert run_script("etl.py", "--config", str(cfg.path)).returncode == 0
    return cfg


def state(cfg):
    """Everything a write could change: every table's rows, the play id sequence, large objects."""
    rows = {t: table(cfg, t) for t in sql_queries.TABLES}
    [(seq, objects)] = query(cfg, "SELECT (SELECT last_value FROM songplays_songplay_id_seq), "
                                  "(SELECT count(*) FROM pg_largeobject_metadata)")
    return rows, seq, objects


# Functions the warehouse's owner made, called through --sql: one runs as its caller, one as its
# owner (a superuser), each deleting every user.
WIPERS = [
    "CREATE OR REPLACE FUNCTION wipe_as_caller() RETURNS bigint LANGUAGE sql "
    "AS 'DELETE FROM users RETURNING 1'",
    "CREATE OR REPLACE FUNCTION wipe_as_owner() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
    "AS 'DELETE FROM users RETURNING 1'",
]

ATTEMPTS = {
    "COMMIT then a write": "COMMIT; DELETE FROM users",
    "END then a write": "END; DELETE FROM users",
    "a plain write": "DELETE FROM users",
    "a SELECT then a write": "SELECT 1; DELETE FROM users",
    "read-only off, then a write": "SET default_transaction_read_only = off; DELETE FROM users",
    "read-only off by set_config": "SELECT set_config('default_transaction_read_only', 'off', false); "
                                   "DELETE FROM users",
    "transaction read-write by set_config": "SELECT set_config('transaction_read_only', 'off', false), "
                                            "wipe_as_owner()",
    "the superuser's role by set_config": "SELECT set_config('role', 'postgres', false), wipe_as_owner()",
    "COPY TO PROGRAM": "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "a function that writes, as its caller": "SELECT wipe_as_caller()",
    "a function that writes, as its owner": "SELECT wipe_as_owner()",
    "a data-modifying WITH": "WITH d AS (DELETE FROM users RETURNING 1) SELECT count(*) FROM d",
    "SELECT INTO": "SELECT * INTO users_copy FROM users",
    "a sequence moved": "SELECT setval('songplays_songplay_id_seq', 1)",
    "a large object made": "SELECT lo_from_bytea(0, 'x')",
    "a quote a backslash may escape": "SELECT '\\'; DELETE FROM users; --'",
}


@pytest.mark.parametrize("kind", ATTEMPTS)
def test_no_text_changes_data(loaded, tmp_path, kind):
    for wiper in WIPERS:
        query(loaded, wiper + "; SELECT 1")
    marker = tmp_path / "copied-to-program"
    before = state(loaded)
    out = run_script("analytics.py", "--config", str(loaded.path), "--sql", ATTEMPTS[kind].format(marker=marker))
    assert out.returncode == 1, out.stdout
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("analytics.py: error: ")
    assert state(loaded) == before and before[0]["users"]
    assert not marker.exists()


@pytest.mark.parametrize("text, statement", [
    ("SELECT 1;", "SELECT 1"), ("SELECT 1; -- done\n", "SELECT 1"), ("SELECT ';'", "SELECT ';'"),
    ('SELECT 1 AS ";"', 'SELECT 1 AS ";"'), ("SELECT $$;$$", "SELECT $$;$$"),
    ("SELECT $a$ ; $$ ; $a$", "SELECT $a$ ; $$ ; $a$"), ("SELECT 1 /* /* ; */ ; */", "SELECT 1 /* /* ; */ ; */"),
    ("SELECT E'\\';'", "SELECT E'\\';'"), ("  (VALUES (1))", "  (VALUES (1))"),
    ("/* /* */ DELETE */ SELECT 1", "/* /* */ DELETE */ SELECT 1"),  # a nested comment, then the SELECT
])
def test_one_statement(text, statement):
    assert analytics.one_statement(text) == statement


@pytest.mark.parametrize("text", ["SELECT 1; SELECT 2", "SELECT $a$;$a$; DELETE FROM users",
                                  "SELECT 1 /* ; */; DELETE FROM users",
                                  "SELECT '\\'; DELETE FROM users; --'", "COMMIT", "", " ; ", "-- nothing"])
def test_not_one_select(text):
    with pytest.raises(UserError):
        analytics.one_statement(text)


def test_one_statement_only_where_a_backslash_escapes_nothing_says_so():
    """It said '--sql takes exactly one statement' of one SELECT (Redshift would read two)."""
    with pytest.raises(UserError, match=r"^--sql reads as one statement only where a backslash does not escape"):
        analytics.one_statement("SELECT 'a\\' AS a, ';' AS b")


def test_the_server_refuses_what_is_not_a_select(loaded):
    """The cursor is the rule, not the client's first-word check: a COMMIT or a write is refused
    by the server itself."""
    conn = analytics.open_reader(loaded)
    try:
        for text in ("COMMIT", "DELETE FROM users", "SELECT 1; DELETE FROM users"):
            with pytest.raises(UserError):
                analytics.stream(conn, text)
    finally:
        conn.close()
    assert len(table(loaded, "users")) == 2


def test_queries_run_as_a_role_that_may_only_read(loaded):
    out = run_script("analytics.py", "--config", str(loaded.path), "--csv", "--sql",
                     "SELECT session_user, current_user, r.rolsuper, r.rolcreaterole, r.rolcreatedb, "
                     "(SELECT string_agg(m.roleid::regrole::text, ' ') FROM pg_auth_members m "
                     " WHERE m.member = r.oid) AS member_of "
                     "FROM pg_roles r WHERE r.rolname = current_user")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == "sparkify_reader,sparkify_reader,f,f,f,"
    privileges = query(loaded, "SELECT t, p FROM unnest(%s::text[]) t, unnest(%s::text[]) p "
                               "WHERE has_table_privilege('sparkify_reader', t, p)",
                       (list(sql_queries.TABLES), ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"]))
    assert sorted(privileges) == sorted((t, "SELECT") for t in sql_queries.TABLES)


def test_a_lost_connection_says_why(loaded):
    """The rollback after the error failed too, and hid it: 'unexpected InterfaceError'."""
    out = run_script("analytics.py", "--config", str(loaded.path), "--sql", "SELECT pg_terminate_backend(pg_backend_pid())")
    assert out.returncode == 1
    assert out.stderr.startswith("analytics.py: error: query failed: ") and "InterfaceError" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_value_the_output_cannot_encode_is_one_line(loaded):
    """A stdout in cp1252 (a redirect on Windows) met an emoji: 'unexpected UnicodeEncodeError'."""
    out = subprocess.run([sys.executable, str(ROOT / "analytics.py"), "--config", str(loaded.path),
                          "--sql", "SELECT 'plays 😀' AS x"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env=dict(os.environ, PYTHONIOENCODING="cp1252"))
    assert out.returncode == 1
    assert out.stderr == ("analytics.py: error: cannot write '\\U0001f600' in cp1252: set PYTHONIOENCODING=utf-8 "
                          "(or run python -X utf8)\n")


def test_csv_is_utf8_whatever_the_locale_encodes_a_redirect_in(loaded):
    """On Windows a redirect is written in the ANSI code page (cp1252): 'é' became one byte the
    UTF-8 that COPY writes does not have, and a character cp1252 lacks stopped the run."""
    out = subprocess.run([sys.executable, str(ROOT / "analytics.py"), "--config", str(loaded.path), "--csv",
                          "--sql", "SELECT 'Beyoncé 😀' AS x"], capture_output=True, cwd=ROOT,
                         timeout=120, env=dict(os.environ, PYTHONIOENCODING="cp1252"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "x\nBeyoncé 😀\n".encode("utf-8")


def test_html_needs_a_file_name(loaded):
    out = run_script("analytics.py", "--config", str(loaded.path), "--html", "")
    assert out.returncode == 2 and "--html needs a file name" in out.stderr and not out.stdout


def socket_dir(cfg):
    return parse_qs(urlparse(db.embedded_uri(cfg.data_dir)).query)["host"][0]


def test_another_postgresql_takes_the_reader_role(loaded, tmp_path):
    """A server named by HOST (here the embedded one, through its socket, as postgres): the report
    reads as the role sparkify_reader, taken with SET ROLE."""
    path = tmp_path / "remote.cfg"
    path.write_text(f"[CLUSTER]\nHOST={socket_dir(loaded)}\nDB_USER=postgres\nDB_NAME=postgres\n")
    conn = analytics.open_reader(config.load_config(str(path)))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT session_user, current_user")
            assert cur.fetchone() == ("postgres", "sparkify_reader")
    finally:
        conn.close()
    out = run_script("analytics.py", "--config", str(path), "--csv", "--section", "top-users")
    assert out.returncode == 0, out.stderr


def test_sql_through_set_role_is_refused(loaded, tmp_path):
    """One SELECT undid the SET ROLE (set_config('role', 'none', false)) and went on as the loading
    user: set_config, query_to_xml and others run text no check can see. --sql needs READER_USER."""
    path = tmp_path / "remote.cfg"
    path.write_text(f"[CLUSTER]\nHOST={socket_dir(loaded)}\nDB_USER=postgres\nDB_NAME=postgres\n")
    out = run_script("analytics.py", "--config", str(path), "--csv", "--sql",
                     "SELECT set_config('role', 'none', false) AS r, current_user")
    assert out.returncode == 2 and "needs [CLUSTER] READER_USER" in out.stderr, out.stdout
    redshift = tmp_path / "redshift.cfg"  # there the reader is the loading user itself (refused before connecting)
    redshift.write_text("[CLUSTER]\nHOST=dwh.abc123.us-west-2.redshift.amazonaws.com\nDB_USER=dwhuser\n")
    out = run_script("analytics.py", "--config", str(redshift), "--sql", "SELECT 1")
    assert out.returncode == 2 and "needs [CLUSTER] READER_USER" in out.stderr, out.stderr


@pytest.mark.parametrize("text", ["SELECT 1 AS a --x\r; COMMIT; SELECT lo_from_bytea(0, 'x')",
                                  "SELECT 1 --\r; DELETE FROM users"])
def test_a_comment_ends_at_a_carriage_return(loaded, text):
    """The check read '--x\\r; COMMIT; ...' as one comment, the server as three statements: the
    COMMIT ended the read-only transaction and the large object stayed."""
    with pytest.raises(UserError, match="exactly one statement"):
        analytics.one_statement(text)
    before = state(loaded)
    out = run_script("analytics.py", "--config", str(loaded.path), "--sql", text)
    assert out.returncode == 1 and state(loaded) == before


def test_a_reader_user_of_your_own(loaded, tmp_path):
    query(loaded, "DROP ROLE IF EXISTS analyst; CREATE ROLE analyst LOGIN; SELECT 1")
    cfg = tmp_path / "own.cfg"
    cfg.write_text(f"[LOCAL]\nDATA_DIR = {loaded.data_dir}\n[S3]\nSONG_DATA = {loaded.song_data}\n"
                   f"LOG_DATA = {loaded.log_data}\n")
    remote = tmp_path / "remote.cfg"
    remote.write_text(f"[CLUSTER]\nHOST={socket_dir(loaded)}\nDB_USER=postgres\nREADER_USER=analyst\n")
    created = run_script("create_tables.py", "--config", str(remote), "--yes")
    assert created.returncode == 0, created.stderr
    out = run_script("analytics.py", "--config", str(remote), "--csv", "--sql", "SELECT session_user, count(*) FROM users")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == "analyst,0"
    assert query(loaded, "SELECT has_table_privilege('analyst', 'users', 'DELETE')") == [(False,)]


def test_csv_is_exact(loaded):
    sql = ("SELECT 511.16363::float8 AS duration, 123456789.123::float8 AS big, 0.1::float4 AS small, "
           "1e300::float8 * 10 AS huge, 12.50::numeric AS price, '{\"a\": [1, 2.50]}'::json AS j, "
           "'{\"b\":1}'::jsonb AS jb, true AS yes, false AS no, interval '1 day 2 hours' AS span, "
           "TIMESTAMP '2018-11-30 00:22:07.796' AS at, NULL::int AS nothing, ARRAY[1, 2] AS list")
    out = run_script("analytics.py", "--config", str(loaded.path), "--csv", "--sql", sql)
    assert out.returncode == 0, out.stderr
    assert list(csv.reader(io.StringIO(out.stdout)))[1] == [
        "511.16363", "123456789.123", "0.1", "1e+301", "12.50", '{"a": [1, 2.50]}', '{"b": 1}', "t", "f",
        "1 day 02:00:00", "2018-11-30 00:22:07.796", "", "{1,2}"]


def test_csv_keeps_a_carriage_return_inside_its_field(loaded):
    """Python before 3.13 wrote a\\rb unquoted, which a CSV reader reads back as two rows."""
    out = subprocess.run([sys.executable, str(ROOT / "analytics.py"), "--config", str(loaded.path), "--csv",
                          "--sql", "SELECT E'a\\rb' AS x, 2 AS y, NULL AS z UNION ALL SELECT 'c', 3, 'd'"],
                         capture_output=True, cwd=ROOT, timeout=120)  # bytes: text mode would read \r as \n
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == 'x,y,z\n"a\rb",2,\nc,3,d\n'  # NULL still an empty field, not ""
    rows = list(csv.reader(io.StringIO(out.stdout.decode(), newline="")))
    assert rows == [["x", "y", "z"], ["a\rb", "2", ""], ["c", "3", "d"]]


# Values CSV must tell apart, each in a one-column and a two-column result: NULL, an empty
# string, a lone \. (COPY's end-of-data line), quotes, commas, \r, \n, spaces kept.
CSV_CASES = "SELECT x, x AS y FROM (VALUES (NULL), (''), ('\\.'), ('a\"b'), ('c,d'), (E'e\\rf'), (E'g\\nh'), (' i ')) v(x)"


@pytest.mark.parametrize("columns", ["x", "x, x AS y"], ids=["one-column", "two-columns"])
def test_csv_is_what_postgresql_copy_writes(loaded, columns):
    """NULL and an empty string were both an empty field (or both "" alone on a line): PostgreSQL's
    COPY writes NULL empty and an empty string "", and reads its CSV back exactly."""
    sql = CSV_CASES.replace("SELECT x, x AS y", f"SELECT {columns}")
    out = subprocess.run([sys.executable, str(ROOT / "analytics.py"), "--config", str(loaded.path), "--csv",
                          "--sql", sql], capture_output=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    with db.connection(loaded) as conn, conn.cursor() as cur:
        copied = io.StringIO()
        cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)", copied)
    assert out.stdout.decode() == copied.getvalue()


def test_csv_line_ends_are_newlines_where_text_output_would_make_them_crlf(loaded, monkeypatch):
    """On Windows sys.stdout writes \\n as \\r\\n, inside a quoted field too: a value changed."""
    written = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(written, encoding="utf-8", newline="\r\n"))
    parser = cli.parser("")
    analytics.add_arguments(parser)
    analytics.main(loaded, parser.parse_args(["--csv", "--sql", "SELECT E'a\\nb' AS x"]))
    sys.stdout.flush()
    assert written.getvalue() == b'x\n"a\nb"\n'


def test_a_csv_header_keeps_a_carriage_return_inside_its_field(loaded):
    out = subprocess.run([sys.executable, str(ROOT / "analytics.py"), "--config", str(loaded.path), "--csv",
                          "--sql", 'SELECT 1 AS "a\rb", 2 AS c'], capture_output=True, cwd=ROOT, timeout=120)
    assert out.stdout.decode() == '"a\rb",c\n1,2\n'


def test_a_table_lines_up_as_a_terminal_shows_it():
    """Widths were len(): a wide character (two cells) or a combining mark (none) pushed the next
    column out of line, and a newline or tab in a value broke its row."""
    out = io.StringIO()
    rows = [("日本語", "1"), ("😀", "22"), ("e\u0301", "3"), ("a\tb", "4"), ("x\ny\rz", "5"), ("plain", "6"),
            ("สวัสดี", "7"), ("a\x85b\u2028", "8")]
    output.write_table(out, ["name", "n"], [False, True], [rows])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 + len(rows)
    assert [output.cells(line) for line in lines[2:]] == [output.cells(lines[0])] * len(rows)
    assert [line.split()[0] for line in lines[5:7] + lines[9:]] == ["a\\tb", "x\\ny\\rz", "a\\x85b\\u2028"]


def rss_of_analytics(cfg, out_path, *args):
    """Peak memory (KiB) of analytics.py run with args, its output written to out_path."""
    code = ("import atexit, resource, runpy, sys\n"
            "atexit.register(lambda: print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr))\n"
            f"sys.argv = ['analytics.py', *{list(args)!r}]\n"
            "runpy.run_path('analytics.py', run_name='__main__')\n")
    with open(out_path, "w") as out:
        done = subprocess.run([sys.executable, "-c", code, "--config", str(cfg.path)], stdout=out,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split("maxrss")[-1])


@pytest.mark.parametrize("as_csv", [True, False], ids=["csv", "table"])
def test_a_large_result_streams_in_bounded_memory(loaded, tmp_path, as_csv):
    """Two million rows (about 90 MB as text) pass through about one page of memory."""
    sql = "SELECT g AS n, md5(g::text) AS hash FROM generate_series(1, 2000000) g"
    baseline = rss_of_analytics(loaded, tmp_path / "small.txt", "--config", str(loaded.path), "--sql",
                                sql.replace("2000000", "1000"), *(["--csv"] if as_csv else []))
    peak = rss_of_analytics(loaded, tmp_path / "out.txt", "--config", str(loaded.path), "--sql", sql,
                            *(["--csv"] if as_csv else []))
    with open(tmp_path / "out.txt") as f:
        lines = sum(1 for _ in f)
    assert lines == 2_000_000 + (1 if as_csv else 2)
    assert peak - baseline < 20_000, (peak, baseline)  # KiB: the whole result would be hundreds of MB


def test_a_folder_with_no_warehouse_is_named_and_left_as_it_was(tmp_path):
    """analytics.py made a new database (39 MB) where DATA_DIR was mistyped, then said to run
    create_tables.py."""
    missing = tmp_path / "no" / "such" / "pgdata"
    path = tmp_path / "typo.cfg"
    path.write_text(f"[LOCAL]\nDATA_DIR={missing}\n")
    out = run_script("analytics.py", "--config", str(path), "--runs")
    assert (out.returncode, out.stderr) == (
        2, f"analytics.py: error: no warehouse at [LOCAL] DATA_DIR {missing}; run create_tables.py first\n")
    assert not (tmp_path / "no").exists()


def test_an_empty_sql_says_so(loaded):
    """--sql "" is a query with nothing in it, not no --sql (which ran the whole report)."""
    out = run_script("analytics.py", "--config", str(loaded.path), "--sql", "")
    assert (out.returncode, out.stdout, out.stderr.splitlines()) == (1, "", ["analytics.py: error: --sql is empty"])


def test_the_report_as_csv_has_a_title_line_per_section(loaded):
    out = run_script("analytics.py", "--config", str(loaded.path), "--csv")
    assert out.returncode == 0, out.stderr
    sections = out.stdout.split("\n\n")
    assert [s.splitlines()[0] for s in sections] == [f"# {t}" for t, _ in sql_queries.analytics_queries]
    top_users = next(s for s in sections if s.startswith("# Top users"))
    assert list(csv.reader(io.StringIO(top_users)))[1:] == [["user_id", "name", "level", "plays"],
                                                            ["5", "Ann Lee", "free", "1"],
                                                            ["6", "Ann Lee", "paid", "1"]]


def test_one_section_by_name(loaded):
    out = run_script("analytics.py", "--config", str(loaded.path), "--csv", "--section", "top-users")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["user_id,name,level,plays", "5,Ann Lee,free,1", "6,Ann Lee,paid,1"]
    table_out = run_script("analytics.py", "--config", str(loaded.path), "--section", "free-vs-paid-plays")
    assert table_out.stdout.splitlines()[0] == "== Free vs paid plays =="
    wrong = run_script("analytics.py", "--config", str(loaded.path), "--section", "top-songs")
    assert wrong.returncode == 2
    assert "invalid choice: 'top-songs'" in wrong.stderr and "most-played-songs" in wrong.stderr
    assert "top-locations" in run_script("analytics.py", "--help").stdout


def section_csv(cfg, name):
    out = run_script("analytics.py", "--config", str(cfg.path), "--csv", "--section", name)
    assert out.returncode == 0, out.stderr
    return list(csv.reader(io.StringIO(out.stdout)))[1:]


def test_the_shares_of_free_and_paid_plays_add_up_to_100(make_cfg, tmp_path):
    """351 paid and 49 free plays are 87.75% and 12.25%: each rounded half up, 87.8 and 12.3."""
    levels = ["paid"] * 351 + ["free"] * 49
    write_events(tmp_path / "logs" / "e.json", [event(level=level, itemInSession=i) for i, level in enumerate(levels)])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    assert run_script("etl.py", "--config", str(cfg.path)).returncode == 0
    rows = section_csv(cfg, "free-vs-paid-plays")
    assert [(level, plays, pct) for level, plays, _, pct in rows] == [("paid", "351", "87.8"), ("free", "49", "12.2")]


def test_a_user_with_one_name_missing_is_named_by_the_other(make_cfg, tmp_path):
    """first_name || ' ' || last_name is NULL when either is: the user showed with no name."""
    write_events(tmp_path / "logs" / "e.json", [event(userId="5", firstName=None, lastName="Solo", itemInSession=0)])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    assert run_script("etl.py", "--config", str(cfg.path)).returncode == 0
    assert [row[:2] for row in section_csv(cfg, "top-users")] == [["5", "Solo"]]


def test_a_reader_that_stops_reading_ends_it_quietly(loaded):
    """`analytics.py | head -1`, with a real pipe: more output than the pipe holds."""
    p = subprocess.Popen([sys.executable, "analytics.py", "--config", str(loaded.path), "--sql",
                          "SELECT g FROM generate_series(1, 200000) g"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    assert (first.strip(), p.wait(timeout=60), err) == (b"g", 0, b"")


# --- create_tables.py asks before dropping data ------------------------------------------------
def test_create_tables_refuses_to_drop_rows_without_yes(loaded):
    before = state(loaded)
    out = run_script("create_tables.py", "--config", str(loaded.path))
    assert out.returncode == 4
    assert out.stderr.strip().splitlines() == [
        f"create_tables.py: error: embedded PostgreSQL at {loaded.data_dir} holds data: songplays (2 rows), "
        "users (2 rows), songs (1 row), artists (1 row), time (1 row), song_keys (1 row); run with --yes to drop it"]
    assert state(loaded) == before
    out = run_script("create_tables.py", "--config", str(loaded.path), "--yes")
    assert out.returncode == 0, out.stderr
    after = state(loaded)[0]
    assert not any(rows for t, rows in after.items() if t not in sql_queries.HISTORY_TABLES)
    assert after["etl_runs"] == before[0]["etl_runs"]  # the run history is kept (--reset-history drops it)


def test_create_tables_counts_rows_once_a_running_load_has_committed(make_cfg, monkeypatch):
    """It counted before waiting for the load's lock: the rows that load then committed were
    dropped without asking."""
    cfg = make_cfg()
    reset(cfg)  # tables, no rows
    real_lock = db.etl_lock

    @contextlib.contextmanager
    def lock_after_a_load(conn, wait=True):  # the load that held the lock commits its rows
        query(cfg, "INSERT INTO users (user_id, level, last_seen_at) VALUES (7, 'free', now()); SELECT 1")
        with real_lock(conn, wait):
            yield
    monkeypatch.setattr(db, "etl_lock", lock_after_a_load)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(UserError, match=r"holds data: users \(1 row\)") as refused:
        create_tables.reset(cfg, yes=False)
    assert refused.value.exit_code == 4 and table(cfg, "users")


def at_a_terminal(cfg, typed):
    """create_tables.py with stdin and stderr a terminal and stdout a pipe (as with `> log`), sent
    the keys typed: (exit code, what the terminal showed, stdout)."""
    controller, terminal = pty.openpty()
    p = subprocess.Popen([sys.executable, "create_tables.py", "--config", str(cfg.path)], cwd=ROOT,
                         stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.write(controller, typed)
    out, _ = p.communicate(timeout=60)
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the terminal is closed and read to the end
        while chunk := os.read(controller, 4096):
            shown += chunk
    os.close(controller)
    return p.returncode, shown.decode(), out


@pytest.mark.parametrize("typed, code", [(b"n\n", 4), (b"y\n", 0), (b"\x04", 4)], ids=["no", "yes", "ctrl-d"])
def test_create_tables_asks_at_a_terminal(loaded, typed, code):
    """The question went to stdout (unseen when it was redirected) while the script waited; Ctrl-D
    was 'unexpected EOFError'."""
    returncode, shown, out = at_a_terminal(loaded, typed)
    assert returncode == code, shown
    assert "holds data: songplays (2 rows)" in shown and "Drop every table and start empty? [y/N]" in shown
    assert "Drop every table" not in out
    assert bool(table(loaded, "users")) == (code == 4)
    if code == 4:
        assert "create_tables.py: error: nothing was dropped" in shown


def test_create_tables_asks_nothing_of_an_empty_or_new_warehouse(make_cfg):
    cfg = make_cfg()
    reset(cfg)  # tables, no rows
    assert run_script("create_tables.py", "--config", str(cfg.path)).returncode == 0
    query(cfg, "; ".join(f"DROP TABLE {t}" for t in sql_queries.TABLES) + "; SELECT 1")  # none at all
    out = run_script("create_tables.py", "--config", str(cfg.path))
    assert out.returncode == 0, out.stderr
    assert f"dropped 0 existing tables, created {len(sql_queries.TABLES)}" in out.stdout


def test_the_cursor_statements_are_ones_redshift_takes(loaded, monkeypatch):
    sent, execute = [], analytics._execute
    monkeypatch.setattr(analytics, "_execute", lambda conn, cur, s: (sent.append((s, conn.autocommit)),
                                                                      execute(conn, cur, s)))
    parser = cli.parser("")
    analytics.add_arguments(parser)
    analytics.main(loaded, parser.parse_args(["--csv"]))
    analytics.main(loaded, parser.parse_args(["--csv", "--sql", "SELECT g FROM generate_series(1, 2500) g"]))
    open_cursors = 0
    for statement, autocommit in sent:
        if m := re.fullmatch(redshift_rules.CURSOR["declare"], statement):
            assert open_cursors == 0 and not autocommit  # psycopg2 sends BEGIN first: a transaction block
            open_cursors = 1
        elif m := re.fullmatch(redshift_rules.CURSOR["fetch"], statement):
            assert open_cursors == 1 and int(m[1]) <= redshift_rules.CURSOR["max_fetch"]
        else:
            assert re.fullmatch(redshift_rules.CURSOR["close"], statement) and open_cursors == 1
            open_cursors = 0
    assert [s for s, _ in sent].count(f"FETCH FORWARD {analytics.PAGE} FROM {analytics.CURSOR}") == len(analytics.SECTIONS) + 3
