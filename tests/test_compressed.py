""".json.gz sources, mixed with plain files under one folder. PostgreSQL: decompressed while
streamed, a block at a time; Redshift: GZIP applies to a whole COPY, so each kind has COPYs of
its own (a prefix COPY when a prefix holds one kind, else a manifest per kind under
[S3] MANIFEST_PREFIX)."""
import dataclasses
import gzip
import json
import os
import shutil
from datetime import date

import pytest

import db
import etl
import redshift_rules as rules
import setup_cluster
import sql_queries
import staging
from conftest import (SAMPLE_LOGS, SAMPLE_SONGS, counts, emulated_course_bucket, event, query, reset, run_script,
                      song, star, write_events, write_song)
from errors import UserError
from test_redshift_sql import REDSHIFT, redshift_cfg, script_statements


def gzip_every_other(folder):
    """Replace every other .json file under folder by its .json.gz; the gzipped paths."""
    done = []
    for i, path in enumerate(sorted(folder.rglob("*.json"))):
        if i % 2 == 0:
            gz = path.with_name(path.name + ".gz")
            gz.write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
            done.append(gz)
    return done


def test_the_sample_gzipped_and_plain_in_one_folder_loads_as_the_plain_sample(warehouse, make_cfg, tmp_path):
    etl.run_etl(warehouse)
    plain, plain_counts = star(warehouse), counts(warehouse)
    shutil.copytree(SAMPLE_SONGS, tmp_path / "songs")
    shutil.copytree(SAMPLE_LOGS, tmp_path / "logs")
    assert len(gzip_every_other(tmp_path / "songs")) == 36 and len(gzip_every_other(tmp_path / "logs")) == 15
    mixed = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", name="mixed.cfg")
    reset(mixed)
    result = etl.run_etl(mixed)
    assert {r.source: (r.files, r.rejected, r.skipped) for r in result.staged} == {
        "song_data": (71, 0, 0), "log_data": (30, 0, 0)}
    assert counts(mixed) == plain_counts
    assert star(mixed) == plain


def test_gzipped_sources_on_s3_load_on_postgresql(warehouse, make_cfg, course_bucket):
    s3 = course_bucket
    s3.put_object(Bucket="udacity-dend", Key="mixed/logs/a.json", Body=json.dumps(event(itemInSession=0)).encode())
    s3.put_object(Bucket="udacity-dend", Key="mixed/logs/b.json.gz",
                  Body=gzip.compress((json.dumps(event(itemInSession=1)) + "\n").encode()))
    s3.put_object(Bucket="udacity-dend", Key="mixed/songs/s.JSON.GZ", Body=gzip.compress(json.dumps(song()).encode()))
    cfg = make_cfg(songs="s3://udacity-dend/mixed/songs", logs="s3://udacity-dend/mixed/logs", name="s3.cfg")
    reset(cfg)
    etl.run_etl(cfg, s3=s3)
    assert query(cfg, "SELECT item_in_session, song_id FROM songplays ORDER BY 1") == [(0, "SO1"), (1, "SO1")]


def test_a_bad_record_in_a_gzipped_file_is_set_aside_with_its_own_line(make_cfg, tmp_path):
    lines = [json.dumps(event(itemInSession=i)) for i in range(5)]
    lines[2] = '{"broken": '
    path = tmp_path / "logs" / "2018-11-30-events.json.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    write_song(tmp_path / "songs" / "s.json.gz", gzip.compress(json.dumps(song()).encode()))
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", max_errors=1)
    reset(cfg)
    etl.run_etl(cfg)
    assert query(cfg, "SELECT file, line_no FROM load_errors") == [(str(path), 3)]
    assert query(cfg, "SELECT count(*) FROM songplays WHERE song_id = 'SO1'") == [(4,)]


def test_a_file_that_is_not_gzip_is_one_line_naming_it_and_nothing_changes(warehouse, make_cfg, tmp_path):
    write_events(tmp_path / "logs" / "a.json.gz", [event()])  # plain text under a .gz name
    write_song(tmp_path / "songs" / "s.json", song())
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs", name="bad.cfg")
    before = star(warehouse)
    out = run_script("etl.py", "--config", str(cfg.path))
    assert out.returncode == 1
    line = out.stderr.splitlines()[-1]
    assert line.startswith(f"etl.py: error: {tmp_path / 'logs' / 'a.json.gz'}: not a valid gzip file (")
    assert "unexpected" not in out.stderr and "Traceback" not in out.stderr
    assert star(warehouse) == before


