"""Bad records are set aside with file, line and reason; past MAX_ERRORS nothing changes."""
import json
import re

import pytest

import etl
import sql_queries
from errors import UserError
from config import load_config
from conftest import TS, counts, event, query, reset, run_script, song, star, write_events, write_song

GOOD = [event(itemInSession=0), event(itemInSession=2)]


def with_bad_line(make_cfg, tmp_path, bad, **etl_settings):
    """A log file: good event, the bad line (line 2), a blank line, good event."""
    path = write_events(tmp_path / "logs" / "day.json", [GOOD[0], bad, b"", GOOD[1]])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", **etl_settings)
    reset(cfg)
    return cfg, path


EVENT_CASES = {
    "not JSON": (b'{"ts": 1, "page": "NextSong"', r"^invalid JSON: invalid input syntax for type json"),
    "JSON not an object": (b'[1, 2, 3]', r"^not a JSON object but array"),
    "ts of the wrong type": (json.dumps(event(ts="abc", itemInSession=1)),
                             r'^field "ts": invalid input syntax for type bigint: "abc"'),
    "sessionId of the wrong type": (json.dumps(event(sessionId="x", itemInSession=1)),
                                    r'^field "sessionId": invalid input syntax for type integer: "x"'),
    "missing ts": (json.dumps({k: v for k, v in event(itemInSession=1).items() if k != "ts"}),
                   r'^missing required field "ts"'),
    "missing page": (json.dumps({k: v for k, v in event(itemInSession=1).items() if k != "page"}),
                     r'^missing required field "page"'),
    "invalid UTF-8": (json.dumps(event(itemInSession=1)).encode().replace(b"Artist", b"Art\xffist"),
                      r"^invalid UTF-8 \(byte 0xff\)"),
    "NUL byte": (json.dumps(event(itemInSession=1)).encode().replace(b"Artist", b"Art\x00ist"),
                 r"^NUL byte"),
    "escaped NUL character": (json.dumps(event(artist="a\u0000b", itemInSession=1)),
                              r"^invalid JSON: unsupported Unicode escape sequence"),
    # PostgreSQL manual, JSON Types: the json functions convert Unicode escapes, so they refuse
    # \u0000 as jsonb does; the load's cast relies on it for every field, kept or not.
    "escaped NUL in a field the load does not keep": (
        json.dumps(event(itemInSession=1, extra={"note": "a\u0000b"})),
        r"^invalid JSON: unsupported Unicode escape sequence"),
    "value longer than its column": (json.dumps(event(artist="x" * 600, itemInSession=1)),
                                     r'^field "artist": value too long for type character varying\(512\)'),
    # read as written, as the cast reads it (jsonb made it 1541376000003, and the load stopped)
    "a whole number written with an exponent": (
        json.dumps(event(itemInSession=1)).replace(f'"ts": {TS}', '"ts": 1.541376000003e12'),
        r'^field "ts": invalid input syntax for type bigint: "1.541376000003e12"$'),
    # microseconds, not milliseconds: no time to the millisecond (the load stopped on "interval out of range")
    "a ts too far from 1970": (json.dumps(event(itemInSession=1, ts=TS * 1000)),
                               r'^field "ts": not a time from the year 1 to 4253 in epoch milliseconds$'),
    # a level the load's checks refuse: it stopped the whole load, naming no file or line, past --max-errors
    "a level not free or paid": (json.dumps(event(itemInSession=1, level="premium")),
                                 rf'^field "level": not one of {", ".join(sql_queries.LEVELS)}$'),
    # users take the level of their latest event, whatever its page: it failed the load at the checks
    "a level not free or paid of an event that is no play": (
        json.dumps(event(itemInSession=1, page="Logout", level="")),
        rf'^field "level": not one of {", ".join(sql_queries.LEVELS)}$'),
    # deeper than PostgreSQL's stack: its parser stops the whole statement (stack depth limit exceeded)
    "JSON nested 20,000 deep": (json.dumps(event(itemInSession=1))[:-1] + ', "x": ' + "[" * 20000 + "]" * 20000 + "}",
                                r"^more than 10,000 \[ and \{: too many to parse safely$"),
}


