"""Source files as they come: folders, hidden copies, line endings, pretty-printed songs, any
text, and S3 prefixes."""
import gzip
import json
import os
import subprocess
import sys
import threading

import boto3
import botocore.response
from botocore.exceptions import ResponseStreamingError
import pytest
from moto import mock_aws

import etl
import sql_queries
import staging
from errors import UserError
from conftest import (ROOT, SAMPLE_LOGS, SAMPLE_SONGS, counts, event, query, reset, run_script, song, star, table,
                      write_events, write_song)


def test_every_json_file_under_the_prefix_is_loaded_and_hidden_copies_are_not(make_cfg, tmp_path):
    logs = tmp_path / "log_data"
    write_events(logs / "2018" / "11" / "a.json", [event(itemInSession=0)])
    write_events(logs / "2018" / "12" / "deep" / "b.json", [event(itemInSession=1)])
    write_events(logs / "2018" / ".ipynb_checkpoints" / "a-checkpoint.json", [event(itemInSession=9)])
    write_events(logs / ".hidden.json", [event(itemInSession=8)])
    write_events(logs / "notes.txt", [event(itemInSession=7)])
    write_song(tmp_path / "song_data" / "A" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "song_data", logs=logs)
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT item_in_session FROM songplays ORDER BY 1") == [(0,), (1,)]


@pytest.mark.parametrize("newline,trailing", [("\n", True), ("\r\n", True), ("\n", False), ("\r\n", False)])
def test_line_endings_blank_lines_and_no_trailing_newline(make_cfg, tmp_path, newline, trailing):
    lines = [event(itemInSession=0), "", event(itemInSession=1), "   ", "", event(itemInSession=2)]
    write_events(tmp_path / "logs" / "e.json", lines, newline=newline, trailing=trailing)
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    result = etl.run_etl(cfg)
    assert counts(cfg)["staging_events"] == 3
    assert counts(cfg)["songplays"] == 3
    assert sum(r.rejected for r in result.staged) == 0


@pytest.mark.parametrize("trailing", [True, False])
def test_a_bad_record_of_a_crlf_file_is_set_aside_without_its_line_ending(make_cfg, tmp_path, trailing):
    """Its CR was kept in the record (and its byte count), and the reason was about it ("Character
    with value 0x0d must be escaped"), not the record."""
    truncated = json.dumps(event(itemInSession=1))[:40]
    write_events(tmp_path / "logs" / "e.json", [event(itemInSession=0), truncated, event(itemInSession=2), truncated],
                 newline="\r\n", trailing=trailing)
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", max_errors=5)
    reset(cfg)
    etl.run_etl(cfg)
    found = query(cfg, "SELECT line_no, reason, record, record_bytes FROM load_errors ORDER BY line_no")
    assert [(n, record, size) for n, _, record, size in found] == [(2, truncated, 40), (4, truncated, 40)]
    assert all(reason.startswith("invalid JSON: ") and "0x0d" not in reason for _, reason, _, _ in found)
    assert counts(cfg)["songplays"] == 2


def test_pretty_printed_song_file_spanning_many_lines(make_cfg, tmp_path):
    write_song(tmp_path / "songs" / "s.json", song(title="Multi\nLine? no: escaped"), indent=4)
    write_events(tmp_path / "logs" / "e.json", [event()])
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT song_id, title FROM songs") == [("SO1", "Multi\nLine? no: escaped")]


TRICKY = ['Beyoncé – “Halo” 日本語 🎵', 'He said "hi" \\ back\\slash', "tab\there", "it's", "\\N", "\\.",
          "a\\tb", "line\nbreak", "Zoë \u2028 sep"]


@pytest.mark.parametrize("text", TRICKY)
def test_any_text_arrives_unchanged(make_cfg, tmp_path, text):
    write_song(tmp_path / "songs" / "s.json", song(title=text, artist_name=text), indent=2)
    write_events(tmp_path / "logs" / "e.json",
                 [json.dumps(event(song=text, artist=text, location=text), ensure_ascii=False)])
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT location, song_id FROM songplays") == [(text, "SO1")]
    assert query(cfg, "SELECT title FROM songs") == [(text,)]
    assert query(cfg, "SELECT name FROM artists") == [(text,)]


