"""The SQL we send to Redshift, checked against what AWS documents (tests/redshift_rules.py),
and --dry-run, which prints it: the scripts' real code path on recording connections."""
import argparse
import collections
import dataclasses
import json
import re

import psycopg2
import psycopg2.extensions
import pytest
import sqlglot
from sqlglot import exp

import create_tables
import db
import etl
import redshift_rules as rules
import sql_queries
from config import Config
from conftest import ROOT, SAMPLE_LOGS, emulated_course_bucket, event, query, run_script, song
from errors import UserError

HOST = "dwhcluster.c0nstant.us-west-2.redshift.amazonaws.com"  # no cluster behind it
REDSHIFT = Config(
    engine="redshift", embedded=False, host=HOST, port=5439, db_name="dwh", db_user="dwhuser",
    db_password="Passw0rdX", iam_role_arn="arn:aws:iam::123456789012:role/dwhRole", region="us-west-2",
    song_data="s3://udacity-dend/song_data", log_data="s3://udacity-dend/log_data",
    log_jsonpath="s3://udacity-dend/log_json_path.json", max_errors=7)
SERVERLESS = dataclasses.replace(REDSHIFT, host="dwh.123456789012.us-west-2.redshift-serverless.amazonaws.com")



def etl_args(max_errors=None):
    return argparse.Namespace(max_errors=max_errors, no_wait=False, dry_run=True, json=False)


def recorded(work, answers=None):
    """The Recorder after running work() on recording connections."""
    with db.dry_run(answers) as recorder:
        work()
    return recorder


def load_statements(cfg, max_errors=None, answers=None):
    return recorded(lambda: etl.load(cfg, etl_args(max_errors)), answers).statements()


def redshift_statements():
    """Every statement we send to Redshift: create_tables.py and etl.py as they run (both kinds
    of warehouse), a failed COPY's look-up, and the analytics queries."""
    found = []
    for cfg in (REDSHIFT, SERVERLESS):
        found += recorded(lambda: create_tables.reset(cfg)).statements() + load_statements(cfg)
    found += list(sql_queries.load_error_queries.values()) + [q for _, q in sql_queries.analytics_queries]
    return [s for s in dict.fromkeys(found) if s not in ("BEGIN", "COMMIT", "ROLLBACK")]


def identifiers(statement):
    """Every identifier in a statement, by sqlglot's Redshift parser (COPY's column list
    included); LOCK, which it keeps as text, is a list of table names."""
    parsed = sqlglot.parse_one(statement, read="redshift")
    if isinstance(parsed, exp.Command) and parsed.this.upper() == "LOCK":
        return {name.strip() for name in parsed.expression.name.split(",")}
    assert not isinstance(parsed, exp.Command), f"not parsed: {statement[:60]}"
    return {i.name for i in parsed.find_all(exp.Identifier)}


def reserved(statement):
    return {name.upper() for name in identifiers(statement)} & rules.RESERVED_WORDS


# --- Reserved words ----------------------------------------------------------------------------
def test_no_reserved_word_is_an_identifier_in_any_redshift_statement(course_bucket):
    statements = redshift_statements()
    assert len(statements) > 40  # DDL, COPY, transform, scratch tables, checks, load errors, analytics
    found = collections.defaultdict(list)
    for statement in statements:
        for word in reserved(statement):
            found[word].append(" ".join(statement.split())[:70])
    assert not found, dict(found)


def test_the_check_finds_a_reserved_word_in_the_ddl_and_the_copy_column_list():
    ddl = sql_queries.TABLE["load_errors"].create("redshift")
    assert reserved(ddl.replace("record ", "raw ")) == {"RAW"}  # why create_tables.py failed on Redshift
    assert reserved(ddl) == set()
    assert reserved("COPY t (a, raw, timestamp) FROM 's3://b/k' IAM_ROLE 'r' FORMAT AS JSON 'auto'") == {
        "RAW", "TIMESTAMP"}
    assert reserved("LOCK songs, user") == {"USER"}


