"""The run history: every etl.py run that found its sources has a row in etl_runs, from running to
succeeded, failed (after the rollback) or interrupted (Ctrl-C; or killed outright, found by the
next run); create_tables.py keeps it unless --reset-history; analytics.py --runs lists it; and
the star step says every few seconds what it is doing."""
import logging
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import etl
import redshift_rules
import sql_queries
from conftest import ROOT, SAMPLE_LOGS, query, run_script, star
from errors import UserError
from test_faults import (BLOCKED_MID_TRANSFORM, batches, etl_process, sigkill, stopped_at, table_locked,  # noqa: F401
                         wait_for_backend, wait_until_rolled_back)


def runs(cfg):
    return query(cfg, "SELECT status, first_day::text, last_day::text, files, staged, set_aside, plays_added, "
                      "checks_failed, error, finished_at IS NOT NULL FROM etl_runs ORDER BY started_at")


def test_a_day_then_a_range_are_two_runs_listed_with_their_days_and_counts(warehouse):
    for args in (["--date", "2018-11-05"], ["--from", "2018-11-01", "--to", "2018-11-30"]):
        out = run_script("etl.py", "--config", str(warehouse.path), *args)
        assert out.returncode == 0, out.stderr
    assert runs(warehouse) == [
        ("succeeded", "2018-11-05", "2018-11-05", 72, 479, 0, 356, 0, None, True),
        ("succeeded", "2018-11-01", "2018-11-30", 101, 8127, 0, 6464, 0, None, True)]  # the 5th: not again
    out = run_script("analytics.py", "--config", str(warehouse.path), "--runs")
    assert out.returncode == 0, out.stderr
    header, rule, newest, oldest = out.stdout.splitlines()
    assert header.split()[:8] == ["run_id", "status", "days", "files", "staged", "set_aside", "plays_added", "passed"]
    assert newest.split()[1:9] == ["succeeded", "2018-11-01", "to", "2018-11-30", "101", "8127", "0", "6464"]
    assert oldest.split()[1:7] == ["succeeded", "2018-11-05", "72", "479", "0", "356"]
    assert run_script("analytics.py", "--config", str(warehouse.path), "--runs", "1").stdout.count("\n") == 3
    # more than a bigint: every run ('unexpected NumericValueOutOfRange')
    assert run_script("analytics.py", "--config", str(warehouse.path), "--runs", "9" * 20).stdout == out.stdout


def test_a_run_over_the_error_limit_is_failed_with_its_error_and_changes_nothing(warehouse, make_cfg, tmp_path):
    etl.run_etl(warehouse)
    before = star(warehouse)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.json").write_bytes((SAMPLE_LOGS / "2018" / "11" / "2018-11-05-events.json").read_bytes() + b"oops\n")
    bad = make_cfg(logs=logs, name="bad.cfg", max_errors=0)
    with pytest.raises(UserError, match="1 bad records, more than the 0 allowed"):
        etl.run_etl(bad)
    assert star(warehouse) == before
    [ok, failed] = runs(warehouse)
    assert ok[0] == "succeeded"
    assert failed[0] == "failed" and (failed[3], failed[5]) == (72, 1) and failed[9]
    assert failed[8].startswith("1 bad records, more than the 0 allowed (--max-errors); no star table was changed.")
    # the whole error, which names the record (before, the first line ended at "First 1:")
    assert f"First 1: {logs / 'a.json'}:" in failed[8] and ": invalid JSON" in failed[8], failed[8]


def test_a_run_whose_day_has_no_log_file_is_kept_failed(warehouse):
    """A daily load whose file is missing is the run its history should show."""
    out = run_script("etl.py", "--config", str(warehouse.path), "--date", "2018-12-01")
    assert out.returncode == 1
    [failed] = runs(warehouse)
    assert failed[:3] == ("failed", "2018-12-01", "2018-12-01")
    assert failed[8].startswith("[S3] LOG_DATA: no log file for 2018-12-01") and failed[9]


def test_a_long_error_is_kept_within_its_column_on_redshift_too(warehouse, monkeypatch):
    """etl_runs.error is VARCHAR(n): n characters on PostgreSQL but n bytes on Redshift, where a
    longer error failed the history's update (the run stayed 'running')."""
    def no_sources(*args, **kwargs):
        raise UserError("déjà vu " * 200)  # 1,800 characters, 2,200 bytes
    monkeypatch.setattr(etl, "find_sources", no_sources)
    with pytest.raises(UserError):
        etl.run_etl(warehouse)
    [failed] = runs(warehouse)
    width = int(re.search(r"\berror\s+VARCHAR\((\d+)\)", sql_queries.TABLE["etl_runs"].columns).group(1))
    assert failed[0] == "failed" and failed[8].startswith("déjà vu déjà vu")
    assert redshift_rules.fits_varchar(failed[8], width) and not redshift_rules.fits_varchar(failed[8] + "é", width)


