"""Source files as they come: folders, hidden copies, line endings, pretty-printed songs, any
text, and S3 prefixes."""
import json

import boto3
import pytest
from moto import mock_aws

import etl
import staging
from errors import UserError
from conftest import SAMPLE_LOGS, SAMPLE_SONGS, counts, event, query, reset, song, star, table, write_events, write_song


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
    with pytest.raises(UserError, match=r"LOG_DATA: no \.json files under .*empty"):
        etl.find_sources(cfg)


def test_shards_split_files_evenly_and_keep_each_once():
    files = [staging.SourceFile(f"f{i}", size) for i, size in enumerate([50, 40, 30, 20, 10, 10])]
    parts = staging.shards(files, 2)
    assert sorted(f.path for p in parts for f in p) == sorted(f.path for f in files)
    assert sorted(sum(f.size for f in p) for p in parts) == [80, 80]


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


def test_s3_missing_bucket_is_reported_with_the_uri(bucket, make_cfg):
    cfg = make_cfg(logs="s3://no-such-bucket-here/log_data")
    with pytest.raises(UserError, match=r"cannot list s3://no-such-bucket-here/log_data: no such bucket"):
        etl.find_sources(cfg, s3=bucket)


def test_s3_empty_prefix_is_an_error(bucket, make_cfg):
    cfg = make_cfg(logs="s3://sparkify-test/nothing-here")
    with pytest.raises(UserError, match=r"no \.json files under s3://sparkify-test/nothing-here"):
        etl.find_sources(cfg, s3=bucket)
