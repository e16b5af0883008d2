"""A campaign on a real two-node Ray cluster, with its memory and storage on a real S3 endpoint.

A head and a worker are started with `ray start` (each with its own temp dir, token
authentication); only the worker advertises the `trial_host` resource every trial
requires, so trials MUST run there while the driver, memory writer and agents stay on the
head. A moto server is the S3-compatible endpoint on 127.0.0.1. The campaign is submitted
through `examples/submit_job.py` (the Jobs API) with `run.output_dir=s3://...`:

1. first with a local output directory: refused before any trial starts, with what to set;
2. then on S3; once a candidate has finished explore and another is training, the worker
   node is killed (every process of it) and started again: the campaign finishes in the
   same job, the interrupted trials continue from their checkpoints in S3, and no candidate is
   lost or trained twice (a trial Tune gave up on continues in a new trial from its last
   checkpoint); `asiarch status` and `asiarch report` read the campaign by URI.

While the campaign trains (the machine saturated by real training: two trials and the
seed run on its 2 cores), `asiarch serve --dir s3://...` is started as a user would, on its
own local Ray: it must come up (Serve's default 5 s proxy check fails under such load) or
exit with its one-line message and code 1, never a traceback; once up it serves the S3
campaign, and one SIGINT stops it promptly and cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from asiarch.memory import Memory
from asiarch.storage import ObjectPath, StorageSettings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
BUCKET = "asiarch-cluster"
TINY = [
    "scale.train.eval_batches=1", "scale.corpus.max_documents=80", "scale.corpus.tokenizer_vocab_size=512",
    "scale.model.num_layers=1", "scale.train.batch_size=8", "scale.train.mqar_batch_size=8",
    "scale.mqar.num_train=500", "scale.mqar.num_test=100", "scale.train.eval_mqar_examples=64",
    "scale.stages.explore_steps=8", "scale.stages.verify_steps=8", "scale.stages.reports_per_trial=4",
    "scale.train.warmup_steps=2", "seeds=[deltanet]", "llm=offline", "checks.complexity_repeats=2",
    "checks.complexity_base_length=256",  # the sweep from T=256 (quadratic designs still fail it by far)
    "run.max_parallel_trials=2", "campaign.max_candidates=3", "run.trial_resources={trial_host:1}",
    "explore.anchor_seeds=[0]",  # one anchor run: the noise estimate is tested in test_campaign.py
    "sandbox.spot_audit_fraction=0.25",  # by chance between decisions (test_sandbox.py audits every evaluation)
    "explore.grace_fraction=1.0",  # no early stops: a candidate is still training when the first finishes
    "verify.top_fraction=0", "verify.min_promoted=0",  # the verify stage is tested in test_campaign.py
    # explore's benchmark is the downstream mean (as at paper_20m): anchor and trials must both measure it
    "scale.stages.benchmark=downstream", "scale.downstream.tasks=[piqa,arc_easy]", "scale.downstream.limit=12",
]
DONE = ("stopped", "finished", "promoted")


def _json_or_none(line: str) -> dict | None:
    """A line of a result file Tune may be writing: None until it is whole."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(marker: str) -> list[int]:
    """Processes with ``marker`` (a node's temp dir) in their command line or among their open files
    (workers and agents rename themselves to `ray::...`, but they all log into the session dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes() or any(
                    os.readlink(fd).startswith(marker) for fd in (proc / "fd").iterdir()):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def signal_node(temp_dir: str, signum: int) -> int:
    """Send ``signum`` to every process of one node; returns how many (its sandboxed trainers go with their
    parents: they die with them and, their parent stopped, nothing they compute reaches Tune)."""
    pids = _processes_of(temp_dir)
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue
    return len(pids)


def kill_node(temp_dir: str) -> int:
    """SIGKILL every process of one node, as a machine that dies would; returns how many."""
    return signal_node(temp_dir, signal.SIGKILL)


class Cluster:
    """The moto S3 server, the head and the worker node, and how to reach them."""

    def __init__(self, tmp_path: Path):
        tag = f"{os.getpid()}-{free_port()}"
        self.head_dir, self.worker_dir = f"/tmp/rh-{tag}", f"/tmp/rw-{tag}"  # short: socket paths have a limit
        self.s3 = f"http://127.0.0.1:{free_port()}"
        self.dashboard = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "ASIARCH_CACHE": str(tmp_path / "cache"),
                    # `ray start` refuses a second node unless this is 1 (its check is not platform-specific here)
                    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
                    "AWS_ACCESS_KEY_ID": "cluster-test", "AWS_SECRET_ACCESS_KEY": "cluster-test-secret",
                    "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.s3,
                    # a dead node is noticed in a few seconds, not Ray's default ~30 s
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                    "RAY_health_check_timeout_ms": "1000"}
        self.env.pop("RAY_ADDRESS", None)
        self.gcs = f"127.0.0.1:{free_port()}"
        self.moto: subprocess.Popen | None = None

    def start(self) -> None:
        self.moto = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", self.s3.rsplit(":", 1)[1]],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, capture_output=True, timeout=60)
        head = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs.split(':')[1]}",
                               "--num-cpus=1", "--object-store-memory=300000000", f"--temp-dir={self.head_dir}",
                               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                               "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                               f"--dashboard-port={self.dashboard}", "--disable-usage-stats"],
                              env=self.env, capture_output=True, text=True, timeout=180)
        assert head.returncode == 0, head.stderr[-3000:]
        self.start_worker()
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3", endpoint_url=self.s3, region_name="us-east-1", aws_access_key_id="cluster-test",
                             aws_secret_access_key="cluster-test-secret").create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def start_worker(self) -> None:
        """The node trials must run on: the only one with `trial_host`."""
        # its own loopback address: a driver attaches to the raylet of its own IP, which must be the head's
        worker = subprocess.run([RAY, "start", f"--address={self.gcs}", "--node-ip-address=127.0.0.2", "--num-cpus=2",
                                 "--resources={\"trial_host\": 2}", "--object-store-memory=300000000",
                                 f"--temp-dir={self.worker_dir}", f"--dashboard-agent-listen-port={free_port()}",
                                 "--disable-usage-stats"], env=self.env, capture_output=True, text=True, timeout=180)
        assert worker.returncode == 0, worker.stderr[-3000:]

    def stop(self) -> None:
        for temp_dir in (self.worker_dir, self.head_dir):
            kill_node(temp_dir)
        if self.moto is not None:
            self.moto.kill()

    def location(self, path: str) -> ObjectPath:
        return ObjectPath.parse(f"s3://{BUCKET}/{path}", StorageSettings(endpoint=self.s3))

    def submit(self, output_dir: str, wait: bool) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "examples" / "submit_job.py"), "--address", self.address,
               "--output-dir", output_dir, *([] if wait else ["--no-wait"]), *TINY]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=600)

    def driver_trials(self) -> dict[str, tuple[str, int, int]]:
        """Each explore trial that has reported, as (design, last step, total steps), read from the result files
        Tune's driver (on the head) writes as each result arrives: cheap to poll, and ahead of the memory and S3."""
        trials = {}
        for result in Path(self.head_dir).glob("session_latest/artifacts/*/explore/driver_artifacts/*/result.json"):
            steps = [r for r in map(_json_or_none, result.read_text().splitlines()) if r and "step" in r]
            if steps:
                last = steps[-1]
                trials[result.parent.name] = (last["config"]["design"], last["step"], last.get("total_steps") or 0)
        return trials

    def freeze_worker_if_midway(self) -> tuple[list[str], set[str]]:
        """Stop the worker node; return the trials it holds midway and the designs whose trials had finished,
        both read while it is stopped (a state that cannot change under the kill). With none midway, resume it
        (within Ray's health check: a node is dead after ~3 s without an answer) and return nothing."""
        signal_node(self.worker_dir, signal.SIGSTOP)
        time.sleep(1.0)  # results already sent reach the driver's files
        trials = self.driver_trials()
        midway = sorted(name for name, (_, step, total) in trials.items() if step < total)
        if not midway:
            signal_node(self.worker_dir, signal.SIGCONT)
            return [], set()
        return midway, {design for design, step, total in trials.values() if step >= total}

    def job(self, *args: str) -> str:
        out = subprocess.run([RAY, "job", *args, "--address", self.address], env=self.env, capture_output=True,
                             text=True, timeout=120)
        return out.stdout + out.stderr

    def wait_job(self, job_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.job("status", job_id)
            if any(word in status.lower() for word in ("succeeded", "failed", "stopped")):
                return status
            time.sleep(2)
        pytest.fail(f"job {job_id} did not end in {timeout} s: {self.job('logs', job_id)[-3000:]}")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    c = Cluster(tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):  # this process reads S3 too
        monkeypatch.setenv(key, c.env[key])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def serve_while_training(cluster: Cluster, runs: ObjectPath, log: Path, outcome: dict) -> None:
    """`asiarch serve` over the S3 campaign on a machine busy training it, then Ctrl-C (runs in a thread)."""
    port = free_port()
    env = {**cluster.env, "RAY_ADDRESS": "local", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # its own Ray
    with open(log, "w") as out:
        serve = subprocess.Popen([str(BIN / "asiarch"), "serve", "--dir", str(runs), "--port", str(port)],
                                 stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, env=env)
    try:
        deadline = time.monotonic() + 400
        while serve.poll() is None and "asiarch dashboard:" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(1)
        if serve.poll() is not None:
            outcome["exit"] = serve.returncode
            return
        outcome["summary"] = requests.get(f"http://127.0.0.1:{port}/api/summary", timeout=60).json()
        serve.send_signal(signal.SIGINT)
        outcome["exit"] = serve.wait(timeout=60)  # a bound against a hang, not a speed figure
    finally:
        if serve.poll() is None:
            serve.kill()


def candidates(root: ObjectPath) -> dict[str, object]:
    memory = root / "memory"
    if not (memory / "meta.lance").is_dir():
        return {}
    return {c.id: c for c in Memory(memory, read_only=True).list_candidates() if c.kind == "candidate"}


def test_two_node_campaign_on_s3_survives_losing_its_worker_node(cluster, tmp_path):
    timeline: list[tuple[float, str]] = []
    t0 = time.monotonic()

    def mark(what: str) -> None:
        timeline.append((round(time.monotonic() - t0, 1), what))

    # 1. A local directory on a two-node cluster is refused before any trial starts (submitted alongside 2.)
    local = cluster.submit(str(tmp_path / "local-runs"), wait=False)
    assert local.returncode == 0, local.stderr[-3000:]
    local_id = local.stdout.split()[1].rstrip(":")

    # 2. The same campaign on S3.
    runs = cluster.location("runs")
    first = cluster.submit(str(runs), wait=False)
    assert first.returncode == 0, first.stderr[-3000:]
    job_id = first.stdout.split()[1].rstrip(":")
    mark("submitted: one campaign on a local directory, one on s3://")
    served: dict = {}
    serve_log = tmp_path / "serve.log"
    dashboard = threading.Thread(target=serve_while_training, args=(cluster, runs, serve_log, served))
    assert "failed" in cluster.wait_job(local_id, 120).lower()
    logs = cluster.job("logs", local_id)
    assert "2 nodes" in logs and "run.output_dir=s3://" in logs, logs[-3000:]
    assert "explore:" not in logs and not (tmp_path / "local-runs").exists()  # refused before writing anything
    mark("the local one refused")
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:  # polls Tune's driver files only: a trial lasts seconds at this scale
        trials = cluster.driver_trials()
        if trials and not dashboard.is_alive() and not served:
            dashboard.start()  # the machine is busy training: start the dashboard now
            mark("trials training: asiarch serve started")
        if "summary" in served and "serve up" not in [what for _, what in timeline]:
            mark("serve up")
        states = [step >= total for _, step, total in trials.values()]
        if any(states) and not all(states):  # one trial finished, another still reporting
            in_flight, finished = cluster.freeze_worker_if_midway()
            if in_flight:
                killed_at = time.time()  # the node stopped before this: nothing it computed later reaches Tune
                break
        time.sleep(0.3)
    else:
        pytest.fail("no trial finished while another was midway: " + cluster.job("logs", job_id)[-3000:])
    mark(f"trials finished: {sorted(finished)}, midway: {in_flight}; the worker node stopped")

    assert kill_node(cluster.worker_dir) > 0  # result.json timestamps are wall-clock seconds of this machine
    mark("worker node killed")
    time.sleep(8)
    status = cluster.job("status", job_id)
    assert "running" in status.lower(), status + cluster.job("logs", job_id)[-3000:]  # the driver and its actors: on the head
    cluster.start_worker()
    mark("worker node back")
    root = runs / (runs / "LATEST").read_text().strip()
    while True:  # the finished ones reach the memory (their last step may need the worker: read after it is back)
        rows = candidates(root)
        if finished <= {cid for cid, c in rows.items() if c.status in DONE and c.fitness is not None}:
            break
        assert time.monotonic() < deadline + 300, (finished, {c.name: c.status for c in rows.values()})
        time.sleep(1)
    before = {cid: (rows[cid].explore.eval_loss, rows[cid].explore.loss_curve) for cid in finished}
    status = cluster.wait_job(job_id, 420)
    mark("job ended")
    logs = cluster.job("logs", job_id)
    assert "succeeded" in status.lower(), logs[-4000:]

    # The dashboard, started while the campaign trained.
    assert dashboard.ident is not None, "no trial was seen training before the node was killed"
    dashboard.join(timeout=600)
    text = serve_log.read_text()
    assert "Traceback" not in text, text[-3000:]
    if "summary" not in served:  # gave up: only with its one line and code 1
        assert served.get("exit") == 1 and "asiarch serve: Ray Serve did not come up" in text, text[-3000:]
    else:
        assert served["summary"]["name"] == root.name and "starting Ray Serve (attempt 1 of" in text
        assert served["exit"] == 0 and "stopping the dashboard" in text, text[-3000:]

    # 3. Nothing lost, nothing trained twice, all of it in S3.
    rows = candidates(root)
    for cid, (loss, curve) in before.items():
        assert rows[cid].explore.eval_loss == loss and rows[cid].explore.loss_curve == curve
    trained = [c for c in rows.values() if c.status in DONE]
    assert len(trained) == 3, {c.name: c.status for c in rows.values()}
    state = json.loads((root / "campaign.json").read_text())
    assert state["status"] == "finished" and state["phase"] == "done"
    trials: dict[str, list[dict]] = {}
    for params in (root / "tune" / "explore").glob("*/params.json"):
        design = json.loads(params.read_text())["design"]
        results = [json.loads(line) for line in (params.parent / "result.json").read_text().splitlines() if line]
        trials.setdefault(design, []).append({"dir": params.parent.name, "results": results})
    for cid in before:  # finished before the node died: never trained again
        assert len(trials[cid]) == 1, trials[cid]
    def lost(cid: str) -> bool:
        """Training on the worker when it was killed: results before the kill, none of them the last step's, and
        training again after it (not stopped at a rung before). Read from the trials' results in S3, by design:
        the kill was chosen from the trial names in the driver's files (``in_flight``)."""
        early = [r for t in trials[cid] for r in t["results"] if r["timestamp"] < killed_at and "step" in r]
        after = [r for t in trials[cid] for r in t["results"] if r["timestamp"] > killed_at and "step" in r]
        return bool(early and after) and max(r["step"] for r in early) < max(r.get("total_steps") or 0 for r in early)

    lost_midway = [cid for cid in trials if cid not in before and lost(cid)]
    assert lost_midway, (in_flight, timeline, {  # the kill hit a trial between two checkpoints
        cid: [(r.get("step"), r.get("total_steps"), round(r["timestamp"] - killed_at, 1)) for t in trials[cid]
              for r in t["results"]] for cid in trials if cid not in before})
    for cid in lost_midway:  # lost with the node midway: continued from its last checkpoint in S3, not from step 0
        attempts = sorted(trials[cid], key=lambda t: min(r["timestamp"] for r in t["results"]) if t["results"] else 0)
        first_steps = [min(r["step"] for r in t["results"] if "step" in r) for t in attempts
                       if any("step" in r for r in t["results"])]
        restored = any(r["training_iteration"] > r["iterations_since_restore"] for t in attempts for r in t["results"])
        resumed = len(first_steps) > 1 and first_steps[-1] > first_steps[0]
        mark(f"{cid}: {len(attempts)} trial(s), first steps {first_steps}, restored by Tune {restored}, "
             f"resumed in a new trial {resumed}")
        assert restored or resumed, (cid, first_steps, timeline, [
            (t["dir"], [(r.get("step"), r["training_iteration"], r["iterations_since_restore"], r.get("node_ip"),
                         r.get("verified"), round(r["timestamp"] - attempts[0]["results"][0]["timestamp"], 1))
                        for r in t["results"]]) for t in attempts])
    assert not (tmp_path / "runs").exists() and not (Path.cwd() / "runs" / root.name).exists()
    (seed,) = [c for c in Memory(root / "memory", read_only=True).list_candidates() if c.kind == "seed"]
    assert all(run.get("downstream_mean") is not None for run in seed.explore.benchmarks["runs"])
    for c in trained:  # the downstream benchmark is measured on both sides; at most gated as chance, never absent
        assert c.explore.benchmark is not None and seed.explore.benchmark is not None
        why = (c.fitness_parts.get("missing") or {}).get("benchmark")
        assert why is None or "at chance" in why, why
    mark("checked")

    # 4. The CLI reads it by URI.
    status = subprocess.run([str(BIN / "asiarch"), "status", "--dir", str(runs), "--json"], env=cluster.env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout)["name"] == root.name and json.loads(status.stdout)["status"] == "finished"
    report = subprocess.run([str(BIN / "asiarch"), "report", "--dir", str(runs)], env=cluster.env,
                            capture_output=True, text=True, timeout=180)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (root / "report" / "report.md").read_text().startswith(f"# Campaign {root.name}")
    assert (root / "report" / "lineage.png").is_file()
    mark("status and report by URI")
    print("\ntimeline (s since the first submission):\n" + "\n".join(f"{t:7.1f}  {what}" for t, what in timeline))
