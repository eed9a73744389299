"""Daily and ranged loads: --date DAY, --from DAY --to DAY load only the log files of those days,
found by the date in their path ([S3] LOG_DATE_PATTERN); on Redshift a COPY per day, from the
day's key prefix, in the one transaction, sharing the run's error budget."""
import argparse
import dataclasses
import re
from datetime import date

import pytest

import db
import etl
import redshift_rules as rules
from conftest import SAMPLE_LOGS, query, reset, run_script, star, write_events, write_song, event, song
from errors import UserError
from test_redshift_sql import REDSHIFT, errors_per_copy


def days_of(cfg):
    """The days of the plays loaded."""
    return [d for (d,) in query(cfg, "SELECT DISTINCT start_time::date FROM songplays ORDER BY 1")]


def test_a_day_then_a_range_over_it_equals_one_full_load(warehouse):
    etl.run_etl(warehouse)
    full = star(warehouse)
    reset(warehouse)

    day = run_script("etl.py", "--config", str(warehouse.path), "--date", "2018-11-05")
    assert day.returncode == 0, day.stderr
    assert day.stdout.startswith("run ") and "(log day 2018-11-05)" in day.stdout.splitlines()[0]
    assert days_of(warehouse) == [date(2018, 11, 5)]
    assert query(warehouse, "SELECT count(*) FROM staging_events") == [(408,)]  # that file's lines only

    month = run_script("etl.py", "--config", str(warehouse.path), "--from", "2018-11-01", "--to", "2018-11-30")
    assert month.returncode == 0, month.stderr
    assert "(log days 2018-11-01 to 2018-11-30)" in month.stdout.splitlines()[0]
    assert star(warehouse) == full  # the 5th again: nothing doubled, nothing missing


def test_a_range_loads_its_days_and_only_those(warehouse):
    result = etl.run_etl(warehouse, days=[date(2018, 11, 29), date(2018, 11, 30)])
    assert days_of(warehouse) == [date(2018, 11, 29), date(2018, 11, 30)]
    assert {r.source: r.files for r in result.staged} == {"song_data": 71, "log_data": 2}  # songs as configured


def test_a_day_without_a_log_file_is_one_clear_line_and_changes_nothing(warehouse):
    etl.run_etl(warehouse, days=[date(2018, 11, 5)])
    before = star(warehouse)
    out = run_script("etl.py", "--config", str(warehouse.path), "--date", "2018-12-01")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"etl.py: error: [S3] LOG_DATA: no log file for 2018-12-01 (looked for {SAMPLE_LOGS}/2018/12/2018-12-01*, "
        "by [S3] LOG_DATE_PATTERN %Y/%m/%Y-%m-%d)"]
    out = run_script("etl.py", "--config", str(warehouse.path), "--from", "2018-11-29", "--to", "2018-12-02")
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert line.startswith("etl.py: error: [S3] LOG_DATA: no log file for 2 of the 4 days: 2018-12-01, 2018-12-02 ")
    assert star(warehouse) == before


@pytest.mark.parametrize("args,message", [
    (["--date", "2018-11-05", "--from", "2018-11-01", "--to", "2018-11-07"],
     "--date and --from/--to cannot be used together: one day, or a range"),
    (["--date", "2018-11-5"], "--date must be a date as YYYY-MM-DD, not '2018-11-5'"),
    (["--date", "2018-13-01"], "--date 2018-13-01 is no day: month must be in 1..12"),
    (["--date", "yesterday"], "--date must be a date as YYYY-MM-DD, not 'yesterday'"),
    (["--date", "2018-11-31"], "--date 2018-11-31 is no day: day is out of range for month"),
    (["--from", "2018-11-07", "--to", "2018-11-01"], "--from 2018-11-07 is after --to 2018-11-01"),
    (["--from", "2018-11-01"], "--from and --to go together: --from 2018-11-01 --to 2018-11-07 loads those 7 days"),
    (["--to", "2018-11-01"], "--from and --to go together: --from 2018-11-01 --to 2018-11-07 loads those 7 days"),
    # a cron line's --date "$DAY" with DAY unset: it loaded every log file
    (["--date", ""], "--date must be a date as YYYY-MM-DD, not ''"),
    (["--from", "", "--to", "2018-11-01"], "--from must be a date as YYYY-MM-DD, not ''"),
    # only the last was loaded, the others said nothing
    (["--date", "2018-11-05", "--date", "2018-11-06"], "--date is given 2 times: one day (several: --from and --to)"),
    (["--from", "2018-11-01", "--from", "2018-11-02", "--to", "2018-11-03"],
     "--from is given 2 times: one day (several: --from and --to)"),
])
def test_wrong_dates_are_one_line_each(make_cfg, args, message):
    cfg = make_cfg()
    out = run_script("etl.py", "--config", str(cfg.path), *args)
    assert (out.returncode, out.stdout, out.stderr.splitlines()) == (2, "", [f"etl.py: error: {message}"])


