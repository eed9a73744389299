"""The same star schema, with the same semantics, built by DuckDB from the same JSON files.

Bench-only (duckdb is never a runtime dependency). Prints one JSON line: seconds and counts.

    python bench/duckdb_load.py SONG_DIR LOG_DIR DB_FILE
"""
import json
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sql_queries import STAGING_TABLES, STAR_TABLES  # noqa: E402  (only the names)

EVENT_COLUMNS = {"artist": "VARCHAR", "auth": "VARCHAR", "firstName": "VARCHAR", "gender": "VARCHAR",
                 "itemInSession": "INTEGER", "lastName": "VARCHAR", "length": "DOUBLE", "level": "VARCHAR",
                 "location": "VARCHAR", "method": "VARCHAR", "page": "VARCHAR", "registration": "DOUBLE",
                 "sessionId": "INTEGER", "song": "VARCHAR", "status": "INTEGER", "ts": "BIGINT",
                 "userAgent": "VARCHAR", "userId": "VARCHAR"}
SONG_COLUMNS = {"num_songs": "INTEGER", "artist_id": "VARCHAR", "artist_latitude": "DOUBLE",
                "artist_longitude": "DOUBLE", "artist_location": "VARCHAR", "artist_name": "VARCHAR",
                "song_id": "VARCHAR", "title": "VARCHAR", "duration": "DOUBLE", "year": "INTEGER"}


def struct(columns):
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"


def build(song_dir, log_dir, db_file):
    con = duckdb.connect(db_file)
    steps = {}

    def step(name, *sql):
        started = time.monotonic()
        for q in sql:
            con.execute(q)
        steps[name] = time.monotonic() - started

    step("staging songs", f"""CREATE TABLE staging_songs AS SELECT * FROM read_json('{song_dir}/**/*.json',
         format='auto', columns={struct(SONG_COLUMNS)})""")
    step("staging events", f"""CREATE TABLE staging_events AS SELECT * REPLACE (NULLIF(userId, '')::INTEGER AS userId)
         FROM read_json('{log_dir}/**/*.json', format='newline_delimited', columns={struct(EVENT_COLUMNS)})""")
    epoch = "make_timestamp(ts * 1000)"
    step("star tables",
         """CREATE TABLE songs AS SELECT song_id, title, artist_id, year, duration FROM staging_songs
            QUALIFY ROW_NUMBER() OVER (PARTITION BY song_id ORDER BY title, artist_id, year, duration) = 1""",
         """CREATE TABLE artists AS SELECT artist_id, artist_name AS name, artist_location AS location,
                   artist_latitude AS latitude, artist_longitude AS longitude FROM staging_songs
            QUALIFY ROW_NUMBER() OVER (PARTITION BY artist_id ORDER BY artist_latitude IS NULL,
                    COALESCE(artist_location, '') = '', artist_name, artist_location, song_id) = 1""",
         f"""CREATE TABLE users AS SELECT userId AS user_id, firstName AS first_name, lastName AS last_name,
                   gender, level, {epoch} AS last_seen_at FROM staging_events WHERE userId IS NOT NULL
            QUALIFY ROW_NUMBER() OVER (PARTITION BY userId ORDER BY ts DESC, sessionId DESC,
                    itemInSession DESC, level DESC, firstName, lastName) = 1""",
         f"""CREATE TABLE songplays AS
            SELECT row_number() OVER () AS songplay_id, e.start_time, e.userId AS user_id, e.level, m.song_id,
                   m.artist_id, e.sessionId AS session_id, e.itemInSession AS item_in_session, e.location,
                   e.userAgent AS user_agent
            FROM (SELECT *, {epoch} AS start_time FROM staging_events WHERE page = 'NextSong'
                  QUALIFY ROW_NUMBER() OVER (PARTITION BY sessionId, itemInSession, ts
                                             ORDER BY userId, song, artist, level) = 1) e
            LEFT JOIN (SELECT title, artist_name, duration, song_id, artist_id FROM staging_songs
                       QUALIFY ROW_NUMBER() OVER (PARTITION BY title, artist_name, duration ORDER BY song_id) = 1) m
              ON m.title = e.song AND m.artist_name = e.artist AND m.duration = e.length""",
         """CREATE TABLE time AS SELECT start_time, hour(start_time) AS hour, day(start_time) AS day,
                   weekofyear(start_time) AS week, month(start_time) AS month, year(start_time) AS year,
                   dayofweek(start_time) AS weekday
            FROM (SELECT DISTINCT start_time FROM songplays)""")
    counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in STAGING_TABLES + STAR_TABLES}
    counts["matched"] = con.execute("SELECT COUNT(song_id) FROM songplays").fetchone()[0]
    con.close()
    return steps, counts


if __name__ == "__main__":
    started = time.monotonic()
    steps, counts = build(*sys.argv[1:4])
    print(json.dumps({"steps": steps, "total": time.monotonic() - started, "counts": counts}))