def test_missing_source_directory_is_an_error_naming_it(make_cfg, tmp_path):
    cfg = make_cfg(songs=tmp_path / "nope")
    with pytest.raises(UserError, match=r"SONG_DATA: no such file or directory: .*nope"):
        etl.find_sources(cfg)


def test_source_with_no_json_files_is_an_error(make_cfg, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    cfg = make_cfg(logs=tmp_path / "empty")
    with pytest.raises(UserError, match=r"LOG_DATA: no \.json or \.json\.gz files under .*empty"):
        etl.find_sources(cfg)


def test_shards_split_files_evenly_and_keep_each_once():
    files = [staging.SourceFile(f"f{i}", size) for i, size in enumerate([50, 40, 30, 20, 10, 10])]
    parts = staging.shards(files, 2)
    assert sorted(f.path for p in parts for f in p) == sorted(f.path for f in files)
    assert sorted(sum(f.size for f in p) for p in parts) == [80, 80]


def test_when_one_source_fails_the_other_stops(warehouse, monkeypatch):
    """Songs and logs load at once: the first to fail stops the other, which commits nothing
    (before, the logs went on loading, and committed, after the songs had failed). The failing
    one only raises, as staging.load_source does when it fails before it can stop anything
    (listing a file's ranges): the run itself stops the other."""
    stopped = threading.Event()

    def load_source(cfg, source, files, run_id, s3=None, workers=None, cancel=None):
        if source == "song_data":
            raise UserError("a bad song file")
        if cancel is not None and cancel.wait(10):
            stopped.set()
            raise KeyboardInterrupt  # the other's stop, seen first: the failure is what is said
        return staging.StagingResult(source, files=len(files))
    monkeypatch.setattr(staging, "load_source", load_source)
    with pytest.raises(UserError, match="^a bad song file$"):
        etl.run_etl(warehouse)
    assert stopped.is_set()


def test_connections_per_source_stay_within_a_server_s_100_by_default(make_cfg, monkeypatch):
    """Both sources load at once, each over worker_count connections: two per core, at most
    MAX_DEFAULT_WORKERS (on 64 cores, 2 x 128 connections failed at the server's 100)."""
    cfg = make_cfg()
    for cores, expected in ((2, 4), (64, staging.MAX_DEFAULT_WORKERS)):
        monkeypatch.setattr(staging.os, "cpu_count", lambda: cores)
        assert staging.worker_count(cfg) == expected
    [(server_max,)] = query(cfg, "SELECT current_setting('max_connections')::int")
    others = len(sql_queries.SCRATCH_TABLES) + 6  # prepare, star, checks, history, lock, progress
    assert 2 * staging.MAX_DEFAULT_WORKERS + others <= server_max


@pytest.mark.parametrize("newline,trailing", [("\n", True), ("\r\n", False)])
def test_a_large_log_file_is_cut_into_ranges_at_line_starts(tmp_path, monkeypatch, newline, trailing):
    """Every byte in exactly one range, each range starting a line, however long the line
    (longer than the probe that looks for its end)."""
    monkeypatch.setattr(staging, "NEWLINE_PROBE", 7)
    lines = [event(itemInSession=i, song="x" * (i * 37 % 500)) for i in range(200)]
    path = write_events(tmp_path / "big.json", lines, newline=newline, trailing=trailing)
    data = path.read_bytes()
    ranges = staging.server_ranges(staging.SourceFile(str(path), len(data)), size=1000)
    assert len(ranges) > 10
    assert b"".join(data[r.start:r.start + r.size] for r in ranges) == data
    assert all(r.start == 0 or data[r.start - 1:r.start] == b"\n" for r in ranges)
    assert [r.whole for r in ranges] == [len(data)] * len(ranges) and ranges[-1].ends_file
    assert not any(r.ends_file for r in ranges[:-1])
    small = staging.SourceFile(str(path), len(data))
    assert staging.server_ranges(small, size=len(data)) == [small]  # a file no larger is read whole


def test_a_bad_record_in_the_third_range_keeps_its_line_and_only_that_range_is_streamed(
        make_cfg, tmp_path, monkeypatch):
    """The server reads a large log file in ranges; a range it refuses takes the COPY path
    alone, and its bad record is set aside with its line in the file, not in the range."""
    monkeypatch.setattr(staging, "SERVER_RANGE", 4096)   # a range per statement, as at full size
    monkeypatch.setattr(staging, "SERVER_CHUNK", 4096)
    lines = [event(itemInSession=i) for i in range(100)]
    path = write_events(tmp_path / "logs" / "day.json", lines)
    data = path.read_bytes()
    ranges = staging.server_ranges(staging.SourceFile(str(path), len(data)))
    third = ranges[2]
    line = data[:third.start + third.size // 2].count(b"\n") + 1   # a line inside the third range
    raw = data.split(b"\n")
    raw[line - 1] = b"{" + b"x" * (len(raw[line - 1]) - 1)          # as long, so the ranges stay
    path.write_bytes(b"\n".join(raw))
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", max_errors=1)
    reset(cfg)
    streamed = []
    stream_files = staging.stream_files
    monkeypatch.setattr(staging, "stream_files", lambda cur, source, files, *a: (
        streamed.extend(files), stream_files(cur, source, files, *a))[1])
    result = etl.run_etl(cfg)
    assert streamed == [third]
    assert query(cfg, "SELECT file, line_no, left(reason, 12) FROM load_errors") == [(str(path), line, "invalid JSON")]
    assert query(cfg, "SELECT count(DISTINCT item_in_session) FROM staging_events") == [(99,)]
    assert [(r.loaded, r.rejected) for r in result.staged if r.source == "log_data"] == [(99, 1)]


# --- S3 sources on PostgreSQL (moto's S3) ----------------------------------------------------
@pytest.fixture
def bucket(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-west-2"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket="sparkify-test", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield s3


def upload_tree(s3, local_root, prefix):
    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), "sparkify-test", f"{prefix}/{path.relative_to(local_root).as_posix()}")


def test_s3_prefix_loads_the_same_tables_as_the_local_copy(warehouse, bucket, make_cfg, tmp_path):
    etl.run_etl(warehouse)
    local = star(warehouse)
    upload_tree(bucket, SAMPLE_SONGS, "song_data")
    upload_tree(bucket, SAMPLE_LOGS, "log_data")
    bucket.put_object(Bucket="sparkify-test", Key="log_data/.ipynb_checkpoints/x-checkpoint.json",
                      Body=json.dumps(event(itemInSession=999)).encode())
    cfg = make_cfg(songs="s3://sparkify-test/song_data", logs="s3://sparkify-test/log_data", name="s3.cfg")
    reset(cfg)
    result = etl.run_etl(cfg, s3=bucket)
    assert [r.files for r in result.staged] == [71, 30]
    assert {t: table(cfg, t) for t in local} == local


def test_small_s3_objects_are_fetched_ahead_several_at_a_time(bucket, make_cfg, monkeypatch):
    """Song files on S3 wait on the network's round trip, so one connection fetches several at
    once: each song fetch here waits for a second one to be in flight (one at a time, the first
    would wait alone until the barrier breaks, and the load fails)."""
    for i in range(6):
        bucket.put_object(Bucket="sparkify-test", Key=f"song_data/s{i}.json",
                          Body=json.dumps(song(song_id=f"SO{i}")).encode())
    bucket.put_object(Bucket="sparkify-test", Key="log_data/e.json", Body=json.dumps(event()).encode())
    in_pairs, get_object = threading.Barrier(2, timeout=20), bucket.get_object

    def get_song_with_another(**kwargs):
        if kwargs["Key"].startswith("song_data/"):
            in_pairs.wait()
        return get_object(**kwargs)
    monkeypatch.setattr(bucket, "get_object", get_song_with_another)
    cfg = make_cfg(songs="s3://sparkify-test/song_data", logs="s3://sparkify-test/log_data", workers=1)
    reset(cfg)
    etl.run_etl(cfg, s3=bucket)
    assert query(cfg, "SELECT song_id FROM staging_songs ORDER BY 1") == [(f"SO{i}",) for i in range(6)]


def test_s3_missing_bucket_is_reported_with_the_uri(bucket, make_cfg):
    cfg = make_cfg(logs="s3://no-such-bucket-here/log_data")
    with pytest.raises(UserError, match=r"cannot list s3://no-such-bucket-here/log_data: no such bucket"):
        etl.find_sources(cfg, s3=bucket)


def test_s3_empty_prefix_is_an_error(bucket, make_cfg):
    cfg = make_cfg(logs="s3://sparkify-test/nothing-here")
    with pytest.raises(UserError, match=r"no \.json or \.json\.gz files under s3://sparkify-test/nothing-here"):
        etl.find_sources(cfg, s3=bucket)


# --- Folders as they come: links, case, several records per song file, unreadable files ------
def test_linked_folders_and_files_are_followed_once_and_json_matched_in_any_case(make_cfg, tmp_path):
    real = tmp_path / "elsewhere"
    write_events(real / "a.json", [event(itemInSession=0)])
    write_events(tmp_path / "other" / "b.JSON", [event(itemInSession=1)])
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "november").symlink_to(real)                       # a linked folder
    (logs / "b.JSON").symlink_to(tmp_path / "other" / "b.JSON")  # a linked file, upper case
    (logs / "again").symlink_to(real)                          # the same folder a second way
    (real / "loop").symlink_to(logs)                           # a cycle
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=logs)
    reset(cfg)
    result = etl.run_etl(cfg)
    assert query(cfg, "SELECT item_in_session FROM songplays ORDER BY 1") == [(0,), (1,)]
    assert [r.files for r in result.staged] == [1, 2]


