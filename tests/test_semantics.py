"""What the star tables mean: exact counts on the sample, idempotency, increments, and each rule."""
import datetime

import pytest

import db
import etl
import sql_queries
from cli import UserError
from conftest import TS, counts, event, query, reset, song, table, write_events, write_song

STAR = ("songplays", "users", "songs", "artists", "time")


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


def test_bundled_sample_gives_the_exact_counts(warehouse):
    result = load(warehouse)
    assert counts(warehouse) == {"staging_events": 8056, "staging_songs": 71, "songplays": 6820,
                                 "users": 97, "songs": 71, "artists": 69, "time": 6813, "load_errors": 0}
    assert query(warehouse, "SELECT COUNT(song_id), COUNT(artist_id) FROM songplays") == [(1, 1)]
    assert result.after["songplays"] - result.before["songplays"] == 6820


def test_second_run_leaves_every_table_as_it_was(warehouse):
    load(warehouse)
    first = {t: query(warehouse, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in STAR}
    result = load(warehouse)
    assert {t: query(warehouse, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in STAR} == first
    assert all(result.after[t] == result.before[t] for t in STAR)


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
    cfg = small(make_cfg, tmp_path, [event(ts=TS), event(ts=1, itemInSession=1)])
    reset(cfg)
    load(cfg)
    assert [r[0] for r in query(cfg, "SELECT start_time FROM songplays ORDER BY 1")] == [
        datetime.datetime(1970, 1, 1, 0, 0, 0, 1000), datetime.datetime(2018, 11, 30, 0, 22, 7, 796000)]


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


def keys(cfg):
    return query(cfg, "SELECT tablename, indexdef FROM pg_indexes WHERE tablename = ANY(%s) ORDER BY 1, 2",
                 (list(STAR),)) + query(cfg, "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) "
                                             "FROM pg_constraint WHERE contype IN ('p', 'u') ORDER BY 1, 2")


def test_a_first_load_leaves_every_key_and_index_as_created(warehouse):
    """A first load drops the keys of the empty star tables and builds them again."""
    created = keys(warehouse)
    assert len(created) >= 2 * len(STAR)
    load(warehouse)
    assert keys(warehouse) == created
    load(warehouse)  # and the keys work: nothing is added twice
    assert counts(warehouse)["songplays"] == 6820


def test_a_failed_check_commits_nothing(warehouse, monkeypatch):
    """A batch whose plays lack their times (here: the times are made to come out empty)."""
    created = keys(warehouse)
    load(warehouse)
    before = {t: table(warehouse, t) for t in STAR}
    empty(warehouse, "songplays", "time")
    broken = dict(sql_queries.prepare_queries)
    broken["new_times"] = [broken["new_times"][0], broken["new_times"][1] + " LIMIT 0"]
    monkeypatch.setattr(sql_queries, "prepare_queries", broken)
    with pytest.raises(UserError, match=r"^check failed: 6820 plays without a time row; nothing was committed$"):
        load(warehouse)
    assert table(warehouse, "songplays") == [] and table(warehouse, "time") == []
    assert keys(warehouse) == created
    assert {t: table(warehouse, t) for t in ("users", "songs", "artists")} == \
        {t: before[t] for t in ("users", "songs", "artists")}


def test_the_transform_in_one_session_as_on_redshift_gives_the_same_star(warehouse):
    """Redshift runs the prepare statements inside its one transaction (scratch tables TEMP),
    then the apply, then its own checks; on the same staging rows it gives the same star."""
    load(warehouse)
    parallel = {t: table(warehouse, t) for t in STAR}
    empty(warehouse, *STAR)
    with db.connection(warehouse) as conn:
        etl.insert_star_tables(conn, "redshift")
    assert {t: table(warehouse, t) for t in STAR} == parallel
