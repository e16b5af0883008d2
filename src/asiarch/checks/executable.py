"""The executable checks. They run inside the sandbox worker, never in the caller.

Each check takes the candidate's mixer class and the options and returns
``(passed, reason, measurements)``. They run in ``order.CHECK_ORDER``; the later ones assume
the earlier ones passed (a class that cannot be built has no shape to check).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Result = tuple[bool, str, dict[str, Any]]


def _build(cls: type[nn.Module], opts: dict[str, Any], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls(opts["hidden_size"], opts["num_heads"], layer_idx=0, **opts.get("mixer_kwargs", {}))


def _inputs(batch: int, length: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, length, width, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, opts: dict[str, Any]) -> tuple[bool, float]:
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    tol = opts["atol"] + opts["rtol"] * max(a.abs().max().item() if a.numel() else 0.0, 1.0)
    return diff <= tol, diff


def check_instantiate(cls, opts) -> Result:
    start = time.perf_counter()
    mixer = _build(cls, opts)
    params = sum(p.numel() for p in mixer.parameters())
    return True, f"built at hidden_size={opts['hidden_size']}, num_heads={opts['num_heads']}", {
        "parameters": params, "seconds": time.perf_counter() - start}


def check_shape(cls, opts) -> Result:
    mixer = _build(cls, opts).eval()
    x = _inputs(2, 64, opts["hidden_size"], 1)
    with torch.no_grad():
        out = mixer(x)
    if not isinstance(out, torch.Tensor):
        return False, f"forward returned {type(out).__name__}, expected a tensor [B, T, D]", {}
    if tuple(out.shape) != tuple(x.shape):
        return False, f"forward returned shape {tuple(out.shape)} for input {tuple(x.shape)}", {}
    if out.dtype != x.dtype:
        return False, f"forward returned dtype {out.dtype} for input dtype {x.dtype}", {}
    if not torch.isfinite(out).all():
        return False, f"forward returned {int((~torch.isfinite(out)).sum())} non-finite values", {}
    return True, "[2, 64, D] -> [2, 64, D], finite", {"output_std": out.std().item()}


def _forward(mixer: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # the same random stream for both runs of a comparison (dropout in train mode)
    return mixer(x)


def check_causality(cls, opts) -> Result:
    """Outputs up to k must not change when only later tokens do, in train and eval mode, at a
    fixed shape, at the training batch size and length and at a random shape drawn per run; and
    the outputs for a prefix must not depend on how long the whole sequence is."""
    rng = random.Random(opts.get("causality_seed", 0))
    train_batch, train_len = opts.get("train_batch_size", 2), opts.get("train_seq_len", 128)
    shapes = [("eval", 2, 128), ("train", train_batch, train_len), ("eval", train_batch, train_len),
              (rng.choice(("train", "eval")), rng.randint(1, 5), 16 * rng.randint(2, max(2, train_len // 8)))]
    mixer = _build(cls, opts)
    worst = 0.0
    with torch.no_grad():
        for n, (mode, batch, length) in enumerate(shapes):
            mixer.train(mode == "train")
            x = _inputs(batch, length, opts["hidden_size"], 2 + n)
            base = _forward(mixer, x, n)
            for k in sorted({0, length // 2, length - 2, rng.randrange(length - 1)}):
                perturbed = x.clone()
                perturbed[:, k + 1 :] = _inputs(batch, length - k - 1, opts["hidden_size"], 100 + 7 * n + k)
                ok, diff = _close(base[:, : k + 1], _forward(mixer, perturbed, n)[:, : k + 1], opts)
                worst = max(worst, diff)
                if not ok:
                    return False, (f"{mode} mode, batch {batch}, length {length}: outputs up to position {k} changed by "
                                   f"{diff:.3g} when only tokens after {k} changed"), {"max_leak": diff, "position": k,
                                                                                    "mode": mode, "shape": [batch, length]}
        mixer.eval()
        full_length = max(4 * train_len, 2 * opts["complexity_base_length"])
        x = _inputs(1, full_length, opts["hidden_size"], 50)
        full = mixer(x)
        # lengths in multiples of 16, like the fixed shapes: lengths no chunk size divides are odd_lengths' business
        for prefix in sorted({max(16, train_len // 32 * 16), train_len, 16 * rng.randint(1, full_length // 16 - 1)}):
            ok, diff = _close(full[:, :prefix], mixer(x[:, :prefix]), opts)
            worst = max(worst, diff)
            if not ok:
                return False, (f"the outputs for the first {prefix} tokens change by {diff:.3g} when the sequence is "
                               f"{full_length} long instead of {prefix}: they depend on the sequence's length"), {
                    "max_leak": diff, "prefix": prefix, "length": full_length}
    shown = ", ".join(f"{m} {b}x{t}" for m, b, t in shapes)
    return True, f"causal in {shown}; prefixes independent of the sequence's length", {"max_leak": worst}


def check_batch_independence(cls, opts) -> Result:
    mixer = _build(cls, opts).eval()
    x = _inputs(3, 48, opts["hidden_size"], 4)
    with torch.no_grad():
        together = mixer(x)
        changed = x.clone()
        changed[1:] = _inputs(2, 48, opts["hidden_size"], 5)
        ok, diff = _close(together[0], mixer(changed)[0], opts)
        if not ok:
            return False, f"sample 0's output changed by {diff:.3g} when only the other samples changed", {"max_leak": diff}
        alone = mixer(x[2:3])
        ok, diff_alone = _close(together[2:3], alone, opts)
        if not ok:
            return False, f"a sample's output differs by {diff_alone:.3g} between batch size 3 and 1", {"max_leak": diff_alone}
    return True, "each sample's output depends on that sample only", {"max_leak": max(diff, diff_alone)}


def check_odd_lengths(cls, opts) -> Result:
    mixer = _build(cls, opts).eval()
    for length in (1, 37, 129):
        x = _inputs(2, length, opts["hidden_size"], 6 + length)
        with torch.no_grad():
            out = mixer(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape) or not torch.isfinite(out).all():
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return False, f"length {length}: forward returned {shape} (or non-finite values)", {"length": length}
    return True, "lengths 1, 37 and 129 work", {}


def _saved_bytes(mixer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward: the activation memory of one step."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mixer(x).sum().backward()
    return total


def _growth_exponent(lengths: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(length)."""
    return _log_log_fit(lengths, values)[0]


