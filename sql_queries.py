"""Every SQL statement of the warehouse, for both engines.

Read top to bottom it is the schema: staging tables (the raw fields), the star
(songplays fact; users, songs, artists, time dimensions), how staging is filled
(PostgreSQL: files read by the server, or streamed COPY FROM STDIN, and a set-based cast;
Redshift: COPY from S3), and the transform, which is one text for both engines (on a
PostgreSQL first load, songplays and time are built whole beside and swapped in).

The scripts iterate the lists at the bottom: drop_table_queries,
create_table_queries[engine], prepare_queries and apply_queries (all of the transform for
one session: transform_queries(engine)), check_queries, build_beside and the swap queries
beside it, and for Redshift copy_table_queries(config).
"""
import re

from errors import UserError
from config import REGION, ROLE_ARN, S3_URI

TABLES = ("staging_events", "staging_songs", "songplays", "users", "songs", "artists", "time",
          "load_errors")
STAR_TABLES = ("songplays", "users", "songs", "artists", "time")
SCRATCH_TABLES = ("new_plays", "new_times", "latest_users")  # the transform's prepared rows

# --- Engine differences, side by side. Everything not named here is one text. -------------
DIALECT = {
    "postgres": {
        "staging": "UNLOGGED TABLE",   # scratch, refilled every run: no need to write it twice (WAL)
        "staging_options": " WITH (autovacuum_enabled = false)",  # etl.py analyzes it itself
        "identity": "BIGINT GENERATED ALWAYS AS IDENTITY",
        "all": "",
        "by_time": "",
        "by_song": "",
        "scratch": "UNLOGGED TABLE",   # the transform's prepared rows, shared between connections
        # ts (epoch milliseconds) as a UTC timestamp, milliseconds kept: one exact product
        # (whole microseconds, in a double, for any date within 285 years of 1970)
        "event_time": "TIMESTAMP 'epoch' + ts * INTERVAL '1 millisecond'",
    },
    "redshift": {
        "staging": "TABLE",
        "staging_options": "",
        "identity": "BIGINT IDENTITY(0,1)",
        "all": "DISTSTYLE ALL",        # small dimension: a full copy on every node, joins never redistribute
        # songplays and time share the distribution key start_time, so their join is node-local,
        # and sorting on it lets time-range queries skip blocks.
        "by_time": "DISTKEY(start_time) SORTKEY(start_time)",
        "by_song": "SORTKEY(song_id)",
        "scratch": "TEMP TABLE",       # the transform's prepared rows, inside the load's transaction
        "event_time": ("TIMESTAMP 'epoch' + ts / 1000 * INTERVAL '1 second' "  # integer arithmetic
                       "+ ts % 1000 * INTERVAL '1 millisecond'"),
    },
}

# --- Staging: the raw fields, in file order. (column, JSON key, type, required) ------------
# The same list gives the staging DDL, the PostgreSQL cast from JSON, the bad-record checks,
# and data/log_json_path.json for Redshift. An empty string in a non-text field is NULL
# (the logs write a logged-out userId as ""), as Redshift's COPY loads it.
EVENT_FIELDS = (
    ("artist",          "artist",        "VARCHAR(512)",     False),
    ("auth",            "auth",          "VARCHAR(32)",      False),
    ("first_name",      "firstName",     "VARCHAR(256)",     False),
    ("gender",          "gender",        "VARCHAR(16)",      False),
    ("item_in_session", "itemInSession", "INTEGER",          True),   # with session_id and ts:
    ("last_name",       "lastName",      "VARCHAR(256)",     False),  # the identity of an event
    ("length",          "length",        "DOUBLE PRECISION", False),
    ("level",           "level",         "VARCHAR(16)",      False),
    ("location",        "location",      "VARCHAR(512)",     False),
    ("method",          "method",        "VARCHAR(16)",      False),
    ("page",            "page",          "VARCHAR(64)",      True),
    ("registration",    "registration",  "DOUBLE PRECISION", False),  # epoch ms, written as 1.5e12
    ("session_id",      "sessionId",     "INTEGER",          True),
    ("song",            "song",          "VARCHAR(512)",     False),
    ("status",          "status",        "INTEGER",          False),
    ("ts",              "ts",            "BIGINT",           True),   # epoch milliseconds
    ("user_agent",      "userAgent",     "VARCHAR(512)",     False),
    ("user_id",         "userId",        "INTEGER",          False),
)

SONG_FIELDS = (  # JSON keys equal column names, so Redshift's FORMAT AS JSON 'auto' maps them
    ("num_songs",        "num_songs",        "INTEGER",          False),
    ("artist_id",        "artist_id",        "VARCHAR(64)",      True),
    ("artist_latitude",  "artist_latitude",  "DOUBLE PRECISION", False),
    ("artist_longitude", "artist_longitude", "DOUBLE PRECISION", False),
    ("artist_location",  "artist_location",  "VARCHAR(512)",     False),
    ("artist_name",      "artist_name",      "VARCHAR(512)",     False),
    ("song_id",          "song_id",          "VARCHAR(64)",      True),
    ("title",            "title",            "VARCHAR(512)",     False),
    ("duration",         "duration",         "DOUBLE PRECISION", False),
    ("year",             "year",             "INTEGER",          False),
)