def test_no_table_alias_is_start_or_connect(course_bucket):
    for statement in redshift_statements():
        parsed = sqlglot.parse_one(statement, read="redshift")
        aliases = {t.alias.upper() for t in parsed.find_all(exp.Table) if t.alias}
        assert not aliases & rules.NOT_AS_TABLE_ALIAS, statement


# --- COPY: every field reaches its column --------------------------------------------------------
def copy_statement(cfg, table):
    return next(s for s in sql_queries.copy_table_queries(cfg) if s.startswith(f"COPY {table} "))


def copy_columns(statement):
    parsed = sqlglot.parse_one(statement, read="redshift")
    return [c.name for c in parsed.this.expressions]


def test_auto_cannot_map_the_log_fields_to_the_staging_columns():
    """Why LOG_JSONPATH is required: under 'auto' (and 'auto ignorecase') the camelCase keys
    never meet their columns, NOT NULL ones among them."""
    keys = set(event())
    columns = [c for c, _, _, _ in sql_queries.EVENT_FIELDS]
    for rule in (rules.auto_key, rules.auto_ignorecase_key):
        unmapped = {c for c in columns if rule(c, keys) is None}
        assert {"item_in_session", "session_id", "user_id", "first_name"} <= unmapped
        assert any(required for c, _, _, required in sql_queries.EVENT_FIELDS if c in unmapped)


def test_every_staging_events_column_gets_its_log_field_from_the_jsonpaths_file():
    shipped = json.loads((ROOT / "data" / "log_json_path.json").read_text())["jsonpaths"]
    assert shipped == rules.COURSE_LOG_JSONPATHS == sql_queries.jsonpaths_document()["jsonpaths"]
    statement = copy_statement(REDSHIFT, "staging_events")
    assert "FORMAT AS JSON 's3://udacity-dend/log_json_path.json'" in statement
    mapping = rules.jsonpaths_keys(copy_columns(statement), shipped)
    assert mapping == {c: k for c, k, _, _ in sql_queries.EVENT_FIELDS}
    assert set(mapping.values()) == set(event())  # every key of a log record, each once


def test_every_staging_songs_column_is_a_song_file_key_so_auto_maps_it():
    statement = copy_statement(REDSHIFT, "staging_songs")
    assert "\nFORMAT AS JSON 'auto' " in statement
    columns = copy_columns(statement)
    assert columns == [c for c, _, _, _ in sql_queries.SONG_FIELDS]
    assert all(rules.auto_key(c, set(song())) == c for c in columns)


@pytest.mark.parametrize("jsonpath", ["auto", ""])
def test_redshift_without_a_jsonpaths_file_is_one_clear_error(tmp_path, jsonpath):
    path = tmp_path / "dwh.cfg"
    path.write_text(f"[CLUSTER]\nHOST={HOST}\nDB_PASSWORD=Passw0rdX\n[IAM_ROLE]\nARN={REDSHIFT.iam_role_arn}\n"
                    f"[S3]\nLOG_DATA=s3://bkt/log_data\nSONG_DATA=s3://bkt/song_data\nLOG_JSONPATH={jsonpath}\n")
    path.chmod(0o600)
    out = run_script("etl.py", "--config", str(path), "--dry-run")
    assert out.returncode == 1 and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert f"{path}: [S3] LOG_JSONPATH must be the s3:// URI of a JSONPaths file" in line
    assert "data/log_json_path.json" in line


# --- --max-errors: MAXERROR per COPY, the skipped records into load_errors -------------------------
@pytest.mark.parametrize("remaining", [0, 1, 7, rules.MAXERROR_LIMIT - 2, rules.MAXERROR_LIMIT - 1])
def test_maxerror_lets_through_exactly_what_remains(remaining):
    """The documented reading: MAXERROR m fails at m errors, so m = remaining + 1."""
    m = sql_queries.maxerror(remaining)
    assert m <= rules.MAXERROR_LIMIT
    assert not rules.copy_fails(m, remaining) and rules.copy_fails(m, remaining + 1)