def _log_log_fit(lengths: Sequence[int], values: Sequence[float]) -> tuple[float, float | None]:
    """Slope of log(value) against log(length) and its standard error (None with fewer than three points or one
    length): what says how sure a growth exponent is."""
    xs, ys = [math.log(n) for n in lengths], [math.log(max(v, 1e-12)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((a - mx) ** 2 for a in xs)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sxx
    if len(xs) < 3 or sxx == 0:
        return slope, None
    residual = sum((b - my - slope * (a - mx)) ** 2 for a, b in zip(xs, ys))
    return slope, math.sqrt(residual / (len(xs) - 2) / sxx)


def _exponent_noise(lengths: list[int], passes: list[list[float]]) -> float | None:
    """How far a growth exponent from these timed passes over ``lengths`` may be off: the larger of the log-log
    fit's standard error over every timed run and the spread of the exponents fitted to each pass alone (load that
    bends one whole pass shows in the second, jitter within passes in the first). benchmarks/bench_growth_noise.py
    measures how often it covers the spread between checks."""
    fit_se = _log_log_fit([n for _ in passes for n in lengths], [t for times in passes for t in times])[1]
    per_pass = [_growth_exponent(lengths, times) for times in passes]
    spread = statistics.stdev(per_pass) if len(per_pass) >= 2 else None
    known = [v for v in (fit_se, spread) if v is not None]
    return max(known) if known else None


def complexity_run(mixer: nn.Module, x: torch.Tensor, go: dict[str, Any] | None = None) -> list[float]:
    """One timed unit of the complexity check: forward and backward of ``mixer`` on ``x * scale + shift`` with
    torch's generator at ``seed`` (``go``, drawn by the parent per run), and a digest of what it computed (sum and
    sum of squares of the output and of the input's gradient): a run that skipped the work cannot show the digest
    a fresh process computes on the same input."""
    go = go or {"scale": 1.0, "shift": 0.0, "seed": 0}
    torch.manual_seed(go["seed"])  # a design that draws random numbers (dropout) draws the same in a replay
    xi = (x.detach() * go["scale"] + go["shift"]).requires_grad_(True)
    out = mixer(xi)
    out.sum().backward()
    mixer.zero_grad(set_to_none=True)
    grad = xi.grad if xi.grad is not None else torch.zeros(())  # a design that ignores its input has none
    digest = [out.detach().double(), grad.double()]
    return [v for t in digest for v in (float(t.sum()), float(t.square().sum()))]


def complexity_lengths(opts: dict[str, Any]) -> list[int]:
    """The complexity check's lengths: T, 2T, 4T, 8T."""
    base = opts["complexity_base_length"]
    return [base, 2 * base, 4 * base, 8 * base]


def complexity_inputs(opts: dict[str, Any]) -> tuple[list[int], list[torch.Tensor]]:
    """The complexity check's lengths and its base inputs: what a replay rebuilds."""
    lengths = complexity_lengths(opts)
    return lengths, [_inputs(1, length, opts["hidden_size"], 7).requires_grad_(True) for length in lengths]


def _fastest(passes: list[list[float]]) -> list[float]:
    """Each length's least-disturbed time over the passes: load on the machine only adds time."""
    return [min(times) for times in zip(*passes)]


def complexity_verdict(lengths: list[int], passes: list[list[float]], mem_exp: float, opts: dict[str, Any],
                       **more: Any) -> Result:
    """The complexity check's verdict from timed passes over ``lengths`` (each length's fastest run) and the
    activation memory's exponent: the worker's, and the parent's from its own clock (``checks.check_candidate``)."""
    seconds = _fastest(passes)
    time_exp, bound = _growth_exponent(lengths, seconds), opts["max_growth_exponent"]
    measurements = {"lengths": lengths, "cpu_seconds": seconds, "sweeps": max(1, len(passes) // opts["complexity_repeats"]),
                    "time_exponent": time_exp, "time_exponent_se": _exponent_noise(lengths, passes),
                    "memory_exponent": mem_exp, "bound": bound, **more}
    if opts["allow_quadratic"]:
        return True, f"quadratic cost allowed (time ~T^{time_exp:.2f}, memory ~T^{mem_exp:.2f})", measurements
    worst = max(time_exp, mem_exp)
    if worst > bound:
        which = "CPU time" if time_exp >= mem_exp else "activation memory"
        return False, (f"{which} grows as T^{worst:.2f} from T={lengths[0]} to {lengths[-1]}, above the bound "
                       f"T^{bound}"), measurements
    return True, f"time ~T^{time_exp:.2f}, memory ~T^{mem_exp:.2f} (bound T^{bound})", measurements


def check_complexity(cls, opts) -> Result:
    """CPU time and activation memory of forward+backward at T, 2T, 4T, 8T; both must grow sub-quadratically.

    With ``opts["clock"]`` (the sandbox's ``ParentClock``) each run is timed by the parent, from the kernel's
    count of the worker's CPU time, on an input it varies per run; the parent re-derives the verdict from its
    own times and replays some runs in a fresh process. Without one (a direct call), by this thread's CPU clock.
    """
    mixer = _build(cls, opts).train()
    lengths, inputs = complexity_inputs(opts)
    memory = [_saved_bytes(mixer, x) for x in inputs]  # also the warm-up run for each length
    clock = opts.get("clock")

    def timed(i: int) -> float:
        # CPU seconds, not wall seconds: time spent waiting for a core that another process holds is not the
        # design's cost, and on a campaign's busy cores it bent wall-clock fits of linear designs past the bound.
        # Per thread (not the process's CPU clock, which with the sandbox's CPU-time limit armed advances only at
        # scheduler ticks, 4 ms here, and zeroed a cheap design's shortest runs); the parent reads each thread's.
        start = time.thread_time()
        if clock is None:
            complexity_run(mixer, inputs[i])
            return time.thread_time() - start
        seconds = clock({"length": lengths[i]}, lambda go: complexity_run(mixer, inputs[i], go))
        return seconds if seconds is not None else time.thread_time() - start  # the parent could not read /proc

    def sweep() -> None:
        # The lengths take turns (T, 2T, 4T, 8T, T, ...), so load that comes and goes during a sweep reaches every
        # length alike instead of only the ones timed last.
        for _ in range(opts["complexity_repeats"]):
            passes.append([timed(i) for i in range(len(inputs))])

    passes: list[list[float]] = []  # every pass over the lengths: their spread says how sure the exponent is
    bound, mem_exp = opts["max_growth_exponent"], _growth_exponent(lengths, memory)
    sweep()
    # Load that hit one length harder than another bends the time fit (a campaign's trials on the same two cores
    # bent a linear design's to T^1.35 in three sweeps, and a test run beside a campaign read DeltaNet at T^1.15,
    # which the Judge counted as growth): sweep again, keeping each length's best, while time reads above linear
    # (what the verdict or the Judge's growth term can count) and memory, which load does not bend, is within the
    # bound (quadratic cost not allowed), until a sweep reproduces every length's best within 5 % (load that bends
    # the fit varies between sweeps; a real cost repeats).
    while (_growth_exponent(lengths, _fastest(passes)) > 1.0 and mem_exp <= bound and not opts["allow_quadratic"]
           and len(passes) < 5 * opts["complexity_repeats"]):  # at most 5 sweeps
        before = _fastest(passes)
        sweep()
        if not any(new < 0.95 * old for old, new in zip(before, _fastest(passes))):
            break
    return complexity_verdict(lengths, passes, mem_exp, opts, saved_bytes=memory)


def param_band_violation(parameters: int, reference: int, band: Sequence[float]) -> str | None:
    """Why ``parameters`` is outside ``band`` times the reference mixer's, or None: the parameter budget's rule,
    applied by the check (to the mixer it builds) and by the trainable (to every mixer in a checkpoint)."""
    low, high = band
    ratio = parameters / max(reference, 1)
    if low <= ratio <= high:
        return None
    return (f"{parameters:,} parameters, {ratio:.2f}x the reference mixer's {reference:,}, "
            f"outside the allowed band [{low}x, {high}x]")


def check_param_budget(cls, opts) -> Result:
    from asiarch.arch.model import count_state

    # the state dict, not .parameters(): a persistent buffer is capacity too, and it is what a checkpoint holds
    params = count_state(_build(cls, opts).state_dict())
    reference = opts["reference_parameters"]
    ratio = params / max(reference, 1)
    measurements = {"parameters": params, "reference_parameters": reference, "ratio": ratio}
    violation = param_band_violation(params, reference, opts["param_band"])
    if violation is not None:
        return False, violation, measurements
    return True, f"{params:,} parameters, {ratio:.2f}x the reference mixer", measurements


def check_finite_gradients(cls, opts) -> Result:
    mixer = _build(cls, opts).train()
    x = _inputs(2, 64, opts["hidden_size"], 8).requires_grad_(True)
    loss = mixer(x).square().mean()
    if not torch.isfinite(loss):
        return False, f"the loss of a forward pass is {loss.item()}", {}
    loss.backward()
    bad = [name for name, p in mixer.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if x.grad is not None and not torch.isfinite(x.grad).all():
        bad.append("<input>")
    without = [name for name, p in mixer.named_parameters() if p.requires_grad and p.grad is None]
    if bad:
        return False, f"non-finite gradients in {bad[:5]}", {"non_finite": bad}
    norm = math.sqrt(sum(p.grad.double().square().sum().item() for p in mixer.parameters() if p.grad is not None))
    measurements = {"grad_norm": norm, "parameters_without_gradient": without}
    if norm > opts["max_grad_norm"]:
        return False, f"gradient norm {norm:.3g} at initialisation exceeds {opts['max_grad_norm']:.3g}: it will explode", measurements
    return True, f"all gradients finite, norm {norm:.3g}", measurements


@torch.no_grad()
def adamw_step(params: list[nn.Parameter], moments: dict[int, tuple[torch.Tensor, torch.Tensor]], step: int,
               lr: float = 3e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 1e-2) -> None:
    """torch.optim.AdamW's update (its defaults), written out: any torch.optim optimizer imports
    torch._dynamo, 1.5 s of every check worker's start-up. Clears the gradients."""
    b1, b2 = betas
    for p in params:
        if p.grad is None:
            continue
        m, v = moments.setdefault(id(p), (torch.zeros_like(p), torch.zeros_like(p)))
        p.mul_(1 - lr * weight_decay)
        m.lerp_(p.grad, 1 - b1)
        v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        p.addcdiv_(m, (v / (1 - b2 ** step)).sqrt_().add_(eps), value=-lr / (1 - b1 ** step))
        p.grad = None


def check_training_smoke(cls, opts) -> Result:
    """The mixer must depend on its input, and 20 steps on MQAR must lower the loss."""
    from asiarch.arch.model import LanguageModel, ModelConfig
    from asiarch.data.mqar import MQAR, MQARConfig

    mixer = _build(cls, opts).eval()
    x = _inputs(1, 32, opts["hidden_size"], 9)
    with torch.no_grad():
        change = (mixer(x) - mixer(x + _inputs(1, 32, opts["hidden_size"], 10))).abs().max().item()
    if change < 1e-6:
        return False, "the mixer's output does not depend on its input: it cannot mix tokens", {"input_sensitivity": change}

    recall = MQAR(MQARConfig(vocab_size=128, seq_len=64, num_kv_pairs=4, num_train=2000, num_test=10, seed=0))
    torch.manual_seed(0)
    # a fixed harness (unscaled embeddings, whatever the scale): 20 steps measure that the design
    # learns at all, and the calibration of this bar was made with it
    model = LanguageModel(ModelConfig(vocab_size=128, hidden_size=opts["hidden_size"], num_layers=2,
                                      num_heads=opts["num_heads"], mixer_kwargs=opts.get("mixer_kwargs", {}),
                                      scale_embeddings=False), cls)
    params = [p for p in model.parameters() if p.requires_grad]
    moments: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(opts["smoke_steps"]):
        inputs, labels = recall.train_batch(32, generator)
        loss = F.cross_entropy(model(inputs).flatten(0, 1), labels.flatten(), ignore_index=-100)
        if not torch.isfinite(loss):
            return False, f"training loss became {loss.item()} at step {step}", {"losses": losses}
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        adamw_step(params, moments, step + 1)
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    measurements = {"losses": losses, "first5": first, "last5": last, "input_sensitivity": change}
    if not last < first - opts["smoke_min_improvement"]:
        return False, f"MQAR loss did not go down in {len(losses)} steps ({first:.3f} -> {last:.3f})", measurements
    return True, f"MQAR loss {first:.3f} -> {last:.3f} in {len(losses)} steps", measurements


CHECKS: dict[str, Callable[[type[nn.Module], dict[str, Any]], Result]] = {  # run in CHECK_ORDER
    "instantiate": check_instantiate,
    "shape": check_shape,
    "causality": check_causality,
    "batch_independence": check_batch_independence,
    "odd_lengths": check_odd_lengths,
    "param_budget": check_param_budget,
    "complexity": check_complexity,
    "finite_gradients": check_finite_gradients,
    "training_smoke": check_training_smoke,
}