STAGING_FIELDS = {"staging_events": EVENT_FIELDS, "staging_songs": SONG_FIELDS}


def staging_table_create(table, engine):
    cols = ",\n    ".join(f"{c} {t}{' NOT NULL' if req else ''}" for c, _, t, req in STAGING_FIELDS[table])
    return f"CREATE {DIALECT[engine]['staging']} {table} (\n    {cols}\n){DIALECT[engine]['staging_options']}"


def is_text(sql_type):
    return sql_type.startswith("VARCHAR")


# --- The star --------------------------------------------------------------------------------
# songplays: one row per NextSong event. (session_id, item_in_session, start_time) identifies
# the event, so a re-run inserts nothing twice.
songplay_table_create = """
CREATE TABLE songplays (
    songplay_id     {identity},
    start_time      TIMESTAMP NOT NULL,
    user_id         INTEGER,
    level           VARCHAR(16),
    song_id         VARCHAR(64),
    artist_id       VARCHAR(64),
    session_id      INTEGER NOT NULL,
    item_in_session INTEGER NOT NULL,
    location        VARCHAR(512),
    user_agent      VARCHAR(512),
    PRIMARY KEY (songplay_id)
) {by_time}"""

# users: as of each user's latest event; last_seen_at is that event's time, so a later batch
# moves a user forward and re-loading an older batch never moves them back.
user_table_create = """
CREATE TABLE users (
    user_id      INTEGER NOT NULL,
    first_name   VARCHAR(256),
    last_name    VARCHAR(256),
    gender       VARCHAR(16),
    level        VARCHAR(16),
    last_seen_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id)
) {all}"""

song_table_create = """
CREATE TABLE songs (
    song_id   VARCHAR(64) NOT NULL,
    title     VARCHAR(512),
    artist_id VARCHAR(64),
    year      INTEGER,
    duration  DOUBLE PRECISION,
    PRIMARY KEY (song_id)
) {all} {by_song}"""

artist_table_create = """
CREATE TABLE artists (
    artist_id VARCHAR(64) NOT NULL,
    name      VARCHAR(512),
    location  VARCHAR(512),
    latitude  DOUBLE PRECISION,
    longitude DOUBLE PRECISION,
    PRIMARY KEY (artist_id)
) {all}"""

time_table_create = """
CREATE TABLE time (
    start_time TIMESTAMP NOT NULL,
    hour       INTEGER NOT NULL,
    day        INTEGER NOT NULL,
    week       INTEGER NOT NULL,
    month      INTEGER NOT NULL,
    year       INTEGER NOT NULL,
    weekday    INTEGER NOT NULL,
    PRIMARY KEY (start_time)
) {by_time}"""

# load_errors: every record set aside by a load, so none is lost (PostgreSQL engine; Redshift
# keeps its own in stl_load_errors).
load_errors_table_create = """
CREATE TABLE load_errors (
    run_id  VARCHAR(64) NOT NULL,
    source  VARCHAR(16) NOT NULL,
    file    VARCHAR(1024) NOT NULL,
    line_no BIGINT,
    reason  VARCHAR(1024) NOT NULL,
    raw     VARCHAR(2048)
) {all}"""

# PostgreSQL only (Redshift has no indexes): the natural key of a play, enforced and used by
# the NOT EXISTS that keeps re-runs idempotent.
songplay_key_index = ("CREATE UNIQUE INDEX songplays_event_key "
                      "ON songplays (session_id, item_in_session, start_time)")

drop_table_queries = [f"DROP TABLE IF EXISTS {t}" for t in TABLES + SCRATCH_TABLES]


def _create_queries(engine):
    d = DIALECT[engine]
    star = [q.format(**d).strip() for q in (songplay_table_create, user_table_create, song_table_create,
                                             artist_table_create, time_table_create,
                                             load_errors_table_create)]
    extra = [songplay_key_index] if engine == "postgres" else []
    return [staging_table_create(t, engine) for t in STAGING_FIELDS] + star + extra


create_table_queries = {engine: _create_queries(engine) for engine in DIALECT}