def linked_tree(tmp_path):
    """Log files reached through a linked folder, a linked file, the same folder twice, and a cycle."""
    real = tmp_path / "elsewhere"
    write_events(real / "a.json", [event(itemInSession=0)])
    write_events(tmp_path / "sub" / "c.json", [event(itemInSession=2)])
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "november").symlink_to(real)
    (logs / "again").symlink_to(real)
    (logs / "sub").symlink_to(tmp_path / "sub")
    (real / "loop").symlink_to(logs)
    return logs


def test_a_file_system_without_inode_numbers_still_finds_each_file_once(tmp_path, monkeypatch):
    """Where os.stat gives no inode (0: some network shares on Windows), every folder had the
    root's identity: each was skipped as a link back up, and its files were not loaded."""
    logs = linked_tree(tmp_path)
    expected = sorted(os.path.realpath(f.path) for f in staging.discover_local(str(logs), "log files").files)
    real_stat = os.stat

    def no_inode(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        return os.stat_result((st.st_mode, 0, st.st_dev) + tuple(st)[3:])
    monkeypatch.setattr(os, "stat", no_inode)
    found = sorted(os.path.realpath(f.path) for f in staging.discover_local(str(logs), "log files").files)
    assert len(expected) == 2 and found == expected


def test_two_files_whose_inodes_differ_past_64_bits_are_two_files():
    """Windows gives 128-bit file ids on ReFS (os.stat, Python 3.12+): dev << 64 | ino made
    (device 1, id 5) and (device 0, id 2**64 + 5) one file, and the second was skipped."""
    def stat(dev, ino):
        return os.stat_result((0o100644, ino, dev, 1, 0, 0, 10, 0, 0, 0))
    assert staging._identity(stat(1, 5), "a.json") != staging._identity(stat(0, (1 << 64) | 5), "b.json")


def test_a_broken_link_is_one_line_naming_it_and_staging_stays_as_it_was(warehouse, make_cfg, tmp_path):
    etl.run_etl(warehouse)
    write_events(tmp_path / "logs" / "a.json", [event()])
    (tmp_path / "logs" / "gone.json").symlink_to(tmp_path / "nowhere.json")
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    out = run_script("etl.py", "--config", str(cfg.path))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"etl.py: error: [S3] LOG_DATA: broken symbolic link: {tmp_path / 'logs' / 'gone.json'} -> "
        f"{tmp_path / 'nowhere.json'}")
    assert counts(cfg)["staging_events"] == 8056  # the sample's, still there


