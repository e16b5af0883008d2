"""The sandbox with and without root: what a candidate's process can reach once it is locked down.

Without root the worker enters a user namespace of its own, and from there the same PID, mount,
network, IPC and UTS namespaces as root's; every mount but its scratch and private temp folders
is read-only, and it holds no capability to undo a mount. Each test runs a real worker twice:
as root (the ``nobody`` switch) and as an unprivileged user that starts it (``nobody`` here,
launched by a bootstrap that drops root before the interpreter starts).
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import asiarch
from asiarch import sandbox

ROOT = os.geteuid() == 0
NOBODY = sandbox.NOBODY

# Run as root: a private mount namespace in which the interpreter, the venv and asiarch are reachable by any user
# (they may live under a folder only root can enter, /root), then drop to nobody and start the interpreter.
BOOTSTRAP = r'''
import ctypes, json, os, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
def ok(result, what):
    if result != 0:
        raise SystemExit(f"UNAVAILABLE {what}: {os.strerror(ctypes.get_errno())}")
ok(libc.unshare(0x20000), "a mount namespace")
ok(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "a private mount namespace")
blocked, kept, argv = json.loads(sys.argv[1])
stashes = []
for folder in kept:
    stashes.append(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    ok(libc.mount(folder.encode(), stashes[-1].encode(), None, 0x1000 | 0x4000, None), "bind " + folder)
for folder in blocked:
    ok(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", 0, b"mode=755"), "tmpfs " + folder)
for folder, stash in zip(kept, stashes):
    os.makedirs(folder, exist_ok=True)
    ok(libc.mount(stash.encode(), folder.encode(), None, 0x2000, None), "move " + folder)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.execv(argv[0], argv)
'''


def _unprivileged(argv: list[str], shared: Path) -> list[str]:
    """``argv`` run as an unprivileged user: as is without root; as root, as nobody through the bootstrap."""
    if not ROOT:
        return argv
    needed = [sys.base_prefix, sys.prefix, str(Path(asiarch.__file__).parents[1]), str(shared)]
    blocked, kept = [], []
    for folder in needed:
        parts = Path(os.path.realpath(folder)).parts
        closed = next((Path(*parts[:i]) for i in range(2, len(parts) + 1) if os.stat(Path(*parts[:i])).st_mode & 0o005 != 0o005),
                      None)
        if closed is not None:
            blocked.append(str(closed))
            kept.append(os.path.realpath(folder))
    return [sys.executable, "-c", BOOTSTRAP, json.dumps([sorted(set(blocked)), kept, argv])]


@pytest.fixture
def shared() -> Path:
    """A folder both root and nobody can read, outside every folder the sandbox makes private (/tmp, /var/tmp...):
    in the checkout, whose closed parent folders the bootstrap opens."""
    folder = Path(tempfile.mkdtemp(prefix=".isolation-", dir=Path(__file__).parents[1]))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as(user: str, script: str, shared: Path, *args: str, timeout: float = 300) -> dict:
    """Run ``script`` as ``user`` (root, or unprivileged); its JSON result (the last line it prints)."""
    if user == "root" and not ROOT:
        pytest.skip("needs root")
    path = shared / "script.py"
    path.write_text(textwrap.dedent(script))
    path.chmod(0o644)
    argv = [sys.executable, str(path), *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(argv if user == "root" else _unprivileged(argv, shared), capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=shared)
    if "UNAVAILABLE" in done.stderr:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _skip_without_user_namespaces(gaps: list[str]) -> None:
    refused = [gap for gap in gaps if "refused a user namespace" in gap]
    if refused:
        pytest.skip(f"this kernel's sandbox lacks it: {refused[0]}")


def _folders(shared: Path, user: str) -> tuple[Path, Path, Path]:
    """(hidden, owned, scratch): a folder to hide (with a file in it), one the process's user may write on the
    host (its own files; for nobody, a world-writable folder), and its scratch."""
    hidden, owned, scratch = shared / "hidden", shared / "owned", shared / "scratch"
    for folder in (hidden, owned, scratch):
        folder.mkdir()
    (hidden / "answer").write_text("42")
    owned.chmod(0o777)
    if ROOT and user == "unprivileged":
        for folder in (hidden, owned, scratch):
            os.chown(folder, NOBODY, NOBODY)
    return hidden, owned, scratch


LOCKED_DOWN = '''
import ctypes, encodings.idna, json, os, socket, sys
from asiarch import sandbox

hidden, owned, scratch, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
gaps = sandbox.isolate()
workdir, more = sandbox.lock_down({"memory_mb": 1024, "cpu_seconds": 60, "max_processes": 8, "file_mb": 10}, scratch,
                                  isolated=not gaps, hide=[hidden])
found = {"gaps": gaps + more, "uid": os.geteuid(), "hidden": os.listdir(hidden)}
for name, folder in (("owned", owned), ("scratch", workdir), ("tmp", "/tmp")):
    try:
        with open(os.path.join(folder, "canary"), "w") as f:
            f.write("escaped")
        found["write:" + name] = "wrote"
    except OSError as err:
        found["write:" + name] = err.strerror
try:
    socket.create_connection(("127.0.0.1", port), timeout=2)
    found["tcp"] = "connected"
except OSError as err:
    found["tcp"] = type(err).__name__
found["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
found["capabilities"] = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff"))
libc = ctypes.CDLL(None, use_errno=True)
NEWUSER, NEWNS, REMOUNT, BIND = 0x10000000, 0x20000, 0x20, 0x1000
found["umount"] = "unmounted" if libc.umount2(hidden.encode(), 2) == 0 else os.strerror(ctypes.get_errno())
# in a user namespace of its own it holds every capability again, over copies of the mounts
if libc.unshare(NEWUSER | NEWNS) == 0:
    found["nested:umount"] = "unmounted" if libc.umount2(hidden.encode(), 2) == 0 else os.strerror(ctypes.get_errno())
    found["nested:remount"] = ("remounted" if libc.mount(None, b"/", None, REMOUNT | BIND, None) == 0
                               else os.strerror(ctypes.get_errno()))
    found["nested:hidden"] = os.listdir(hidden)
made = 0
try:
    for _ in range(40):
        if os.fork() == 0:
            import time
            time.sleep(2)
            os._exit(0)
        made += 1
    found["fork"] = "forked 40"
except OSError:
    found["fork"] = f"blocked after {made}"
print(json.dumps(found))
'''


# another sandbox's threads, run as the user the sandbox runs as (nobody, as root)
HOLDS_THREADS = """
import threading, time
for _ in range(80):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("holding", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("user", ["root", "unprivileged"])
def test_a_locked_down_worker_writes_only_its_scratch_and_reads_nothing_hidden(user, shared):
    """The same walls with or without root: the hidden folder is empty and stays so (also from a user namespace
    the candidate makes), nothing outside the scratch and the private /tmp is writable (before, as nobody, a
    world-writable folder was; without root, every file of the user), no network, no host process, and a
    process limit of its own: 80 threads of another process of the same user do not count against it (as
    root they did: every sandbox's nobody shared one count, so a busy host's sandboxes could fail to start threads)."""
    hidden, owned, scratch = _folders(shared, user)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    holder_argv = [sys.executable, "-c", HOLDS_THREADS]
    holder = subprocess.Popen(_unprivileged(holder_argv, shared) if ROOT else holder_argv, stdout=subprocess.PIPE,
                              text=True, cwd=shared)
    try:
        assert holder.stdout.readline().strip() == "holding"
        found = _as(user, LOCKED_DOWN, shared, str(hidden), str(owned), str(scratch), str(listener.getsockname()[1]))
    finally:
        holder.kill()
        holder.wait()
    _skip_without_user_namespaces(found["gaps"])
    if user == "root":
        assert found["gaps"] == [] and found["uid"] == NOBODY
    else:  # the one gap left: it reads what its user can
        assert [gap.split(":")[0] for gap in found["gaps"]] == ["user switch (not root)"], found["gaps"]
        assert found["capabilities"] == "0000000000000000"
    assert found["hidden"] == [] and found["nested:hidden"] == []
    assert "unmounted" not in (found["umount"], found["nested:umount"]) and found["nested:remount"] != "remounted"
    assert found["write:owned"] == "Read-only file system" and list(owned.iterdir()) == []
    assert found["write:scratch"] == found["write:tmp"] == "wrote" and (scratch / "canary").read_text() == "escaped"
    assert found["tcp"] != "connected"
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    assert found["processes"] <= 3 and found["fork"].startswith("blocked after")
    assert int(found["fork"].split()[-1]) >= 3, found["fork"]  # its own count, not the other process's threads
    assert (hidden / "answer").read_text() == "42"


@pytest.mark.parametrize("user", ["root", "unprivileged"])
def test_a_campaign_learns_what_the_sandbox_lacks_before_any_candidate_runs(user, shared):
    """``sandbox.gaps_here``, which a campaign prints and keeps at its start: the same gaps a worker finds."""
    found = _as(user, "import json\nfrom asiarch.sandbox import gaps_here\nprint(json.dumps({'gaps': gaps_here()}))",
                shared)
    _skip_without_user_namespaces(found["gaps"])
    assert [gap.split(":")[0] for gap in found["gaps"]] == ([] if user == "root" else ["user switch (not root)"])


# a candidate that probes, from inside its training worker, what an unprivileged user's campaign holds
PROBING = '''
import glob, json, os, socket
import torch
from torch import nn

SECRET, OWNED, PORT = {secret!r}, {owned!r}, {port}


class Probing(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        found = {{}}
        try:
            found["secret"] = open(os.path.join(SECRET, "mqar-test-secret")).read()
        except OSError as err:
            found["secret"] = type(err).__name__
        try:
            with open(os.path.join(OWNED, "canary"), "w") as f:
                f.write("escaped")
            found["owned"] = "wrote"
        except OSError as err:
            found["owned"] = err.strerror
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=2)
            found["tcp"] = "connected"
        except OSError as err:
            found["tcp"] = type(err).__name__
        found["docs"] = sorted(name for folder in glob.glob({docs!r}) for name in os.listdir(folder))[:3]
        found["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
        raise ValueError("FINDINGS" + json.dumps(found) + "END")

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return hidden_states
'''

TRAINS = '''
import json, pickle, sys
from asiarch.train.sandboxed import train_in_sandbox

with open(sys.argv[1], "rb") as f:
    scale, data, designs = pickle.load(f)
results = {}
for name, code in designs.items():
    outcome = train_in_sandbox(code, name, scale, data, on_report=lambda metrics, _: None)
    results[name] = outcome.get("final") or {"code_error": outcome.get("code_error")}
print(json.dumps(results))
'''


@pytest.mark.skipif(not ROOT, reason="the test makes a user for the campaign: needs root")
def test_an_unprivileged_campaigns_trials_train_contained(shared):
    """A training trial started by an unprivileged user: the honest design trains and is scored as in process;
    a probing one finds the MQAR test secret hidden (``BaselineCache.prepare_data``: its user could read it), the
    corpus's sources hidden, nothing of the user's writable, no network and no host process."""
    from asiarch.arch import load_mixer_class
    from asiarch.baselines import BaselineCache
    from asiarch.config import load_scale, stage_scale
    from asiarch.data.corpus import PYTHON_DOCS_GLOB
    from asiarch.train.protocol import train_mixer
    from test_sandbox import HONEST

    _, owned, _ = _folders(shared, "unprivileged")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    scale = load_scale(["scale=cpu_tiny", "scale.corpus.max_documents=40", "scale.corpus.tokenizer_vocab_size=512",
                        f"scale.corpus.cache_dir={shared / 'cache'}", "scale.mqar.num_train=100", "scale.mqar.num_test=32",
                        "scale.train.eval_batches=2", "scale.train.eval_mqar_examples=32", "scale.train.warmup_steps=1"])
    scale = stage_scale(scale, 4)
    cache = BaselineCache(shared / "runs" / "baselines")
    data = cache.prepare_data(scale)  # as a campaign's: MQAR's test set drawn with the folder's secret
    for path in (shared / "runs", cache.root, cache.root / "mqar-test-secret"):  # the user's own campaign
        os.chown(path, NOBODY, NOBODY)
    probing = PROBING.format(secret=str(cache.root), owned=str(owned), port=listener.getsockname()[1], docs=PYTHON_DOCS_GLOB)
    assert any(os.listdir(folder) for folder in glob.glob(PYTHON_DOCS_GLOB))  # the host's corpus text, read by nobody too
    inputs = shared / "inputs.pkl"
    inputs.write_bytes(pickle.dumps((scale, data, {"honest": HONEST, "probing": probing})))
    inputs.chmod(0o644)
    results = _as("unprivileged", TRAINS, shared, str(inputs), timeout=600)
    honest, probing_outcome = results["honest"], results["probing"]["code_error"]
    assert "FINDINGS" in probing_outcome, results
    found = json.loads(probing_outcome.split("FINDINGS", 1)[1].split("END", 1)[0])
    reference = train_mixer(load_mixer_class(HONEST), scale, data, downstream=False)  # trusted, in process, as root
    assert honest["verified"] == 1 and honest["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-5)
    assert found["secret"] == "FileNotFoundError" and found["docs"] == []  # the host has both (the corpus's text)
    assert found["owned"] == "Read-only file system" and list(owned.iterdir()) == []
    assert found["tcp"] != "connected" and found["processes"] <= 3
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()


# reads a file it should never see at check time and puts it in its failure reason, which the Engineer reads
READS_AT_CHECK_TIME = '''
import os
import torch
from torch import nn


class Reader(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        try:
            found = open({path!r}).read()
        except OSError as err:
            found = type(err).__name__
        raise RuntimeError("FOUND " + found)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return hidden_states
'''


def test_the_checks_hide_what_a_failure_reason_could_carry_to_the_engineer(shared, monkeypatch):
    """A check's failure reason is the candidate's own text, and the Engineer (an LLM) reads it and writes code:
    the checks' worker hides the folders a campaign names (its MQAR secret's, the corpus's, the user's
    ``sandbox.hidden_dirs``: ``StageContext.hidden_from_candidates``). Past the policy, as its filter allows."""
    from asiarch.checks import check_candidate
    from test_checks import past_the_policy

    past_the_policy(monkeypatch, modules=("os", "torch"))
    hidden, _, _ = _folders(shared, "root")
    code = READS_AT_CHECK_TIME.format(path=str(hidden / "answer"))
    seen = check_candidate(code, checks=["contract", "shape"], fail_fast=True)
    if any("namespace" in gap for gap in seen.sandbox_gaps):
        pytest.skip(f"this machine's sandbox lacks it: {seen.sandbox_gaps[0]}")
    assert "FOUND 42" in seen.failures[0].reason  # readable unless hidden
    hiding = check_candidate(code, hide=[str(hidden)], checks=["contract", "shape"], fail_fast=True)
    assert "FOUND FileNotFoundError" in hiding.failures[0].reason, hiding.failures[0].reason


def test_a_campaign_hides_its_secret_its_corpus_and_the_users_folders_from_every_candidate(tmp_path):
    """What a campaign's checks and trials hide, from its own settings: MQAR's secret folder (under the output
    directory), the corpus's sources and cache, and the folders the user lists in ``sandbox.hidden_dirs``."""
    from asiarch.baselines import BaselineCache
    from asiarch.config import load_scale
    from asiarch.data.corpus import source_dirs
    from asiarch.sandbox import SandboxOptions
    from asiarch.train.sandboxed import hidden_from_candidates

    (tmp_path / "cache").mkdir()
    scale = load_scale(["scale=cpu_tiny", f"scale.corpus.cache_dir={tmp_path / 'cache'}"])
    cache = BaselineCache(tmp_path / "runs" / "baselines")
    options = SandboxOptions(hidden_dirs=["~/.ssh", str(tmp_path / "mine")])
    hidden = hidden_from_candidates(scale.corpus, cache.secret_dirs(), options)
    assert str((tmp_path / "runs" / "baselines").resolve()) in hidden
    assert str(tmp_path / "cache") in hidden and set(source_dirs(scale.corpus)) <= set(hidden)
    assert os.path.expanduser("~/.ssh") in hidden and str(tmp_path / "mine") in hidden
    with pytest.raises(ValueError, match="a list of folders"):
        SandboxOptions(hidden_dirs="~/.ssh")
