"""The scripts as a user runs them: output, exit codes, one-line errors."""
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import db
import sql_queries
from conftest import ROOT, event, query, reset, run_script, song, write_events, write_song


def small_sources(tmp_path):
    write_events(tmp_path / "logs" / "e.json", [event(userId="5", firstName="Zoë", itemInSession=0),
                                                event(userId="5", firstName="Zoë", itemInSession=1),
                                                event(userId="6", level="paid", itemInSession=2)])
    write_song(tmp_path / "songs" / "s.json", song())
    return dict(songs=tmp_path / "songs", logs=tmp_path / "logs")


def test_create_tables_then_etl_then_analytics(make_cfg, tmp_path):
    cfg = make_cfg(**small_sources(tmp_path))
    created = run_script("create_tables.py", "--config", str(cfg.path), "--yes")
    assert created.returncode == 0, created.stderr
    made = [t for t in sql_queries.TABLES if t not in sql_queries.HISTORY_TABLES]  # and etl_runs if missing
    assert f"created {len(made)}: {', '.join(made)}" in created.stdout or \
        f"created {len(sql_queries.TABLES)}: {', '.join(sql_queries.TABLES)}" in created.stdout
    loaded = run_script("etl.py", "--config", str(cfg.path))
    assert loaded.returncode == 0, loaded.stderr
    assert "songplays" in loaded.stdout and "+3" in loaded.stdout
    report = run_script("analytics.py", "--config", str(cfg.path))
    assert report.returncode == 0, report.stderr
    for title, _ in sql_queries.analytics_queries:
        assert title in report.stdout


def test_sql_and_csv_output(make_cfg, tmp_path):
    cfg = make_cfg(**small_sources(tmp_path))
    reset(cfg)
    assert run_script("etl.py", "--config", str(cfg.path)).returncode == 0
    sql = "SELECT user_id, first_name, COUNT(*) AS plays FROM songplays JOIN users USING (user_id) " \
          "GROUP BY 1, 2 ORDER BY 1"
    out = run_script("analytics.py", "--config", str(cfg.path), "--sql", sql, "--csv")
    assert out.returncode == 0, out.stderr
    assert list(csv.reader(io.StringIO(out.stdout))) == [["user_id", "first_name", "plays"],
                                                         ["5", "Zoë", "2"], ["6", "Ann", "1"]]
    table = run_script("analytics.py", "--config", str(cfg.path), "--sql", sql)
    assert table.stdout.splitlines() == ["user_id  first_name  plays", "-------  ----------  -----",
                                         "      5  Zoë             2", "      6  Ann             1"]


def test_analytics_refuses_to_write(make_cfg, tmp_path):
    cfg = make_cfg(**small_sources(tmp_path))
    reset(cfg)
    out = run_script("analytics.py", "--config", str(cfg.path), "--sql", "DELETE FROM users")
    assert out.returncode == 1
    assert out.stderr == "analytics.py: error: --sql takes a SELECT or VALUES, not 'DELETE'\n"


def test_etl_without_tables_says_to_run_create_tables(make_cfg, tmp_path):
    cfg = make_cfg(**small_sources(tmp_path))
    reset(cfg)
    with db.connection(cfg) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE songplays")
        conn.commit()
    out = run_script("etl.py", "--config", str(cfg.path))
    assert out.returncode == 2
    assert out.stderr.strip() == "etl.py: error: table songplays does not exist; run create_tables.py first"
    out = run_script("analytics.py", "--config", str(cfg.path))
    assert out.returncode == 2 and "run create_tables.py first" in out.stderr
    assert query(cfg, "SELECT 1") == [(1,)]  # and the server still answers


def test_unreachable_database_is_one_line_naming_the_server(tmp_path):
    cfg = tmp_path / "dwh.cfg"
    cfg.write_text("[CLUSTER]\nHOST=127.0.0.1\nDB_PORT=9\nDB_USER=alice\nDB_NAME=dwh\n")
    for script in ("create_tables.py", "etl.py", "analytics.py"):
        out = run_script(script, "--config", str(cfg))
        assert out.returncode == 1
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr
        assert lines[0].startswith(f"{script}: error: cannot connect to postgres at alice@127.0.0.1:9/dwh")


