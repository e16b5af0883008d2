"""Candidate checks: a static policy, then executable checks in an isolated worker process.

``check_candidate(source)`` never runs the candidate in the calling process. The policy
reads the source's AST; everything else happens in ``python -m asiarch.checks.worker``,
started fresh for each candidate.

Threat model (defence in depth, not a virtual machine): candidate code is written by an
LLM or a proposer and may be wrong or, through prompt injection, hostile. Layer 1, the
policy, refuses imports outside an allowlist and every builtin or attribute that reaches
files, processes, the network, dynamic code or interpreter internals. Layer 2, the worker,
runs in ``asiarch.sandbox`` (own PID, mount and network namespaces, private /tmp, the
``nobody`` user, resource limits, no secrets in its environment) with a zero file-size
limit and an empty read-only working directory; the caller kills it at a wall-time limit
per check. Around both: checkpoints
are loaded weights-only (a candidate's ``get_extra_state`` cannot smuggle a pickled
payload), and text a candidate can influence (errors, check reasons) is scrubbed of the
environment's secrets and cut to length before the memory stores it or a prompt quotes it
(``asiarch.memory.redact``). What this does not stop: a bug in CPython, torch or the kernel
that lets pure tensor code escape, reading world-readable files through an escape the
policy missed, or CPU and memory use up to the limits. Tune trials train a candidate in
the same sandbox (``asiarch.train.worker``) and verify its final evaluation outside it.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Mapping, Sequence

from asiarch import sandbox
from asiarch.checks.order import CHECK_ORDER
from asiarch.checks.policy import PolicyConfig, check_policy

__all__ = ["CHECK_ORDER", "CheckOptions", "CheckReport", "CheckResult", "ParameterBudget", "PolicyConfig",
           "check_candidate", "check_policy", "growth_beyond_linear", "reference_parameters"]


@dataclass
class CheckResult:
    check: str
    passed: bool
    reason: str
    measurements: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class CheckReport:
    """Outcome of every check that ran; ``failures`` explain each rejection."""

    results: list[CheckResult]
    seconds: float = 0.0
    sandbox_gaps: list[str] = field(default_factory=list)  # isolation features this machine could not provide

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    @property
    def measurements(self) -> dict[str, dict[str, Any]]:
        return {r.check: r.measurements for r in self.results}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; stored on the candidate in the memory (``Candidate.check_report``)."""
        return {"passed": self.passed, "seconds": self.seconds, "sandbox_gaps": self.sandbox_gaps,
                "results": [asdict(r) for r in self.results]}

    def summary(self) -> str:
        if self.passed:
            return f"all {len(self.results)} checks passed in {self.seconds:.1f}s"
        return "; ".join(f"{f.check}: {f.reason}" for f in self.failures)


@dataclass
class CheckOptions:
    """What the checks demand, and the sandbox's limits.

    The defaults equal the ``checks`` section of ``conf/config.yaml`` (tests/test_config_defaults.py
    holds them together), so a direct ``check_candidate`` call checks as a campaign does.
    """

    allow_quadratic: bool = False  # the softmax-attention seed passes complexity only with this
    max_growth_exponent: float = 1.3
    complexity_base_length: int = 512
    complexity_repeats: int = 3  # the fastest of these runs per length: load on the machine only adds time
    param_band: tuple[float, float] = (0.5, 2.0)
    reference_seed: str = "deltanet"
    max_grad_norm: float = 1e4  # at initialisation, for mean(out^2) on unit inputs; seeds are below 10
    smoke_steps: int = 20
    smoke_min_improvement: float = 0.05
    atol: float = 1e-5
    rtol: float = 1e-4
    checks: Sequence[str] | None = None  # a subset of CHECK_ORDER; None runs all
    fail_fast: bool = False
    check_timeout: float = 120.0  # wall seconds per check before the worker is killed (generous: trials share the cores)
    startup_timeout: float = 60.0
    memory_mb: int = 3072  # address space the candidate may add to the worker's
    cpu_seconds: int = 600
    max_processes: int = 32  # threads count too (torch's pools); a fork bomb stops here
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        self.param_band = tuple(self.param_band)  # YAML gives a list

    def parameter_budget(self) -> "ParameterBudget | None":
        """The parameter budget training holds a candidate to; None when ``checks`` leaves that check out."""
        if self.checks is not None and "param_budget" not in self.checks:
            return None
        return ParameterBudget(self.reference_seed, self.param_band)