def test_an_unreadable_file_is_found_while_the_folder_is_listed(make_cfg, tmp_path):
    """Listing the sources (which comes before staging is emptied) opens every file: one the
    user may not read stops the run there, named. As root the listing runs without the
    capability that overrides file modes (the embedded server cannot run so: only the listing)."""
    write_events(tmp_path / "logs" / "a.json", [event()])
    secret = write_events(tmp_path / "logs" / "b.json", [event(itemInSession=1)])
    secret.chmod(0o000)
    cfg = make_cfg(logs=tmp_path / "logs")
    listing = [sys.executable, "-c", f"import etl, config; etl.find_sources(config.load_config({str(cfg.path)!r}))"]
    if os.geteuid() == 0:
        listing = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", subprocess.list2cmdline(listing)]
    out = subprocess.run(listing, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"errors.UserError: [S3] LOG_DATA: cannot read {secret}: Permission denied")


def test_a_song_file_of_several_records_gives_a_row_each_and_bad_ones_by_line(make_cfg, tmp_path):
    """As Redshift's COPY reads JSON: a file is a set of objects, one a line, or concatenated,
    or each spread over lines (source: "COPY from JSON format", Amazon Redshift Database
    Developer Guide, https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-json.html)."""
    songs = tmp_path / "songs"
    write_song(songs / "lines.json", "\n".join(json.dumps(song(song_id=f"SL{i}")) for i in range(3)).encode())
    write_song(songs / "glued.json", (json.dumps(song(song_id="SG1")) + json.dumps(song(song_id="SG2"))).encode())
    write_song(songs / "spread.json", (json.dumps(song(song_id="SP1"), indent=2) + "\n"
                                       + json.dumps(song(song_id="SP2"), indent=2)).encode())
    bad = write_song(songs / "mixed.json", (json.dumps(song(song_id="SM1")) + "\n"
                                            + json.dumps(song(song_id="SM2", year="x")) + "\n\n"
                                            + json.dumps(song(song_id="SM3")) + "\n{oops\n").encode())
    write_events(tmp_path / "logs" / "e.json", [event()])
    cfg = make_cfg(songs=songs, logs=tmp_path / "logs", max_errors=2)
    reset(cfg)
    etl.run_etl(cfg)
    assert [r[0] for r in query(cfg, "SELECT song_id FROM staging_songs ORDER BY 1")] == [
        "SG1", "SG2", "SL0", "SL1", "SL2", "SM1", "SM3", "SP1", "SP2"]
    assert query(cfg, "SELECT file, line_no, left(reason, 13) FROM load_errors ORDER BY 2") == [
        (str(bad), 2, 'field "year":'), (str(bad), 5, "invalid JSON:")]


