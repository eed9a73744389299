"""Every SQL statement of the warehouse, for both engines.

Read top to bottom it is the schema: the staging tables (the raw fields), the star
(songplays fact; users, songs, artists, time dimensions), the catalogue's match keys
(song_keys, unmatched_plays) and load_errors, each a Table in
REGISTRY with its columns, keys and Redshift layout; how staging is filled (PostgreSQL: files
read by the server, or streamed COPY FROM STDIN, and a set-based cast; Redshift: COPY from S3);
and the transform, one text for both engines: prepare_queries (the heavy SELECTs, into scratch
tables) and apply_steps (each a Step: the table it writes, how, and what it reads), then the
check_queries.

The scripts use: TABLES / STAR_TABLES / CATALOGUE_TABLES / STAGING_TABLES (from REGISTRY), create_table_queries
[engine], drop_table_queries, prepare_statements(), apply_steps, transform_queries(engine) (all
of it for one session, as on Redshift), check_queries, and for Redshift copy_table_queries(cfg),
load_lock and the load-error statements.
"""
import re
from dataclasses import dataclass

from errors import UserError
from config import REGION, ROLE_ARN, S3_URI

SCRATCH_TABLES = ("new_keys", "new_plays", "new_times", "latest_users")  # the transform's prepared rows