# --- Filling staging on PostgreSQL -----------------------------------------------------------
# Raw lines are streamed through COPY FROM STDIN into a per-connection temp table (one row per
# log line, one per song file), then cast to typed columns by one set-based INSERT. The
# identity column numbers the rows in stream order, which gives every line its file and line.
raw_table_create = """
CREATE TEMP TABLE IF NOT EXISTS {raw} (
    id      BIGINT GENERATED ALWAYS AS IDENTITY,
    file_id INTEGER NOT NULL,
    line    TEXT NOT NULL
)"""
raw_files_create = "CREATE TEMP TABLE IF NOT EXISTS {raw}_files (file_id INTEGER, path TEXT, first_id BIGINT)"
rejects_create = "CREATE TEMP TABLE IF NOT EXISTS {raw}_rejects (id BIGINT, reason TEXT)"
raw_copy = "COPY {raw} (file_id, line) FROM STDIN"
raw_files_insert = "INSERT INTO {raw}_files (file_id, path, first_id) VALUES %s"
# A record starts with '{'; only other lines pay for the blank test (btrim copies the line).
NOT_BLANK = "(starts_with(x.line, '{') OR btrim(x.line, E' \\t\\r\\n') <> '')"


def _field_value(source, key, sql_type):
    """One field of a JSON record as text; an empty string in a non-text field is NULL."""
    value = f"{source} ->> '{key}'" if source.endswith("j") else f'{source}."{key}"'
    return value if is_text(sql_type) else f"NULLIF({value}, '')"


def _cast(table, sources, where, unchecked=False):
    """INSERT INTO a staging table the typed fields of each JSON text x.line from `sources`.

    The json type parses faster than jsonb; a record with an escaped NUL goes through jsonb,
    which refuses it as the checks do. unchecked: the text is taken as json through
    unchecked_json (see there).
    """
    fields = STAGING_FIELDS[table]
    cols = ", ".join(c for c, _, _, _ in fields)
    exprs = ", ".join(_field_value("r", k, t) + ("" if is_text(t) else f"::{t}") for _, k, t, _ in fields)
    # Text fields are read straight into their VARCHAR type (one input call that also checks
    # the length); other fields as text, so that an empty string can become NULL.
    record = ", ".join(f'"{k}" {t if is_text(t) else "TEXT"}' for _, k, t, _ in fields)
    json = "pg_temp.unchecked_json(x.line, -1, false)" if unchecked else "x.line::json"
    as_json = f"CASE WHEN strpos(x.line, '\\u0000') > 0 THEN x.line::jsonb::json ELSE {json} END"
    return (f"INSERT INTO {table} ({cols})\n"
            f"SELECT {exprs}\n"
            f"FROM {sources},\n     json_to_record({as_json}) AS r({record})\n"
            f"WHERE {where}")


def staging_cast(table, raw):
    """Typed staging rows from the raw rows: one statement, no per-row round trips.

    Raises on the first bad record; then staging_rejects() finds them all and this runs again
    without them (clean data pays for one parse per record, not for the checks).
    """
    return _cast(table, f"{raw} x", f"{NOT_BLANK}\n  AND NOT EXISTS (SELECT 1 FROM {raw}_rejects b WHERE b.id = x.id)")


# The embedded server's fast path: it reads the local files itself (pg_read_file; the embedded
# server's user is a superuser) and casts their lines in the same statement, with no trip
# through the client and no raw table. Any failure (a bad record, bytes that are not UTF-8, a
# byte-order mark, a file the server may not read) rolls it back and those files take the COPY
# path, which finds and sets aside each bad record. The paths are a bound parameter.
SERVER_LINES = {
    "staging_events": "string_to_table(pg_read_file(f.path), E'\\n') AS x(line)",  # a record per line
    "staging_songs": "LATERAL (SELECT pg_read_file(f.path) AS line) x",              # a record per file
}


def server_read_cast(table, unchecked=False):
    return _cast(table, f"unnest(%(paths)s::text[]) AS f(path),\n     {SERVER_LINES[table]}", "x.line <> ''",
                 unchecked)


# A superuser's session (the embedded server's): text taken as json as it is. A cast to json
# parses the whole record only to check it, then json_to_record parses it again; that second
# parse refuses anything that is not a JSON object just as well, with the same errors. The
# function is PostgreSQL's own varchar length check, which returns its argument untouched when
# the length is -1 (text and json are stored alike). Only superusers may declare it.
unchecked_json_create = ("CREATE OR REPLACE FUNCTION pg_temp.unchecked_json(text, integer, boolean) "
                         "RETURNS json LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE AS 'varchar'")


def staging_rejects(table, raw):
    """Every record staging_cast() would fail on, with the first reason it fails."""
    checks = ["WHEN p.j IS NULL THEN 'invalid JSON: ' || (pg_input_error_info(x.line, 'jsonb')).message",
              "WHEN jsonb_typeof(p.j) <> 'object' THEN 'not a JSON object but ' || jsonb_typeof(p.j)"]
    for _, key, sql_type, required in STAGING_FIELDS[table]:
        value = _field_value("p.j", key, sql_type)
        if required:
            checks.append(f"WHEN {value} IS NULL THEN 'missing required field \"{key}\"'")
        checks.append(f"WHEN NOT pg_input_is_valid({value}, '{sql_type}') THEN "
                      f"'field \"{key}\": ' || (pg_input_error_info({value}, '{sql_type}')).message")
    cases = "\n             ".join(checks)
    return (f"INSERT INTO {raw}_rejects (id, reason)\n"
            f"SELECT id, reason FROM (\n"
            f"    SELECT x.id, CASE\n             {cases}\n           END AS reason\n"
            f"    FROM {raw} x CROSS JOIN LATERAL\n"
            f"         (SELECT CASE WHEN pg_input_is_valid(x.line, 'jsonb') THEN x.line::jsonb END AS j) p\n"
            f"    WHERE {NOT_BLANK}\n"
            f") c WHERE reason IS NOT NULL")