@pytest.mark.parametrize("kind", EVENT_CASES)
def test_bad_event_is_set_aside_with_file_line_and_reason(make_cfg, tmp_path, kind):
    bad, reason = EVENT_CASES[kind]
    cfg, path = with_bad_line(make_cfg, tmp_path, bad, max_errors=1)
    result = etl.run_etl(cfg)
    [(source, file, line_no, why, record)] = query(cfg, "SELECT source, file, line_no, reason, record FROM load_errors")
    assert (source, file, line_no) == ("log_data", str(path), 2)
    assert re.search(reason, why), why
    written = bad if isinstance(bad, str) else bad.decode("utf-8", "replace").replace("\x00", "\\0")
    assert record == written  # the record itself, to fix and re-load (text: U+FFFD for a bad byte, \\0 for a NUL)
    assert query(cfg, "SELECT item_in_session FROM songplays ORDER BY 1") == [(0,), (2,)]
    events = next(r for r in result.staged if r.source == "log_data")
    assert (events.loaded, events.rejected) == (2, 1)


def test_an_event_without_a_level_loads(make_cfg, tmp_path):
    """Only a level that is there is checked."""
    cfg, _ = with_bad_line(make_cfg, tmp_path, json.dumps({k: v for k, v in event(itemInSession=1).items()
                                                          if k != "level"}))
    etl.run_etl(cfg)
    assert query(cfg, "SELECT count(*) FROM load_errors") == [(0,)]
    assert query(cfg, "SELECT count(*) FROM songplays WHERE level IS NULL") == [(1,)]


def test_brackets_in_a_string_beside_a_bad_line_are_no_reason(make_cfg, tmp_path):
    """The checks' guard counts [ and {: at 1,000 it set aside a good record with 2,000 of them in
    a string (loaded when its file had no bad line)."""
    write_events(tmp_path / "logs" / "day.json", [event(itemInSession=5, note="[{" * 1000), b"not json"])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", max_errors=1)
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT item_in_session FROM songplays") == [(5,)]
    assert query(cfg, "SELECT line_no FROM load_errors") == [(2,)]


NUL_REASON = "invalid JSON: unsupported Unicode escape sequence: \\u0000 cannot be converted to text."


@pytest.mark.parametrize("fields, set_aside", [
    ('"x": 1e1000000', []),
    ('"x": 1e1000000, "y": "\\u0000"', [(2, NUL_REASON)]),
    ('"y": "\\u0000", "x": 1e1000000', [(2, NUL_REASON)]),
], ids=["number", "number-then-nul", "nul-then-number"])
def test_a_number_past_jsonbs_range_is_read_as_the_cast_reads_it(make_cfg, tmp_path, fields, set_aside):
    """The cast keeps numbers as written (json): 1e1000000 in a field it does not keep loads. The
    search for bad records, run when another record failed, read it as jsonb, which cannot hold
    it: it set the record aside too; and jsonb, stopping at the number, missed an escaped NUL
    after it, whose json_to_record then stopped the load ('unexpected UntranslatableCharacter')."""
    record = json.dumps(event(itemInSession=5))[:-1] + ", " + fields + "}"
    write_events(tmp_path / "logs" / "day.json", [event(itemInSession=1), record, b"not json"])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", max_errors=2)
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT item_in_session FROM songplays ORDER BY 1") == [(1,)] + ([] if set_aside else [(5,)])
    assert query(cfg, "SELECT line_no, reason FROM load_errors ORDER BY 1") == set_aside + [
        (3, 'invalid JSON: invalid input syntax for type json: Token "not" is invalid.')]


def test_the_farthest_times_staging_takes_keep_their_milliseconds(make_cfg, tmp_path):
    """sql_queries.TS_FIRST and TS_LAST: past the last, the time came out rounded (9999-12-31
    23:59:59.999008); before the year 1, Python could not read it (the load's checks failed)."""
    first, last = sql_queries.TS_FIRST, sql_queries.TS_LAST
    cfg, _ = with_bad_line(make_cfg, tmp_path, json.dumps(event(itemInSession=1, ts=last)), max_errors=0)
    (tmp_path / "logs" / "early.json").write_text(json.dumps(event(itemInSession=3, ts=first)) + "\n")
    etl.run_etl(cfg)
    got = query(cfg, "SELECT (EXTRACT(EPOCH FROM start_time) * 1000)::bigint FROM songplays "
                     "WHERE item_in_session IN (1, 3) ORDER BY item_in_session")
    assert got == [(last,), (first,)]


