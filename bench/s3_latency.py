"""S3 song files on PostgreSQL, with network latency: files per second, one fetch at a time per
connection against several ahead (staging.S3_AHEAD).

    python bench/s3_latency.py [--files 2000] [--latency 0.03] [--workers 0]

A local emulator (moto, in process) answers at once, so each GetObject first sleeps --latency
seconds, as a request to S3 from a laptop would wait. Prints staging songs: files/s for each.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

import config  # noqa: E402
import etl  # noqa: E402
import staging  # noqa: E402

BUCKET = "sparkify-bench"


def fill(s3, files):
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    for i in range(files):
        s3.put_object(Bucket=BUCKET, Key=f"song_data/A/S{i:06d}.json", Body=json.dumps({
            "num_songs": 1, "artist_id": f"AR{i % 500:04d}", "artist_latitude": None, "artist_longitude": None,
            "artist_location": "", "artist_name": f"Artist {i % 500}", "song_id": f"SO{i:06d}",
            "title": f"Song {i}", "duration": 200.0 + i / 1000, "year": 2000}).encode())
    s3.put_object(Bucket=BUCKET, Key="log_data/2018-11-01-events.json", Body=json.dumps({
        "artist": "Artist 1", "auth": "Logged In", "firstName": "Ann", "gender": "F", "itemInSession": 0,
        "lastName": "Lee", "length": 200.001, "level": "free", "location": "Town", "method": "PUT",
        "page": "NextSong", "registration": 1.5e12, "sessionId": 1, "song": "Song 1", "status": 200,
        "ts": 1541105830796, "userAgent": "x", "userId": "1"}).encode())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--latency", type=float, default=0.03, help="seconds each GetObject waits first")
    p.add_argument("--workers", type=int, default=0, help="[ETL] WORKERS (default: two per core)")
    args = p.parse_args(argv)
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-west-2"}.items():
        os.environ[k] = v
    with tempfile.TemporaryDirectory() as tmp, mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        fill(s3, args.files)
        get_object = s3.get_object

        def with_latency(**kwargs):
            time.sleep(args.latency)
            return get_object(**kwargs)
        s3.get_object = with_latency
        cfg_path = Path(tmp) / "dwh.cfg"
        cfg_path.write_text(f"[LOCAL]\nDATA_DIR = {tmp}/pgdata\n[S3]\nSONG_DATA = s3://{BUCKET}/song_data\n"
                            f"LOG_DATA = s3://{BUCKET}/log_data\n[ETL]\nWORKERS = {args.workers}\n")
        subprocess.run([sys.executable, str(ROOT / "create_tables.py"), "--config", str(cfg_path)],
                       check=True, capture_output=True)
        cfg = config.load_config(str(cfg_path))
        for ahead in (1, staging.S3_AHEAD):
            staging.S3_AHEAD = ahead
            result = etl.run_etl(cfg, s3=s3)
            seconds = result.steps["staging songs"]
            print(f"{args.files} song files, {args.latency * 1000:.0f} ms per request, "
                  f"{staging.worker_count(cfg)} connections, {ahead} ahead each: "
                  f"{seconds:.1f} s, {args.files / seconds:,.0f} files/s", flush=True)


if __name__ == "__main__":
    main()
