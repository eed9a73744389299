"""The summary says what this run did: counts with their plurals and separators, users added
and updated, plays matched, this run's set-aside records, skipped files, empty sources; in
columns that never touch; and --json carries the same facts."""
import json
import re

import etl
import staging
from conftest import TS, event, reset, run_script, song, write_events, write_song


def sources(make_cfg, tmp_path, name, events, songs=(song(),), **settings):
    logs = write_events(tmp_path / name / "logs" / "day.json", events).parent
    for i, s in enumerate(songs):
        write_song(tmp_path / name / "songs" / f"s{i}.json", s)
    return make_cfg(songs=tmp_path / name / "songs", logs=logs, name=f"{name}.cfg", **settings)


def rows(summary):
    """The table part of a summary: {table: [cells]}; cells are split where two spaces are, so
    columns that touch come out as one cell."""
    lines = summary.split("\n\n")[2].splitlines()
    return {line.split()[0]: line.split("  ")[0:1] + [c.strip() for c in line.split("  ")[1:] if c.strip()]
            for line in lines[1:]}


def test_users_updated_and_plays_matched_are_counted(make_cfg, tmp_path):
    first = sources(make_cfg, tmp_path, "b1", [event(level="free", itemInSession=0, song="Later")])
    reset(first)
    etl.run_etl(first)
    later = sources(make_cfg, tmp_path, "b2", [event(level="paid", itemInSession=1, ts=TS + 1000)],
                    songs=[song(), song(song_id="SO2", title="Later")])
    table = rows(etl.summary(etl.run_etl(later)))
    assert table["users"] == ["users", "1", "+0", "updated +1"]
    assert table["songplays"] == ["songplays", "2", "+1", "matched +1"]


def test_set_aside_is_this_runs_and_plurals_are_right(make_cfg, tmp_path):
    cfg = sources(make_cfg, tmp_path, "bad", [event(), b"oops"], max_errors=1)
    reset(cfg)
    etl.run_etl(cfg)
    summary = etl.summary(etl.run_etl(cfg))  # the same bad line again: one more, this run's
    assert rows(summary)["load_errors"] == ["load_errors", "2", "+1"]
    assert "1 file, 1 record loaded, 1 set aside" in summary


def test_skipped_files_are_counted(make_cfg, tmp_path):
    cfg = sources(make_cfg, tmp_path, "skip", [event()])
    write_events(tmp_path / "skip" / "logs" / "notes.txt", [event()])
    write_events(tmp_path / "skip" / "logs" / ".ipynb_checkpoints" / "day-checkpoint.json", [event()])
    reset(cfg)
    result = etl.run_etl(cfg)
    assert [r.skipped for r in result.staged] == [0, 2]
    assert "1 file, 1 record loaded, 0 set aside, 2 skipped (-v lists them)" in etl.summary(result)


def test_a_source_of_only_empty_files_is_a_warning(make_cfg, tmp_path):
    cfg = sources(make_cfg, tmp_path, "empty", [event()], songs=[b"", b"\n"])
    reset(cfg)
    out = run_script("etl.py", "--config", str(cfg.path))
    assert out.returncode == 0, out.stderr
    assert f"warning: songs: every file is empty; nothing was loaded from {tmp_path / 'empty' / 'songs'}" in out.stderr
    assert "2 files, 0 records loaded, 0 set aside; warning: every file is empty" in out.stdout


def test_columns_never_touch_at_ten_million():
    big = 8_120_883
    result = etl.EtlResult("r", staged=[staging.StagingResult("log_data", 1000, big, 12_345, 3.5)],
                           before={"songplays": 0, "users": 10_000_000, "load_errors": 0},
                           after={"staging_events": big, "songplays": big, "users": 10_000_000, "load_errors": 12_345},
                           changed=[("users", "update", "updated", 9_999_999)],
                           steps={"staging events": 3.5, "total": 123_456.78})
    summary = etl.summary(result)
    assert rows(summary)["songplays"] == ["songplays", "8,120,883", "+8,120,883"]
    assert rows(summary)["users"] == ["users", "10,000,000", "+0", "updated +9,999,999"]
    assert "1,000 files, 8,120,883 records loaded, 12,345 set aside" in summary
    assert re.search(r"^total  +123456\.78$", summary, re.M)


def test_json_carries_the_same_facts(make_cfg, tmp_path):
    cfg = sources(make_cfg, tmp_path, "json", [event()])
    reset(cfg)
    out = run_script("etl.py", "--config", str(cfg.path), "--json")
    facts = json.loads(out.stdout)
    assert facts["after"]["songplays"] == 1 and facts["before"]["load_errors"] == 0
    assert {"table": "users", "action": "update", "counted_as": "updated", "rows": 0} in facts["changed"]
    assert {"table": "songplays", "action": "update", "counted_as": "matched", "rows": 0} in facts["changed"]
    assert [(s["files"], s["skipped"], s["empty"]) for s in facts["staged"]] == [(1, 0, False), (1, 0, False)]


def test_the_summary_names_the_sources_it_loaded(make_cfg, tmp_path):
    """A misspelled key loads the defaults: the summary's second line says which folders."""
    cfg = sources(make_cfg, tmp_path, "b1", [event()])
    reset(cfg)
    lines = etl.summary(etl.run_etl(cfg)).splitlines()
    assert lines[1] == f"songs from {cfg.song_data}; events from {cfg.log_data}"
