"""Data-quality checks declared as data (sql_queries.CHECKS): a load checks its batch and a failing
check rolls it back, naming the rows; analytics.py --quality checks the whole warehouse."""
import csv
import io

import pytest
import sqlglot
from sqlglot import exp

import etl
import sql_queries
from conftest import TS, event, query, reset, run_script, song, star, write_events, write_song
from errors import UserError


def quality(cfg):
    """analytics.py --quality (as CSV): (exit code, {check: (status, found, examples)}, stderr)."""
    out = run_script("analytics.py", "--config", str(cfg.path), "--quality", "--csv")
    header, *lines = csv.reader(io.StringIO(out.stdout))
    assert header == ["status", "check", "table", "found", "examples"]
    return out.returncode, {check: (status, found, examples) for status, check, _, found, examples in lines}, out.stderr


def test_the_sample_passes_every_check_and_warns_of_its_unmatched_plays(warehouse):
    etl.run_etl(warehouse)
    code, rows, err = quality(warehouse)
    assert code == 0, err
    assert set(rows) == {c.name for c in sql_queries.CHECKS}
    unmatched = "% of plays not matched to the song catalogue"
    assert rows.pop(unmatched) == ("warn", "99.99%", "6819 of 6820 rows")
    assert {status for status, _, _ in rows.values()} == {"pass"}


@pytest.mark.parametrize("fault,check,status,examples", [
    ("DELETE FROM users WHERE user_id IN (15, 29)", "plays whose user is not in users", "fail", "user_id 15, 29"),
    ("UPDATE time SET weekday = 7 WHERE start_time < '2018-11-02'", "times with a weekday not 0-6", "fail", "weekday 7"),
    ("UPDATE songplays SET level = 'gold' WHERE session_id = 139", "plays with a level not free or paid", "fail", "level gold"),
    ("DELETE FROM songplays WHERE start_time >= '2018-11-30'", "newest play older than the newest log day", "fail",
     "newest play 2018-11-29, newest log day 2018-11-30"),
    ("DELETE FROM songplays WHERE start_time::date IN ('2018-11-10', '2018-11-11', '2018-11-20')",
     "gaps of days with no plays", "warn", "none between 2018-11-09 and 2018-11-12, none between 2018-11-19 and 2018-11-21"),
])
def test_quality_finds_each_kind_of_fault_and_names_the_rows(warehouse, fault, check, status, examples):
    etl.run_etl(warehouse)
    query(warehouse, fault + "; SELECT 1")
    code, rows, err = quality(warehouse)
    assert rows[check][0] == status and rows[check][2] == examples
    others = {name: s for name, (s, _, _) in rows.items() if name != check and s != "pass"}
    assert others == {"% of plays not matched to the song catalogue": "warn"}
    if status == "fail":
        assert code == 1 and err == f"analytics.py: error: 1 of {len(sql_queries.CHECKS)} checks failed: {check}\n"
    else:
        assert code == 0, err


def test_a_play_whose_user_is_missing_fails_the_load_and_names_it(make_cfg, tmp_path, monkeypatch):
    """A transform that loses a user (as a bug would: every event defines its user, so data
    cannot): the check on the batch stops the load, which commits nothing."""
    logs = write_events(tmp_path / "logs" / "e.json", [event(userId="7", itemInSession=0),
                                                       event(userId="8", itemInSession=1, ts=TS + 1000)]).parent
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=logs)
    reset(cfg)
    broken = [q.replace("WHERE rn = 1", "WHERE rn = 1 AND user_id <> 8") for q in sql_queries.prepare_queries["latest_users"]]
    monkeypatch.setitem(sql_queries.prepare_queries, "latest_users", broken)
    with pytest.raises(UserError, match=r"^check failed: plays whose user is not in users: 1 row \(user_id 8\); "
                                        r"nothing was committed$"):
        etl.run_etl(cfg)
    assert star(cfg) == {t: [] for t in sql_queries.LOADED_TABLES}
    assert query(cfg, "SELECT status, checks_failed, error FROM etl_runs") == [
        ("failed", 1, "check failed: plays whose user is not in users: 1 row (user_id 8); nothing was committed")]


def test_plays_that_miss_the_newest_day_fail_the_load(make_cfg, tmp_path, monkeypatch):
    """The batch's newest play against the newest play event staged (as a transform bug would
    lose the last day): the load stops and commits nothing."""
    day = 24 * 3600 * 1000
    logs = write_events(tmp_path / "logs" / "e.json", [event(itemInSession=0), event(itemInSession=1, ts=TS + day)]).parent
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=logs)
    reset(cfg)
    broken = [q.replace("WHERE e.page = 'NextSong'", f"WHERE e.page = 'NextSong' AND e.ts < {TS + day}")
              for q in sql_queries.prepare_queries["new_plays"]]
    assert broken != sql_queries.prepare_queries["new_plays"]
    monkeypatch.setitem(sql_queries.prepare_queries, "new_plays", broken)
    with pytest.raises(UserError, match=r"^check failed: newest play older than the newest log day"):
        etl.run_etl(cfg)
    assert star(cfg) == {t: [] for t in sql_queries.LOADED_TABLES}


def test_a_load_records_and_prints_its_warnings(make_cfg, tmp_path, capsys):
    logs = write_events(tmp_path / "logs" / "e.json", [event(song="Unknown")]).parent
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=logs)
    reset(cfg)
    out = run_script("etl.py", "--config", str(cfg.path))
    assert out.returncode == 0, out.stderr
    warning = "% of plays not matched to the song catalogue: 100% (1 of 1 rows)"
    assert f"warning: check {warning}" in out.stderr and f"  warning: {warning}" in out.stdout
    assert query(cfg, "SELECT status, checks_warned, checks_failed, warnings FROM etl_runs") == [
        ("succeeded", 1, 0, f'["{warning}"]')]


def tables_read(statement):
    return {t.name for t in sqlglot.parse_one(statement, read="postgres").find_all(exp.Table)}


def test_the_load_checks_on_postgres_read_the_batch_not_the_warehouse():
    """Their cost follows the batch (no scan of songplays), and they never wait on a table the
    star transaction holds (a first load takes the empty star tables over)."""
    allowed = set(sql_queries.SCRATCH_TABLES) | set(sql_queries.PREPARE_READS)
    checks = sql_queries.load_checks("postgres")
    assert checks and all(tables_read(q) <= allowed for _, q in checks), [tables_read(q) for _, q in checks]
    assert {c.kind for c, _ in checks} >= {"not_null", "relationship", "accepted_values", "freshness", "null_share", "gaps"}
    # and the warehouse form reads the star tables themselves
    assert {t for _, q in sql_queries.warehouse_checks("postgres") for t in tables_read(q)} >= set(sql_queries.STAR_TABLES)