def test_the_date_pattern_is_configurable(make_cfg, tmp_path):
    """Another layout: a folder per day, files named anyhow."""
    logs = tmp_path / "logs"
    write_events(logs / "day=2018-11-05" / "part-0.json", [event(itemInSession=0, ts=1541376000000)])
    write_events(logs / "day=2018-11-05" / "part-1.json", [event(itemInSession=1, ts=1541376000001)])
    write_events(logs / "day=2018-11-06" / "part-0.json", [event(itemInSession=2, ts=1541462400000)])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=logs, s3={"log_date_pattern": "day=%Y-%m-%d/"})
    reset(cfg)
    result = etl.run_etl(cfg, days=[date(2018, 11, 5)])
    assert query(cfg, "SELECT item_in_session FROM songplays ORDER BY 1") == [(0,), (1,)]
    assert [r.files for r in result.staged if r.source == "log_data"] == [2]


def test_the_entries_skipped_that_v_lists_are_those_the_summary_counts(make_cfg, tmp_path, caplog):
    """With --date the summary counted the day's skipped entries, and -v listed every one of the source."""
    logs = tmp_path / "logs"
    write_events(logs / "2018-11-05-events.json", [event(itemInSession=0, ts=1541376000000)])
    write_events(logs / "2018-11-06-events.json", [event(itemInSession=1, ts=1541462400000)])
    for name in ("2018-11-05-events.json.bak", "2018-11-06-events.json.bak", "README.txt"):
        (logs / name).write_text("x")
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=logs, s3={"log_date_pattern": "%Y-%m-%d"})
    reset(cfg)
    caplog.set_level("DEBUG", logger="sparkify")
    result = etl.run_etl(cfg, days=[date(2018, 11, 5)])
    listed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[S3] LOG_DATA: skipped ")]
    [events] = [r for r in result.staged if r.source == "log_data"]
    assert listed == [f"[S3] LOG_DATA: skipped {logs / '2018-11-05-events.json.bak'}"] and events.skipped == 1


@pytest.mark.parametrize("link", ["latest.json", "0-current"])
def test_a_day_is_found_by_its_path_when_a_link_also_reaches_it(make_cfg, tmp_path, link):
    """A link at the top (to a day's file, or to the month's folder) was walked first, its path
    kept, and the file's own dropped as reached twice: --date then found no file for that day."""
    logs = tmp_path / "logs"
    day = write_events(logs / "2018" / "11" / "2018-11-07-events.json", [event(itemInSession=0, ts=1541548800000)])
    (logs / link).symlink_to(day if link.endswith(".json") else day.parent)
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=logs)
    reset(cfg)
    result = etl.run_etl(cfg, days=[date(2018, 11, 7)])
    assert [r.files for r in result.staged if r.source == "log_data"] == [1]
    assert query(cfg, "SELECT count(*) FROM songplays") == [(1,)]