def test_records_glued_on_one_line_leave_the_next_files_lines_right(make_cfg, tmp_path):
    """Four records on one line were counted as one row: every later file's rows were read as
    lines three further down (a bad record at line 2 was reported at line 5)."""
    songs = tmp_path / "songs"
    glued = "".join(json.dumps(song(song_id=f"SG{i}", title="x" * 200)) for i in range(4))
    (songs).mkdir()
    (songs / "a.json.gz").write_bytes(gzip.compress(glued.encode()))
    bad = songs / "b.json.gz"
    bad.write_bytes(gzip.compress((json.dumps(song(song_id="SB1")) + "\n" + json.dumps(song(song_id="SB2", year="x"))).encode()))
    write_events(tmp_path / "logs" / "e.json", [event()])
    cfg = make_cfg(songs=songs, logs=tmp_path / "logs", max_errors=1, workers=1)
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT file, line_no FROM load_errors") == [(str(bad), 2)]
    assert len(table(cfg, "staging_songs")) == 5


@pytest.mark.parametrize("bad_bytes", [b"\xe9", b"\x00"], ids=["latin-1", "NUL"])
def test_a_byte_that_is_not_text_sets_aside_its_record_not_the_songs_around_it(make_cfg, tmp_path, bad_bytes):
    """One such byte in a song file of several records set the whole file aside, counted as one
    record at line 1: the good songs beside it were never loaded."""
    songs = tmp_path / "songs"
    bad = write_song(songs / "three.json", (json.dumps(song(song_id="S1")) + "\n"
                                            + json.dumps(song(song_id="S2", title="Caf_")).replace("_", "{}") + "\n"
                                            + json.dumps(song(song_id="S3"))).encode().replace(b"{}", bad_bytes))
    write_events(tmp_path / "logs" / "e.json", [event()])
    cfg = make_cfg(songs=songs, logs=tmp_path / "logs", max_errors=1)
    reset(cfg)
    staged = {r.source: (r.loaded, r.rejected) for r in etl.run_etl(cfg).staged}
    assert query(cfg, "SELECT song_id FROM staging_songs ORDER BY 1") == [("S1",), ("S3",)]
    assert query(cfg, "SELECT file, line_no FROM load_errors") == [(str(bad), 2)]
    assert staged["song_data"] == (2, 1)


def one_line_error(cfg):
    """etl.py's exit code and its error, which must be one line (after the progress lines)."""
    out = run_script("etl.py", "--config", str(cfg.path), timeout=60)
    lines = out.stderr.splitlines(keepends=True)
    errors = [i for i, line in enumerate(lines) if line.startswith("etl.py: error: ")]
    assert errors and errors[0] == len(lines) - 1, out.stderr
    return out.returncode, lines[-1]