def test_text_that_only_reads_like_an_escaped_nul_is_kept(make_cfg, tmp_path):
    """An escaped backslash then u0000 is six characters of text, not a NUL."""
    cfg, _ = with_bad_line(make_cfg, tmp_path, json.dumps(event(artist="a\\u0000b", itemInSession=1)))
    etl.run_etl(cfg)
    assert query(cfg, "SELECT artist FROM staging_events WHERE item_in_session = 1") == [("a\\u0000b",)]
    assert query(cfg, "SELECT count(*) FROM load_errors") == [(0,)]


SONG_CASES = {
    "missing song_id": ({k: v for k, v in song().items() if k != "song_id"}, r'^missing required field "song_id"'),
    "missing artist_id": ({k: v for k, v in song().items() if k != "artist_id"},
                          r'^missing required field "artist_id"'),
    "year of the wrong type": (song(year="nineteen"), r'^field "year": invalid input syntax for type integer'),
    "not JSON": (b'{"song_id": "SO9",', r"^invalid JSON"),
    "a year written with an exponent": (json.dumps(song()).replace('"year": 2000', '"year": 2e3').encode(),
                                        r'^field "year": invalid input syntax for type integer: "2e3"$'),
    "JSON nested 20,000 deep": (b'{"song_id": "SO9", "x": ' + b"[" * 20000 + b"]" * 20000 + b"}",
                                r"^more than 10,000 \[ and \{: too many to parse safely$"),
}


@pytest.mark.parametrize("kind", SONG_CASES)
def test_bad_song_file_is_set_aside(make_cfg, tmp_path, kind):
    bad, reason = SONG_CASES[kind]
    write_song(tmp_path / "songs" / "a_good.json", song())
    bad_path = write_song(tmp_path / "songs" / "b_bad.json", bad, indent=2)
    write_events(tmp_path / "logs" / "e.json", [event()])
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", max_errors=1)
    reset(cfg)
    etl.run_etl(cfg)
    [(file, line_no, why)] = query(cfg, "SELECT file, line_no, reason FROM load_errors")
    assert (file, line_no) == (str(bad_path), 1)
    assert re.search(reason, why), why
    assert query(cfg, "SELECT song_id FROM songs") == [("SO1",)]


def test_up_to_max_errors_are_allowed_and_one_more_changes_nothing(make_cfg, tmp_path):
    write_song(tmp_path / "songs" / "s.json", song())
    write_events(tmp_path / "first" / "e.json", [event(itemInSession=0)])
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "first")
    reset(cfg)
    etl.run_etl(cfg)
    before = star(cfg)

    lines = [event(itemInSession=i, level="paid", ts=2_000_000_000_000) for i in range(1, 4)] + \
            [b"not json"] * 3
    write_events(tmp_path / "batch" / "e.json", lines)
    batch = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "batch", name="batch.cfg")
    with pytest.raises(UserError) as failed:
        etl.run_etl(batch, max_errors=2)
    message = str(failed.value)
    assert message.startswith("3 bad records, more than the 2 allowed (--max-errors); no star table was changed.")
    assert message.count("e.json:") == 3 and "e.json:5: invalid JSON" in message
    assert star(cfg) == before  # the star is exactly as it was
    assert counts(cfg)["load_errors"] == 3               # but the bad records are kept

    result = etl.run_etl(batch, max_errors=3)
    assert counts(cfg)["songplays"] == 4
    assert query(cfg, "SELECT level FROM users") == [("paid",)]
    assert [r.rejected for r in result.staged] == [0, 3]


def test_first_ten_reported_and_the_total(make_cfg, tmp_path):
    write_events(tmp_path / "logs" / "e.json", [b"{"] * 25 + [event()])
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    out = run_script("etl.py", "--config", str(cfg.path))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    err = lines[next(i for i, line in enumerate(lines) if line.startswith("etl.py: error:")):]
    assert err[0] == "etl.py: error: 25 bad records, more than the 0 allowed (--max-errors); " \
                     "no star table was changed. First 10:"
    assert [re.search(r"e\.json:(\d+): invalid JSON", line).group(1) for line in err[1:11]] == [str(i) for i in range(1, 11)]
    assert err[11].startswith("All of them: SELECT * FROM load_errors WHERE run_id = ")
    assert "Traceback" not in out.stderr