@dataclass(frozen=True)
class ParameterBudget:
    """The parameter-budget check's rule, carried into training.

    The check builds one mixer (``layer_idx=0``) in the candidate's process; the trainable
    counts the tensors of every layer's mixer in each checkpoint the trial writes
    (``asiarch.train.sandboxed``), so a mixer that grows past layer 0, or a count the
    candidate's process forged, cannot reach a result.
    """

    reference_seed: str
    band: tuple[float, float]

    def reference(self, hidden_size: int, num_heads: int, mixer_kwargs: dict[str, Any]) -> int:
        """The reference seed's mixer size at this shape: what the band multiplies."""
        return reference_parameters(self.reference_seed, hidden_size, num_heads, mixer_kwargs)


def growth_beyond_linear(complexity: Mapping[str, Any], significance: float) -> dict[str, Any]:
    """The complexity check's time exponent as the Judge reads it: its excess over linear growth, counted only
    when the exponent is above 1 beyond the measurement's noise (one-sided, at ``significance``), with a verdict.

    Linear designs differ in measured exponent through their constant costs and the machine's
    load (the seeds: T^0.89 to T^1.02, up to 0.1 apart from one check to the next under load;
    benchmarks/bench_growth_noise.py), not through their complexity class, so growth within
    noise of linear moves no score. Growth beyond noise counts whole (the excess is not shrunk
    by the noise estimate, which itself varies from check to check). A record without the
    exponent's standard error (a check before it was measured) counts any excess.
    """
    exponent, se = complexity.get("time_exponent"), complexity.get("time_exponent_se")
    if exponent is None:
        return {"exponent": None, "se": None, "beyond_linear": 0.0, "verdict": "not measured"}
    margin = NormalDist().inv_cdf(1.0 - significance) * se if se is not None else 0.0
    shown = f"T^{exponent:.2f}" + (f" ± {se:.2f}" if se is not None else "")
    excess = exponent - 1.0 if exponent - 1.0 > margin else 0.0
    if excess > 0:
        verdict = (f"{shown}: grows faster than linear by {excess:.2f}"
                   + (f" (beyond noise, one-sided p < {significance:g})" if se is not None else " (noise not measured)"))
    elif exponent < 1.0 - margin:
        verdict = f"{shown}: below linear (constant costs dominate at these lengths), scored as linear"
    else:
        verdict = f"{shown}: linear within noise"
    return {"exponent": round(exponent, 3), "se": None if se is None else round(se, 3),
            "beyond_linear": round(excess, 3), "verdict": verdict}


def _scale_shape(scale) -> tuple[int, int, dict[str, Any], int, int]:
    from asiarch.config import ScaleConfig, load_scale

    if isinstance(scale, str):
        scale = load_scale(scale)
    if not isinstance(scale, ScaleConfig):
        raise TypeError(f"scale must be a scale name or a ScaleConfig, got {type(scale).__name__}")
    return (scale.model.hidden_size, scale.model.num_heads, dict(scale.model.mixer_kwargs), scale.train.batch_size,
            scale.train.seq_len)


def reference_parameters(seed: str, hidden_size: int, num_heads: int, mixer_kwargs: dict[str, Any]) -> int:
    """Tensor elements in seed ``seed``'s mixer state at this shape (trusted code, built in this process)."""
    from asiarch.arch import SEEDS
    from asiarch.arch.model import count_state

    if seed not in SEEDS:
        raise ValueError(f"reference_seed {seed!r} is not a seed; choose from {sorted(SEEDS)}")
    return count_state(SEEDS[seed](hidden_size, num_heads, layer_idx=0, **mixer_kwargs).state_dict())