def test_gzip_is_decompressed_a_block_at_a_time(make_cfg, tmp_path, monkeypatch):
    """A file larger than a block, compressed and not: never read, or decompressed, whole."""
    noise = os.urandom(3 << 20).hex()  # random text: gzip cannot shrink it much
    lines = [json.dumps(event(itemInSession=i, noise=noise[i * 8000:(i + 1) * 8000])) for i in range(700)]
    path = tmp_path / "logs" / "big.json.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    assert path.stat().st_size > 2 * staging.BLOCK
    write_song(tmp_path / "songs" / "s.json", song())
    reads, pieces = [], []
    real_open, real_read = staging._open_raw, staging.Gunzipped.read

    class Recording:
        def __init__(self, raw):
            self.raw = raw

        def read(self, size=-1):
            reads.append(size)
            return self.raw.read(size)

        def close(self):
            self.raw.close()
    monkeypatch.setattr(staging, "_open_raw", lambda f, s3: Recording(real_open(f, s3)))
    monkeypatch.setattr(staging.Gunzipped, "read", lambda self, size=-1: pieces.append(real_read(self, size)) or pieces[-1])
    cfg = make_cfg(songs=tmp_path / "songs", logs=tmp_path / "logs")
    reset(cfg)
    etl.run_etl(cfg)
    assert counts(cfg)["songplays"] == 700
    assert len(reads) > 2 and all(0 < size <= staging.BLOCK for size in reads)
    assert len(pieces) > 2 and max(len(p) for p in pieces) <= staging.BLOCK


# --- Redshift ------------------------------------------------------------------------------------
def gzip_objects(s3, prefix, every=1):
    """Replace every `every`-th object under prefix in the course bucket by its .gz; the new keys."""
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="udacity-dend", Prefix=prefix)["Contents"])
    done = []
    for key in keys[::every]:
        body = s3.get_object(Bucket="udacity-dend", Key=key)["Body"].read()
        s3.put_object(Bucket="udacity-dend", Key=key + ".gz", Body=gzip.compress(body))
        s3.delete_object(Bucket="udacity-dend", Key=key)
        done.append(key + ".gz")
    return done


def redshift_copies(cfg, days=None):
    with db.dry_run() as recorder:
        etl.run_redshift(cfg, db.connect(cfg), days=days)
    return [s for s in recorder.statements() if s.startswith("COPY ")]


def source_keys(s3):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="udacity-dend")["Contents"])


def test_redshift_a_prefix_of_gzipped_files_is_one_copy_with_gzip(course_bucket):
    gzip_objects(course_bucket, "song_data/")
    songs, events = redshift_copies(REDSHIFT)
    assert rules.copy_reads_gzip(songs) and not rules.copy_reads_gzip(events)
    assert "FROM 's3://udacity-dend/song_data/'\n" in songs and "MANIFEST" not in songs
    # a day whose one file is gzipped: its prefix COPY reads it, and GZIP with it
    gzip_objects(course_bucket, "log_data/2018/11/2018-11-05")
    _, day = redshift_copies(REDSHIFT, days=[date.fromisoformat("2018-11-05")])
    assert "FROM 's3://udacity-dend/log_data/2018/11/2018-11-05'\n" in day and rules.copy_reads_gzip(day)


def test_redshift_a_prefix_mixing_kinds_needs_a_manifest_folder(course_bucket):
    gz = gzip_objects(course_bucket, "log_data/", every=2)
    with pytest.raises(UserError) as refused:
        redshift_copies(REDSHIFT)
    assert str(refused.value) == (
        f"[S3] LOG_DATA: a Redshift COPY from s3://udacity-dend/log_data/ holds both .json and .json.gz files "
        f"(e.g. s3://udacity-dend/{gz[0]}), and GZIP applies to a whole COPY; set [S3] MANIFEST_PREFIX to an "
        "s3:// folder outside the sources, where etl.py writes a manifest of each kind")
    # why: the prefix COPY would read both kinds, under one GZIP or none
    keys = source_keys(course_bucket)
    read = rules.prefix_copy_reads("log_data/", keys)
    assert {k.endswith(".gz") for k in read} == {True, False}


def test_redshift_other_keys_under_a_prefix_need_a_manifest_folder_too(course_bucket):
    course_bucket.put_object(Bucket="udacity-dend", Key="log_data/2018/11/2018-11-05-events.json.bak", Body=b"x")
    with pytest.raises(UserError, match=r"^\[S3\] LOG_DATA: a Redshift COPY from s3://udacity-dend/log_data/2018/11/"
                                        r"2018-11-05 would also read s3://udacity-dend/log_data/2018/11/2018-11-05-"
                                        r"events\.json\.bak \(not a \.json or \.json\.gz file\); set \[S3\] MANIFEST_PREFIX"):
        redshift_copies(REDSHIFT, days=[date.fromisoformat("2018-11-05")])