def test_maxerror_never_exceeds_the_documented_limit():
    assert sql_queries.maxerror(10**9) == rules.MAXERROR_LIMIT
    assert "MAXERROR 100000 " in copy_statement(dataclasses.replace(REDSHIFT, max_errors=10**9), "staging_songs")


def errors_per_copy(songs, events):
    """Recorder answers: the load-error rows each COPY left (one list per source, by run order)."""
    counts = {"song_data": songs, "log_data": events}
    return {q: (lambda p: [()] * counts[p["source"]]) for q in sql_queries.copy_errors_to_load_errors.values()}


def test_each_copy_gets_what_remains_and_its_skipped_records_are_copied_by_its_query_id(course_bucket):
    with db.dry_run(errors_per_copy(songs=3, events=2)) as recorder:
        result = etl.run_redshift(REDSHIFT, db.connect(REDSHIFT), max_errors=5)
    statements = [s for s in recorder.connections[0][1] if not s.startswith("--")]  # the load's (not etl_runs')
    songs, events = [s for s in statements if s.startswith("COPY ")]
    assert " MAXERROR 6 " in songs and " MAXERROR 3 " in events  # 5 allowed, then 5 - 3
    copied = [s for s in statements if s.lstrip().startswith("INSERT INTO load_errors")]
    assert len(copied) == 2 and all(s.rstrip().endswith("WHERE query = pg_last_copy_id()") for s in copied)
    assert statements.index(copied[0]) == statements.index(songs) + 2  # right after reading its id
    assert {r.source: r.rejected for r in result.staged} == {"song_data": 3, "log_data": 2}
    assert "3 set aside" in etl.summary(result) and "2 set aside" in etl.summary(result)
    assert statements[-1] == "COMMIT"


def test_more_bad_records_than_allowed_roll_the_whole_load_back(course_bucket):
    with db.dry_run(errors_per_copy(songs=3, events=3)) as recorder:
        with pytest.raises(UserError) as failed:
            etl.run_redshift(REDSHIFT, db.connect(REDSHIFT), max_errors=5)
    assert str(failed.value).startswith("6 bad records, more than the 5 allowed (--max-errors); nothing was committed")
    statements = recorder.statements()
    assert "COMMIT" not in statements and "ROLLBACK" in statements
    assert not any(s.startswith("INSERT INTO songplays") for s in statements)  # stopped before the star


def test_no_load_errors_are_read_by_session(course_bucket):
    for statement in redshift_statements():
        assert "pg_backend_pid" not in statement and "session" not in identifiers(statement)


def test_a_workgroup_reached_by_another_name_reads_its_own_load_errors(course_bucket):
    """A private workgroup through a tunnel (HOST=127.0.0.1, DWH_CLUSTER_TYPE=serverless): the load
    read the provisioned clusters' STL view, which Serverless does not have."""
    tunnel = dataclasses.replace(SERVERLESS, host="127.0.0.1",
                                 cluster=dataclasses.replace(SERVERLESS.cluster, cluster_type="serverless"))
    statements = " ".join(load_statements(tunnel)).lower()
    assert rules.LOAD_ERROR_COLUMNS["serverless"][0] in statements
    assert rules.LOAD_ERROR_COLUMNS["provisioned"][0] not in statements


