"""`asiarch serve` as a user starts it: while the machine is busy training a model, then stopped with Ctrl-C.

The load is real training (DeltaNet at a shrunken cpu_tiny, one process per core, bounded by
a 75 s wall-time budget): Ray's processes, Serve's controller and its proxy start on a
saturated machine (unloaded, they take ~25 s; with the load, Serve's default 5 s readiness
check fails). The dashboard must come up, or exit with its one-line message and code 1,
never a traceback; once up, one SIGINT stops it promptly and cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from asiarch.testing.demo import make_demo_campaign
from serve_harness import free_port

LOAD = '''
import sys
from asiarch.arch import SEEDS
from asiarch.config import load_scale, stage_scale
from asiarch.train.protocol import prepare_data, train_mixer
scale = load_scale(["scale=cpu_tiny", "scale.corpus.max_documents=60", "scale.corpus.tokenizer_vocab_size=512",
                    "scale.corpus.cache_dir=" + sys.argv[1], "scale.mqar.num_train=200", "scale.mqar.num_test=50",
                    "scale.train.max_wall_seconds=" + sys.argv[2]])
data = prepare_data(stage_scale(scale, 100000))
print("training", flush=True)
train_mixer(SEEDS["deltanet"], stage_scale(scale, 100000), data, downstream=False)
'''


def test_serve_comes_up_on_a_machine_busy_training_and_ctrl_c_stops_it(tmp_path):
    make_demo_campaign(tmp_path / "runs", n=20)
    cache = tmp_path / "cache"
    serve = None
    load = [subprocess.Popen([sys.executable, "-c", LOAD, str(cache), "75"], stdout=subprocess.PIPE, text=True)
            for _ in range(os.cpu_count() or 2)]
    try:
        for job in load:  # every core is training before the dashboard starts
            assert job.stdout.readline().strip() == "training"
        port = free_port()
        log = tmp_path / "serve.log"
        with open(log, "w") as out:
            serve = subprocess.Popen([str(Path(sys.executable).with_name("asiarch")), "serve", "--dir",
                                      str(tmp_path / "runs"), "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                     cwd=tmp_path, env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
            deadline = time.monotonic() + 400
            while serve.poll() is None and "asiarch dashboard:" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(1)
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
        if serve.poll() is not None:  # gave up: only with its one line and code 1
            assert serve.returncode == 1 and "asiarch serve: Ray Serve did not come up" in text, text[-3000:]
            return
        assert "starting Ray Serve (attempt 1 of" in text
        summary = requests.get(f"http://127.0.0.1:{port}/api/summary", timeout=30)
        assert summary.status_code == 200 and summary.json()["name"] == "demo"
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0  # a bound against a hang, not a speed figure
        assert "stopping the dashboard" in log.read_text()
    finally:
        for job in load:
            job.kill()
            job.wait()
        if serve is not None and serve.poll() is None:
            serve.kill()