# Set-aside records into load_errors, with the file and line each came from.
rejects_to_load_errors = """
INSERT INTO load_errors (run_id, source, file, line_no, reason, raw)
SELECT %(run_id)s, %(source)s, f.path, x.id - f.first_id + 1, left(b.reason, 1024), left(x.line, 2048)
FROM {raw}_rejects b
JOIN {raw} x ON x.id = b.id
JOIN {raw}_files f ON f.file_id = x.file_id"""

count_rejects = "SELECT count(*) FROM {raw}_rejects"
load_errors_insert = ("INSERT INTO load_errors (run_id, source, file, line_no, reason, raw) "
                      "VALUES %s")
load_errors_first = """
SELECT file, line_no, reason FROM load_errors WHERE run_id = %s
ORDER BY source DESC, file, line_no LIMIT %s"""


# --- Filling staging on Redshift: COPY from S3 ----------------------------------------------
def sql_literal(value, what, shape=None):
    """A configuration value as a SQL string literal: checked against its shape, then quoted.

    Quotes are doubled; a backslash (an escape character to Redshift) or a control character
    is refused rather than escaped.
    """
    if shape is not None and not shape.match(value):
        raise UserError(f"{what} has an unexpected form: {value!r}")
    if re.search(r"[\\\x00-\x1f\x7f]", value):
        raise UserError(f"{what} contains a backslash or control character: {value!r}")
    return "'" + value.replace("'", "''") + "'"


def copy_table_queries(cfg):
    """COPY staging_songs and staging_events from S3, for Redshift."""
    role = sql_literal(cfg.iam_role_arn, "[IAM_ROLE] ARN", ROLE_ARN)
    region = f"REGION {sql_literal(cfg.region, '[AWS] REGION', REGION)}" if cfg.region else ""
    jsonpaths = ("'auto'" if cfg.log_jsonpath == "auto"
                 else sql_literal(cfg.log_jsonpath, "[S3] LOG_JSONPATH", S3_URI))
    # Staging is scratch: skip compression analysis and statistics, the star tables matter.
    common = f"IAM_ROLE {role} {region} MAXERROR {int(cfg.max_errors)} COMPUPDATE OFF STATUPDATE OFF"
    return [
        f"COPY staging_songs FROM {sql_literal(cfg.song_data, '[S3] SONG_DATA', S3_URI)}\n"
        f"{common} FORMAT AS JSON 'auto'",
        f"COPY staging_events FROM {sql_literal(cfg.log_data, '[S3] LOG_DATA', S3_URI)}\n"
        f"{common} FORMAT AS JSON {jsonpaths}",
    ]


def jsonpaths_document():
    """data/log_json_path.json: the event fields in staging_events column order."""
    return {"jsonpaths": [f"$['{key}']" for _, key, _, _ in EVENT_FIELDS]}


# Redshift clears staging with DELETE: TRUNCATE would commit the transaction it runs in.
clear_staging = {
    "postgres": ["TRUNCATE staging_events, staging_songs"],
    "redshift": ["DELETE FROM staging_events", "DELETE FROM staging_songs"],
}

# Why a Redshift COPY failed: the newest rows of the load-error table for this session.
load_error_queries = {
    "provisioned": """
        SELECT TRIM(filename), line_number, TRIM(colname), TRIM(err_reason)
        FROM stl_load_errors WHERE session = pg_backend_pid()
        ORDER BY starttime DESC LIMIT 10""",
    "serverless": """
        SELECT TRIM(file_name), line_number, TRIM(column_name), TRIM(error_message)
        FROM sys_load_error_detail WHERE session_id = pg_backend_pid()
        ORDER BY start_time DESC LIMIT 10""",
}


# --- The transform: staging -> star, one text for both engines --------------------------------
# PostgreSQL only: sort and hash 1M-row batches in memory; JIT compiling costs more than it saves here.
transform_settings = {
    # The prepare statements already run side by side, a connection each: parallel workers
    # would only compete with them (and each would build a parallel join's hash table again).
    "postgres": ["SET LOCAL work_mem = '256MB'", "SET LOCAL jit = off",
                 "SET LOCAL max_parallel_workers_per_gather = 0"],
    "redshift": [],
}
# PostgreSQL only: a staging connection's raw rows stay in memory (temp tables use temp_buffers).
staging_settings = ["SET temp_buffers = '256MB'", "SET work_mem = '128MB'", "SET jit = off"]


