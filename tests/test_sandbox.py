"""Candidates train in the sandbox: real workers, real namespaces (when root), real training.

The candidates here skip the policy on purpose (the trainable trusts the checks ran, and
a static policy is only a filter): each does its harm in the training worker, and the
test asserts that nothing outside the sandbox changed, no secret reached it, and no
forged metric was accepted.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from asiarch.arch import load_mixer_class
from asiarch.campaign import trainable
from asiarch.campaign.trainable import run_trial
from asiarch.train.protocol import train_mixer
from test_trainable_blame import FakeTune  # Tune's session as run_trial uses it

ROOT = os.geteuid() == 0
HONEST = '''
import torch
from torch import nn


class Honest(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.calls = 0

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        self.calls += 1
        mixed = torch.cumsum(hidden_states, dim=1) / torch.arange(1, hidden_states.shape[1] + 1).view(1, -1, 1)
        out = self.proj(mixed)
        # PLANT
        return out
'''
# sees the next token, but only after its first few calls: the checks never see it happen
LEAKS_LATER = HONEST.replace("        # PLANT", "        if self.calls > 6:\n"
                             "            out = out + torch.roll(hidden_states, -1, dims=1)")
# halves the loss every model in its process computes
FORGES_LOSS = HONEST.replace("        self.calls = 0", "        self.calls = 0\n"
                             "        import torch.nn.functional as F\n"
                             "        if not hasattr(F, 'honest_cross_entropy'):\n"
                             "            F.honest_cross_entropy = F.cross_entropy\n"
                             "            F.cross_entropy = lambda *a, **k: 0.5 * F.honest_cross_entropy(*a, **k)")
# everything a payload tries once it runs; its findings come back in the error message
PROBES = '''
import os, socket, time, json
found = {}
found["secret"] = os.environ.get("ASIARCH_TEST_SECRET")
found["env_keys"] = sorted(os.environ)
found["uid"] = os.getuid()
found["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
for folder in ("/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~"), "/work", os.getcwd()):
    try:
        with open(os.path.join(folder, "asiarch_escape_CANARY"), "w") as f:
            f.write("escaped")
        found["wrote:" + folder] = True
    except OSError as err:
        found["wrote:" + folder] = type(err).__name__
try:
    s = socket.socket()
    s.settimeout(2)
    s.connect(("127.0.0.1", PORT))
    s.sendall(b"escaped")
    found["tcp"] = "connected"
except OSError as err:
    found["tcp"] = type(err).__name__
try:
    found["shadow"] = open("/etc/shadow").read()[:20]
except OSError as err:
    found["shadow"] = type(err).__name__
child = os.fork()
if child == 0:
    os.setsid()
    time.sleep(3)
    for folder in ("/tmp", "/var/tmp"):
        try:
            open(os.path.join(folder, "asiarch_escape_CANARY_late"), "w").write("late")
        except OSError:
            pass
    os._exit(0)
raise ValueError("FINDINGS" + json.dumps(found) + "END")
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from asiarch.config import load_scale, stage_scale
    from asiarch.train.protocol import prepare_data

    scale = load_scale(["scale=cpu_tiny", "scale.corpus.max_documents=60", "scale.corpus.tokenizer_vocab_size=512",
                        f"scale.corpus.cache_dir={tmp_path_factory.mktemp('cache')}", "scale.mqar.num_train=200",
                        "scale.mqar.num_test=50", "scale.train.eval_batches=2", "scale.train.eval_mqar_examples=32",
                        "scale.train.warmup_steps=1"])
    scale = stage_scale(scale, 6)
    return scale, prepare_data(scale)


def trial(code: str, tiny, monkeypatch) -> list[dict]:
    scale, data = tiny
    session = FakeTune()
    monkeypatch.setattr(trainable, "tune", session)
    config = {"kind": "candidate", "design": "c-1", "name": "probe", "code": code, "stage": "explore",
              "training_seed": 0, "lr": scale.train.lr}
    run_trial(config, {"explore": scale}, {"explore": data})
    return session.reports


def test_an_honest_candidate_trains_in_the_sandbox_exactly_as_in_process(tiny, monkeypatch):
    reports = trial(HONEST, tiny, monkeypatch)
    scale, data = tiny
    reference = train_mixer(load_mixer_class(HONEST), scale, data, downstream=False)  # trusted test code, in process
    *steps, final = reports
    assert [r["step"] for r in steps] == [h["step"] for h in reference["history"]]
    assert [r["verified"] for r in steps] == [0] * (len(steps) - 1) + [1]  # only the final evaluation is verified
    assert final["final"] and final["verified"] == 1 and "code_error" not in final
    assert final["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-5)
    assert final["mqar_accuracy"] == pytest.approx(reference["mqar_accuracy"])


def test_a_candidate_that_replaces_the_loss_function_is_caught(tiny, monkeypatch):
    *steps, last = trial(FORGES_LOSS, tiny, monkeypatch)
    assert all(r["verified"] == 0 for r in steps)  # the rungs before the final one carry its own (halved) numbers
    assert "metric tampering" in last["code_error"]
    assert "final" not in last


def test_a_candidate_that_sees_the_future_only_after_its_checks_is_caught(tiny, monkeypatch):
    scale, data = tiny
    *_, last = trial(LEAKS_LATER, tiny, monkeypatch)
    assert "causality audit failed" in last["code_error"]
    # without the audit its leak is a 'breakthrough': in process, the same code reports a far lower loss
    leaky = train_mixer(load_mixer_class(LEAKS_LATER), scale, data, downstream=False)
    honest = train_mixer(load_mixer_class(HONEST), scale, data, downstream=False)
    assert leaky["eval_loss"] < honest["eval_loss"] - 0.2


def test_nothing_outside_the_sandbox_changes_and_no_secret_reaches_it(tiny, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    monkeypatch.setenv("ASIARCH_TEST_SECRET", "sk-ant-CANARY-0123456789")
    canaries = [Path(folder) / "asiarch_escape_CANARY" for folder in ("/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~"), "/work")]
    late = [Path(folder) / "asiarch_escape_CANARY_late" for folder in ("/tmp", "/var/tmp")]
    for path in canaries + late:
        path.unlink(missing_ok=True)
    code = HONEST.replace("        self.calls = 0", "        self.calls = 0\n" + "\n".join(
        "        " + line for line in PROBES.replace("PORT", str(port)).strip().splitlines()))
    (last,) = trial(code, tiny, monkeypatch)
    message = last["code_error"]
    findings = __import__("json").loads(message.split("FINDINGS", 1)[1].split("END", 1)[0])
    assert findings["secret"] is None and "sk-ant-CANARY" not in message
    assert not any("SECRET" in key or "KEY" in key for key in findings["env_keys"])
    assert [p for p in canaries if p.exists()] == []
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing connected
    listener.close()
    if ROOT:  # the full sandbox: namespaces and the unprivileged user
        assert findings["uid"] == 65534
        assert findings["tcp"] != "connected"
        assert findings["processes"] <= 3  # its own PID namespace: the reaper, the worker, nothing of the host's
        assert findings["shadow"] in ("PermissionError", "FileNotFoundError")
        assert findings["wrote:/tmp"] is True  # a private tmpfs: writable inside, gone with the sandbox
    time.sleep(4)  # the forked, setsid child would write now: it died with the sandbox's PID namespace
    assert [p for p in late if p.exists()] == []
