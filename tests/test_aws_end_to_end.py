"""The scripts as a course user runs them, against a local AWS emulator (moto_server) reached
through AWS_ENDPOINT_URL: setup -> pause -> setup (resume) -> teardown, on a course-style
dwh.cfg (empty HOST=/ARN=, CRLF, BOM, quotes, inline comments), the file read after each step."""
import boto3

import config
from conftest import fill_course_bucket, run_script

COURSE = ('\ufeff[CLUSTER]\r\nHOST=\r\nDB_NAME="dwh" ; database\r\nDB_USER=\'dwhuser\'\r\n'
          'DB_PASSWORD=\'Passw0rdX\'\r\nDB_PORT=5439\r\n\r\n'
          '[IAM_ROLE]\r\nARN= # setup_cluster.py writes it\r\n\r\n'
          '[S3]\r\nLOG_DATA=\'s3://udacity-dend/log_data\'\r\nLOG_JSONPATH=\'s3://udacity-dend/log_json_path.json\'\r\n'
          'SONG_DATA=\'s3://udacity-dend/song_data\'\r\n\r\n'
          '[AWS]\r\nKEY=testing\r\nSECRET=testing\r\nREGION=us-west-2\r\n\r\n'
          '[DWH]\r\nDWH_CLUSTER_TYPE=multi-node\r\nDWH_NUM_NODES=2\r\nDWH_NODE_TYPE=ra3.large\r\n'
          'DWH_IAM_ROLE_NAME=dwhRole\r\nDWH_CLUSTER_IDENTIFIER=dwhCluster\r\nDWH_DB=dwh\r\nDWH_DB_USER=dwhuser\r\n'
          'DWH_PORT=5439\r\n')


def test_course_file_through_setup_pause_resume_teardown(emulator, tmp_path, monkeypatch):
    env = {"AWS_ENDPOINT_URL": emulator, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-west-2", "DWH_DB_PASSWORD": ""}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", region_name="us-west-2", endpoint_url=emulator)
    s3.create_bucket(Bucket="udacity-dend", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    fill_course_bucket(s3)  # etl.py lists the sources before it COPYs, in a dry run too
    redshift = boto3.client("redshift", region_name="us-west-2", endpoint_url=emulator)
    path = tmp_path / "dwh.cfg"
    path.write_bytes(COURSE.encode("utf-8"))
    path.chmod(0o600)

    def step(script, *args):
        out = run_script(script, "--config", str(path), "--poll-seconds", "0", *args, env=env)
        assert out.returncode == 0, out.stderr
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf") and b"\n" not in raw.replace(b"\r\n", b"")  # BOM and CRLF kept
        return config.load_config(str(path))

    cfg = step("setup_cluster.py")
    status = redshift.describe_clusters(ClusterIdentifier="dwhcluster")["Clusters"][0]
    assert (cfg.host, cfg.engine, cfg.data_region) == (status["Endpoint"]["Address"], "redshift", "us-west-2")
    assert cfg.iam_role_arn.endswith(":role/dwhRole") and (cfg.db_name, cfg.db_user, cfg.port) == ("dwh", "dwhuser", 5439)
    text = path.read_bytes().decode("utf-8-sig")
    assert f"HOST={cfg.host}\r\n" in text and f"ARN={cfg.iam_role_arn} # setup_cluster.py writes it\r\n" in text
    assert 'DB_NAME="dwh" ; database\r\n' in text

    # What would run on the cluster, read before paying for a load: no connection is made.
    for script, args in (("create_tables.py", ()), ("etl.py", ("--max-errors", "5"))):
        out = run_script(script, "--config", str(path), "--dry-run", *args, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == f"-- target: redshift dwhuser@{cfg.host}:5439/dwh"
        assert "Passw0rd" not in out.stdout
    assert "REGION 'us-west-2' MAXERROR 6 " in out.stdout
    assert "FORMAT AS JSON 's3://udacity-dend/log_json_path.json'" in out.stdout

    paused = step("teardown_cluster.py", "--pause")
    assert redshift.describe_clusters(ClusterIdentifier="dwhcluster")["Clusters"][0]["ClusterStatus"] == "paused"
    assert (paused.host, paused.iam_role_arn) == (cfg.host, cfg.iam_role_arn)

    resumed = step("setup_cluster.py")
    assert redshift.describe_clusters(ClusterIdentifier="dwhcluster")["Clusters"][0]["ClusterStatus"] == "available"
    assert (resumed.host, resumed.iam_role_arn) == (cfg.host, cfg.iam_role_arn)

    gone = step("teardown_cluster.py", "--yes")
    assert redshift.describe_clusters()["Clusters"] == []
    assert (gone.host, gone.iam_role_arn, gone.embedded) == ("", "", True)
    assert path.read_bytes().decode("utf-8-sig").count("HOST=") == 1