@pytest.mark.parametrize("kind", ["provisioned", "serverless"])
def test_load_errors_copied_are_those_of_that_copy_only(warehouse, kind):
    """The statement itself, on PostgreSQL, against a stand-in with the documented columns."""
    table, columns = rules.LOAD_ERROR_COLUMNS[kind]
    text = {"query", "query_id", "line_number"}
    with db.connection(warehouse) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE {table} ("
                    + ", ".join(f"{c} {'BIGINT' if c in text else 'TEXT'}" for c in sorted(columns)) + ")")
        q, f, c, r = ("query", "filename", "colname", "err_reason") if kind == "provisioned" else (
            "query_id", "file_name", "column_name", "error_message")
        cur.execute(f"INSERT INTO {table} ({q}, {f}, line_number, {c}, {r}) VALUES "
                    "(41, 's3://b/old.json ', 1, 'ts', 'old'), (42, 's3://b/e.json  ', 7, 'ts  ', 'Invalid digit')")
        cur.execute(sql_queries.copy_errors_to_load_errors[kind], {"run_id": "R", "source": "log_data", "query_id": 42})
        assert cur.rowcount == 1
        cur.execute("SELECT source, file, line_no, reason FROM load_errors WHERE run_id = 'R'")
        assert cur.fetchall() == [("log_data", "s3://b/e.json", 7, "ts: Invalid digit")]
        cur.execute(sql_queries.load_error_queries[kind], {"query_ids": (42,)})
        assert cur.fetchall() == [("s3://b/e.json", 7, "ts", "Invalid digit")]
        conn.rollback()


def failing_events_copy(copy_ids):
    """run_redshift on a recording connection whose COPY staging_events fails; the UserError.
    copy_ids: what pg_last_copy_id() returns, in turn."""
    class Failing(db.RecordingCursor):
        def execute(self, sql, params=None):
            super().execute(sql, params)
            if sql.startswith("COPY staging_events"):
                raise psycopg2.DataError("Load into table 'staging_events' failed")
    ids = iter(copy_ids)
    first = [("s3://b/log_data/e.json", 3, "ts", "Invalid digit")]
    with db.dry_run({sql_queries.load_error_queries["provisioned"]: first,
                     sql_queries.last_copy_id: lambda p: [(next(ids),)]}):
        conn = db.connect(REDSHIFT)
        conn.cursor = lambda: Failing(conn)
        with pytest.raises(UserError) as failed:
            etl.run_redshift(REDSHIFT, conn)
    return str(failed.value).splitlines()


def test_a_failed_copy_names_its_own_errors(course_bucket):
    assert failing_events_copy([101, 102]) == [
        "COPY staging_events failed: Load into table 'staging_events' failed; no star table was changed",
        "  s3://b/log_data/e.json:3: ts: Invalid digit"]


def test_a_copy_that_failed_before_loading_names_no_other_copys_errors(course_bucket):
    """AWS: the id is not updated when COPY fails before loading (e.g. access denied)."""
    assert failing_events_copy([101, 101]) == [
        "COPY staging_events failed: Load into table 'staging_events' failed; no star table was changed"]


# --- Smaller Redshift rules ----------------------------------------------------------------------
def test_staging_tables_are_not_kept_in_snapshots():
    for table in sql_queries.STAGING_TABLES:
        assert sql_queries.TABLE[table].create("redshift").endswith(") BACKUP NO")
    for table in sql_queries.STAR_TABLES:
        assert "BACKUP" not in sql_queries.TABLE[table].create("redshift")


def written_tables(statement):
    parsed = sqlglot.parse_one(statement, read="redshift")
    if isinstance(parsed, (exp.Insert, exp.Update, exp.Delete, exp.Copy)):
        target = parsed.this.this if isinstance(parsed.this, exp.Schema) else parsed.this
        return {target.name}
    return set()


def test_the_load_locks_every_table_it_writes_before_writing(course_bucket):
    statements = load_statements(REDSHIFT)
    begin = statements.index("BEGIN", statements.index("ROLLBACK"))  # after the check that tables exist
    lock = statements[begin + 1]
    assert lock.startswith("LOCK ")
    locked = identifiers(lock)
    written = set().union(*(written_tables(s) for s in statements[begin + 2:]))
    # etl_runs is written on a connection of its own, while the load holds its lock
    assert {"staging_events", "staging_songs", "songplays", "load_errors"} <= written - {"etl_runs"} <= locked
    assert "etl_runs" in written and "etl_runs" not in locked