def check_candidate(source: str, scale="cpu_tiny", hide: Sequence[str] = (), **options: Any) -> CheckReport:
    """Run the policy and the executable checks on candidate ``source`` at ``scale``.

    ``options`` are fields of ``CheckOptions``. The candidate runs only in a separate,
    locked-down worker process; a crash, hang or kill there becomes a failed check. ``hide``:
    folders that process must not read (a campaign's ``StageContext.hidden_from_candidates``):
    what a check reads can leave in a failure reason, which the Engineer reads.
    """
    unknown = sorted(set(options) - set(CheckOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown check option(s) {unknown}; see asiarch.checks.CheckOptions")
    opts = CheckOptions(**options)
    wanted = list(CHECK_ORDER if opts.checks is None else opts.checks)
    bad = sorted(set(wanted) - set(CHECK_ORDER))
    if bad:
        raise ValueError(f"unknown check(s) {bad}; checks are {list(CHECK_ORDER)}")
    started = time.monotonic()
    policy = check_policy(source, opts.policy)
    if not policy.passed:
        result = CheckResult("policy", False, "; ".join(policy.violations), {"violations": policy.violations})
        return CheckReport([result], time.monotonic() - started)
    results = [CheckResult("policy", True, "no forbidden imports, names or attributes")]

    hidden, heads, mixer_kwargs, train_batch, train_len = _scale_shape(scale)
    request = {
        "source": source,
        "preload": policy.modules,
        "checks": wanted,
        "fail_fast": opts.fail_fast,
        "nonce": secrets.token_hex(16),
        "hide": [str(folder) for folder in hide],
        "limits": {"memory_mb": opts.memory_mb, "cpu_seconds": opts.cpu_seconds, "max_processes": opts.max_processes},
        "options": {
            "hidden_size": hidden, "num_heads": heads, "mixer_kwargs": mixer_kwargs,
            "allow_quadratic": opts.allow_quadratic, "max_growth_exponent": opts.max_growth_exponent,
            "complexity_base_length": opts.complexity_base_length, "complexity_repeats": opts.complexity_repeats,
            "param_band": list(opts.param_band), "smoke_steps": opts.smoke_steps,
            "smoke_min_improvement": opts.smoke_min_improvement, "atol": opts.atol, "rtol": opts.rtol,
            "max_grad_norm": opts.max_grad_norm, "train_batch_size": train_batch, "train_seq_len": train_len,
            "causality_seed": secrets.randbelow(2**31),  # a shape and positions the candidate cannot know beforehand
            "reference_parameters": reference_parameters(opts.reference_seed, hidden, heads, mixer_kwargs),
        },
    }
    request["parent_clock"] = "complexity" in wanted
    worker_results, gaps, timed = _run_worker(request, opts)
    _complexity_outside(worker_results, timed, request, opts, gaps)
    return CheckReport(results + worker_results, time.monotonic() - started, gaps)


def _run_worker(request: dict[str, Any], opts: CheckOptions) -> tuple[list[CheckResult], list[str], list[dict[str, Any]]]:
    """Start the worker, follow its protocol lines, enforce per-check wall time, explain how it ended; time the
    complexity check's runs from here (``sandbox.ParentStopwatch``) and return them."""
    proc = sandbox.launch("asiarch.checks.worker", request, keep_stdin=bool(request.get("parent_clock")))
    reader = sandbox.Reader(proc, request["nonce"])
    stopwatch = sandbox.ParentStopwatch(proc)
    results: list[CheckResult] = []
    gaps: list[str] = []
    running = "startup"
    # wall time: start-up, then each check from its start; the whole run never past start-up plus every check's
    # share (a worker that starts checks again, or writes without end, is stopped all the same)
    last = time.monotonic() + opts.startup_timeout + (1 + len(request["checks"])) * opts.check_timeout  # + contract,
    # which the worker runs whether asked or not
    share = opts.startup_timeout  # the wall seconds of the deadline now set
    reader.expire_in(share)
    try:
        for record in reader.records(timeout=opts.startup_timeout):
            if record is None:
                sandbox.kill(proc)
                reason = (f"timed out: past its {share:.0f}s of wall time (the worker was killed)"
                          if reader.expired else f"timed out: no result after {reader.timeout:.0f}s (the worker was killed)")
                results.append(CheckResult(_check_name(running), False, reason))
                return results, gaps, stopwatch.runs
            if "timing" in record:
                stopwatch.answer(record)
            elif "sandbox" in record:
                gaps = list(record["sandbox"])
            elif "start" in record:
                running, reader.timeout = record["start"], opts.check_timeout
                share = min(opts.check_timeout, last - time.monotonic())
                reader.expire_in(share)
            elif "check" in record:
                results.append(CheckResult(record["check"], bool(record["passed"]), str(record["reason"]),
                                           record.get("measurements") or {}, float(record.get("seconds", 0.0))))
                running = None
        if running is not None:  # the worker ended in the middle of a check
            results.append(CheckResult(_check_name(running), False, reader.died()))
    finally:
        sandbox.kill(proc)  # and whatever the candidate left running in its process group
    return results, gaps, stopwatch.runs


TIMED_BY = "the parent, from the kernel's count of the worker's CPU time"  # the complexity check's timing, as stored


def _complexity_outside(results: list[CheckResult], timed: list[dict[str, Any]], request: dict[str, Any],
                        opts: CheckOptions, gaps: list[str]) -> None:
    """Replace the complexity check's verdict by the parent's: from the CPU times this process read (the worker's
    own clock and verdict are the candidate's to forge), once a fresh process, replaying the longest run and one
    other on the same inputs, shows the digests the timed runs reported (a run that skipped its work does not).
    The activation-memory exponent is still the worker's measurement."""
    from asiarch.checks.executable import complexity_lengths, complexity_verdict

    at = next((i for i, r in enumerate(results) if r.check == "complexity"), None)
    if at is None:
        return
    worker, options = results[at], request["options"]

    def refuse(reason: str) -> None:
        results[at] = CheckResult("complexity", False, reason, worker.measurements, worker.seconds)

    lengths = complexity_lengths(options)
    n = len(lengths)
    passes = [[r["seconds"] for r in timed[k:k + n]] for k in range(0, len(timed) - n + 1, n)
              if [r.get("length") for r in timed[k:k + n]] == lengths]
    if any(t is None for times in passes for t in times):
        gaps.append("complexity timed in the candidate's process: this process could not read the kernel's CPU count")
        return
    mem_exp = worker.measurements.get("memory_exponent")
    if not worker.passed:  # the failure stands (a design that raised, or one over the bound by the parent's times)
        if passes and isinstance(mem_exp, (int, float)):  # with the numbers this process measured
            measured = complexity_verdict(lengths, passes, float(mem_exp), options, timed_by=TIMED_BY)[2]
            results[at] = CheckResult("complexity", False, worker.reason, {**worker.measurements, **measured},
                                      worker.seconds)
        return
    if not passes:
        refuse("its runs were not timed by the parent: the worker reported a verdict without the timing protocol")
        return
    if not isinstance(mem_exp, (int, float)):
        refuse("the worker reported no activation-memory exponent")
        return
    replayed = [timed[len(passes) * n - 1], timed[secrets.randbelow(len(passes) * n - 1)]]  # 8T last, one other
    mismatch = _replay(request, replayed, opts)
    if mismatch:
        refuse(mismatch)
        return
    passed, reason, measurements = complexity_verdict(
        lengths, passes, float(mem_exp), options, saved_bytes=worker.measurements.get("saved_bytes"),
        timed_by=TIMED_BY,
        worker_time_exponent=worker.measurements.get("time_exponent"))
    results[at] = CheckResult("complexity", passed, reason, measurements, worker.seconds)


def _replay(request: dict[str, Any], runs: list[dict[str, Any]], opts: CheckOptions) -> str | None:
    """Why the timed runs' digests are not what a fresh process computes on the same inputs, or None."""
    replay = {**request, "nonce": secrets.token_hex(16), "replay": [{"length": r["length"], "go": r["go"]} for r in runs],
              "parent_clock": False}
    proc = sandbox.launch("asiarch.checks.worker", replay)
    reader = sandbox.Reader(proc, replay["nonce"])
    reader.expire_in(opts.startup_timeout + opts.check_timeout)
    digests: dict[int, list[float]] = {}
    try:
        for record in reader.records(timeout=opts.check_timeout):
            if record is None:
                return (f"its replay in a fresh process ran past {opts.startup_timeout + opts.check_timeout:.0f}s "
                        "of wall time" if reader.expired else
                        f"its replay in a fresh process timed out after {reader.timeout:.0f}s")
            if "replay_error" in record:
                return f"its replay in a fresh process raised {record['replay_error'][:200]}"
            if "replayed" in record:
                digests[int(record["replayed"])] = record["digest"]
    finally:
        sandbox.kill(proc)
    for k, run in enumerate(runs):
        mine, fresh = run.get("digest"), digests.get(k)
        if fresh is None:
            return "its replay in a fresh process returned nothing"
        if not (isinstance(mine, list) and len(mine) == len(fresh) and _digests_agree(mine, fresh)):
            return (f"a timed run at T={run['length']} did not compute what a fresh process computes on the same "
                    f"input (digest {mine} vs {fresh}): its time is not the design's")
    return None


def _digests_agree(timed: list[float], fresh: list[float], rtol: float = 1e-4) -> bool:
    """Sums and sums of squares (output, then gradient) within ``rtol`` of the fresh run's scale; a value that is
    not finite must be the same non-finite value (a design with NaN gradients fails its own check, not this one)."""
    def close(a: float, b: float, scale: float) -> bool:
        if not (math.isfinite(a) and math.isfinite(b)):
            return a == b or (math.isnan(a) and math.isnan(b))
        return abs(a - b) <= rtol * scale + 1e-9

    ok = True
    for total, squares, total2, squares2 in ((timed[0], timed[1], fresh[0], fresh[1]), (timed[2], timed[3], fresh[2], fresh[3])):
        norm = math.sqrt(abs(squares2)) if math.isfinite(squares2) else 0.0
        ok &= close(total, total2, abs(total2) + norm if math.isfinite(total2) else 0.0)
        ok &= close(squares, squares2, abs(squares2) if math.isfinite(squares2) else 0.0)
    return ok


def _check_name(running: str | None) -> str:
    """The check to blame; before the worker starts the first check, the sandbox itself failed."""
    return "sandbox" if running in (None, "startup") else running
