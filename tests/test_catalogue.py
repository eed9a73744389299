"""Plays match the whole catalogue loaded so far: a play whose song file comes in a later load
is matched then, a new day's play of a song loaded earlier gets its ids, and a re-run changes
nothing. Both engines' paths run the same statements (Redshift's in one session)."""
import json
import re

import db
import etl
import sql_queries
from conftest import TS, event, query, reset, song, table, write_events, write_song
from sql_queries import LOADED_TABLES

A = song(song_id="SOA", artist_id="ARA", title="Alpha", artist_name="Ann", duration=100.0)
B = song(song_id="SOB", artist_id="ARB", title="Beta", artist_name="Bo", duration=200.0)
C = song(song_id="SOC", artist_id="ARC", title="Gamma", artist_name="Cy", duration=300.0)


def play(s, item, ts=TS):
    return event(song=s["title"], artist=s["artist_name"], length=s["duration"], itemInSession=item, ts=ts)


def source(make_cfg, tmp_path, name, events, songs):
    logs = write_events(tmp_path / name / "log_data" / "day.json", events).parent
    for s in songs:
        write_song(tmp_path / name / "song_data" / f"{s['song_id']}.json", s)
    return make_cfg(songs=tmp_path / name / "song_data", logs=logs, name=f"{name}.cfg")


def in_one_session(redshift_transform):
    """A load: staging as usual, then the transform as Redshift runs it."""
    def load_in_one_session(cfg):
        with db.connection(cfg) as conn:
            sources, _ = etl.find_sources(cfg)
            etl.load_staging(cfg, conn, sources, etl.new_run_id())
            return redshift_transform(conn)
    return load_in_one_session


def loaded(cfg):
    return {t: table(cfg, t) for t in LOADED_TABLES}


def matched(cfg):
    return query(cfg, "SELECT item_in_session, song_id, artist_id FROM songplays ORDER BY 1")


def test_plays_loaded_before_their_song_are_matched_when_it_arrives(make_cfg, tmp_path):
    plays = [play(A, 0), play(B, 1), play(B, 2)]
    partial = source(make_cfg, tmp_path, "partial", plays, [A])
    full = source(make_cfg, tmp_path, "full", plays, [A, B])
    reset(partial)
    etl.run_etl(partial)
    assert matched(partial) == [(0, "SOA", "ARA"), (1, None, None), (2, None, None)]
    result = etl.run_etl(full)
    assert matched(full) == [(0, "SOA", "ARA"), (1, "SOB", "ARB"), (2, "SOB", "ARB")]
    assert ("songplays", "update", "matched", 2) in result.changed
    assert query(full, "SELECT COUNT(*) FROM unmatched_plays") == [(0,)]
    again = loaded(full)
    result = etl.run_etl(full)  # a re-run: nothing new to match, nothing changes
    assert loaded(full) == again
    assert ("songplays", "update", "matched", 0) in result.changed


def test_a_load_that_matches_waiting_plays_says_how_many_it_added_too(make_cfg, tmp_path):
    """A load added 2 waiting plays and matched 1: the summary and the run history said +1 added
    (the table's change in rows), not the 2 rows the load added."""
    waiting = source(make_cfg, tmp_path, "waiting", [play(B, 1)], [A])
    later = source(make_cfg, tmp_path, "later", [play(B, 1), play(C, 2, ts=TS + 1000), play(C, 3, ts=TS + 2000)], [A, B])
    reset(waiting)
    etl.run_etl(waiting)
    result = etl.run_etl(later)
    assert ("unmatched_plays", "delete", "matched", 1) in result.changed
    assert result.added("unmatched_plays") == 2
    row = next(line.split() for line in etl.summary(result).splitlines() if line.startswith("unmatched_plays"))
    assert row[:5] == ["unmatched_plays", "2", "+2", "matched", "-1"]
    [(changes,)] = query(later, "SELECT star_changes FROM etl_runs ORDER BY started_at DESC LIMIT 1")
    assert json.loads(changes)["unmatched_plays"] == {"added": 2, "matched": 1}


def test_a_new_days_play_of_a_song_loaded_earlier_gets_its_ids(make_cfg, tmp_path):
    day1 = source(make_cfg, tmp_path, "day1", [play(A, 0)], [A])
    day2 = source(make_cfg, tmp_path, "day2", [play(A, 1, ts=TS + 86_400_000)], [C])
    reset(day1)
    etl.run_etl(day1)
    etl.run_etl(day2)
    assert matched(day2) == [(0, "SOA", "ARA"), (1, "SOA", "ARA")]


def test_a_key_keeps_the_ids_of_the_load_that_first_brought_it(make_cfg, tmp_path):
    """Within a load the smallest song_id wins; a later load never changes a key's ids, so
    every matched play agrees with the catalogue."""
    first = source(make_cfg, tmp_path, "first", [play(A, 0)], [dict(A, song_id="SOZ"), dict(A, song_id="SOY")])
    later = source(make_cfg, tmp_path, "later", [play(A, 1, ts=TS + 1000)], [A])  # SOA < SOY
    reset(first)
    etl.run_etl(first)
    etl.run_etl(later)
    assert [r[1] for r in matched(later)] == ["SOY", "SOY"]
    assert query(later, "SELECT song_id FROM song_keys") == [("SOY",)]


def test_the_one_session_transform_matches_the_same_way(make_cfg, tmp_path, redshift_transform):
    """The same sequence of loads, through the parallel PostgreSQL transform and through
    Redshift's one-session transform, gives the same warehouse."""
    batches = [([play(A, 0), play(B, 1)], [A]),                      # B not yet in the catalogue
               ([play(A, 2, ts=TS + 1000), play(C, 3)], [C]),        # A from the catalogue, C new
               ([play(B, 4, ts=TS + 2000)], [B])]                    # B arrives: plays 1 and 4
    results = []
    for load in (etl.run_etl, in_one_session(redshift_transform)):
        cfgs = [source(make_cfg, tmp_path / load.__name__, f"b{i}", e, s) for i, (e, s) in enumerate(batches)]
        reset(cfgs[0])
        for cfg in cfgs:
            load(cfg)
        results.append((loaded(cfgs[0]), matched(cfgs[0])))
    assert results[0] == results[1]
    assert results[0][1] == [(0, "SOA", "ARA"), (1, "SOB", "ARB"), (2, "SOA", "ARA"), (3, "SOC", "ARC"),
                             (4, "SOB", "ARB")]
    assert results[0][0]["unmatched_plays"] == []


def test_the_prepare_statements_read_only_what_a_first_load_leaves_unlocked():
    """A first load truncates and drops the keys of the empty tables it takes over, inside the
    star transaction; a prepare statement reading one of them would wait for that transaction,
    which waits for the prepared rows."""
    prepare = " ".join(q for t in sql_queries.SCRATCH_TABLES for q in sql_queries.prepare_statements(t, "postgres"))
    read = {t for t in sql_queries.TABLES if re.search(rf"\b{t}\b", prepare)}
    assert read <= set(sql_queries.PREPARE_READS)
    assert not read & set(sql_queries.TAKEN_OVER_WHEN_EMPTY)