@pytest.mark.parametrize("pattern,message", [
    ("%Y/%m/%H", "may hold only the date directives %Y %m %d %j %y, not '%H'"),
    ("%Y/%m", "must tell every day apart"),
    ("/%Y/%m/%d", "must be a path under LOG_DATA"),
])
def test_a_date_pattern_that_cannot_name_a_day_is_refused(make_cfg, pattern, message):
    with pytest.raises(UserError, match=r"dwh.cfg: \[S3\] LOG_DATE_PATTERN " + re.escape(message)):
        make_cfg(s3={"log_date_pattern": pattern})


# --- Redshift: a COPY per day, in one transaction, one error budget -------------------------------
def redshift_days(days, max_errors=5, answers=None):
    with db.dry_run(answers) as recorder:
        result = etl.run_redshift(REDSHIFT, db.connect(REDSHIFT), max_errors=max_errors, days=days)
    return result, [s for s in recorder.connections[0][1] if not s.startswith("--")]  # the load's (not etl_runs')


def test_redshift_copies_each_day_from_its_key_prefix_in_one_transaction(course_bucket):
    before = sorted(o["Key"] for o in course_bucket.list_objects_v2(Bucket="udacity-dend")["Contents"])
    result, statements = redshift_days([date(2018, 11, 4), date(2018, 11, 5)],
                                       answers=errors_per_copy(songs=1, events=2))
    copies = [s for s in statements if s.startswith("COPY ")]
    assert [c.split("\n")[1] for c in copies] == [
        "FROM 's3://udacity-dend/song_data/'",
        "FROM 's3://udacity-dend/log_data/2018/11/2018-11-04'",  # a file-name prefix, not a folder
        "FROM 's3://udacity-dend/log_data/2018/11/2018-11-05'"]
    keys = [k[len("log_data/"):] for k in before if k.startswith("log_data/")]
    assert rules.prefix_copy_reads("2018/11/2018-11-05", keys) == ["2018/11/2018-11-05-events.json"]
    # the budget is shared: 5 allowed, 1 used by the songs, then 2 by the first day
    assert [" ".join(c.split()).split(" MAXERROR ")[1].split()[0] for c in copies] == ["6", "5", "3"]
    assert statements.count("BEGIN") - 1 == statements.count("COMMIT") == 1  # the first is the tables check
    begin = len(statements) - 1 - statements[::-1].index("BEGIN")
    assert statements.index(copies[0]) > begin and statements[-1] == "COMMIT"
    assert {r.source: (r.files, r.rejected) for r in result.staged} == {"song_data": (71, 1), "log_data": (2, 4)}
    after = sorted(o["Key"] for o in course_bucket.list_objects_v2(Bucket="udacity-dend")["Contents"])
    assert after == before  # nothing written to the source bucket


def test_redshift_days_over_the_budget_roll_back(course_bucket):
    with pytest.raises(UserError, match=r"^6 bad records, more than the 5 allowed \(--max-errors\); nothing was committed"):
        redshift_days([date(2018, 11, 3), date(2018, 11, 4), date(2018, 11, 5)],
                      answers=errors_per_copy(songs=0, events=2))


def test_redshift_a_day_without_a_file_stops_before_any_statement(course_bucket):
    with db.dry_run() as recorder:
        with pytest.raises(UserError, match=r"^\[S3\] LOG_DATA: no log file for 2018-12-01 \(looked for "
                                            r"s3://udacity-dend/log_data/2018/12/2018-12-01\*"):
            etl.run_redshift(REDSHIFT, db.connect(REDSHIFT), days=[date(2018, 12, 1)])
    assert recorder.statements() == []


def test_redshift_dry_run_of_a_day(course_bucket, capsys):
    args = argparse.Namespace(max_errors=None, no_wait=False, dry_run=True, json=False,
                              date="2018-11-05", from_day=None, to_day=None)
    etl.main(dataclasses.replace(REDSHIFT, max_errors=0), args)
    printed = capsys.readouterr().out
    assert "FROM 's3://udacity-dend/log_data/2018/11/2018-11-05'\n" in printed
    assert printed.count("COPY staging_events") == 1