# Two stages. Prepare: each heavy SELECT (the batch's plays, deduplicated and matched to the
# catalogue; their distinct times; each user's latest state) into a scratch table. PostgreSQL
# runs these side by side on their own connections, before and during the star transaction
# (they change nothing a reader sees); Redshift runs them inside it. Apply: the star tables
# from staging and the scratch tables, in one transaction, each insert skipping rows already
# there, then the scratch tables are dropped.

# Each NextSong event of the batch once: an event repeated in the input (same session_id,
# item_in_session, ts) keeps its smallest user_id, song, artist, level. Its song is the catalogue
# entry with the event's title, artist name and duration (the smallest song_id if several);
# none: NULLs, and the play is kept. Rows come out in event-key order (the unique index appends).
new_plays_select = """
SELECT e.start_time, e.user_id, e.level, m.song_id, m.artist_id, e.session_id,
       e.item_in_session, e.location, e.user_agent
FROM (SELECT {event_time} AS start_time, user_id, level, song, artist, length, session_id,
             item_in_session, location, user_agent,
             ROW_NUMBER() OVER (PARTITION BY session_id, item_in_session, ts
                                ORDER BY user_id, song, artist, level) AS rn
      FROM staging_events WHERE page = 'NextSong') e
LEFT JOIN (SELECT title, artist_name, duration, song_id, artist_id,
                  ROW_NUMBER() OVER (PARTITION BY title, artist_name, duration ORDER BY song_id) AS rn
           FROM staging_songs) m
       ON m.rn = 1 AND m.title = e.song AND m.artist_name = e.artist AND m.duration = e.length
WHERE e.rn = 1"""

# The batch's distinct play times (a play's time is its event's ts), broken down; weekday
# 0 = Sunday, week is the ISO week. DATE_PART is EXTRACT returning a float (PostgreSQL's EXTRACT
# computes in numeric, much slower). Distinct on the integer ts: cheaper than on the timestamp.
new_times_select = """
SELECT start_time, DATE_PART('hour', start_time)::INTEGER AS hour,
       DATE_PART('day', start_time)::INTEGER AS day, DATE_PART('week', start_time)::INTEGER AS week,
       DATE_PART('month', start_time)::INTEGER AS month, DATE_PART('year', start_time)::INTEGER AS year,
       DATE_PART('dow', start_time)::INTEGER AS weekday
FROM (SELECT ts, {event_time} AS start_time
      FROM (SELECT DISTINCT ts FROM staging_events WHERE page = 'NextSong') d) s
ORDER BY ts"""

# Each user's latest event in this batch (ties: the later session and item, then paid). Only
# the events at a user's latest ts are ranked: a hash aggregate finds that ts, so the sort is
# of a few rows per user rather than of every event.
latest_users_create = """
CREATE {scratch} latest_users AS
SELECT user_id, first_name, last_name, gender, level, {event_time} AS last_seen_at
FROM (SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.user_id
                                     ORDER BY e.ts DESC, session_id DESC, item_in_session DESC,
                                              level DESC, first_name, last_name) AS rn
      FROM staging_events e
      JOIN (SELECT user_id, MAX(ts) AS ts FROM staging_events GROUP BY user_id) m
        ON m.user_id = e.user_id AND m.ts = e.ts) e
WHERE rn = 1"""

new_plays_create = "CREATE {scratch} new_plays AS" + new_plays_select
new_times_create = "CREATE {scratch} new_times AS" + new_times_select

prepare_queries = {  # scratch table -> the statements that make it
    "new_plays": ["DROP TABLE IF EXISTS new_plays", new_plays_create],
    "new_times": ["DROP TABLE IF EXISTS new_times", new_times_create],
    "latest_users": ["DROP TABLE IF EXISTS latest_users", latest_users_create],
}


def prepare_statements(table, engine):
    """The statements that make one scratch table, for an engine."""
    return [q.format(**DIALECT[engine]) for q in prepare_queries[table]]

# songs: one row per song_id; the first load of a song wins.
song_table_insert = """
INSERT INTO songs (song_id, title, artist_id, year, duration)
SELECT song_id, title, artist_id, year, duration
FROM (SELECT song_id, title, artist_id, year, duration,
             ROW_NUMBER() OVER (PARTITION BY song_id ORDER BY title, artist_id, year, duration) AS rn
      FROM staging_songs) s
WHERE rn = 1
  AND NOT EXISTS (SELECT 1 FROM songs d WHERE d.song_id = s.song_id)"""

# artists: one row per artist_id; when the catalogue repeats an artist with different
# attributes, the row with coordinates, then with a location, then the smallest name wins.
artist_table_insert = """
INSERT INTO artists (artist_id, name, location, latitude, longitude)
SELECT artist_id, artist_name, artist_location, artist_latitude, artist_longitude
FROM (SELECT artist_id, artist_name, artist_location, artist_latitude, artist_longitude,
             ROW_NUMBER() OVER (PARTITION BY artist_id
                                ORDER BY CASE WHEN artist_latitude IS NULL THEN 1 ELSE 0 END,
                                         CASE WHEN COALESCE(artist_location, '') = '' THEN 1 ELSE 0 END,
                                         artist_name, artist_location, song_id) AS rn
      FROM staging_songs) s
WHERE rn = 1
  AND NOT EXISTS (SELECT 1 FROM artists d WHERE d.artist_id = s.artist_id)"""