# --- Engine differences, side by side. Everything not named here is one text. -------------
DIALECT = {
    "postgres": {
        "staging": "UNLOGGED TABLE",   # scratch, refilled every run: no need to write it twice (WAL)
        "staging_options": " WITH (autovacuum_enabled = false)",  # etl.py analyzes it itself
        # a load numbers its plays from 1,000 ids taken at a time: one sequence access per row cost
        # 0.4 s at 1M plays; ids left over when a load ends are skipped (ids are unique, not gapless:
        # "numbers allocated but not used in a session will be lost", PostgreSQL manual, CREATE SEQUENCE, Notes)
        "identity": "BIGINT GENERATED ALWAYS AS IDENTITY (CACHE 1000)",
        "all": "",
        "by_time": "",
        "by_song": "",
        "scratch": "UNLOGGED TABLE",   # the transform's prepared rows, shared between connections
        # dropped when the load ends: autovacuum would only scan them (at 10M it vacuumed new_plays mid-load)
        "scratch_options": " WITH (autovacuum_enabled = false)",
        "scratch_by_time": "",
        # the catalogue's sizes for the plays' join (the server stops between runs: autovacuum
        # may never see song_keys), so it hashes the catalogue, not the batch's plays
        "analyze_keys": "ANALYZE new_keys, song_keys",
        # ts (epoch milliseconds) as a UTC timestamp, milliseconds kept: one exact product (whole
        # microseconds, in a double) for every ts staging takes (TS_FIRST to TS_LAST)
        "event_time": "TIMESTAMP 'epoch' + ts * INTERVAL '1 millisecond'",
        # the batch's distinct play times by a sort (EXPLAIN: Sort then Unique; plain DISTINCT was a
        # HashAggregate): 811k distinct keys hash slower than they sort (new_times 2.5 -> 2.1 CPU-s
        # at 1M); a sort keeps to work_mem. start_time is the output column (DISTINCT ON follows
        # ORDER BY's rules, which may name one: PostgreSQL manual, SELECT, "DISTINCT Clause")
        "distinct": "DISTINCT ON (start_time)",
        "record": "TEXT",              # a bad record whole, however long
        "details": "TEXT",             # JSON text
    },
    "redshift": {
        "staging": "TABLE",
        # Staging is refilled every run: no need to keep it in snapshots (on RA3 and Serverless
        # AWS backs up every table anyway: BACKUP NO has no effect there).
        "staging_options": " BACKUP NO",
        "identity": "BIGINT IDENTITY(0,1)",
        "all": "DISTSTYLE ALL",        # small dimension: a full copy on every node, joins never redistribute
        # songplays and time share the distribution key start_time, so their join is node-local,
        # and sorting on it lets time-range queries skip blocks.
        "by_time": "DISTKEY(start_time) SORTKEY(start_time)",
        "by_song": "DISTSTYLE ALL SORTKEY(song_id)",
        "scratch": "TEMP TABLE",       # the transform's prepared rows, inside the load's transaction
        # the prepared plays and times are spread as songplays and time are: their inserts and
        # the NOT EXISTS joins stay node-local
        "scratch_options": "",
        "scratch_by_time": " DISTKEY(start_time)",
        "analyze_keys": "",
        "event_time": ("TIMESTAMP 'epoch' + ts / 1000 * INTERVAL '1 second' "  # integer arithmetic
                       "+ ts % 1000 * INTERVAL '1 millisecond'"),
        "distinct": "DISTINCT",
        "record": "VARCHAR(65535)",    # Redshift's longest text: record_bytes says what was cut
        # JSON text, as on PostgreSQL: bound as a string, read by any client (SUPER would need
        # JSON_PARSE on the way in; a few KB of counts need none of its 16 MB)
        "details": "VARCHAR(65535)",
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

# The ts an event's time can be made from exactly: PostgreSQL multiplies ts by the interval's
# 1,000 microseconds in double precision, exact while 125 * |ts| is below 2^53 (the rest is a
# power of 2), up to the year 4253; and from the year 1 on, as Python's dates (the checks and
# analytics.py read times as dates). Further out (a time in microseconds, say) the milliseconds
# were rounded, or the time overflowed and stopped the load; now it is a bad record.
TS_FIRST, TS_LAST = -62135596800000, 2**53 // 125  # 0001-01-01 00:00:00.000, 4253-05-31 22:20:37.927
# JSON key -> the values staging takes, and why another is set aside
BOUNDED = {"ts": (TS_FIRST, TS_LAST, "not a time from the year 1 to 4253 in epoch milliseconds")}
LEVELS = ("free", "paid")
# An event's level is free or paid, or missing (plays take it, and users that of their latest
# event, whatever its page): on PostgreSQL another is set aside with its file and line (a CHECK on
# staging), as the checks on plays and users would fail the load; Redshift's COPY takes any, and
# there those checks fail the load.
def accepted_level(level="level"):
    return f"{level} IN ({', '.join(repr(v) for v in LEVELS)})"


def is_text(sql_type):
    return sql_type.startswith("VARCHAR")


# --- The star --------------------------------------------------------------------------------
# Each table: its columns, its keys (named, so a first load can drop and rebuild them), and its
# Redshift layout. The registry at the end of this section lists them in create order.
@dataclass(frozen=True)
class Key:
    name: str
    definition: str                            # PRIMARY KEY (...), UNIQUE (...), or INDEX (...)
    engines: tuple = ("postgres", "redshift")  # Redshift's keys are declarations, not enforced

    def add(self, table):
        if self.definition.startswith("INDEX"):
            return f"CREATE INDEX {self.name} ON {table} {self.definition[len('INDEX '):]}"
        return f"ALTER TABLE {table} ADD CONSTRAINT {self.name} {self.definition}"

    def drop(self, table):
        if self.definition.startswith("INDEX"):
            return f"DROP INDEX IF EXISTS {self.name}"
        return f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {self.name}"


@dataclass(frozen=True)
class Table:
    name: str
    role: str           # staging (refilled every run) | star | catalogue (the match keys) | bookkeeping
    columns: str        # column definitions; {identity} is the engine's identity column
    keys: tuple = ()
    layout: str = ""    # DIALECT key of the Redshift distribution and sort clause

    def keys_for(self, engine):
        return [k for k in self.keys if engine in k.engines]

    def create(self, engine):
        d = DIALECT[engine]
        kind = d["staging"] if self.role == "staging" else "TABLE"
        parts = [self.columns.format(**d).strip().replace("\n", "\n    ")]
        parts += [f"CONSTRAINT {k.name} {k.definition}" for k in self.keys_for(engine)
                  if not k.definition.startswith("INDEX")]
        options = d["staging_options"] if self.role == "staging" else ""
        layout = f" {d[self.layout]}" if self.layout and d[self.layout] else ""
        return f"CREATE {kind} {self.name} (\n    " + ",\n    ".join(parts) + f"\n){options}{layout}"


def staging_columns(fields):
    return ",\n".join(f"{c} {t}{' NOT NULL' if req else ''}" for c, _, t, req in fields)


# songplays: one row per NextSong event. (session_id, item_in_session, start_time) identifies
# the event, so a re-run inserts nothing twice (PostgreSQL enforces it; Redshift checks it).
songplays = Table("songplays", "star", """
songplay_id     {identity},
start_time      TIMESTAMP NOT NULL,
user_id         INTEGER,
level           VARCHAR(16),
song_id         VARCHAR(64),
artist_id       VARCHAR(64),
session_id      INTEGER NOT NULL,
item_in_session INTEGER NOT NULL,
location        VARCHAR(512),
user_agent      VARCHAR(512)""",
    keys=(Key("songplays_pkey", "PRIMARY KEY (songplay_id)"),
          Key("songplays_event_key", "UNIQUE (session_id, item_in_session, start_time)", ("postgres",))),
    layout="by_time")

# users: as of each user's latest event; last_seen_at is that event's time, so a later batch
# moves a user forward and re-loading an older batch never moves them back.
users = Table("users", "star", """
user_id      INTEGER NOT NULL,
first_name   VARCHAR(256),
last_name    VARCHAR(256),
gender       VARCHAR(16),
level        VARCHAR(16),
last_seen_at TIMESTAMP NOT NULL""",
    keys=(Key("users_pkey", "PRIMARY KEY (user_id)"),), layout="all")

songs = Table("songs", "star", """
song_id   VARCHAR(64) NOT NULL,
title     VARCHAR(512),
artist_id VARCHAR(64),
year      INTEGER,
duration  DOUBLE PRECISION""",
    keys=(Key("songs_pkey", "PRIMARY KEY (song_id)"),), layout="by_song")

artists = Table("artists", "star", """
artist_id VARCHAR(64) NOT NULL,
name      VARCHAR(512),
location  VARCHAR(512),
latitude  DOUBLE PRECISION,
longitude DOUBLE PRECISION""",
    keys=(Key("artists_pkey", "PRIMARY KEY (artist_id)"),), layout="all")

time_table = Table("time", "star", """
start_time TIMESTAMP NOT NULL,
hour       INTEGER NOT NULL,
day        INTEGER NOT NULL,
week       INTEGER NOT NULL,
month      INTEGER NOT NULL,
year       INTEGER NOT NULL,
weekday    INTEGER NOT NULL""",
    keys=(Key("time_pkey", "PRIMARY KEY (start_time)"),), layout="by_time")

# The catalogue's match keys, kept across loads: a play is matched by the song file's own title,
# artist name and duration, which songs and artists do not keep (artists holds one name per
# artist). One row per key, from every song file loaded: the smallest song_id (then artist_id)
# among the files of the load that first brought the key; a later load never changes a key's
# ids, so a matched play always agrees with the catalogue.
song_keys = Table("song_keys", "catalogue", """
title       VARCHAR(512) NOT NULL,
artist_name VARCHAR(512) NOT NULL,
duration    DOUBLE PRECISION NOT NULL,
song_id     VARCHAR(64) NOT NULL,
artist_id   VARCHAR(64) NOT NULL""",
    keys=(Key("song_keys_pkey", "PRIMARY KEY (title, artist_name, duration)"),), layout="all")

# The plays still waiting for their song: each unmatched play's match key, found again by the
# load that brings the song (by the index on length: a song's duration tells songs apart almost
# as well as its title, and a number index builds in a third of the time of a text one, at 1M
# plays 0.2 s against 0.6 s); the play is in songplays, identified by its event key, which keeps
# one row per play. A play leaves when it is matched.
unmatched_plays = Table("unmatched_plays", "catalogue", """
song            VARCHAR(512) NOT NULL,
artist          VARCHAR(512) NOT NULL,
length          DOUBLE PRECISION NOT NULL,
session_id      INTEGER NOT NULL,
item_in_session INTEGER NOT NULL,
start_time      TIMESTAMP NOT NULL""",
    keys=(Key("unmatched_plays_pkey", "PRIMARY KEY (session_id, item_in_session, start_time)"),
          Key("unmatched_plays_by_length", "INDEX (length)", ("postgres",))),
    layout="by_time")

# load_errors: every record set aside by a load, so none is lost (PostgreSQL engine; Redshift
# keeps its own in stl_load_errors). record is the whole record as text (bytes that are not
# UTF-8 as U+FFFD, a NUL as \0: text cannot hold them); record_bytes its size in the file, so a
# shorter record says it was cut; file and line_no say where the original is: a local path (Linux
# allows 4,096 bytes) or s3://bucket/key (a key is up to 1,024 bytes).
load_errors = Table("load_errors", "bookkeeping", """
run_id       VARCHAR(64) NOT NULL,
source       VARCHAR(16) NOT NULL,
file         VARCHAR(4096) NOT NULL,
line_no      BIGINT,
reason       VARCHAR(1024) NOT NULL,
record       {record},
record_bytes BIGINT""", layout="all")

# etl_runs: one row per etl.py run, kept by create_tables.py (unless --reset-history). Written on
# its own connection, outside the load's transaction, so a rollback leaves it: inserted as
# running once the run holds the ETL lock, updated when it ends (succeeded, failed with its error,
# or interrupted); on PostgreSQL also marked succeeded inside the star tables' transaction, so a
# process killed after their commit leaves it true; a run killed outright is marked interrupted
# by the next run (HISTORY_*).
# Times are UTC. first_day/last_day: the log days loaded (NULL: every log file). sources,
# star_changes and warnings are JSON text: per source its location, files, records staged and set
# aside; per loaded table its rows added (and updated, matched, deleted); the warning checks.
etl_runs = Table("etl_runs", "bookkeeping", """
run_id        VARCHAR(64) NOT NULL,
status        VARCHAR(16) NOT NULL,
engine        VARCHAR(16) NOT NULL,
started_at    TIMESTAMP NOT NULL,
finished_at   TIMESTAMP,
first_day     DATE,
last_day      DATE,
files         INTEGER,
staged        BIGINT,
set_aside     BIGINT,
plays_added   BIGINT,
checks_passed INTEGER,
checks_warned INTEGER,
checks_failed INTEGER,
error         VARCHAR(1024),
sources       {details},
star_changes  {details},
warnings      {details}""", keys=(Key("etl_runs_pkey", "PRIMARY KEY (run_id)"),), layout="all")

# The registry, in create order: every list of tables below, in the scripts, the tests and the
# bench, comes from it. A new table is one entry here plus its statements.
REGISTRY = (
    Table("staging_events", "staging", staging_columns(EVENT_FIELDS),
          keys=(Key("staging_events_level", f"CHECK ({accepted_level()})", ("postgres",)),)),
    Table("staging_songs", "staging", staging_columns(SONG_FIELDS)),
    songplays, users, songs, artists, time_table, song_keys, unmatched_plays, load_errors, etl_runs,
)
TABLE = {t.name: t for t in REGISTRY}
TABLES = tuple(t.name for t in REGISTRY)
STAGING_TABLES = tuple(t.name for t in REGISTRY if t.role == "staging")
STAR_TABLES = tuple(t.name for t in REGISTRY if t.role == "star")
CATALOGUE_TABLES = tuple(t.name for t in REGISTRY if t.role == "catalogue")
LOADED_TABLES = STAR_TABLES + CATALOGUE_TABLES  # what a load writes, and a re-run leaves as it was
# What the prepare statements read, on their own connections while the star transaction runs:
# a first load must not lock these (TRUNCATE, dropping keys), or the two would wait on each other.
PREPARE_READS = STAGING_TABLES + ("song_keys",)
# A first load takes over the loaded tables that are empty (etl.take_over_empty_tables).
TAKEN_OVER_WHEN_EMPTY = tuple(t for t in LOADED_TABLES if t not in PREPARE_READS)

HISTORY_TABLES = ("etl_runs",)  # kept by create_tables.py unless --reset-history; written outside a load

drop_table_queries = [f"DROP TABLE IF EXISTS {t}" for t in reversed(TABLES)]


def table_statements(table, engine):
    """CREATE TABLE and its indexes."""
    t = TABLE[table]
    return [t.create(engine)] + [k.add(t.name) for k in t.keys_for(engine) if k.definition.startswith("INDEX")]


create_table_queries = {engine: [q for t in TABLES for q in table_statements(t, engine)] for engine in DIALECT}


def drop_keys(table):
    """PostgreSQL, a first load into an empty table: its keys go, to be built once after the insert."""
    return [k.drop(table) for k in TABLE[table].keys_for("postgres")]


def add_keys(table):
    return [k.add(table) for k in TABLE[table].keys_for("postgres")]


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


def _cast(table, sources, where):
    """INSERT INTO a staging table the typed fields of each JSON text x.line from `sources`.

    The json type parses faster than jsonb. json_to_record refuses an escaped NUL (\\u0000)
    anywhere in a record, as jsonb and the checks do: the json processing functions "convert
    Unicode escapes to regular characters, and will therefore throw the same types of errors"
    as jsonb's input (PostgreSQL manual, JSON Types, the note on Unicode escapes); checked on
    fields kept and not kept in tests/test_bad_input.py.
    """
    fields = STAGING_FIELDS[table]
    cols = ", ".join(c for c, _, _, _ in fields)
    exprs = ", ".join(_bounded(k, _field_value("r", k, t) + ("" if is_text(t) else f"::{t}")) for _, k, t, _ in fields)
    # Text fields are read straight into their VARCHAR type (one input call that also checks
    # the length); other fields as text, so that an empty string can become NULL.
    record = ", ".join(f'"{k}" {t if is_text(t) else "TEXT"}' for _, k, t, _ in fields)
    return (f"INSERT INTO {table} ({cols})\n"
            f"SELECT {exprs}\n"
            f"FROM {sources},\n     json_to_record(x.line::json) AS r({record})\n"
            f"WHERE {where}")


def _bounded(key, value):
    """A bounded field's value, or NULL past its bound: its NOT NULL then fails the cast, and
    staging_rejects() says why."""
    return f"CASE WHEN {value} BETWEEN {BOUNDED[key][0]} AND {BOUNDED[key][1]} THEN {value} END" if key in BOUNDED else value


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
# path, which finds and sets aside each bad record. The paths, and the byte range of each
# (a whole file, or a line-aligned range of a large log file), are bound parameters.
SERVER_LINES = {
    "staging_events": "string_to_table(pg_read_file(f.path, f.first_byte, f.bytes), E'\\n') AS x(line)",
    "staging_songs": "LATERAL (SELECT pg_read_file(f.path, f.first_byte, f.bytes) AS line) x",  # a record per file
}


def server_read_cast(table):
    files = "unnest(%(paths)s::text[], %(starts)s::bigint[], %(sizes)s::bigint[]) AS f(path, first_byte, bytes)"
    return _cast(table, f"{files},\n     {SERVER_LINES[table]}", "x.line <> ''")


# A record nested deeper than PostgreSQL's stack allows (with its default 2MB, about 16,000 deep)
# stops its JSON parser with a hard error (stack depth limit exceeded), which pg_input_is_valid
# cannot catch: a record with more [ and { than this is set aside before the checks parse it
# (its depth is at most their count; no log record comes close).
JSON_BRACKETS_MAX = 10_000
TOO_DEEP = f"length(x.line) - length(translate(x.line, '[{{', '')) > {JSON_BRACKETS_MAX}"


def staging_rejects(table, raw):
    """Every record staging_cast() would fail on, with the first reason it fails. Its fields are
    read as the cast reads them, by json_to_record, as written (through jsonb 1.5e12 would read
    as a whole number, which the cast refuses), each as text, then checked against its type.

    Whether it is JSON at all, as the cast reads it: json's syntax, then the Unicode escapes that
    json_to_record refuses as jsonb does (\\u0000, a lone surrogate). Not jsonb's numeric range:
    the cast keeps a number as written, so 1e1000000 in a field it does not keep loads (with jsonb
    here it was set aside, but only when another record of its file had failed)."""
    checks = [f"WHEN {TOO_DEEP} THEN 'more than {JSON_BRACKETS_MAX:,} [ and {{: too many to parse safely'",
              "WHEN p.problem IS NOT NULL THEN 'invalid JSON: ' || p.problem",
              "WHEN json_typeof(p.jv) <> 'object' THEN 'not a JSON object but ' || json_typeof(p.jv)"]
    for _, key, sql_type, required in STAGING_FIELDS[table]:
        value = _field_value("r", key, sql_type)
        if required:
            checks.append(f"WHEN {value} IS NULL THEN 'missing required field \"{key}\"'")
        checks.append(f"WHEN NOT pg_input_is_valid({value}, '{sql_type}') THEN "
                      f"'field \"{key}\": ' || (pg_input_error_info({value}, '{sql_type}')).message")
        if key in BOUNDED:
            first, last, why = BOUNDED[key]
            checks.append(f"WHEN ({value})::numeric NOT BETWEEN {first} AND {last} THEN 'field \"{key}\": {why}'")
    if table == "staging_events":  # the CHECK, on the fields as the cast reads them
        level = accepted_level(_field_value("r", "level", "VARCHAR"))
        checks.append(f"WHEN NOT ({level}) THEN 'field \"level\": not one of {', '.join(LEVELS)}'")
    cases = "\n             ".join(checks)
    as_text = ", ".join(f'"{key}" TEXT' for _, key, _, _ in STAGING_FIELDS[table])
    # OFFSET 0: parsed once a record; a subquery PostgreSQL merges has its expression copied into
    # every use, and each branch above parsed the record again (one bad line: its file 55x slower)
    return (f"INSERT INTO {raw}_rejects (id, reason)\n"
            f"SELECT id, reason FROM (\n"
            f"    SELECT x.id, CASE\n             {cases}\n           END AS reason\n"
            f"    FROM {raw} x CROSS JOIN LATERAL\n"
            f"         (SELECT problem, jv, CASE WHEN json_typeof(jv) = 'object' THEN jv END AS j\n"
            f"          FROM (SELECT problem, CASE WHEN problem IS NULL THEN x.line::json END AS jv\n"
            f"                FROM (SELECT CASE WHEN {TOO_DEEP} THEN 'too deep'\n"
            f"                                  WHEN NOT pg_input_is_valid(x.line, 'json') THEN {_input_error('json')}\n"
            f"                                  WHEN NOT pg_input_is_valid(x.line, 'jsonb') AND NOT pg_input_is_valid({NUMBERS_AS_ZERO}, 'jsonb')\n"
            f"                                       THEN {_input_error('jsonb', NUMBERS_AS_ZERO)}\n"
            f"                             END AS problem OFFSET 0) v OFFSET 0) w OFFSET 0) p,\n"
            f"         json_to_record(p.j) AS r({as_text})\n"
            f"    WHERE {NOT_BLANK}\n"
            f") c WHERE reason IS NOT NULL")


# Past json's syntax, jsonb refuses an escape json_to_record refuses too, or a number beyond its
# numeric, which the cast keeps as written: read again with every number where JSON puts a value
# (after ':', '[' or ',': a lookbehind, PostgreSQL manual, Regular Expression Details) as 0, what
# jsonb still refuses is an escape (also one after such a number: jsonb stops at its first error)
NUMBERS_AS_ZERO = r"regexp_replace(x.line, '(?<=[:\[,])\s*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?', '0', 'g')"


def _input_error(sql_type, text="x.line"):
    """Why text is not valid input for sql_type: the message and its detail."""
    return f"(SELECT message || COALESCE(': ' || detail, '') FROM pg_input_error_info({text}, '{sql_type}'))"


# Set-aside records into load_errors, with the file and line each came from.
rejects_to_load_errors = """
INSERT INTO load_errors (run_id, source, file, line_no, reason, record, record_bytes)
SELECT %(run_id)s, %(source)s, f.path, x.id - f.first_id + 1, left(b.reason, 1024), x.line, octet_length(x.line)
FROM {raw}_rejects b
JOIN {raw} x ON x.id = b.id
JOIN {raw}_files f ON f.file_id = x.file_id"""

count_rejects = "SELECT count(*) FROM {raw}_rejects"
load_errors_insert = ("INSERT INTO load_errors (run_id, source, file, line_no, reason, record, record_bytes) "
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


MAXERROR_LIMIT = 100000  # COPY's documented limit for MAXERROR


def maxerror(remaining):
    """COPY's MAXERROR that lets `remaining` bad records through. AWS: "If the load returns the
    error_count number of errors or greater, the load fails", so MAXERROR m allows m - 1."""
    return min(remaining + 1, MAXERROR_LIMIT)


@dataclass(frozen=True)
class CopyFrom:
    """One COPY into a staging table: from a key prefix (every key starting with it), or from a
    manifest listing the files; GZIP when they are gzipped (it applies to every file of a COPY)."""
    source: str             # song_data | log_data
    uri: str                # s3:// key prefix, or the manifest's s3:// URI
    gzip: bool = False
    manifest: bool = False


COPY_TARGETS = {"song_data": ("staging_songs", SONG_FIELDS, "[S3] SONG_DATA"),
                "log_data": ("staging_events", EVENT_FIELDS, "[S3] LOG_DATA")}


def folder_copies(cfg):
    """Each source's folder, plain files: the COPYs when nothing was listed (S3 key prefixes:
    the folder and a /, so log_data never loads log_data_old/)."""
    return [CopyFrom(source, getattr(cfg, source).rstrip("/") + "/") for source in COPY_TARGETS]


def copy_table_queries(cfg, remaining=None, copies=None):
    """The COPYs of staging from S3, for Redshift (default: folder_copies); each lets through
    `remaining` bad records (default: [ETL] MAX_ERRORS), within COPY's limit."""
    return [copy_query(cfg, c, remaining) for c in (copies or folder_copies(cfg))]


def copy_query(cfg, copy, remaining=None):
    """One COPY. It names its columns. Song files' keys are the column names ('auto' matches
    them exactly); the log files' keys are camelCase, so events need the JSONPaths file, whose
    paths map to the column list by position (both from EVENT_FIELDS).
    """
    role = sql_literal(cfg.iam_role_arn, "[IAM_ROLE] ARN", ROLE_ARN)
    # REGION is where the data is ([S3] REGION), which may differ from the cluster's ([AWS] REGION).
    data_region, what = (cfg.data_region, "[S3] REGION") if cfg.data_region else (cfg.region, "[AWS] REGION")
    region = f"REGION {sql_literal(data_region, what, REGION)}" if data_region else ""
    if cfg.log_jsonpath == "auto":
        raise UserError(f"{cfg.path or 'dwh.cfg'}: [S3] LOG_JSONPATH must be the s3:// URI of a JSONPaths "
                        "file on Redshift (COPY's 'auto' needs JSON keys equal to column names: "
                        "itemInSession is not item_in_session); upload data/log_json_path.json and name it")
    jsonpaths = sql_literal(cfg.log_jsonpath, "[S3] LOG_JSONPATH", S3_URI)
    remaining = cfg.max_errors if remaining is None else remaining
    table, fields, key = COPY_TARGETS[copy.source]
    source = sql_literal(copy.uri, "[S3] MANIFEST_PREFIX" if copy.manifest else key, S3_URI)
    mapping = jsonpaths if copy.source == "log_data" else "'auto'"
    how = " MANIFEST" * copy.manifest + " GZIP" * copy.gzip
    # In COPY's documented order: table, columns, FROM, authorization, format, then the parameters.
    # Staging is scratch: skip compression analysis and statistics, the star tables matter.
    return (f"COPY {table} ({_columns(fields)})\n"
            f"FROM {source}\n"
            f"IAM_ROLE {role}\n"
            f"FORMAT AS JSON {mapping}{how} {region} MAXERROR {maxerror(remaining)} COMPUPDATE OFF STATUPDATE OFF")


def _columns(fields):
    return ", ".join(c for c, _, _, _ in fields)


def jsonpaths_document():
    """data/log_json_path.json: the event fields in staging_events column order."""
    return {"jsonpaths": [f"$['{key}']" for _, key, _, _ in EVENT_FIELDS]}


# Redshift clears staging with DELETE: TRUNCATE would commit the transaction it runs in.
clear_staging = {
    "postgres": ["TRUNCATE staging_events, staging_songs"],
    "redshift": ["DELETE FROM staging_events", "DELETE FROM staging_songs"],
}
# Redshift: the load's transaction holds every table it writes (staging, star, load_errors),
# so no other load interleaves with it; readers wait until it commits.
# (Not etl_runs: the run's row is written on another connection while the load runs.)
load_lock = "LOCK " + ", ".join(t for t in TABLES if t not in HISTORY_TABLES)

# Redshift keeps the records a COPY skipped (under MAXERROR) in its load-error table, by the
# COPY's query id (pg_last_copy_id(), read right after it): STL_LOAD_ERRORS on a provisioned
# cluster, SYS_LOAD_ERROR_DETAIL on Serverless (which has no raw line).
last_copy_id = "SELECT pg_last_copy_id()"
LOAD_ERROR_TABLES = {
    "provisioned": {"table": "stl_load_errors", "query": "query", "file": "filename",
                    "column": "colname", "reason": "err_reason", "line": "TRIM(raw_line)"},
    "serverless": {"table": "sys_load_error_detail", "query": "query_id", "file": "file_name",
                   "column": "column_name", "reason": "error_message", "line": "NULL"},
}
# Redshift keeps at most 1,024 characters of a line (raw_line is CHAR(1024), multibyte
# characters as periods), so record_bytes is NULL there: the size is not known; file and
# line_no say where the whole record is.
_load_error_insert = """
INSERT INTO load_errors (run_id, source, file, line_no, reason, record, record_bytes)
SELECT %(run_id)s, %(source)s, TRIM({file}), line_number,
       LEFT(TRIM({column}) || ': ' || TRIM({reason}), 1024), {line}, NULL
FROM {table} WHERE {query} = %(query_id)s"""
_load_error_first = """
SELECT TRIM({file}), line_number, TRIM({column}), TRIM({reason})
FROM {table} WHERE {query} IN %(query_ids)s
ORDER BY {query}, line_number LIMIT 10"""
copy_errors_to_load_errors = {k: _load_error_insert.format(**t) for k, t in LOAD_ERROR_TABLES.items()}
load_error_queries = {k: _load_error_first.format(**t) for k, t in LOAD_ERROR_TABLES.items()}


# --- The transform: staging -> star, one text for both engines --------------------------------
# PostgreSQL only: sort and hash 1M-row batches in memory; JIT compiling costs more than it saves here.
transform_settings = {
    # The prepare statements already run side by side, a connection each: parallel workers
    # would only compete with them (and each would build a parallel join's hash table again).
    # A later batch looks its rows up in the warehouse's keys rather than hashing whole tables
    # (a random page costs about a sequential one on an SSD or in cache): the cost follows the
    # batch (a day into 29 loaded days at 1M: star step 1.7 s -> 0.9 s).
    # Memory bounded as batches grow: a hash gets no more than a sort (hash_mem_multiplier 1; by
    # default twice: at 10M events the checks' hash of 8M times held 382 MB); a key build 128 MB,
    # shared with its parallel workers (at 256 MB the three held 326 MB at 10M).
    "postgres": ["SET LOCAL work_mem = '256MB'", "SET LOCAL hash_mem_multiplier = 1",
                 "SET LOCAL maintenance_work_mem = '128MB'", "SET LOCAL jit = off",
                 "SET LOCAL max_parallel_workers_per_gather = 0", "SET LOCAL random_page_cost = 1.1"],
    "redshift": [],
}
# PostgreSQL only: a staging connection's raw rows stay in memory (temp tables use temp_buffers).
staging_settings = ["SET temp_buffers = '256MB'", "SET work_mem = '128MB'", "SET jit = off"]


# Two stages. Prepare: each heavy SELECT (the catalogue keys new in this batch; the batch's plays,
# deduplicated and matched to the catalogue; their distinct times; each user's latest state)
# into a scratch table. PostgreSQL runs these side by side on their own connections, before and
# during the star transaction (they change nothing a reader sees); Redshift runs them inside it.
# Apply: the star tables from staging and the scratch tables, in one transaction, each insert
# skipping rows already there, then the scratch tables are dropped.

# new_keys: this batch's catalogue keys that song_keys lacks: per (title, artist name, duration)
# the smallest song_id (then artist_id). A song file without all three can never match a play.
new_song_keys = """
SELECT title, artist_name, duration, song_id, artist_id
FROM (SELECT title, artist_name, duration, song_id, artist_id,
             ROW_NUMBER() OVER (PARTITION BY title, artist_name, duration
                                ORDER BY song_id, artist_id) AS rn
      FROM staging_songs
      WHERE title IS NOT NULL AND artist_name IS NOT NULL AND duration IS NOT NULL) s
WHERE rn = 1
  AND NOT EXISTS (SELECT 1 FROM song_keys k
                  WHERE k.title = s.title AND k.artist_name = s.artist_name AND k.duration = s.duration)"""

# Each NextSong event of the batch once: an event repeated in the input (same session_id,
# item_in_session, ts) keeps its smallest user_id, song, artist, level ({rank}: RANK_REPEATS,
# below, or as if none repeats on PostgreSQL's first try). Its song is the
# catalogue's entry for the event's title, artist name and duration: the whole catalogue as it
# will be once this batch is applied (song_keys as committed, plus the batch's new keys), so
# the plays can be prepared before the star transaction and still match this batch's songs.
# None: NULLs, and the play is kept, with its key (song, artist, length) to match it later.
# Matched before the repeats are dropped (a key is in song_keys or new_keys, once, so no row
# doubles), each table joined on its own: with their statistics the catalogue is what gets
# hashed, not the batch (a UNION of the two has none).
new_plays_select = """
SELECT start_time, user_id, level, song_id, artist_id, session_id, item_in_session, location,
       user_agent,
       CASE WHEN song_id IS NULL THEN song END AS song,
       CASE WHEN song_id IS NULL THEN artist END AS artist,
       CASE WHEN song_id IS NULL THEN length END AS length
FROM (SELECT {event_time} AS start_time, e.user_id, e.level,
             COALESCE(k.song_id, n.song_id) AS song_id, COALESCE(k.artist_id, n.artist_id) AS artist_id,
             e.session_id, e.item_in_session, e.location, e.user_agent, e.song, e.artist, e.length,
             {rank} AS rn
      FROM staging_events e
      LEFT JOIN song_keys k ON k.title = e.song AND k.artist_name = e.artist AND k.duration = e.length
      LEFT JOIN new_keys n ON n.title = e.song AND n.artist_name = e.artist AND n.duration = e.length
      WHERE e.page = 'NextSong') p
WHERE rn = 1"""

# The batch's distinct play times (a play's time is its event's ts), broken down; weekday
# 0 = Sunday, week is the ISO week. DATE_PART is EXTRACT returning a float (PostgreSQL's EXTRACT
# computes in numeric, much slower). The time is made in a DISTINCT subquery, which PostgreSQL
# does not merge into this SELECT: once an event, not once for each of the six parts (a merged
# subquery's column is its expression, copied into each use; at 1M new_times took 15% more CPU).
new_times_select = """
SELECT start_time, DATE_PART('hour', start_time)::INTEGER AS hour,
       DATE_PART('day', start_time)::INTEGER AS day, DATE_PART('week', start_time)::INTEGER AS week,
       DATE_PART('month', start_time)::INTEGER AS month, DATE_PART('year', start_time)::INTEGER AS year,
       DATE_PART('dow', start_time)::INTEGER AS weekday
FROM (SELECT {distinct} {event_time} AS start_time FROM staging_events WHERE page = 'NextSong') d"""

# Each user's latest event in this batch (ties: the later session and item, then paid). Only
# the events at a user's latest ts are ranked: a hash aggregate finds that ts, so the sort is
# of a few rows per user rather than of every event.
latest_users_create = """
CREATE {scratch} latest_users{scratch_options} AS
SELECT user_id, first_name, last_name, gender, level, {event_time} AS last_seen_at
FROM (SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.user_id
                                     ORDER BY e.ts DESC, session_id DESC, item_in_session DESC,
                                              level DESC, first_name, last_name) AS rn
      FROM staging_events e
      JOIN (SELECT user_id, MAX(ts) AS ts FROM staging_events GROUP BY user_id) m
        ON m.user_id = e.user_id AND m.ts = e.ts) e
WHERE rn = 1"""

# Repeated events are rare, and ranking them sorts every play (at 1M events, a third of the
# plays' 2.1 CPU-seconds, and the load's memory peak). So PostgreSQL prepares the plays first as
# if none repeats ({rank} is 1): a repeat then fails one of the plays' unique keys (REPEAT_KEYS),
# and the star transaction runs again with the plays ranked (etl.transform). Redshift does not
# enforce keys: it always ranks. The sort is on ts first: nearly unique, it decides most
# comparisons (at 1M, 0.4 CPU-s less than session_id first).
RANK_REPEATS = """ROW_NUMBER() OVER (PARTITION BY e.ts, e.session_id, e.item_in_session
                                ORDER BY e.user_id, e.song, e.artist, e.level)"""
# A repeat whose plays were all loaded before fails no key (the inserts skip them), yet the load's
# checks would count each copy: when the inserts skipped plays, this looks for a repeat.
plays_repeat = """SELECT EXISTS (SELECT 1 FROM new_plays GROUP BY session_id, item_in_session, start_time
                              HAVING COUNT(*) > 1)"""
# Unique on (session_id, item_in_session, start_time). The error names the key, or the index whose
# build failed ("indexes are treated as constraints": PostgreSQL manual, Frontend/Backend
# Protocol, Error and Notice Message Fields, field n).
REPEAT_KEYS = ("unmatched_plays_pkey", "songplays_event_key")

new_keys_create = "CREATE {scratch} new_keys{scratch_options} AS" + new_song_keys
new_plays_create = "CREATE {scratch} new_plays{scratch_options}{scratch_by_time} AS" + new_plays_select
new_times_create = "CREATE {scratch} new_times{scratch_options}{scratch_by_time} AS" + new_times_select

prepare_queries = {  # scratch table -> the statements that make it
    "new_keys": ["DROP TABLE IF EXISTS new_keys", new_keys_create, "{analyze_keys}"],
    "new_plays": ["DROP TABLE IF EXISTS new_plays", new_plays_create],
    "new_times": ["DROP TABLE IF EXISTS new_times", new_times_create],
    "latest_users": ["DROP TABLE IF EXISTS latest_users", latest_users_create],
}


PREPARED_AFTER = {"new_plays": "new_keys"}  # a scratch table made from another, once that one is ready


def prepare_statements(table, engine, rank_repeats=True):
    """The statements that make one scratch table, for an engine; rank_repeats=False: the plays
    as if no event repeated (PostgreSQL's first try)."""
    rank = RANK_REPEATS if rank_repeats else "1 /* as if no event repeated: the plays' unique keys find a repeat */"
    statements = (q.format(**DIALECT[engine], rank=rank) for q in prepare_queries[table])
    return [q for q in statements if q]  # an engine's empty statement: nothing to run

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
                                         CASE WHEN artist_location IS NULL OR CHAR_LENGTH(artist_location) = 0 THEN 1 ELSE 0 END,
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

# time: one row per play time.
time_table_insert = """
INSERT INTO time (start_time, hour, day, week, month, year, weekday)
SELECT start_time, hour, day, week, month, year, weekday FROM new_times n
WHERE NOT EXISTS (SELECT 1 FROM time t WHERE t.start_time = n.start_time)"""

# users: a user seen later in this batch than in the warehouse is updated; a new user added.
user_table_update = """
UPDATE users SET first_name = l.first_name, last_name = l.last_name, gender = l.gender,
                 level = l.level, last_seen_at = l.last_seen_at
FROM latest_users l
WHERE users.user_id = l.user_id AND users.last_seen_at < l.last_seen_at"""

user_table_insert = """
INSERT INTO users (user_id, first_name, last_name, gender, level, last_seen_at)
SELECT user_id, first_name, last_name, gender, level, last_seen_at FROM latest_users l
WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = l.user_id)"""


# The catalogue, steps before the plays are applied. Plays loaded before their song: matched
# now against only the keys new in this batch (so the cost follows the batch), then no longer
# waiting; then the new keys join the catalogue. A re-run brings no new key: nothing changes.
songplay_rematch = """
UPDATE songplays SET song_id = k.song_id, artist_id = k.artist_id
FROM unmatched_plays u, new_keys k
WHERE k.title = u.song AND k.artist_name = u.artist AND k.duration = u.length
  AND songplays.session_id = u.session_id AND songplays.item_in_session = u.item_in_session
  AND songplays.start_time = u.start_time"""

unmatched_matched_delete = """
DELETE FROM unmatched_plays USING new_keys k
WHERE k.title = unmatched_plays.song AND k.artist_name = unmatched_plays.artist
  AND k.duration = unmatched_plays.length"""

song_keys_insert = """
INSERT INTO song_keys (title, artist_name, duration, song_id, artist_id)
SELECT title, artist_name, duration, song_id, artist_id FROM new_keys"""

# The batch's unmatched plays that songplays does not hold yet (the ones its insert adds), with
# their key; before that insert, which they would otherwise find already there. (Not already
# waiting either: after a user's TRUNCATE songplays a play comes back, and still waits.)
unmatched_insert = """
INSERT INTO unmatched_plays (song, artist, length, session_id, item_in_session, start_time)
SELECT song, artist, length, session_id, item_in_session, start_time
FROM new_plays n
WHERE song_id IS NULL AND song IS NOT NULL AND artist IS NOT NULL AND length IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM songplays p
                  WHERE p.session_id = n.session_id AND p.item_in_session = n.item_in_session
                    AND p.start_time = n.start_time)
  AND NOT EXISTS (SELECT 1 FROM unmatched_plays u
                  WHERE u.session_id = n.session_id AND u.item_in_session = n.item_in_session
                    AND u.start_time = n.start_time)"""


@dataclass(frozen=True)
class Step:
    """One statement of the star transaction: the table it writes, how (insert, update or
    delete: what its row count means), the prepared table it reads, waited for first, and
    what the summary calls its row count (default: the action's past tense)."""
    table: str
    action: str
    sql: str
    needs: str | None = None
    counted_as: str | None = None

    @property
    def label(self):
        return self.counted_as or {"insert": "added", "update": "updated", "delete": "deleted"}[self.action]


# In order. The plays take longest to prepare: songs, artists and time are applied first (their
# rows are ready sooner), then the catalogue: plays waiting for a song of this batch are
# matched before the batch's keys join song_keys (which is how those keys are told apart);
# then the plays, and users last (their rows are prepared while the plays are inserted).
apply_steps = (
    Step("songs", "insert", song_table_insert),
    Step("artists", "insert", artist_table_insert),
    Step("time", "insert", time_table_insert, needs="new_times"),
    Step("songplays", "update", songplay_rematch, needs="new_keys", counted_as="matched"),
    Step("unmatched_plays", "delete", unmatched_matched_delete, needs="new_keys", counted_as="matched"),
    Step("song_keys", "insert", song_keys_insert, needs="new_keys"),
    Step("unmatched_plays", "insert", unmatched_insert, needs="new_plays"),
    Step("songplays", "insert", songplay_table_insert, needs="new_plays"),
    Step("users", "update", user_table_update, needs="latest_users"),
    Step("users", "insert", user_table_insert, needs="latest_users"),
)
drop_scratch = [f"DROP TABLE IF EXISTS {t}" for t in SCRATCH_TABLES]


def transform_queries(engine):
    """The whole transform as one list of statements, for running in one session (Redshift)."""
    prepare = [q for t in SCRATCH_TABLES for q in prepare_statements(t, engine)]
    return transform_settings[engine] + prepare + [s.sql for s in apply_steps] + drop_scratch


# --- Data-quality checks, declared (in the spirit of dbt's tests) ----------------------------
# Each Check is a small record from which its query is made. A query returns what it found: the
# offending keys (at most EXAMPLES, in key order) each with the total number of offending rows
# in its last column, or for a measure one row whose last column is the value; no row: nothing
# found. A check passes when what it finds is no more than its threshold, else it fails or (by
# its severity) warns. Two forms:
# - warehouse: the tables as they stand (analytics.py --quality);
# - batch: what a load is adding, so a load's checks cost what its batch costs: the batch's
#   prepared rows (BATCH) against the dimensions' rows that batch rows may refer to. PostgreSQL
#   runs them on their own connection while the star transaction inserts, Redshift inside it.
# A failing check at load time rolls the load back; a warning is printed and kept in etl_runs.
EXAMPLES = 5
BATCH = {"songplays": "new_plays", "time": "new_times", "users": "latest_users"}  # a table's batch rows
# Where a batch play's key is found: its user and time among the batch's own rows (they are made
# from the same events); its matched song and artist among the catalogue's match keys as
# committed (each from a song file an earlier load put in songs and artists) or in the batch's
# song files. Not songs and artists themselves: PostgreSQL's checks run beside the star
# transaction, which a first load has locked them in (PREPARE_READS); --quality reads them.
BATCH_LOOKUP = {"users": ("latest_users",), "time": ("new_times",),
                "songs": ("song_keys", "staging_songs"), "artists": ("song_keys", "staging_songs")}


@dataclass(frozen=True)
class Check:
    name: str               # what it finds, as a failure reads: "plays whose user is not in users"
    kind: str               # unique | not_null | relationship | accepted_values | freshness | null_share | gaps
    table: str
    columns: tuple
    severity: str = "fail"  # fail | warn
    threshold: float = 0    # more found than this: it fails, or warns
    to: str = ""            # relationship: the table the column refers to (same column name)
    values: tuple = ()      # accepted_values

    def sql(self, scope="warehouse", engine="postgres"):
        """Its query on the whole warehouse, or on the batch (None: it has no batch form: the
        keys of the star tables, and the tables a load does not prepare)."""
        if scope == "batch" and (self.kind == "unique" or self.table not in BATCH):
            return None
        table = BATCH[self.table] if scope == "batch" else self.table
        cols = ", ".join(f"x.{c}" for c in self.columns)
        col = f"x.{self.columns[0]}"
        offending = (f"SELECT {cols}, SUM(COUNT(*)) OVER () AS found FROM {table} x\n"
                     "WHERE {where}\nGROUP BY " + cols + "{having}\nORDER BY " + cols + f"\nLIMIT {EXAMPLES}")
        if self.kind == "unique":
            return offending.format(where="TRUE", having="\nHAVING COUNT(*) > 1").replace("WHERE TRUE\n", "")
        if self.kind == "relationship":
            lookups = BATCH_LOOKUP[self.to] if scope == "batch" else (self.to,)
            missing = "".join(f"\n  AND NOT EXISTS (SELECT 1 FROM {d} d WHERE d.{self.columns[0]} = {col})"
                              for d in lookups)
            return offending.format(where=f"{col} IS NOT NULL{missing}", having="")
        if self.kind == "accepted_values":
            values = ", ".join(str(v) if isinstance(v, int) else sql_literal(v, self.name) for v in self.values)
            return offending.format(where=f"{col} NOT IN ({values})", having="")
        if self.kind == "not_null":
            return (f"SELECT found FROM (SELECT COUNT(*) AS found FROM {table} x WHERE {col} IS NULL) c "
                    "WHERE found > 0")
        if self.kind == "null_share":  # the rows with a NULL, of all rows, and that in percent
            return (f"SELECT null_rows, all_rows, ROUND(100.0 * null_rows / all_rows, 2) AS found\n"
                    f"FROM (SELECT SUM(CASE WHEN {col} IS NULL THEN 1 ELSE 0 END) AS null_rows, COUNT(*) AS all_rows\n"
                    f"      FROM {table} x) s\nWHERE all_rows > 0")
        if self.kind == "freshness":  # the newest play's day against the newest play event's day staged
            # (a load has those events' times prepared, a narrow table: no second scan of staging)
            newest = (f"SELECT CAST(MAX(start_time) AS DATE) AS newest_event FROM {BATCH['time']}" if scope == "batch"
                      else f"SELECT CAST({DIALECT[engine]['event_time']} AS DATE) AS newest_event\n"
                           f"            FROM (SELECT MAX(ts) AS ts FROM staging_events WHERE page = 'NextSong') m")
            return (f"SELECT newest_play, newest_event, 1 AS found\n"
                    f"FROM (SELECT CAST(MAX({col}) AS DATE) AS newest_play FROM {table} x) p\n"
                    f"CROSS JOIN ({newest}) e\n"
                    f"WHERE newest_event > COALESCE(newest_play, DATE '1900-01-01')")
        if self.kind == "gaps":  # runs of days without a row between the first day and the last
            return (f"SELECT day, next_day, COUNT(*) OVER () AS found\n"
                    f"FROM (SELECT day, LEAD(day) OVER (ORDER BY day) AS next_day\n"
                    f"      FROM (SELECT DISTINCT CAST({col} AS DATE) AS day FROM {table} x) d) g\n"
                    f"WHERE next_day > day + INTERVAL '1 day'\nORDER BY day\nLIMIT {EXAMPLES}")
        raise ValueError(f"unknown kind of check: {self.kind}")


PLAY_KEY = ("session_id", "item_in_session", "start_time")
CHECKS = (
    # Keys: unique (PostgreSQL's keys enforce these; Redshift's are declarations) and not null.
    Check("duplicate users", "unique", "users", ("user_id",)),
    Check("duplicate songs", "unique", "songs", ("song_id",)),
    Check("duplicate artists", "unique", "artists", ("artist_id",)),
    Check("duplicate times", "unique", "time", ("start_time",)),
    Check("duplicate catalogue keys", "unique", "song_keys", ("title", "artist_name", "duration")),
    Check("duplicate plays", "unique", "songplays", PLAY_KEY),
    Check("plays without a time", "not_null", "songplays", ("start_time",)),
    Check("plays without a user (logged out)", "not_null", "songplays", ("user_id",), severity="warn"),
    # Relationships: each key of a play is in its dimension.
    Check("plays whose user is not in users", "relationship", "songplays", ("user_id",), to="users"),
    Check("plays whose time is not in time", "relationship", "songplays", ("start_time",), to="time"),
    Check("plays whose song is not in songs", "relationship", "songplays", ("song_id",), to="songs"),
    Check("plays whose artist is not in artists", "relationship", "songplays", ("artist_id",), to="artists"),
    Check("songs whose artist is not in artists", "relationship", "songs", ("artist_id",), to="artists"),
    # Accepted values.
    Check("plays with a level not free or paid", "accepted_values", "songplays", ("level",), values=LEVELS),
    Check("users with a level not free or paid", "accepted_values", "users", ("level",), values=LEVELS),
    Check("times with an hour not 0-23", "accepted_values", "time", ("hour",), values=tuple(range(24))),
    Check("times with a weekday not 0-6", "accepted_values", "time", ("weekday",), values=tuple(range(7))),
    Check("times with a month not 1-12", "accepted_values", "time", ("month",), values=tuple(range(1, 13))),
    # Freshness: the plays reach the newest day of the logs staged (the last load's).
    Check("newest play older than the newest log day", "freshness", "songplays", ("start_time",)),
    # Thresholds that warn: a catalogue that covers few of the plays; days without plays.
    Check("% of plays not matched to the song catalogue", "null_share", "songplays", ("song_id",),
          severity="warn", threshold=10),
    Check("gaps of days with no plays", "gaps", "songplays", ("start_time",), severity="warn"),
)


def load_checks(engine):
    """[(Check, query)] a load runs: each check's batch form; on Redshift also the unique keys,
    on the whole tables (its keys are not enforced; a columnar scan of a key is its way)."""
    checks = [(c, c.sql("batch", engine)) for c in CHECKS if c.sql("batch", engine)]
    if engine == "redshift":
        checks += [(c, c.sql("warehouse", engine)) for c in CHECKS if c.kind == "unique"]
    return checks


def warehouse_checks(engine):
    """[(Check, query)] on the whole warehouse, every check (analytics.py --quality)."""
    return [(c, c.sql("warehouse", engine)) for c in CHECKS]


# --- The run history (etl_runs; history.py writes it, analytics.py --runs reads it) -----------
history_orphans = """
UPDATE etl_runs SET status = 'interrupted', error = %(error)s
WHERE status = 'running' AND run_id <> %(run_id)s"""
history_start = """
INSERT INTO etl_runs (run_id, status, engine, started_at, first_day, last_day, sources)
VALUES (%(run_id)s, 'running', %(engine)s, %(started_at)s, %(first_day)s, %(last_day)s, %(sources)s)"""
history_finish = """
UPDATE etl_runs SET status = %(status)s, finished_at = %(finished_at)s, files = %(files)s,
       staged = %(staged)s, set_aside = %(set_aside)s, plays_added = %(plays_added)s,
       checks_passed = %(checks_passed)s, checks_warned = %(checks_warned)s,
       checks_failed = %(checks_failed)s, error = %(error)s, sources = %(sources)s,
       star_changes = %(star_changes)s, warnings = %(warnings)s
WHERE run_id = %(run_id)s"""
last_runs = """
SELECT run_id, status,
       CASE WHEN first_day IS NULL THEN 'all'
            WHEN first_day = last_day THEN CAST(first_day AS VARCHAR(10))
            ELSE CAST(first_day AS VARCHAR(10)) || ' to ' || CAST(last_day AS VARCHAR(10)) END AS days,
       files, staged, set_aside, plays_added, checks_passed AS passed, checks_warned AS warned,
       checks_failed AS failed, DATE_TRUNC('second', started_at) AS started_utc,
       DATE_TRUNC('second', finished_at) AS finished_utc, error
FROM etl_runs ORDER BY started_at DESC, run_id DESC LIMIT %s"""



# PostgreSQL: the sessions a backend waits for, for a lock (db.waits_explained).
lock_holders = """
SELECT pid, usename, application_name, state, EXTRACT(EPOCH FROM now() - xact_start)::INTEGER
FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid"""
cancel_if_held_by = "SELECT pg_cancel_backend(%s) WHERE %s::INTEGER[] && pg_blocking_pids(%s)"

# PostgreSQL: how far a key build of a backend is (etl.StarProgress).
key_build_progress = """
SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total
FROM pg_stat_progress_create_index WHERE pid = %s"""

count_rows = "SELECT COUNT(*) FROM {table}"
existing_tables = """
SELECT table_name FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name IN %s"""


# --- The reader: analytics.py queries as a role that holds only SELECT on the warehouse's tables,
# so no text it is given can change data. On the embedded server it logs in (the server trusts
# its unix socket, and listens on nothing else); on another PostgreSQL it cannot log in and the
# loading user, made a member, takes it with SET ROLE; or [CLUSTER] READER_USER names a user of
# your own (on Redshift, the only way; not used by the embedded server), which create_tables.py
# grants SELECT to.
READER_ROLE = "sparkify_reader"


def quote_ident(name):
    """A user or schema name as a quoted SQL identifier (PostgreSQL and Redshift alike)."""
    return '"' + name.replace('"', '""') + '"'


current_schema = "SELECT current_schema()"
reader_role_exists = "SELECT 1 FROM pg_roles WHERE rolname = %s"
reader_role_create = {"embedded": "CREATE ROLE {reader} LOGIN", "postgres": "CREATE ROLE {reader} NOLOGIN"}
reader_role_member = "GRANT {reader} TO CURRENT_USER"
reader_is_member = "SELECT pg_has_role(current_user, %s, 'MEMBER')"
reader_grants = ["GRANT USAGE ON SCHEMA {schema} TO {reader}", "GRANT SELECT ON {tables} TO {reader}"]
reader_set_role = "SET ROLE {reader}"
# The embedded reader's own settings, ours again when create_tables.py runs and when --serve starts
# and stops (a client it served may have set others for the role, or lifted its read-only default):
# its sessions read-only unless a client lifts that for its own.
reader_defaults = ["ALTER ROLE {reader} RESET ALL", "ALTER ROLE {reader} IN DATABASE postgres RESET ALL",
                   "ALTER ROLE {reader} SET default_transaction_read_only = on"]
# analytics.py --serve --port: the reader logs in over TCP with a password made for the session,
# sent as its SCRAM verifier (the server never sees the password itself); NULL again on exit.
reader_password = "ALTER ROLE {reader} PASSWORD %s"
reader_no_password = "ALTER ROLE {reader} PASSWORD NULL"
reload_config = "SELECT pg_reload_conf()"


# --- Analytics: the questions the schema exists for ------------------------------------------
# Plays per hour and per day are drawn as bar charts too (analytics.CHARTS, which adds the hours and
# days without plays): the first column labels a bar, the last is its length; one row per hour or
# day, so a chart holds all its rows.
analytics_queries = [
    ("Most played songs", """
SELECT s.title, a.name AS artist, COUNT(*) AS plays
FROM songplays p JOIN songs s ON s.song_id = p.song_id JOIN artists a ON a.artist_id = p.artist_id
GROUP BY s.title, a.name ORDER BY plays DESC, s.title LIMIT 10"""),
    ("Plays matched to the song catalogue", """
SELECT CASE WHEN song_id IS NULL THEN 'not in catalogue' ELSE 'matched' END AS song, COUNT(*) AS plays
FROM songplays GROUP BY 1 ORDER BY 1"""),
    ("Plays per hour (UTC)", """
SELECT t.hour, COUNT(*) AS plays
FROM songplays p JOIN time t ON t.start_time = p.start_time
GROUP BY t.hour ORDER BY t.hour"""),
    ("Plays per day", """
SELECT CAST(start_time AS DATE) AS day, COUNT(*) AS plays
FROM songplays GROUP BY 1 ORDER BY 1"""),
    # each share in tenths of a percent rounded down, the tenths left over to the largest
    # remainders (then the most plays): the shares add up to 100.0 (rounded each, 87.75% and
    # 12.25% made 87.8 and 12.3)
    ("Free vs paid plays", """
SELECT level, plays, users,
       CAST((tenths + CASE WHEN ROW_NUMBER() OVER (ORDER BY share - tenths DESC, plays DESC, level)
                               <= 1000 - SUM(tenths) OVER () THEN 1 ELSE 0 END) / 10.0 AS DECIMAL(4, 1)) AS pct_of_plays
FROM (SELECT level, plays, users, share, FLOOR(share) AS tenths
      FROM (SELECT level, COUNT(*) AS plays, COUNT(DISTINCT user_id) AS users,
                   1000.0 * COUNT(*) / SUM(COUNT(*)) OVER () AS share
            FROM songplays GROUP BY level) s) t
ORDER BY plays DESC, level"""),
    ("Top users", """
SELECT u.user_id, TRIM(COALESCE(u.first_name, '') || ' ' || COALESCE(u.last_name, '')) AS name, u.level,
       COUNT(*) AS plays
FROM songplays p JOIN users u ON u.user_id = p.user_id
GROUP BY u.user_id, u.first_name, u.last_name, u.level ORDER BY plays DESC, u.user_id LIMIT 5"""),
    ("Top locations", """
SELECT location, COUNT(*) AS plays, COUNT(DISTINCT user_id) AS users
FROM songplays GROUP BY location ORDER BY plays DESC, location LIMIT 5"""),
]