@pytest.mark.parametrize("sig, said", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")])
def test_ctrl_c_is_recorded_interrupted_and_changes_nothing(batches, sig, said):
    a, b = batches
    before = star(b)
    proc, err = stopped_at(b, "songplays", BLOCKED_MID_TRANSFORM, lambda proc, backend: proc.send_signal(sig))
    assert proc.returncode == 130, err
    assert star(b) == before
    assert [r[0] for r in runs(b)] == ["succeeded", "interrupted"]
    assert runs(b)[1][8:] == (f"interrupted ({said})", True)  # and said when it ended


def test_a_run_killed_outright_is_marked_interrupted_by_the_next(batches):
    a, b = batches
    before = star(b)
    stopped_at(b, "songplays", BLOCKED_MID_TRANSFORM, sigkill)
    wait_until_rolled_back(b)
    assert star(b) == before
    assert [r[0] for r in runs(b)] == ["succeeded", "running"]  # nobody left to say otherwise
    etl.run_etl(b)
    first, killed, next_run = runs(b)
    assert (first[0], next_run[0]) == ("succeeded", "succeeded")
    assert killed[0] == "interrupted" and killed[8] == "ended without finishing (killed, or its connection lost)"


# etl.py killed (os._exit: no clean-up) right after the star tables' commit, before the run's row
# is written on its own connection.
KILLED_AFTER_COMMIT = """
import os, runpy, sys
import history
written = history.finish
def finish(cfg, result, status, error=None, conn=None):
    if conn is None and status == "succeeded":
        os._exit(9)
    return written(cfg, result, status, error, conn)
history.finish = finish
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_run_killed_just_after_its_commit_is_recorded_succeeded(batches):
    """Its row was written after the commit, on another connection: killed between the two, the
    run that had committed its plays was marked interrupted."""
    _, b = batches
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, "etl.py", "--config", str(b.path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 9, done.stderr
    [(status, plays_added)] = query(b, "SELECT status, plays_added FROM etl_runs ORDER BY started_at DESC LIMIT 1")
    assert status == "succeeded" and plays_added > 0


def test_a_waiting_run_does_not_mark_the_running_one(warehouse):
    """Only a run holding the lock may judge the others: the one it waited for had it."""
    etl.run_etl(warehouse)
    with table_locked(warehouse, "songplays"):
        first = etl_process(warehouse)
        wait_for_backend(warehouse, BLOCKED_MID_TRANSFORM)
        second = etl_process(warehouse)
        wait_for_backend(warehouse, "wait_event_type = 'Lock' AND wait_event = 'advisory'")
        assert [r[0] for r in runs(warehouse)] == ["succeeded", "running"]
    for proc in (first, second):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert [r[0] for r in runs(warehouse)] == ["succeeded"] * 3


def test_create_tables_keeps_the_history_unless_reset_history(warehouse):
    etl.run_etl(warehouse)
    kept = run_script("create_tables.py", "--config", str(warehouse.path), "--yes")
    assert kept.returncode == 0, kept.stderr
    assert "kept etl_runs" in kept.stdout
    assert len(runs(warehouse)) == 1 and query(warehouse, "SELECT count(*) FROM songplays") == [(0,)]
    asked = run_script("create_tables.py", "--config", str(warehouse.path))  # nothing to lose: no question
    assert asked.returncode == 0, asked.stderr
    gone = run_script("create_tables.py", "--config", str(warehouse.path), "--reset-history")
    assert gone.returncode == 4 and "etl_runs (1 row)" in gone.stderr  # that would lose it: asks
    gone = run_script("create_tables.py", "--config", str(warehouse.path), "--reset-history", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert runs(warehouse) == []


def test_the_star_step_says_what_it_is_doing(warehouse, monkeypatch, caplog):
    etl.run_etl(warehouse)  # a later load: songplays is updated (rematched), which the lock stops
    monkeypatch.setattr(etl, "PROGRESS_EVERY", 0.05)
    caplog.set_level(logging.INFO, logger="sparkify")
    with table_locked(warehouse, "songplays"):
        loading = threading.Thread(target=etl.run_etl, args=(warehouse,))
        loading.start()
        deadline = time.monotonic() + 60  # a readiness poll, not a timing assertion
        while "star tables: update songplays" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    loading.join(120)
    lines = [r.getMessage() for r in caplog.records if "star tables:" in r.getMessage()]
    assert any(line.startswith("  star tables: update songplays, ") and line.endswith(" s in all)") for line in lines)


def test_key_build_progress_reads_postgres_view(warehouse):
    """The view and columns StarProgress reads exist on this PostgreSQL (no build running: no row)."""
    assert query(warehouse, sql_queries.key_build_progress, (0,)) == []