# songplays: the batch's plays not loaded before; (session_id, item_in_session, start_time)
# identifies a play.
songplay_table_insert = """
INSERT INTO songplays (start_time, user_id, level, song_id, artist_id, session_id,
                       item_in_session, location, user_agent)
SELECT start_time, user_id, level, song_id, artist_id, session_id, item_in_session, location,
       user_agent
FROM new_plays n
WHERE NOT EXISTS (SELECT 1 FROM songplays p
                  WHERE p.session_id = n.session_id AND p.item_in_session = n.item_in_session
                    AND p.start_time = n.start_time)"""

# time: one row per play time, in key order (the primary-key index is appended to, not split).
time_table_insert = """
INSERT INTO time (start_time, hour, day, week, month, year, weekday)
SELECT start_time, hour, day, week, month, year, weekday FROM new_times n
WHERE NOT EXISTS (SELECT 1 FROM time t WHERE t.start_time = n.start_time)"""

# users: a user seen later in this batch than in the warehouse is replaced; a new user added.
user_table_update = """
DELETE FROM users USING latest_users l
WHERE users.user_id = l.user_id AND users.last_seen_at < l.last_seen_at"""

user_table_insert = """
INSERT INTO users (user_id, first_name, last_name, gender, level, last_seen_at)
SELECT user_id, first_name, last_name, gender, level, last_seen_at FROM latest_users l
WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = l.user_id)"""

# (scratch table the statement needs, or None; statement), in order.
# The plays take longest to prepare: time is applied first (its rows are ready sooner), and
# users last (their rows are prepared while the plays are inserted).
apply_queries = [
    (None, song_table_insert),
    (None, artist_table_insert),
    ("new_times", time_table_insert),
    ("new_plays", songplay_table_insert),
    ("latest_users", user_table_update),
    ("latest_users", user_table_insert),
]
drop_scratch = [f"DROP TABLE IF EXISTS {t}" for t in SCRATCH_TABLES]  # a swapped-in one is gone


def transform_queries(engine):
    """The whole transform as one list of statements, for running in one session (Redshift)."""
    prepare = [q for t in SCRATCH_TABLES for q in prepare_statements(t, engine)]
    return transform_settings[engine] + prepare + [q for _, q in apply_queries] + drop_scratch


# Checks: each counts rows that must not exist; any found and nothing is committed.
# Redshift's keys are only declarations: the star tables are checked inside the transaction,
# duplicates counted. PostgreSQL enforces the keys itself (primary keys, the unique event key)
# and checks the batch, on its own connection while the star transaction inserts: every play's
# time is among the batch's times (and the time insert adds each one the warehouse lacks).
_orphan_check = [
    ("plays without a time row",
     "SELECT COUNT(*) FROM songplays p WHERE NOT EXISTS (SELECT 1 FROM time t WHERE t.start_time = p.start_time)"),
]
_duplicate_checks = [
    ("duplicate users", "SELECT COUNT(*) - COUNT(DISTINCT user_id) FROM users"),
    ("duplicate songs", "SELECT COUNT(*) - COUNT(DISTINCT song_id) FROM songs"),
    ("duplicate artists", "SELECT COUNT(*) - COUNT(DISTINCT artist_id) FROM artists"),
    ("duplicate plays",
     "SELECT COUNT(*) FROM (SELECT 1 FROM songplays GROUP BY session_id, item_in_session, start_time "
     "HAVING COUNT(*) > 1) d"),
]
_batch_checks = [
    ("plays without a time row", """
SELECT COUNT(*) FROM new_plays p
WHERE NOT EXISTS (SELECT 1 FROM new_times n WHERE n.start_time = p.start_time)"""),
]
check_queries = {"postgres": _batch_checks, "redshift": _orphan_check + _duplicate_checks}

# PostgreSQL, a first load: the keys and indexes of the given tables, each as its table, the
# statement that drops it and the one that builds it again. One with a comment stays in place.
keys_and_indexes = """
SELECT c.relname, format('ALTER TABLE %%I DROP CONSTRAINT %%I', c.relname, k.conname),
       format('ALTER TABLE %%I ADD CONSTRAINT %%I %%s', c.relname, k.conname, pg_get_constraintdef(k.oid))
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE k.contype IN ('p', 'u') AND c.relname = ANY(%(tables)s)
  AND c.relnamespace = current_schema()::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_description ds
                  WHERE ds.objoid = k.oid AND ds.classoid = 'pg_constraint'::regclass
                     OR ds.objoid = k.conindid AND ds.classoid = 'pg_class'::regclass)
UNION ALL
SELECT i.tablename, format('DROP INDEX %%I', i.indexname), i.indexdef
FROM pg_indexes i
WHERE i.tablename = ANY(%(tables)s) AND i.schemaname = current_schema()
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = i.indexname
                  AND k.connamespace = current_schema()::regnamespace)
  AND NOT EXISTS (SELECT 1 FROM pg_description ds
                  WHERE ds.objoid = format('%%I.%%I', i.schemaname, i.indexname)::regclass
                    AND ds.classoid = 'pg_class'::regclass)"""