def test_a_file_name_that_is_not_utf8_is_one_line_naming_it(make_cfg, tmp_path):
    """It was 'cannot write '\\udce9' in utf-8: set PYTHONIOENCODING=utf-8', which did not help."""
    logs = tmp_path / "logs"
    write_events(logs / "ok.json", [event()])
    os.rename(logs / "ok.json", os.fsencode(logs) + b"/caf\xe9.json")
    cfg = make_cfg(logs=logs)
    reset(cfg)
    assert one_line_error(cfg) == (1, f"etl.py: error: [S3] LOG_DATA: {logs}/caf\\xe9.json: a name in this path is not UTF-8, "
                                      "and the warehouse records each file by its path: rename it\n")


@pytest.mark.parametrize("given", ["folder", "itself"])
def test_a_fifo_named_json_is_one_line_not_a_wait_for_ever(make_cfg, tmp_path, given):
    """In a folder, listing it waited for ever; as LOG_DATA itself it was 'no such file'."""
    logs = tmp_path / "logs"
    write_events(logs / "ok.json", [event()])
    os.mkfifo(logs / "pipe.json")
    cfg = make_cfg(logs=logs if given == "folder" else logs / "pipe.json")
    reset(cfg)
    assert one_line_error(cfg) == (1, f"etl.py: error: [S3] LOG_DATA: {logs}/pipe.json is not a regular file\n")


@pytest.mark.parametrize("whose", ["log_data", "song_data"])
def test_a_gzipped_file_not_named_gz_is_one_line_naming_it(make_cfg, tmp_path, whose):
    """Its bytes were set aside as bad records ('NUL byte', 'invalid UTF-8'), never saying why."""
    logs, songs = tmp_path / "logs", tmp_path / "songs"
    write_events(logs / "e.json", [event()])
    write_song(songs / "s.json", song())
    path = logs / "e.json" if whose == "log_data" else songs / "s.json"
    path.write_bytes(gzip.compress(path.read_bytes()))
    cfg = make_cfg(songs=songs, logs=logs, max_errors=100)
    reset(cfg)
    assert one_line_error(cfg) == (1, f"etl.py: error: {path}: gzip-compressed, but its name does not end in .gz: "
                                      f"rename it {path.name}.gz; no star table was changed\n")


def test_a_utf16_file_is_one_line_naming_it(make_cfg, tmp_path):
    logs = tmp_path / "logs"
    path = write_events(logs / "e.json", [event()])
    path.write_bytes(path.read_text().encode("utf-16"))
    cfg = make_cfg(logs=logs, max_errors=100)
    reset(cfg)
    assert one_line_error(cfg) == (1, f"etl.py: error: {path}: UTF-16 (or UTF-32) text, by its byte-order "
                                      "mark: save it as UTF-8; no star table was changed\n")


def test_a_bad_record_in_a_file_whose_path_is_longer_than_1024_is_kept_with_it(make_cfg, tmp_path):
    """load_errors.file held 1,024 characters: 'unexpected StringDataRightTruncation'."""
    deep = tmp_path / "logs" / "/".join(["d" * 200] * 6)
    path = write_events(deep / "e.json", [event(), b"not json"])
    cfg = make_cfg(logs=tmp_path / "logs", max_errors=1)
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT file, line_no FROM load_errors") == [(str(path), 2)]


def test_an_s3_object_that_breaks_off_while_read_is_named(bucket, make_cfg, monkeypatch):
    """The COPY said only 'QueryCanceled: COPY from stdin failed: error in .read() call'."""
    bucket.put_object(Bucket="sparkify-test", Key="log_data/e.json", Body=json.dumps(event()).encode())
    bucket.put_object(Bucket="sparkify-test", Key="song_data/s.json", Body=json.dumps(song()).encode())

    def broken(self, amt=None):
        raise ResponseStreamingError(error="Connection broken: IncompleteRead")
    monkeypatch.setattr(botocore.response.StreamingBody, "read", broken)
    cfg = make_cfg(songs="s3://sparkify-test/song_data", logs="s3://sparkify-test/log_data")
    reset(cfg)
    with pytest.raises(UserError, match=r"^s3://sparkify-test/(log|song)_data/(e|s)\.json: reading it from S3 "
                                         r"failed \(.*IncompleteRead\); no star table was changed$"):
        etl.run_etl(cfg, s3=bucket)


