"""Campaign storage on a real S3 endpoint (a moto server on 127.0.0.1) and on local disk.

``asiarch.storage`` puts every campaign file (memory, Tune, campaign.json, results,
report) at a local path or an ``s3://`` prefix. These tests use the real HTTP endpoint
through pyarrow, LanceDB and the CLI; the cluster test (test_job_submit.py) runs a whole
campaign on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asiarch.baselines import BaselineCache
from asiarch.campaign.state import CampaignPaths, CampaignRecord, find_campaign, read_state, resolve_campaign, set_latest
from asiarch.memory import Candidate, Memory
from asiarch.storage import ObjectPath, StorageError, StorageSettings, check_access, location, write_text_atomic
from asiarch.testing.demo import demo_embedder
from serve_harness import free_port

BIN = Path(sys.executable).parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "storage-test", "AWS_SECRET_ACCESS_KEY": "storage-test-secret",
               "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server with one bucket; yields its endpoint URL."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", endpoint.rsplit(":", 1)[1]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="y")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="asiarch-storage")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield endpoint
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def bucket(s3, monkeypatch, request):
    """A fresh prefix in the bucket, with credentials in this process's environment."""
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3}.items():  # as a user on a cluster sets them
        monkeypatch.setenv(key, value)
    return ObjectPath.parse(f"s3://asiarch-storage/{request.node.name[:40]}")


def test_object_paths_behave_like_the_paths_a_campaign_uses(bucket):
    assert not bucket.exists() and not (bucket / "LATEST").exists()
    write_text_atomic(bucket / "a" / "campaign.json", '{"x": 1}')
    (bucket / "a" / "tune" / "explore" / "t1" / "params.json").write_text("{}")
    (bucket / "a" / "tune" / "explore" / "t2" / "params.json").write_text("{}")
    assert (bucket / "a").is_dir() and (bucket / "a" / "campaign.json").is_file()
    assert json.loads((bucket / "a" / "campaign.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in (bucket / "a").iterdir()) == ["campaign.json", "tune"]
    assert sorted(p.parent.name for p in (bucket / "a" / "tune" / "explore").glob("*/params.json")) == ["t1", "t2"]
    assert (bucket / "a" / "tune").parent == bucket / "a" and str(bucket / "a").startswith("s3://asiarch-storage/")
    with pytest.raises(FileNotFoundError, match="no such object"):
        (bucket / "missing.json").read_text()
    with pytest.raises(ValueError, match="leaves"):
        bucket / ".." / ".." / "elsewhere"
    assert location(str(bucket)) == ObjectPath(bucket.bucket, bucket.key, bucket.settings.resolved())
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        location("gs://other/prefix")


def test_campaign_records_the_latest_marker_and_the_baseline_cache_live_on_s3(bucket):
    paths = CampaignPaths(bucket / "runs" / "c1")
    record = CampaignRecord(paths.state, {"name": "c1", "status": "running"})
    record.update(phase="explore")
    set_latest(bucket / "runs", "c1")
    assert read_state(paths.state)["phase"] == "explore"
    assert find_campaign(str(bucket / "runs")) == paths.root
    assert resolve_campaign(str(bucket / "runs")).root == paths.root
    from asiarch.config import load_scale

    cache = BaselineCache(bucket / "runs" / "baselines")
    scale = load_scale("cpu_tiny")
    assert cache.get("deltanet", scale, False) is None
    cache.put("deltanet", scale, False, {"eval_loss": 5.0})
    assert BaselineCache(str(bucket / "runs" / "baselines")).get("deltanet", scale, False) == {"eval_loss": 5.0}
    # MQAR's test secret lives with the cache on S3 too: every run under the directory draws the same test set
    assert BaselineCache(str(bucket / "runs" / "baselines")).mqar_secret() == cache.mqar_secret()


def test_the_memory_on_s3_is_written_once_and_read_back(bucket):
    embedder = demo_embedder()
    writer = Memory(bucket / "memory", embedder=embedder)
    writer.upsert_candidates(Candidate(id="c1", campaign="x", name="alpha", code="class M: pass", motivation="m"))
    reader = Memory(bucket / "memory", embedder=embedder, read_only=True)
    assert [c.name for c in reader.list_candidates()] == ["alpha"]
    assert (bucket / "memory" / "meta.lance").is_dir()  # LanceDB's tables are under the prefix


def test_check_access_fails_fast_with_one_line(bucket, s3, monkeypatch):
    check_access(bucket)  # reachable, credentials, bucket present
    with pytest.raises(StorageError, match="bucket 'nope' does not exist"):
        check_access(ObjectPath.parse("s3://nope/x", StorageSettings(endpoint=s3)))
    closed = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach s3://asiarch-storage/x at " + closed):
        check_access(ObjectPath.parse("s3://asiarch-storage/x", StorageSettings(endpoint=closed)))
    assert time.monotonic() - started < 60  # a bound against retrying for minutes, not a speed figure
    for key in CREDENTIALS:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", "/nonexistent")
    with pytest.raises(StorageError, match="no S3 credentials"):
        check_access(bucket)
    check_access(Path("/tmp"))  # local: nothing to check


@pytest.mark.parametrize("case", ["no credentials", "unreachable endpoint"])
def test_a_campaign_on_unusable_storage_stops_before_writing_anything(tmp_path, s3, case):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "ANTHROPIC_API_KEY"}
    env.update(HOME=str(tmp_path), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", ASIARCH_CACHE=str(tmp_path / "cache"))
    endpoint = s3
    if case == "unreachable endpoint":
        env.update(CREDENTIALS)
        endpoint = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([str(BIN / "asiarch"), "run", "llm=offline", "run.output_dir=s3://asiarch-storage/cli",
                           f"storage.endpoint={endpoint}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asiarch run: "), proc.stderr[-2000:]
    assert ("no S3 credentials" if case == "no credentials" else "cannot reach") in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no runs/, no cache: nothing was written
