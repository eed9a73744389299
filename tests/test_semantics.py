"""What the star tables mean: exact counts on the sample, idempotency, increments, and each rule."""
import datetime
import json

import psycopg2.errors
import pytest

import db
import etl
import sql_queries
from errors import UserError
from conftest import SAMPLE_LOGS, SAMPLE_SONGS, TS, counts, event, keys, query, reset, song, star, table, write_events, write_song
from sql_queries import HISTORY_TABLES, LOADED_TABLES, STAR_TABLES


def empty(cfg, *tables):
    with db.connection(cfg, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE " + ", ".join(tables))


def load(cfg, **kw):
    return etl.run_etl(cfg, **kw)


def small(make_cfg, tmp_path, events, songs=(song(),), name="batch1"):
    """A config whose sources are the given events (one log file) and songs (one file each)."""
    logs = write_events(tmp_path / name / "log_data" / "events.json", events).parent
    for i, s in enumerate(songs):
        write_song(tmp_path / "song_data" / f"s{i}.json", s)
    cfg = make_cfg(songs=tmp_path / "song_data", logs=logs, name=f"{name}.cfg")
    return cfg


def counted_in_python():
    """The sample's counts from its files, by README's rules, with no SQL: an independent source
    for the numbers the course publishes (6,820 plays, 97 users, ...)."""
    events = [json.loads(line) for path in sorted(SAMPLE_LOGS.rglob("*.json"))
              for line in path.read_text().splitlines() if line.strip()]
    songs = [json.loads(path.read_text()) for path in sorted(SAMPLE_SONGS.rglob("*.json"))]
    plays = {(e["sessionId"], e["itemInSession"], e["ts"]): e for e in events if e["page"] == "NextSong"}
    catalogue = {(s["title"], s["artist_name"], s["duration"]) for s in songs}
    matched = sum((p["song"], p["artist"], p["length"]) in catalogue for p in plays.values())
    return {"staging_events": len(events), "staging_songs": len(songs), "songplays": len(plays),
            "users": len({e["userId"] for e in events if e["userId"] not in ("", None)}),
            "songs": len({s["song_id"] for s in songs}), "artists": len({s["artist_id"] for s in songs}),
            "time": len({ts for _, _, ts in plays}), "song_keys": len(catalogue),
            "unmatched_plays": len(plays) - matched, "load_errors": 0, "etl_runs": 1}, matched


def test_bundled_sample_gives_the_exact_counts(warehouse):
    result = load(warehouse)
    expected, matched = counted_in_python()
    assert counts(warehouse) == expected
    assert expected == {"staging_events": 8056, "staging_songs": 71, "songplays": 6820,  # as published
                        "users": 97, "songs": 71, "artists": 69, "time": 6813,
                        "song_keys": 71, "unmatched_plays": 6819, "load_errors": 0, "etl_runs": 1}
    assert query(warehouse, "SELECT COUNT(song_id), COUNT(artist_id) FROM songplays") == [(matched, matched)]
    assert result.after["songplays"] - result.before["songplays"] == 6820
    assert result.after == {t: n for t, n in counts(warehouse).items() if t not in HISTORY_TABLES}  # the summary's are the tables'


def test_second_run_leaves_every_table_as_it_was(warehouse):
    ids = "SELECT songplay_id, session_id, item_in_session, start_time FROM songplays ORDER BY 1"
    load(warehouse)
    first, first_ids = star(warehouse), query(warehouse, ids)
    result = load(warehouse)
    assert star(warehouse) == first and query(warehouse, ids) == first_ids
    assert all(result.after[t] == result.before[t] for t in LOADED_TABLES)


def test_later_batch_adds_plays_and_moves_users_to_their_newest_level(make_cfg, tmp_path):
    first = small(make_cfg, tmp_path, [event(level="free", ts=TS, itemInSession=0)], name="b1")
    reset(first)
    load(first)
    later = small(make_cfg, tmp_path, [event(level="paid", ts=TS + 60_000, itemInSession=1)], name="b2")
    load(later)
    assert query(later, "SELECT user_id, level FROM users") == [(1, "paid")]
    assert counts(later)["songplays"] == 2
    load(first)  # re-loading the older batch never moves a user back
    assert query(later, "SELECT user_id, level FROM users") == [(1, "paid")]
    assert counts(later)["songplays"] == 2


def test_user_who_upgrades_appears_once_as_paid(make_cfg, tmp_path):
    cfg = small(make_cfg, tmp_path, [event(level="paid", ts=TS + 1000, itemInSession=1),
                                     event(level="free", ts=TS, itemInSession=0)])
    reset(cfg)
    load(cfg)
    assert query(cfg, "SELECT user_id, level FROM users") == [(1, "paid")]


def test_users_come_from_any_event_but_never_an_empty_user_id(make_cfg, tmp_path):
    cfg = small(make_cfg, tmp_path, [event(page="Home", userId="7", firstName="Home", itemInSession=0),
                                     event(userId="", firstName="", itemInSession=1),
                                     event(userId="8", itemInSession=2)])
    reset(cfg)
    load(cfg)
    assert query(cfg, "SELECT user_id, first_name FROM users ORDER BY 1") == [(7, "Home"), (8, "Ann")]
    assert query(cfg, "SELECT user_id FROM songplays ORDER BY 1") == [(8,), (None,)]


def test_unmatched_plays_are_kept_with_null_song_and_artist(make_cfg, tmp_path):
    cfg = small(make_cfg, tmp_path, [
        event(itemInSession=0),                                   # matches title, artist, duration
        event(itemInSession=1, length=200.50001),                 # duration differs
        event(itemInSession=2, artist="Other"),                   # artist differs
        event(itemInSession=3, song="Unknown")])                  # title differs
    reset(cfg)
    load(cfg)
    assert query(cfg, "SELECT item_in_session, song_id, artist_id FROM songplays ORDER BY 1") == [
        (0, "SO1", "AR1"), (1, None, None), (2, None, None), (3, None, None)]


def test_a_play_matching_two_catalogue_entries_is_counted_once(make_cfg, tmp_path):
    cfg = small(make_cfg, tmp_path, [event()], songs=[song(song_id="SO2"), song(song_id="SO1")])
    reset(cfg)
    load(cfg)
    assert query(cfg, "SELECT song_id FROM songplays") == [("SO1",)]


def test_start_time_is_utc_with_milliseconds(make_cfg, tmp_path):
    cfg = small(make_cfg, tmp_path, [event(ts=TS), event(ts=1, itemInSession=1), event(ts=-1, itemInSession=2),
                                     event(ts=7258118400123, itemInSession=3)])
    reset(cfg)
    load(cfg)
    assert [r[0] for r in query(cfg, "SELECT start_time FROM songplays ORDER BY 1")] == [
        datetime.datetime(1969, 12, 31, 23, 59, 59, 999000), datetime.datetime(1970, 1, 1, 0, 0, 0, 1000),
        datetime.datetime(2018, 11, 30, 0, 22, 7, 796000), datetime.datetime(2200, 1, 1, 0, 0, 0, 123000)]


def test_time_parts_follow_extract(make_cfg, tmp_path):
    sunday = 1543708800000 + 5 * 3600_000    # 2018-12-02 05:00 UTC, a Sunday, ISO week 48
    monday = 1546214400000 + 23 * 3600_000   # 2018-12-31 23:00 UTC, a Monday, ISO week 1 (of 2019)
    cfg = small(make_cfg, tmp_path, [event(ts=sunday), event(ts=monday, itemInSession=1),
                                     event(ts=monday, itemInSession=2)])
    reset(cfg)
    load(cfg)
    assert query(cfg, "SELECT hour, day, week, month, year, weekday FROM time ORDER BY start_time") == [
        (5, 2, 48, 12, 2018, 0), (23, 31, 1, 12, 2018, 1)]


def test_repeated_artist_is_resolved_the_same_way_whatever_the_file_order(make_cfg, tmp_path):
    bare = song(song_id="SO1", artist_name="Band", artist_location="")
    full = song(song_id="SO2", artist_name="Band feat. X", artist_location="Oslo",
                artist_latitude=59.9, artist_longitude=10.7)
    picked = []
    for name, songs in (("a", [bare, full]), ("b", [full, bare])):
        cfg = small(make_cfg, tmp_path / name, [event()], songs=songs)
        reset(cfg)
        load(cfg)
        picked.append(table(cfg, "artists"))
    assert picked[0] == picked[1] == [("AR1", "Band feat. X", "Oslo", 59.9, 10.7)]


def test_the_same_event_twice_in_the_input_is_one_play(make_cfg, tmp_path):
    cfg = small(make_cfg, tmp_path, [event(), event()])
    reset(cfg)
    load(cfg)
    assert counts(cfg)["songplays"] == 1
    assert counts(cfg)["time"] == 1


REPEATED = dict(ts=TS + 60_000, sessionId=7, itemInSession=3)  # one event, given more than once


@pytest.mark.parametrize("copies, plays, waiting", [
    # every copy waits for its song: unmatched_plays' key finds the repeat
    ([dict(userId="3", song="Other"), dict(userId="2", song="Other")], [(2, "free", None)], 1),
    # every copy matched: songplays' key finds it
    ([dict(userId="3"), dict(userId="2", level="paid")], [(2, "paid", "SO1")], 0),
    # one copy matched, one waiting: unmatched_plays takes one row, songplays' key finds it
    ([dict(userId="3"), dict(userId="2", song="Other")], [(2, "free", None)], 1),
])
def test_a_first_load_keeps_the_smallest_copy_of_a_repeated_event(make_cfg, tmp_path, caplog, copies, plays, waiting):
    """The plays are prepared as if no event repeated; a repeat fails a key of the plays, and
    the star transaction runs again with the copies ranked: the smallest user_id, song, artist,
    level wins."""
    caplog.set_level("INFO", logger="sparkify")
    cfg = small(make_cfg, tmp_path, [event(**REPEATED, **c) for c in copies])
    reset(cfg)
    load(cfg)
    assert query(cfg, "SELECT user_id, level, song_id FROM songplays") == plays
    assert counts(cfg)["unmatched_plays"] == waiting
    assert "the batch repeats an event (Key (session_id, item_in_session, start_time)=(7, 3, " in caplog.text


def test_a_later_load_keeps_the_smallest_copy_of_a_repeated_event(make_cfg, tmp_path, caplog):
    """With the keys in place, the plays' insert finds the repeat. A batch without one prepares
    its plays once."""
    caplog.set_level("INFO", logger="sparkify")
    first = small(make_cfg, tmp_path, [event()], name="b1")
    reset(first)
    load(first)
    assert "repeats an event" not in caplog.text
    later = small(make_cfg, tmp_path, [event(**REPEATED, userId="3"), event(**REPEATED, userId="2", song="Other")],
                  name="b2")
    load(later)
    assert query(later, "SELECT user_id, song_id FROM songplays ORDER BY start_time") == [(1, "SO1"), (2, None)]
    assert counts(later)["unmatched_plays"] == 1
    assert "the batch repeats an event (Key (session_id, item_in_session, start_time)=(7, 3, " in caplog.text


def test_a_reload_of_a_repeated_event_is_checked_as_one_play(make_cfg, tmp_path, caplog):
    """Loaded again, a repeated event's plays were all skipped, so no key saw the repeat, and
    the checks read every copy: a copy the load drops (level 'unknown', which staging now sets
    aside; here 'paid') failed the run, and 'logged out' counted each copy."""
    caplog.set_level("INFO", logger="sparkify")
    later = dict(REPEATED, ts=REPEATED["ts"] + 1000, itemInSession=4)  # the user's latest event: free
    cfg = small(make_cfg, tmp_path, [event(**REPEATED, userId="3"), event(**REPEATED, userId="3", level="paid"),
                                     event(**later, userId="3"), event(userId="", itemInSession=9),
                                     event(userId="", itemInSession=9)])
    reset(cfg)
    load(cfg)
    plays = query(cfg, "SELECT user_id, level FROM songplays ORDER BY start_time, user_id")
    again = load(cfg)
    assert query(cfg, "SELECT user_id, level FROM songplays ORDER BY start_time, user_id") == plays
    assert [o.describe() for o in again.checks if o.status != "pass"] == ["plays without a user (logged out): 1 row"]
    assert "the batch repeats an event (one whose plays were loaded before)" in caplog.text


def test_a_broken_key_of_another_table_fails_the_load_without_a_second_try(make_cfg, tmp_path, caplog, monkeypatch):
    """Only the plays' keys mean a repeated event: a transform bug that doubles a user stops the load."""
    caplog.set_level("INFO", logger="sparkify")
    cfg = small(make_cfg, tmp_path, [event(userId="5", sessionId=1), event(userId="5", sessionId=2)])
    reset(cfg)
    doubled = [q.replace("WHERE rn = 1", "WHERE rn <= 2") for q in sql_queries.prepare_queries["latest_users"]]
    monkeypatch.setitem(sql_queries.prepare_queries, "latest_users", doubled)
    with pytest.raises(psycopg2.errors.UniqueViolation) as failed:
        load(cfg)
    assert failed.value.diag.constraint_name == "users_pkey"
    assert "repeats an event" not in caplog.text
    assert star(cfg) == {t: [] for t in LOADED_TABLES}


def test_the_keys_that_find_a_repeat_are_the_plays_unique_event_keys():
    keys = {k.name: (t, k.definition) for t in sql_queries.REGISTRY for k in t.keys}
    assert {keys[name] for name in sql_queries.REPEAT_KEYS} == {
        (sql_queries.TABLE["songplays"], "UNIQUE (session_id, item_in_session, start_time)"),
        (sql_queries.TABLE["unmatched_plays"], "PRIMARY KEY (session_id, item_in_session, start_time)")}


def test_a_first_load_leaves_every_key_and_index_as_created(warehouse):
    """A first load drops the keys of the empty star tables and builds them again."""
    created = keys(warehouse)
    assert len(created) >= 2 * len(STAR_TABLES)
    load(warehouse)
    assert keys(warehouse) == created
    load(warehouse)  # and the keys work: nothing is added twice
    assert counts(warehouse)["songplays"] == 6820


def break_the_times(monkeypatch):
    """A batch whose plays lack their times: the times are made to come out empty."""
    broken = dict(sql_queries.prepare_queries)
    broken["new_times"] = [q + " LIMIT 0" if "SELECT" in q else q for q in broken["new_times"]]
    monkeypatch.setattr(sql_queries, "prepare_queries", broken)


def test_a_failed_check_on_a_first_load_commits_nothing(warehouse, monkeypatch):
    created = keys(warehouse)
    break_the_times(monkeypatch)
    with pytest.raises(UserError, match=r"^check failed: plays whose time is not in time: 6,820 rows "
                                          r"\(start_time 2018-11-01 21:01:46.796000, .*, \.\.\.\); nothing was committed$"):
        load(warehouse)
    assert star(warehouse) == {t: [] for t in LOADED_TABLES}
    assert keys(warehouse) == created


def test_a_failed_check_on_a_later_load_commits_nothing(warehouse, make_cfg, tmp_path, monkeypatch):
    load(warehouse)
    before, created = star(warehouse), keys(warehouse)
    break_the_times(monkeypatch)
    later = small(make_cfg, tmp_path, [event(ts=TS + 1000, itemInSession=99)])
    with pytest.raises(UserError, match=r"^check failed: plays whose time is not in time: 1 row "
                                          r"\(start_time 2018-11-30 00:22:08.796000\); nothing was committed$"):
        load(later)
    assert star(warehouse) == before
    assert keys(warehouse) == created


def test_the_transform_in_one_session_as_on_redshift_gives_the_same_star(warehouse, redshift_transform):
    """Redshift runs the prepare statements inside its one transaction (scratch tables TEMP),
    then the apply, then its own checks; on the same staging rows it gives the same star."""
    load(warehouse)
    parallel = star(warehouse)
    empty(warehouse, *LOADED_TABLES)
    with db.connection(warehouse) as conn:
        redshift_transform(conn)
    assert star(warehouse) == parallel


def test_ids_number_on_after_a_truncate_as_the_usual_load_would(warehouse, make_cfg, tmp_path):
    """A load numbers its plays in one run of ids; ids are never reused (a load takes them 1,000
    at a time, so the ones it leaves are skipped: unique, not gapless)."""
    load(warehouse)
    [(first_max,)] = query(warehouse, "SELECT MAX(songplay_id) FROM songplays")
    empty(warehouse, "songplays", "time")  # TRUNCATE keeps the identity where it was
    load(warehouse)
    [(low, high, plays)] = query(warehouse, "SELECT MIN(songplay_id), MAX(songplay_id), COUNT(*) FROM songplays")
    assert (first_max, high - low + 1) == (plays, plays) and low > first_max
    cfg = small(make_cfg, tmp_path, [event(ts=TS + 1000, itemInSession=99)])
    load(cfg)  # a later batch: the identity numbers on
    assert query(cfg, "SELECT MAX(songplay_id) FROM songplays") > [(high,)]


def test_a_first_load_keeps_what_a_user_added_to_the_star_tables(warehouse):
    """A first load truncates the empty star tables and drops and rebuilds only the keys
    sql_queries declares: views, grants, comments, other columns and indexes stay."""
    load(warehouse)
    plain = star(warehouse)
    reset(warehouse)
    query(warehouse, "CREATE VIEW plays_by_hour AS SELECT t.hour, COUNT(*) AS plays "
                     "FROM songplays p JOIN time t USING (start_time) GROUP BY t.hour; "
                     "GRANT SELECT ON songplays, time TO PUBLIC; "
                     "ALTER TABLE songplays ADD COLUMN note TEXT; "
                     "COMMENT ON TABLE songplays IS 'plays'; "
                     "CREATE INDEX songplays_by_user ON songplays (user_id) WHERE user_id IS NOT NULL; SELECT 1")
    created = keys(warehouse)
    try:
        load(warehouse)
        assert query(warehouse, "SELECT SUM(plays) FROM plays_by_hour") == [(6820,)]
    finally:
        query(warehouse, "DROP VIEW plays_by_hour; SELECT 1")
    assert [r[:-1] for r in table(warehouse, "songplays")] == plain["songplays"]
    assert {t: table(warehouse, t) for t in LOADED_TABLES if t != "songplays"} == \
        {t: plain[t] for t in LOADED_TABLES if t != "songplays"}
    assert keys(warehouse) == created
    assert query(warehouse, "SELECT relname FROM pg_class WHERE relname IN ('songplays', 'time') "
                            "AND relacl IS NOT NULL ORDER BY 1") == [("songplays",), ("time",)]
    assert query(warehouse, "SELECT obj_description('songplays'::regclass)") == [("plays",)]