def test_redshift_a_mixed_prefix_is_a_manifest_and_a_copy_per_kind(course_bucket, caplog, monkeypatch):
    caplog.set_level("INFO", logger="sparkify")
    s3 = course_bucket
    s3.create_bucket(Bucket="sparkify-work", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    gz = gzip_objects(s3, "log_data/", every=2)
    before = source_keys(s3)
    cfg = dataclasses.replace(REDSHIFT, manifest_prefix="s3://sparkify-work/manifests")
    with db.dry_run():  # a dry run writes no manifest, it says which it would
        etl.run_redshift(cfg, db.connect(cfg))
    assert "Contents" not in s3.list_objects_v2(Bucket="sparkify-work")
    assert sum("dry run: would write manifest s3://sparkify-work/manifests/" in m for m in caplog.messages) == 2
    # A run as on a cluster (the recording connection, not taken for a dry run), one error budget.
    monkeypatch.setattr(etl.db, "is_dry_run", lambda conn: False)
    with db.dry_run(sql_queries_answers(errors=2)) as recorder:
        result = etl.run_redshift(cfg, db.connect(cfg), max_errors=6)
    copies = [s for s in recorder.statements() if s.startswith("COPY ")]
    assert len(copies) == 3  # songs by prefix; plain and gzipped logs, each from its manifest
    songs, plain, gzipped = copies
    assert "MANIFEST" not in songs
    assert not rules.copy_reads_gzip(plain) and rules.copy_reads_gzip(gzipped)
    assert [" ".join(c.split()).split(" MAXERROR ")[1].split()[0] for c in copies] == ["7", "5", "3"]  # one budget
    written = {o["Key"]: json.loads(s3.get_object(Bucket="sparkify-work", Key=o["Key"])["Body"].read())
               for o in s3.list_objects_v2(Bucket="sparkify-work")["Contents"]}
    by_kind = {key.rsplit("-", 1)[1]: manifest for key, manifest in written.items()}
    assert set(by_kind) == {"plain.manifest", "gzip.manifest"}
    for copy, kind in ((plain, "plain.manifest"), (gzipped, "gzip.manifest")):
        [key] = [k for k in written if k.endswith(kind)]
        assert f"FROM 's3://sparkify-work/{key}'\n" in copy and " MANIFEST" in copy
    assert rules.manifest_copy_reads(by_kind["gzip.manifest"]) == [f"s3://udacity-dend/{k}" for k in gz]
    assert len(rules.manifest_copy_reads(by_kind["plain.manifest"])) == 15
    assert all(e["mandatory"] for m in written.values() for e in m["entries"])
    assert source_keys(s3) == before  # nothing written to the source bucket
    assert [r.rejected for r in result.staged] == [2, 4]


def sql_queries_answers(errors):
    """Recorder answers: each COPY leaves `errors` load-error rows."""
    return {q: [()] * errors for q in sql_queries.copy_errors_to_load_errors.values()}


def test_the_manifest_folder_must_be_outside_the_sources(make_cfg, tmp_path):
    with pytest.raises(UserError, match=r"\[S3\] MANIFEST_PREFIX must be outside the sources, not overlap "
                                        r"\[S3\] LOG_DATA"):
        make_cfg(logs="s3://udacity-dend/log_data", s3={"manifest_prefix": "s3://udacity-dend/log_data/manifests"})


def test_the_clusters_role_may_read_the_manifests(tmp_path):
    cfg = dataclasses.replace(REDSHIFT, manifest_prefix="s3://sparkify-work/manifests")
    policy = setup_cluster.s3_read_policy(cfg)
    reading = [s for s in policy["Statement"] if s["Action"] == "s3:GetObject"][0]["Resource"]
    assert "arn:aws:s3:::sparkify-work/manifests*" in reading
    assert "sparkify-work" not in json.dumps(setup_cluster.s3_read_policy(REDSHIFT))


def test_dry_run_on_redshift_shows_gzip(tmp_path, emulator, monkeypatch):
    s3, env = emulated_course_bucket(emulator)
    gzip_objects(s3, "song_data/")
    out = run_script("etl.py", "--config", str(redshift_cfg(tmp_path)), "--dry-run", timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    copies = [s for s in script_statements(out.stdout) if s.startswith("COPY ")]
    assert [rules.copy_reads_gzip(c) for c in copies] == [True, False]
    assert "FROM 's3://udacity-dend/song_data/'" in copies[0]
