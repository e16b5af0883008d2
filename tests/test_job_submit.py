"""`ray job submit` to a real local head; the job's driver is stopped mid-campaign and resubmitted.

The head is started with `ray start --head` on 127.0.0.1 with token authentication, the
campaign is submitted through `examples/submit_job.py` (the Jobs API), stopped once a
candidate has finished explore (the driver is killed), and submitted again with the same
command: it must finish without losing or retraining any candidate.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asiarch.memory import Memory

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
TINY = [
    "scale.train.eval_batches=1", "scale.corpus.max_documents=80", "scale.corpus.tokenizer_vocab_size=512",
    "scale.mqar.num_train=500", "scale.mqar.num_test=100", "scale.train.eval_mqar_examples=64",
    "scale.stages.explore_steps=12", "scale.stages.verify_steps=12", "scale.stages.reports_per_trial=4",
    "scale.train.warmup_steps=2", "seeds=[deltanet]", "llm=offline", "checks.complexity_repeats=2",
    "run.max_parallel_trials=2", "campaign.max_candidates=3",
    "explore.grace_fraction=1.0",  # no early stops: the third candidate is still training when the first finishes
    "verify.top_fraction=0", "verify.min_promoted=0",  # the verify stage is tested in test_campaign.py
    # explore's benchmark is the downstream mean (as at paper_20m): anchor and trials must both measure it
    "scale.stages.benchmark=downstream", "scale.downstream.tasks=[piqa,arc_easy]", "scale.downstream.limit=12",
]
DONE = ("stopped", "finished", "promoted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "ASIARCH_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    temp_dir = f"/tmp/ray-{os.getpid()}-{dashboard}"  # short: Ray's socket paths have a length limit
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=60)
    start = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
                            "--num-cpus=2", f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                            f"--dashboard-port={dashboard}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:  # stop this head only (`ray stop` would stop every Ray on the machine)
        for pid in _processes_of(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


def _processes_of(temp_dir: str) -> list[int]:
    """Ray's processes of one head: its temp dir is in their command line or among their open files
    (workers and agents rename themselves to `ray::...`, but they all log into the session dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if temp_dir.encode() in (proc / "cmdline").read_bytes() or any(
                    os.readlink(fd).startswith(temp_dir) for fd in (proc / "fd").iterdir()):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def submit(address: str, env: dict, out: Path, wait: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "examples" / "submit_job.py"), "--address", address, "--output-dir", str(out),
           *([] if wait else ["--no-wait"]), *TINY]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def candidates(out: Path) -> dict[str, object]:
    latest = out / "LATEST"
    if not latest.exists() or not (out / latest.read_text().strip() / "memory").exists():
        return {}
    memory = Memory(str(out / latest.read_text().strip() / "memory"), read_only=True)
    return {c.id: c for c in memory.list_candidates() if c.kind == "candidate"}


def test_job_submit_stop_and_resubmit_continues_the_campaign(head, tmp_path):
    address, env = head
    out = tmp_path / "runs"
    first = submit(address, env, out, wait=False)
    assert first.returncode == 0, first.stderr[-3000:]
    job_id = first.stdout.split()[1].rstrip(":")
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        try:
            rows = candidates(out)
        except Exception:  # the memory is being created
            rows = {}
        if any(c.status in DONE and c.fitness is not None for c in rows.values()):
            break
        time.sleep(2)
    else:
        pytest.fail("no candidate finished explore in the first job")
    stop = subprocess.run([RAY, "job", "stop", "--address", address, job_id], env=env, capture_output=True,
                          text=True, timeout=120)  # SIGTERM, then SIGKILL: the driver dies mid-campaign
    assert stop.returncode == 0, stop.stderr[-2000:]
    status = subprocess.run([RAY, "job", "status", "--address", address, job_id], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "was stopped" in status.stdout + status.stderr
    before = {cid: (c.status, c.explore.eval_loss, c.explore.loss_curve) for cid, c in candidates(out).items()
              if c.status in DONE and c.fitness is not None}
    assert before
    root_before = out / (out / "LATEST").read_text().strip()

    second = submit(address, env, out, wait=True)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    second_id = second.stdout.split()[1].rstrip(":")
    logs = subprocess.run([RAY, "job", "logs", "--address", address, second_id], env=env, capture_output=True,
                          text=True, timeout=60)
    assert "resuming campaign" in logs.stdout, logs.stdout[-3000:]
    campaigns = [p.name for p in out.iterdir() if p.is_dir() and p.name != "baselines"]  # baselines: the seed cache
    assert campaigns == [root_before.name]  # the same campaign, no new one
    rows = candidates(out)
    for cid, (_, loss, curve) in before.items():  # nothing lost, nothing trained again
        assert rows[cid].explore.eval_loss == loss and rows[cid].explore.loss_curve == curve
    trained = [c for c in rows.values() if c.status in DONE or c.stage == "verify"]
    assert len(trained) == 3
    root = out / (out / "LATEST").read_text().strip()
    state = json.loads((root / "campaign.json").read_text())
    assert state["status"] == "finished" and state["phase"] == "done"
    trials_per_design: dict[str, int] = {}
    for params in (root / "tune" / "explore").glob("*/params.json"):
        design = json.loads(params.read_text())["design"]
        trials_per_design[design] = trials_per_design.get(design, 0) + 1
    for cid in before:
        assert trials_per_design.get(cid) == 1, f"{cid} was trained in {trials_per_design.get(cid)} trials"
    (seed,) = [c for c in Memory(str(root / "memory"), read_only=True).list_candidates() if c.kind == "seed"]
    assert all(run.get("downstream_mean") is not None for run in seed.explore.benchmarks["runs"])
    for c in trained:  # the benchmark term is measured on both sides; at most gated as chance, never absent
        assert c.explore.benchmark is not None and seed.explore.benchmark is not None
        why = (c.fitness_parts.get("missing") or {}).get("benchmark")
        assert why is None or "at chance" in why, why
