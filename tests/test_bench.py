"""The benchmark's parts, for correctness only (timings live in `make bench`): the generator is
deterministic and its data loads to the counts it predicts; the parallel loader gives exactly
what a single connection gives, and the embedded server's own reading of the files exactly what
the COPY path gives; the memory sampler sees every process of the server."""
import collections
import dataclasses
import hashlib
import os

import pytest

import db
import etl
import generate
import run
import staging
from conftest import counts, query, reset, table
from sql_queries import LOADED_TABLES, STAGING_TABLES


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate.generate(tmp_path / "a", events=3000, songs=60, seed=7)
    b = generate.generate(tmp_path / "b", events=3000, songs=60, seed=7)
    generate.generate(tmp_path / "c", events=3000, songs=60, seed=8)
    assert a == b and digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_generated_data_has_the_course_shape(tmp_path):
    generate.generate(tmp_path, events=500, songs=20, seed=1, days=5)
    songs = sorted((tmp_path / "song_data").rglob("*.json"))
    logs = sorted((tmp_path / "log_data").rglob("*.json"))
    assert len(songs) == 20 and all(len(p.relative_to(tmp_path / "song_data").parts) == 4 for p in songs)
    assert [p.name for p in logs] == [f"2018-11-0{d}-events.json" for d in range(1, 6)]
    assert sum(len(p.read_bytes().splitlines()) for p in logs) == 500


def test_generated_data_loads_to_the_predicted_counts(make_cfg, tmp_path):
    manifest = generate.generate(tmp_path / "data", events=4000, songs=80, seed=3)
    cfg = make_cfg(songs=tmp_path / "data" / "song_data", logs=tmp_path / "data" / "log_data")
    reset(cfg)
    etl.run_etl(cfg)
    got = counts(cfg)
    got["matched"] = query(cfg, "SELECT COUNT(song_id) FROM songplays")[0][0]
    expected = manifest["expected"]
    assert {k: got[k] for k in expected} == expected
    assert 0 < expected["matched"] < expected["songplays"]
    assert query(cfg, "SELECT COUNT(*) FROM users WHERE level = 'paid'")[0][0] > 0


def test_parallel_load_equals_single_connection_load(make_cfg, tmp_path, monkeypatch):
    """Each source in chunks small enough that 5 connections share them (at the default 16 MB a
    chunk, this data was one chunk a source: both loads used one connection)."""
    generate.generate(tmp_path / "data", events=6000, songs=90, seed=5)
    base = make_cfg(songs=tmp_path / "data" / "song_data", logs=tmp_path / "data" / "log_data")
    monkeypatch.setattr(staging, "SERVER_CHUNK", 8 << 10)
    monkeypatch.setattr(staging, "SERVER_RANGE", 8 << 10)
    shards, load_shard = [], staging.load_shard

    def counted(cfg, source, *args):
        shards.append((cfg.workers, source))
        return load_shard(cfg, source, *args)
    monkeypatch.setattr(staging, "load_shard", counted)
    results = []
    for workers in (1, 5):
        cfg = dataclasses.replace(base, workers=workers)
        reset(cfg)
        etl.run_etl(cfg)
        results.append({t: table(cfg, t) for t in LOADED_TABLES + STAGING_TABLES})
    assert results[0] == results[1]
    used = collections.Counter(shards)
    assert used[1, "song_data"] == used[1, "log_data"] == 1
    assert used[5, "song_data"] > 1 and used[5, "log_data"] > 1


def loaded_tables(cfg):
    reset(cfg)
    etl.run_etl(cfg)
    return {t: table(cfg, t) for t in LOADED_TABLES + STAGING_TABLES}


@pytest.fixture
def copy_path_calls(monkeypatch):
    """Records the files each use of the COPY path was given."""
    calls, stream_files = [], staging.stream_files

    def recorded(cur, source, files, *args):
        calls.append([f.path for f in files])
        return stream_files(cur, source, files, *args)
    monkeypatch.setattr(staging, "stream_files", recorded)
    return calls


def test_server_side_read_equals_the_copy_path(make_cfg, tmp_path, monkeypatch, copy_path_calls):
    generate.generate(tmp_path / "data", events=6000, songs=90, seed=9)
    cfg = make_cfg(songs=tmp_path / "data" / "song_data", logs=tmp_path / "data" / "log_data")
    on_server = loaded_tables(cfg)
    assert copy_path_calls == []  # every file was read by the server
    monkeypatch.setattr(staging, "server_readable", lambda cfg, f, whole_files: False)
    assert loaded_tables(cfg) == on_server
    assert sum(map(len, copy_path_calls)) == 90 + len(list((tmp_path / "data" / "log_data").rglob("*.json")))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="as root, the embedded server runs as another user, who cannot read a 0600 file")
def test_a_file_the_server_may_not_read_takes_the_copy_path(make_cfg, tmp_path, copy_path_calls):
    generate.generate(tmp_path / "data", events=3000, songs=40, seed=4)
    cfg = make_cfg(songs=tmp_path / "data" / "song_data", logs=tmp_path / "data" / "log_data")
    expected = loaded_tables(cfg)
    private = sorted((tmp_path / "data" / "log_data").rglob("*.json"))[0]
    private.chmod(0o600)
    assert loaded_tables(cfg) == expected
    assert any(str(private) in call for call in copy_path_calls)


@pytest.mark.skipif(not os.path.exists("/proc"), reason="the bench reads processes' memory from /proc (Linux)")
def test_the_memory_sampler_finds_every_process_of_the_server(make_cfg):
    cfg = make_cfg()
    with db.connection(cfg) as conn:
        postmaster, *children = run.server_pids(cfg.data_dir)
        assert sorted(children) == sorted(run.scan_children(postmaster))
        assert conn.get_backend_pid() in children