def test_scratch_tables_that_feed_songplays_and_time_share_their_distribution():
    feeding = {s.needs for s in sql_queries.apply_steps
               if s.table in ("songplays", "time") and s.action == "insert" and s.needs}
    assert feeding == {"new_plays", "new_times"}
    for table in sql_queries.SCRATCH_TABLES:
        [create] = [q.strip() for q in sql_queries.prepare_statements(table, "redshift") if "CREATE" in q]
        head = create.split(" AS", 1)[0]  # the CTAS syntax: attributes before AS query
        assert head == f"CREATE TEMP TABLE {table}" + (" DISTKEY(start_time)" if table in feeding else "")


def test_duplicate_checks_do_not_use_distinct_over_a_declared_key(warehouse):
    checks = [(c.name, q) for c, q in sql_queries.load_checks("redshift") if c.kind == "unique"]
    declared = {k.definition.split("(")[1].rstrip(")") for t in sql_queries.REGISTRY for k in t.keys_for("redshift")
                if t.role != "bookkeeping"}  # the run history's key: written by one run at a time
    for _, q in checks:
        parsed = sqlglot.parse_one(q, read="redshift")
        assert not list(parsed.find_all(exp.Distinct)) and parsed.find(exp.Having)
    grouped = {sqlglot.parse_one(q, read="redshift").find(exp.Group).sql().replace("x.", "") for _, q in checks}
    assert {f"GROUP BY {key}" for key in declared} - {"GROUP BY songplay_id"} <= grouped  # identity: unique
    # and they count duplicates on a real engine (keyless stand-ins shadow two tables)
    check = dict(checks)
    with db.connection(warehouse) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE users (LIKE public.users)")
        cur.execute("INSERT INTO users SELECT 1, 'A', 'B', 'F', 'free', now() FROM generate_series(1, 3)")
        cur.execute("CREATE TEMP TABLE time (LIKE public.time)")
        cur.execute("INSERT INTO time SELECT now(), 1, 1, 1, 1, 2018, 1 FROM generate_series(1, 2)")
        found = {}
        for name in ("duplicate users", "duplicate times"):
            cur.execute(check[name])
            found[name] = cur.fetchall()
        conn.rollback()
    # the duplicated key, and the rows that hold it
    assert {n: [(str(r[0]) if n == "duplicate users" else "t", r[1]) for r in rows] for n, rows in found.items()} == {
        "duplicate users": [("1", 3)], "duplicate times": [("t", 2)]}


# --- --dry-run ------------------------------------------------------------------------------------
def redshift_cfg(tmp_path):
    path = tmp_path / "dwh.cfg"
    path.write_text(f"[CLUSTER]\nHOST={HOST}\nDB_NAME=dwh\nDB_USER=dwhuser\nDB_PASSWORD=Passw0rdX\n"
                    f"[IAM_ROLE]\nARN={REDSHIFT.iam_role_arn}\n[AWS]\nREGION=us-west-2\n[S3]\n"
                    "LOG_DATA=s3://udacity-dend/log_data\nSONG_DATA=s3://udacity-dend/song_data\n"
                    "LOG_JSONPATH=s3://udacity-dend/log_json_path.json\n")
    path.chmod(0o600)
    return path


def script_statements(stdout):
    """The statements of a printed dry run: comment lines dropped, each statement up to its ';'."""
    body = "\n".join(line for line in stdout.splitlines() if not line.startswith("--"))
    assert body.rstrip().endswith(";")
    return [s.strip() for s in body.split(";\n") if s.strip()]