# PostgreSQL, a first load: songplays and time, the big ones, are built whole beside the empty
# table by the connection that prepares their rows (new_plays, new_times, keys added once the
# rows are in), and the star transaction swaps them in (DROP, RENAME): the rows are written
# once, and off its connection (with wal_level = minimal, as embedded, without WAL). Only for a
# table whose replacement would lose nothing: no grants, triggers, rules, policies, comments,
# storage options, inheritance, and nothing that depends on it (views, foreign keys, serial
# sequences, columns of its row type) but its own keys, defaults and identity sequences.
# Emptiness is checked by the caller, under lock.
SWAPPED = {"songplays": "new_plays", "time": "new_times"}  # star table -> what is built beside it
swappable = """
SELECT c.relname FROM pg_class c
WHERE c.relname = ANY(%(tables)s) AND c.relnamespace = current_schema()::regnamespace
  AND c.relkind = 'r' AND c.relpersistence = 'p' AND c.reltablespace = 0 AND c.relreplident = 'd'
  AND c.relacl IS NULL AND c.reloptions IS NULL AND c.relowner = current_user::regrole
  AND NOT (c.relrowsecurity OR c.relhastriggers OR c.relhasrules OR c.relhassubclass OR c.relispartition)
  AND c.relam = (SELECT oid FROM pg_am WHERE amname = current_setting('default_table_access_method'))
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                  AND (a.attacl IS NOT NULL OR a.attoptions IS NOT NULL OR COALESCE(a.attstattarget, -1) <> -1))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d LEFT JOIN pg_class o ON d.classid = 'pg_class'::regclass AND o.oid = d.objid
                  WHERE (d.refobjid = c.oid AND d.refclassid = 'pg_class'::regclass
                         AND NOT (d.deptype = 'a' AND d.classid IN ('pg_constraint'::regclass, 'pg_attrdef'::regclass)
                                  OR d.deptype IN ('a', 'i') AND o.relkind IN ('i', 't')
                                  OR d.deptype = 'i' AND (o.relkind = 'S' OR d.classid = 'pg_type'::regclass)))
                     OR (d.refobjid = c.reltype AND d.refclassid = 'pg_type'::regclass AND d.deptype = 'n'))
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype NOT IN ('p', 'u', 'c'))
  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisclustered OR NOT i.indisvalid))
  AND NOT EXISTS (SELECT 1 FROM pg_description ds
                  WHERE ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0)
  AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_description ds ON ds.objoid = i.indexrelid
                  WHERE i.indrelid = c.oid AND ds.classoid = 'pg_class'::regclass)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_description ds ON ds.objoid = k.oid
                  WHERE k.conrelid = c.oid AND ds.classoid = 'pg_constraint'::regclass)"""

# The table's keys and indexes, each as the statement that builds it on the table built beside
# (as an index named with that table's name in front: the table's own names are taken until the
# swap) and the one that makes it the table's own after the swap: the key's constraint, which
# takes the index as it is and gives it its name, or the index's name. NULL: an index not in
# the expected shape, or a deferrable key (then there is no swap).
swap_keys = """
SELECT CASE WHEN starts_with(x.def, x.head) AND NOT COALESCE(k.condeferrable, false) THEN
            format('%%s %%I ON %%I USING %%s', x.kind, %(new)s || '_' || x.name, %(new)s,
                   substr(x.def, length(x.head) + 1)) END,
       CASE WHEN k.oid IS NULL THEN format('ALTER INDEX %%I RENAME TO %%I', %(new)s || '_' || x.name, x.name)
            ELSE format('ALTER TABLE %%I ADD CONSTRAINT %%I %%s USING INDEX %%I', %(table)s, k.conname,
                        CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
                        %(new)s || '_' || x.name) END
FROM (SELECT x.indexrelid, i.relname AS name, pg_get_indexdef(x.indexrelid) AS def, h.kind,
             format('%%s %%I ON %%I.%%I USING ', h.kind, i.relname, current_schema(), %(table)s) AS head
      FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid,
           LATERAL (SELECT CASE WHEN x.indisunique THEN 'CREATE UNIQUE INDEX' ELSE 'CREATE INDEX' END AS kind) h
      WHERE x.indrelid = format('%%I', %(table)s)::regclass) x
LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.contype IN ('p', 'u')"""