def test_traceback_only_with_verbose(tmp_path):
    cfg = tmp_path / "dwh.cfg"
    cfg.write_text("[CLUSTER]\nHOST=127.0.0.1\nDB_PORT=9\n")
    out = run_script("etl.py", "--config", str(cfg), "-v")
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_missing_explicit_config_file(tmp_path):
    out = run_script("etl.py", "--config", str(tmp_path / "nope.cfg"))
    assert out.returncode == 1
    assert out.stderr.strip() == f"etl.py: error: {tmp_path / 'nope.cfg'}: configuration file not found"


def test_every_script_has_help():
    for script in ("create_tables.py", "etl.py", "analytics.py"):
        out = run_script(script, "--help")
        assert out.returncode == 0 and "--config" in out.stdout and "--verbose" in out.stdout


def test_a_view_on_a_table_stops_create_tables_with_one_line_naming_it(make_cfg, tmp_path):
    cfg = make_cfg()
    reset(cfg)
    query(cfg, "CREATE VIEW daily AS SELECT start_time::date AS day, COUNT(*) FROM songplays GROUP BY 1; SELECT 1")
    try:
        out = run_script("create_tables.py", "--config", str(cfg.path))
        assert out.returncode == 1
        assert out.stderr.strip() == ("create_tables.py: error: cannot drop table songplays: view daily depends on "
                                      "table songplays; drop it first, then run create_tables.py again; "
                                      "nothing was changed")
    finally:
        query(cfg, "DROP VIEW IF EXISTS daily; SELECT 1")


def script(name, cfg, *args, **popen):
    return subprocess.Popen([sys.executable, str(ROOT / name), "--config", str(cfg.path), *args], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_summary_that_cannot_be_written_says_the_load_committed(make_cfg, tmp_path):
    """etl.py > /dev/full committed the load, then ended on 'unexpected OSError'."""
    cfg = make_cfg(**small_sources(tmp_path))
    reset(cfg)
    with open("/dev/full", "w") as full:
        loaded = script("etl.py", cfg, stdout=full)
        err = loaded.communicate(timeout=120)[1]
    assert loaded.returncode == 1
    assert "loaded and committed, but its summary could not be written: No space left on device; analytics.py " \
           "--runs shows it" in err.strip().splitlines()[-1]
    assert query(cfg, "SELECT status FROM etl_runs") == [("succeeded",)]


def test_output_closed_before_or_while_writing_is_no_error(make_cfg, tmp_path):
    """analytics.py >&- ended on 'unexpected AttributeError'; --html /dev/stdout | head -1 on
    'cannot write /dev/stdout: Broken pipe' (every other output closed early ended quietly)."""
    cfg = make_cfg(**small_sources(tmp_path))
    reset(cfg)
    assert run_script("etl.py", "--config", str(cfg.path)).returncode == 0
    closed = script("analytics.py", cfg, "--sql", "SELECT 1", stdout=subprocess.DEVNULL,
                    preexec_fn=lambda: os.close(1))
    assert (closed.communicate(timeout=60)[1], closed.returncode) == ("", 0)
    gone = script("analytics.py", cfg, "--html", "/dev/stdout", stdout=subprocess.PIPE)
    gone.stdout.close()  # the reader went before a byte was written
    assert (gone.stderr.read(), gone.wait(timeout=60)) == ("", 0)


AT_EXIT_FAILS = """
import atexit, sys
sys.path.insert(0, {root!r})
import cli
def boom():
    raise RuntimeError("a library's exit handler failed")
def main(cfg, args):
    atexit.register(boom)
sys.exit(cli.main_entry(main, "exits", uses=()))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_an_exit_handler_that_fails_shows_a_traceback_only_with_v(tmp_path, verbose):
    """The embedded server's exit handler, when the server had died: 'Exception ignored in atexit
    callback' and a psutil traceback after the script's one-line error."""
    script = tmp_path / "exits.py"
    script.write_text(AT_EXIT_FAILS.format(root=str(ROOT)))
    out = subprocess.run([sys.executable, str(script), *(["-v"] if verbose else [])], capture_output=True, text=True,
                         cwd=tmp_path, env=dict(os.environ, DWH_CONFIG=""))
    assert out.returncode == 0
    assert ("Traceback" in out.stderr) == verbose and ("a library's exit handler failed" in out.stderr) == verbose