@pytest.mark.parametrize("script", ["create_tables.py", "etl.py"])
def test_dry_run_prints_every_redshift_statement_connecting_to_nothing(tmp_path, script, emulator, monkeypatch):
    _, env = emulated_course_bucket(emulator)  # etl.py lists the sources first, in a dry run too
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = run_script(script, "--config", str(redshift_cfg(tmp_path)), "--dry-run", timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"-- target: redshift dwhuser@{HOST}:5439/dwh"
    assert "Passw0rdX" not in out.stdout + out.stderr
    printed = [s.rstrip(";") for s in script_statements(out.stdout)]
    cfg = dataclasses.replace(REDSHIFT, max_errors=0)
    work = (lambda: create_tables.reset(cfg)) if script == "create_tables.py" else (lambda: etl.load(cfg, etl_args()))
    run_id = re.compile(r"'\d{8}T\d{6}\.\d{3}-\d+'|'[\d-]{10}T[\d:.]+'::timestamp")  # differ between the two runs
    assert [run_id.sub("ID", s) for s in printed] == [run_id.sub("ID", s.strip()) for s in recorded(work).statements()]


class TracingCursor(psycopg2.extensions.cursor):
    """What a real run sends: every statement with its parameters in place."""
    trace = []

    def execute(self, sql, params=None):
        TracingCursor.trace.append(self.mogrify(sql, params).decode())
        return super().execute(sql, params)

    def copy_expert(self, sql, file, size=8192):
        TracingCursor.trace.append(sql)
        return super().copy_expert(sql, file, size)


def normal(statements):
    """The statements but transaction control, and the run's etl_runs row (its times and counts differ)."""
    return collections.Counter(" ".join(s.split()) for s in statements
                               if s not in ("BEGIN", "COMMIT", "ROLLBACK") and "etl_runs" not in s)


def windows(sql):
    """The text inside each OVER (...) of a statement."""
    found, start = [], sql.find("OVER (")
    while start != -1:
        depth, i = 0, start + len("OVER ")
        while True:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
            if depth == 0:
                break
        found.append(sql[start:i])
        start = sql.find("OVER (", i)
    return found


def test_no_window_orders_by_a_string_literal():
    assert rules.WINDOW_ORDER_BY_TAKES_NO_STRING_LITERAL
    statements = sql_queries.transform_queries("redshift") + [q for _, q in sql_queries.load_checks("redshift")]
    over = [w for q in statements for w in windows(q)]
    assert over and not [w for w in over if "'" in w]


def test_a_dry_run_renders_paths_that_are_not_ascii(tmp_path):
    """The paths were quoted as Latin-1 with no connection: 'unexpected UnicodeDecodeError'."""
    folder = tmp_path / "ünï cödé"
    (folder / "log_data").mkdir(parents=True)
    first = sorted(SAMPLE_LOGS.rglob("*.json"))[0]
    (folder / "log_data" / "é.json").write_bytes(first.read_bytes())
    (folder / "dwh.cfg").write_text("[S3]\nLOG_DATA=log_data\n")
    out = run_script("etl.py", "--config", str(folder / "dwh.cfg"), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "é.json" in out.stdout


def test_postgres_dry_run_is_what_a_first_and_a_later_load_run(warehouse, monkeypatch):
    monkeypatch.setattr(etl, "new_run_id", lambda: "RUN")
    with db.dry_run() as recorder:
        etl.load(warehouse, etl_args())
    log_ = [entry for _, entries in recorder.connections for entry in entries]
    first_load_only = [log_[i + 1] for i, entry in enumerate(log_) if entry == "-- first load only:"]
    assert any(s.startswith("TRUNCATE songplays") for s in first_load_only)
    [later_only] = [log_[i + 1] for i, entry in enumerate(log_) if entry == "-- plays loaded before only:"]

    real_connect = psycopg2.connect
    monkeypatch.setattr(db.psycopg2, "connect", lambda *a, **kw: real_connect(
        *a, **kw, **({"cursor_factory": TracingCursor} if kw.get("application_name") == "sparkify" else {})))
    for later, dropped in ((False, [later_only]), (True, first_load_only)):
        TracingCursor.trace = []
        query(warehouse, "DELETE FROM etl_runs; SELECT 1")  # every run is RUN
        etl.run_etl(warehouse)
        assert normal(TracingCursor.trace) == normal(recorder.statements()) - normal(dropped), f"later={later}"