# --- S3 locations are folders; any key; anonymous access --------------------------------------
# ListObjectsV2's Prefix is a plain string prefix ("Limits the response to keys that begin with
# the specified prefix", ListObjectsV2, Amazon S3 API Reference,
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html): "log_data" also
# matches "log_data_old/...". Object keys are any UTF-8 ("Naming Amazon S3 objects",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html).
SIBLINGS = {"log_data/a.json": event(itemInSession=0), "log_data_old/b.json": event(itemInSession=1),
            "log_data.json": event(itemInSession=2)}


@pytest.mark.parametrize("location", ["s3://sparkify-test/log_data", "s3://sparkify-test/log_data/"])
def test_an_s3_location_is_a_folder_with_or_without_the_slash(bucket, make_cfg, location):
    for key, record in SIBLINGS.items():
        bucket.put_object(Bucket="sparkify-test", Key=key, Body=json.dumps(record).encode())
    cfg = make_cfg(logs=location)
    found, _ = etl.find_sources(cfg, s3=bucket)
    assert [f.path for f in found["log_data"].files] == ["s3://sparkify-test/log_data/a.json"]


def test_an_s3_key_in_any_language_and_case(bucket, make_cfg):
    bucket.put_object(Bucket="sparkify-test", Key="données/日本/a.JSON", Body=json.dumps(event()).encode())
    cfg = make_cfg(logs="s3://sparkify-test/données/日本")
    found, _ = etl.find_sources(cfg, s3=bucket)
    assert [f.path for f in found["log_data"].files] == ["s3://sparkify-test/données/日本/a.JSON"]


def no_credentials(monkeypatch, tmp_path):
    """No AWS credentials anywhere boto3 looks (environment, files, instance metadata)."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def signed_requests(s3):
    """Whether each request the client sends carries a signature (an Authorization header)."""
    seen = []
    s3.meta.events.register("before-send.s3.*", lambda request, **kw: seen.append("Authorization" in request.headers))
    return seen


# An anonymous request is one without a signature; S3 serves it only what is public ("Create
# anonymous clients", AWS SDK for PHP Developer Guide,
# https://docs.aws.amazon.com/sdk-for-php/v3/developer-guide/guide_credentials_anonymous.html;
# boto3: Config(signature_version=botocore.UNSIGNED)).
@pytest.mark.parametrize("setting,credentials,signed,message", [
    ("ANONYMOUS = true", True, False, "reading S3 anonymously ([AWS] ANONYMOUS = true)"),
    ("", False, False, "no AWS credentials found: reading S3 anonymously"),
    ("", True, True, None),
])
def test_anonymous_s3_access_when_asked_or_without_credentials(bucket, make_cfg, monkeypatch, tmp_path, caplog,
                                                                setting, credentials, signed, message):
    if not credentials:
        no_credentials(monkeypatch, tmp_path)
    bucket.put_object(Bucket="sparkify-test", Key="log_data/a.json", Body=json.dumps(event()).encode())
    cfg = make_cfg(logs="s3://sparkify-test/log_data", text=f"[AWS]\nREGION = us-west-2\n{setting}\n")
    caplog.set_level("INFO", logger="sparkify")
    s3 = staging.s3_client(cfg)
    seen = signed_requests(s3)
    found, _ = etl.find_sources(cfg, s3=s3)
    assert len(found["log_data"].files) == 1
    assert seen and set(seen) == {signed}
    assert (message in caplog.text) if message else "anonymously" not in caplog.text


def test_missing_credentials_say_how_to_provide_them(make_cfg, monkeypatch, tmp_path):
    """botocore refuses to send an unsigned request it was asked to sign: no request is made."""
    no_credentials(monkeypatch, tmp_path)
    cfg = make_cfg(logs="s3://sparkify-test/log_data", text="[AWS]\nREGION = us-west-2\nANONYMOUS = false\n")
    with pytest.raises(UserError, match=r"^\[S3\] LOG_DATA: cannot list s3://sparkify-test/log_data: no AWS "
                                        r"credentials found; set \[AWS\] KEY and SECRET in the configuration file, "
                                        r"or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or an "
                                        r"AWS profile \(aws configure\), or \[AWS\] ANONYMOUS = true for a public bucket$"):
        etl.find_sources(cfg)