def test_bom_and_empty_files_are_not_errors(make_cfg, tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(event()).encode() + b"\n")
    (tmp_path / "logs" / "empty.json").write_bytes(b"")
    write_song(tmp_path / "songs" / "bom.json", b"\xef\xbb\xbf" + json.dumps(song()).encode())
    (tmp_path / "songs" / "empty.json").write_bytes(b"")
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    result = etl.run_etl(cfg)
    assert [(r.loaded, r.rejected) for r in result.staged] == [(1, 0), (1, 0)]
    assert query(cfg, "SELECT song_id FROM songplays") == [("SO1",)]


def test_summary_says_loaded_and_set_aside_per_source(make_cfg, tmp_path):
    cfg, _ = with_bad_line(make_cfg, tmp_path, b"oops", max_errors=5)
    out = run_script("etl.py", "--config", str(cfg.path))
    assert out.returncode == 0, out.stderr
    assert "1 file, 1 record loaded, 0 set aside" in out.stdout
    assert "1 file, 2 records loaded, 1 set aside" in out.stdout


def test_unreadable_config_is_one_line(tmp_path):
    (tmp_path / "dir.cfg").mkdir()
    out = run_script("etl.py", "--config", str(tmp_path / "dir.cfg"))
    assert out.returncode == 1
    assert out.stderr.strip() == f"etl.py: error: {tmp_path / 'dir.cfg'}: cannot read configuration file (Is a directory)"


def test_world_readable_config_with_a_secret_warns_with_the_fix(tmp_path, caplog):
    path = tmp_path / "dwh.cfg"
    path.write_text("[CLUSTER]\nHOST=db.example.org\nDB_PASSWORD=hunter2hunter2\n")
    path.chmod(0o644)
    load_config(str(path))
    assert f"chmod 600 {path}" in caplog.text and "hunter2hunter2" not in caplog.text
    caplog.clear()
    path.chmod(0o600)
    load_config(str(path))
    assert "chmod" not in caplog.text


# A bad record is kept whole, however long: one the server sets aside (a field too long) and
# one found before it reaches the server (bytes that are not UTF-8, a NUL byte).
BIG = 5 << 20
BIG_CASES = {
    "too long a field": json.dumps(event(artist="x" * BIG, itemInSession=1)).encode(),
    "invalid UTF-8": json.dumps(event(artist="\xff" * BIG, itemInSession=1)).encode().replace(b"\\u00ff", b"\xff"),
    "NUL byte": json.dumps(event(artist="a" * BIG, itemInSession=1)).encode().replace(b"aaaa", b"a\x00aa", 1),
}


@pytest.mark.parametrize("kind", BIG_CASES)
def test_a_5_mb_bad_record_is_kept_whole(make_cfg, tmp_path, kind):
    bad = BIG_CASES[kind]
    cfg, path = with_bad_line(make_cfg, tmp_path, bad, max_errors=1)
    etl.run_etl(cfg)
    [(file, line_no, record, size)] = query(cfg, "SELECT file, line_no, record, record_bytes FROM load_errors")
    assert (file, line_no, size) == (str(path), 2, len(bad))
    assert record == bad.decode("utf-8", "replace").replace("\x00", "\\0")
    assert len(record) > BIG


def test_a_bad_song_file_is_kept_whole_past_a_nul(make_cfg, tmp_path):
    bad = json.dumps(song(title="a" * 100_000)).encode().replace(b"aaaa", b"a\x00aa", 1)
    write_song(tmp_path / "songs" / "bad.json", bad)
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", max_errors=1)
    write_events(tmp_path / "logs" / "e.json", GOOD)
    reset(cfg)
    etl.run_etl(cfg)
    [(record, size)] = query(cfg, "SELECT record, record_bytes FROM load_errors")
    assert size == len(bad) and record == bad.decode().replace("\x00", "\\0")


def test_redshift_keeps_as_much_of_a_bad_record_as_it_can():
    ddl = sql_queries.TABLE["load_errors"].create("redshift")
    assert "record       VARCHAR(65535)" in ddl and "record_bytes BIGINT" in ddl
