"""The sandbox worker: ``python -m asiarch.checks.worker`` runs one candidate's checks.

It reads a JSON request on stdin, imports what it trusts (torch, asiarch), then locks
itself down before the candidate's code runs: resource limits (address space, CPU time,
no file writes, no core dumps), a fresh network namespace with no interfaces when it can
(root), an empty working directory, and, when started as root, the ``nobody`` user with
a small process limit (no fork bombs, no writes to files owned by others). It then
executes the source and runs the checks in order, printing one JSON line when each check
starts and one when it ends, so the parent knows which check was running if the worker
hangs, crashes or is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import tempfile
import time
from typing import Any

CLONE_NEWNET = 0x40000000
NOBODY = 65534


class Channel:
    """The protocol stream: a private duplicate of stdout, each line stamped with the run's nonce.

    The candidate's own prints go to stderr (stdout is redirected there), and it cannot
    forge a result line without the nonce, which lives only in this object.
    """

    def __init__(self, nonce: str):
        self.stream = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.nonce = nonce

    def emit(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps({**record, "nonce": self.nonce}, default=float) + "\n")
        self.stream.flush()


def readable_by_others(path: str) -> bool:
    """Whether a user with no rights of its own can reach and read ``path`` (o+rx on every directory)."""
    current = os.path.realpath(path)
    while True:
        if os.stat(current).st_mode & 0o005 != 0o005:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def enter_sandbox(limits: dict[str, Any]) -> list[str]:
    """Apply every restriction this process can; returns the ones that were not available."""
    unavailable = []
    workdir = tempfile.mkdtemp(prefix="asiarch-sandbox-")  # before the file-size limit: tempfile probes by writing
    os.chmod(workdir, 0o555)
    os.chdir(workdir)
    vm_kib = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0])
    address_space = vm_kib * 1024 + limits["memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write then fails with an error instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            unavailable.append(f"network namespace (errno {ctypes.get_errno()})")
        hidden = [p for p in (sys.prefix, os.path.dirname(os.path.dirname(__file__))) if not readable_by_others(p)]
        if hidden:
            # 'nobody' could not even import lazily from here; keep root, say so in the report
            unavailable.append(f"user switch and process limit skipped: {hidden[0]} is not readable by others")
        else:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)  # from here on: no root, no writes to root's files
            resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))
    else:
        unavailable.append("network namespace and user switch (not root)")
    return unavailable


def preload(modules: list[str]) -> None:
    """Import, before the lock-down, the candidate's (policy-approved) modules and training's lazy imports.

    After the switch to ``nobody`` the interpreter may not be able to read its own standard
    library (when it lives in a private home directory), so nothing may be imported for the first time later.
    """
    import importlib

    import torch

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # "from x import function" names no module; the candidate's own import will tell
    from asiarch.checks.executable import adamw_step

    weight = torch.nn.Parameter(torch.zeros(2))
    (weight.sum() + torch.nn.functional.cross_entropy(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))).backward()
    torch.nn.utils.clip_grad_norm_([weight], 1.0)
    adamw_step([weight], {}, 1)


def main() -> int:
    request = json.loads(sys.stdin.read())
    channel = Channel(request.pop("nonce"))
    try:
        return run(request, channel.emit)
    finally:
        channel.emit({"done": True})  # the parent stops reading here, even if stray children hold the pipe


def run(request: dict[str, Any], emit) -> int:
    import torch  # noqa: F401 - imported before the lock-down, like everything trusted

    torch.set_num_threads(1)
    from asiarch.arch.contract import CandidateLoadError, candidate_frames, load_mixer_class
    from asiarch.checks.executable import CHECK_ORDER, CHECKS, PREREQUISITES
    import asiarch.arch.model  # noqa: F401 - used by the training smoke check
    import asiarch.data.mqar  # noqa: F401

    preload(request.get("preload", []))

    emit({"sandbox": enter_sandbox(request["limits"])})
    options, wanted, fail_fast = request["options"], request["checks"], request["fail_fast"]

    emit({"start": "contract"})
    start = time.perf_counter()
    try:
        cls = load_mixer_class(request["source"])
    except CandidateLoadError as err:
        emit({"check": "contract", "passed": False, "reason": str(err), "seconds": time.perf_counter() - start})
        return 0
    except BaseException as err:  # noqa: BLE001 - SystemExit, MemoryError ... from the candidate
        emit({"check": "contract", "passed": False, "reason": f"executing the source raised {type(err).__name__}: {err}",
              "seconds": time.perf_counter() - start})
        return 0
    emit({"check": "contract", "passed": True, "reason": f"defines {cls.__name__}", "seconds": time.perf_counter() - start})

    for name in [n for n in CHECK_ORDER if n in CHECKS and n in wanted]:
        emit({"start": name})
        start = time.perf_counter()
        try:
            passed, reason, measurements = CHECKS[name](cls, options)
        except BaseException as err:  # noqa: BLE001 - the candidate's code raised inside the check
            frames = candidate_frames(err)
            where = f" (candidate line {frames[-1].lineno})" if frames else ""
            passed, reason, measurements = False, f"raised {type(err).__name__}: {err}{where}", {}
        emit({"check": name, "passed": passed, "reason": reason, "measurements": measurements,
              "seconds": time.perf_counter() - start})
        if not passed and (fail_fast or name in PREREQUISITES):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