# The table's identity columns: (column, sequence name, last value given, or None if none was).
# (Not the pg_sequences view: it reads, and locks until the transaction ends, every sequence.)
swap_sequences = """
SELECT a.attname, q.relname, pg_sequence_last_value(q.oid)
FROM pg_depend d
JOIN pg_class q ON q.oid = d.objid AND q.relkind = 'S'
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refobjid = format('%%I', %(table)s)::regclass
  AND d.deptype = 'i'"""

# The tables built beside, by CREATE TABLE AS (bulk writes: about twice as fast as INSERT ...
# SELECT) with the columns, types and NOT NULLs of create_tables' songplays and time; a play's
# id numbers on from the last one given ({last_id}), in event-key order. The star transaction
# swaps one in only if its columns are the star table's own (columns_differ).
build_beside = {
    "new_plays": [
        "DROP TABLE IF EXISTS new_plays",
        "CREATE TABLE new_plays AS SELECT ({last_id} + ROW_NUMBER() OVER ())::BIGINT AS songplay_id, p.* "
        f"FROM ({new_plays_select}) p",
        "ALTER TABLE new_plays ALTER songplay_id SET NOT NULL, ALTER start_time SET NOT NULL, "
        "ALTER session_id SET NOT NULL, ALTER item_in_session SET NOT NULL",
        "ALTER TABLE new_plays ALTER songplay_id ADD GENERATED ALWAYS AS IDENTITY",
    ],
    "new_times": [
        "DROP TABLE IF EXISTS new_times",
        "CREATE TABLE new_times AS" + new_times_select,
        "ALTER TABLE new_times " + ", ".join(f"ALTER {c} SET NOT NULL" for c in (
            "start_time", "hour", "day", "week", "month", "year", "weekday")),
    ],
}
swap_set_sequence = "SELECT setval(pg_get_serial_sequence(%(table)s, %(column)s), %(value)s)"
swap_rename_sequence = ("SELECT format('ALTER SEQUENCE %%s RENAME TO %%I', "
                        "pg_get_serial_sequence(%(table)s, %(column)s), %(name)s)")

# Whether two tables' columns differ: names, order, types, NOT NULL, defaults, identity (and its
# sequence's type, start, bounds, step, cache, cycling), generation, collation, storage.
columns_differ = """
WITH cols AS (
    SELECT c.relname = %(table)s AS mine, a.attnum,
           ROW(a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.attidentity, a.attgenerated, a.attcollation,
               a.attstorage, a.attcompression, pg_get_expr(ad.adbin, ad.adrelid),
               (SELECT ROW(q.seqtypid, q.seqstart, q.seqincrement, q.seqmax, q.seqmin, q.seqcache, q.seqcycle)
                FROM pg_sequence q
                WHERE q.seqrelid = pg_get_serial_sequence(format('%%I', c.relname), a.attname)::regclass))::text AS col
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
    WHERE c.relname IN (%(table)s, %(new)s) AND c.relnamespace = current_schema()::regnamespace)
SELECT (SELECT array_agg(col ORDER BY attnum) FROM cols WHERE mine)
       IS DISTINCT FROM (SELECT array_agg(col ORDER BY attnum) FROM cols WHERE NOT mine)"""


count_rows = "SELECT COUNT(*) FROM {table}"
existing_tables = """
SELECT table_name FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name IN %s"""


# --- Analytics: the questions the schema exists for ------------------------------------------
analytics_queries = [
    ("Most played songs", """
SELECT s.title, a.name AS artist, COUNT(*) AS plays
FROM songplays p JOIN songs s ON s.song_id = p.song_id JOIN artists a ON a.artist_id = p.artist_id
GROUP BY s.title, a.name ORDER BY plays DESC, s.title LIMIT 10"""),
    ("Plays matched to the song catalogue", """
SELECT CASE WHEN song_id IS NULL THEN 'not in catalogue' ELSE 'matched' END AS song, COUNT(*) AS plays
FROM songplays GROUP BY 1 ORDER BY 1"""),
    ("Busiest hours (UTC)", """
SELECT t.hour, COUNT(*) AS plays
FROM songplays p JOIN time t ON t.start_time = p.start_time
GROUP BY t.hour ORDER BY plays DESC, t.hour LIMIT 5"""),
    ("Free vs paid plays", """
SELECT level, COUNT(*) AS plays, COUNT(DISTINCT user_id) AS users,
       ROUND(100.0 * COUNT(*) / SUM(COUNT(*)) OVER (), 1) AS pct_of_plays
FROM songplays GROUP BY level ORDER BY plays DESC"""),
    ("Top users", """
SELECT u.user_id, u.first_name || ' ' || u.last_name AS name, u.level, COUNT(*) AS plays
FROM songplays p JOIN users u ON u.user_id = p.user_id
GROUP BY u.user_id, u.first_name, u.last_name, u.level ORDER BY plays DESC, u.user_id LIMIT 5"""),
    ("Top locations", """
SELECT location, COUNT(*) AS plays, COUNT(DISTINCT user_id) AS users
FROM songplays GROUP BY location ORDER BY plays DESC, location LIMIT 5"""),
]
