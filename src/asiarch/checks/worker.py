"""The checks' worker: ``python -m asiarch.checks.worker`` runs one candidate's checks.

It reads a JSON request on stdin, isolates itself (``asiarch.sandbox``), imports what it
trusts (torch, asiarch), then locks itself down before the candidate's code runs (no
file writes at all: an empty, read-only working directory). It then executes the source
and runs the checks in order, printing one JSON line when each check starts and one when
it ends, so the parent knows which check was running if the worker hangs, crashes or is
killed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from asiarch.sandbox import Channel, ParentClock, isolate, lock_down


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
    request = json.loads(sys.stdin.readline())  # stdin stays open: the parent times the complexity runs through it
    gaps = isolate()
    channel = Channel(request.pop("nonce"))
    try:
        return run(request, channel.emit, gaps)
    finally:
        channel.emit({"done": True})  # the parent stops reading here, even if stray children hold the pipe


def run(request: dict[str, Any], emit, gaps: list[str]) -> int:
    import torch  # noqa: F401 - imported before the lock-down, like everything trusted

    torch.set_num_threads(1)
    from asiarch.arch.contract import CandidateLoadError, candidate_frames, load_mixer_class
    from asiarch.checks.executable import CHECKS
    from asiarch.checks.order import CHECK_ORDER, PREREQUISITES
    import asiarch.arch.model  # noqa: F401 - used by the training smoke check
    import asiarch.data.mqar  # noqa: F401

    preload(request.get("preload", []))

    _, more = lock_down(request["limits"], isolated=not gaps, hide=request.get("hide", ()))
    emit({"sandbox": gaps + more})
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
    if "replay" in request:
        return replay(cls, options, request["replay"], emit)

    clock = ParentClock(emit, sys.stdin) if request.get("parent_clock") else None
    for name in [n for n in CHECK_ORDER if n in CHECKS and n in wanted]:
        emit({"start": name})
        start = time.perf_counter()
        try:
            passed, reason, measurements = CHECKS[name](cls, {**options, "clock": clock} if name == "complexity" else options)
        except BaseException as err:  # noqa: BLE001 - the candidate's code raised inside the check
            frames = candidate_frames(err)
            where = f" (candidate line {frames[-1].lineno})" if frames else ""
            passed, reason, measurements = False, f"raised {type(err).__name__}: {err}{where}", {}
        emit({"check": name, "passed": passed, "reason": reason, "measurements": measurements,
              "seconds": time.perf_counter() - start})
        if not passed and (fail_fast or name in PREREQUISITES):
            break
    return 0


def replay(cls, options: dict[str, Any], runs: list[dict[str, Any]], emit) -> int:
    """Some of a complexity check's timed runs again, in this fresh process, untimed: the digests of what they
    computed, for the parent to compare with the ones the timed worker reported."""
    from asiarch.checks.executable import _build, complexity_inputs, complexity_run

    emit({"start": "complexity"})
    try:
        mixer = _build(cls, options).train()
        lengths, inputs = complexity_inputs(options)
        for k, run in enumerate(runs):
            i = lengths.index(run["length"])
            emit({"replayed": k, "digest": complexity_run(mixer, inputs[i], run["go"])})
    except BaseException as err:  # noqa: BLE001 - the candidate's code raised: no digest, the parent says so
        emit({"replay_error": f"{type(err).__name__}: {err}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
