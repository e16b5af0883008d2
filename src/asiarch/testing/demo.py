"""A synthetic campaign directory, for the dashboard's tests, its benchmark and its screenshots.

Nothing here is trained or judged: the candidates are the seed sources with lines added
by a seeded random walk over design motifs, and their metrics follow a latent quality
that drifts upward along the lineage. What is real is the layout: the rows are written
through ``Memory`` as a campaign leaves them (seed baselines of kind ``seed``; every
candidate that trained marked ``reached_training``; verified ones finished at stage
verify with their verify fitness and ``breakthrough``; ASHA-stopped ones with status
``stopped``), next to a ``campaign.json`` of the same shape, so the dashboard and the
report read it as they read a real campaign. Rows are inserted with their final status
at once, which the lifecycle allows for new rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import asiarch
from asiarch.campaign.state import CampaignPaths, set_latest
from asiarch.memory import (
    Candidate,
    FunctionEmbedder,
    Insight,
    Kind,
    Memory,
    StageMetrics,
    lifecycle,
    seed_row_id,
)
from asiarch.memory.embed import Embedder

SEEDS = ("deltanet", "gated_deltanet", "mamba2", "attention")
CHECKS = ("contract", "instantiate", "shape", "causality", "batch_independence", "odd_lengths", "param_budget",
          "complexity", "finite_gradients", "training_smoke")
_MOTIFS = {
    "forget_gate": ("a data-dependent forget gate on the state", "g = torch.sigmoid(self.g_proj(hidden_states))"),
    "short_conv": ("a short causal convolution before the keys", "k = self.k_conv(k)  # depthwise, kernel 4"),
    "norm_keys": ("L2-normalised keys for a stable delta rule", "k = F.normalize(k, dim=-1)"),
    "dual_state": ("two state matrices with different decays", "s_fast, s_slow = s * 0.5, s * 0.99"),
    "output_gate": ("a SiLU output gate", "o = o * F.silu(self.o_gate(hidden_states))"),
    "beta_head": ("a per-head learning rate for the delta update", "beta = self.beta_proj(hidden_states).sigmoid()"),
    "rotary": ("rotary position on queries and keys", "q, k = apply_rotary(q, k, self.rotary)"),
    "low_rank_mix": ("a low-rank mixing of heads", "o = o + self.mix_b(self.mix_a(o))"),
    "chunk_local": ("exact attention inside each chunk", "o = o + local_attention(q, k, v, window=64)"),
    "decay_floor": ("a floor on the decay so memory never vanishes", "decay = decay.clamp(min=0.05)"),
}
_ADJECTIVES = ("gated", "dual", "sparse", "stable", "local", "rotary", "normed", "hybrid", "adaptive", "fused")
_NOUNS = ("delta", "recall", "memory", "mixer", "scan", "flow", "state", "gate", "conv", "path")


def hashed_words(texts: Sequence[str], dim: int = 384) -> np.ndarray:
    """A crude but deterministic text embedding (hashed bag of words); no model needed."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
        out[row, 0] += 1e-3  # never an all-zero row
    return out


def demo_embedder(dim: int = 384) -> Embedder:
    """The embedder of demo campaigns (hashed words); pass it to ``build_app`` to search insights by vector."""
    return FunctionEmbedder(functools.partial(hashed_words, dim=dim), dim)


def _seed_code(seed: str) -> str:
    return (Path(asiarch.__file__).parent / "arch" / "layers" / f"{seed}.py").read_text()


def _curve(rng: random.Random, final: float, points: int) -> list[float]:
    start = final + 3.0 + rng.random()
    tau = 3.0 + 2.0 * rng.random()
    return [round(final + (start - final) * math.exp(-t / tau) + rng.gauss(0, 0.02), 4) for t in range(points)]


def _sigmoid_term(delta: float, anchor: float) -> float:
    ratio = max(-1.0, min(1.0, delta / (0.1 * abs(anchor))))
    return 1 / (1 + math.exp(-6.0 * ratio))


def _mutate(code: str, rng: random.Random, motif: str) -> str:
    """The parent's code with the motif's line added in ``forward`` (and a parameter in ``__init__``)."""
    lines = code.splitlines()
    statement = _MOTIFS[motif][1]
    forward = [i for i, line in enumerate(lines) if line.strip().startswith("def forward")]
    init = [i for i, line in enumerate(lines) if line.strip().startswith("def __init__")]
    anchor = forward[0] if forward else len(lines) - 1
    span = [i for i in range(anchor + 1, min(len(lines), anchor + 40)) if lines[i].strip() and lines[i].startswith(" " * 8)]
    at = rng.choice(span) if span else len(lines)
    indent = " " * (len(lines[at]) - len(lines[at].lstrip())) if at < len(lines) else " " * 8
    lines.insert(at, f"{indent}{statement}  # motif: {motif}")
    rewritable = [i for i in span if " = " in lines[i] and "# " not in lines[i] and i != at]
    if rewritable and rng.random() < 0.5:  # and rewrite one assignment, so the diff also removes a line
        i = rng.choice(rewritable)
        target, _, expression = lines[i].partition(" = ")
        lines[i] = f"{target} = ({expression.rstrip()})  # reweighted for {motif}"
    supers = [i for i in range(init[0], len(lines)) if "super().__init__" in lines[i]] if init else []
    if supers:
        lines.insert(supers[0] + 1, f"        self.{motif}_scale = nn.Parameter(torch.ones(num_heads))  # motif: {motif}")
    return "\n".join(lines) + "\n"


def _check_report(rng: random.Random, fail: str | None) -> dict[str, Any]:
    results = []
    for check in CHECKS:
        if check == fail:
            results.append({"check": check, "passed": False, "seconds": round(rng.uniform(0.1, 3), 2),
                            "reason": {"causality": "output at t=17 changes when token 40 changes (leaks the future)",
                                       "complexity": "time grows as T^1.92 from T=512 to 4096 (limit 1.3)",
                                       "shape": "forward returned [2, 64, 128], expected [2, 64, 256]",
                                       "param_budget": "2.9x the reference seed's parameters (band 0.5-2.0)"}.get(
                                           check, f"{check} failed"),
                            "measurements": {}})
            break
        measurements = {"complexity": {"time_exponent": round(rng.uniform(0.9, 1.2), 3),
                                       "memory_exponent": round(rng.uniform(0.95, 1.1), 3)},
                        "param_budget": {"ratio": round(rng.uniform(0.8, 1.6), 3)},
                        "training_smoke": {"improvement": round(rng.uniform(0.1, 0.5), 3)}}.get(check, {})
        results.append({"check": check, "passed": True, "reason": "ok", "measurements": measurements,
                        "seconds": round(rng.uniform(0.05, 2.5), 2)})
    return {"passed": fail is None, "seconds": round(sum(r["seconds"] for r in results), 2), "sandbox_gaps": [],
            "results": results}


def make_demo_campaign(runs_dir: str | Path, n: int = 40, seed: int = 0, name: str = "demo",
                       embedder: Embedder | None = None, batch: int = 500) -> Path:
    """Write a synthetic campaign of ``n`` candidates (plus the four seed baselines) under ``runs_dir``.

    Returns the campaign directory (``runs_dir/name``) and points ``runs_dir/LATEST`` at it.
    """
    rng = random.Random(seed)
    paths = CampaignPaths(Path(runs_dir) / name)
    paths.root.mkdir(parents=True, exist_ok=True)
    embedder = embedder or demo_embedder()
    memory = Memory(paths.memory, embedder=embedder)
    # the campaign started so that its last proposal was made about now: the page reads as live
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=90 * n + 600)).replace(microsecond=0)
    anchor = {"eval_loss": 5.0, "benchmark": 0.40}
    seed_quality = {"deltanet": 0.0, "gated_deltanet": 0.02, "mamba2": -0.01, "attention": 0.01}
    rows: list[Candidate] = []
    quality: dict[str, float] = {}
    baselines: dict[str, dict[str, dict[str, float]]] = {"explore": {}, "verify": {}}
    for i, s in enumerate(SEEDS):
        q = seed_quality[s]
        explore = StageMetrics(loss_curve=_curve(rng, anchor["eval_loss"] - q, 20), eval_loss=anchor["eval_loss"] - q,
                               mqar_accuracy=anchor["benchmark"] + q, benchmark=anchor["benchmark"] + q, fitness=0.5,
                               fitness_parts={"stage": "explore", "terms": {"loss": 0.5, "benchmark": 0.5}})
        verify = StageMetrics(loss_curve=_curve(rng, 4.2 - q, 30), eval_loss=4.2 - q, mqar_accuracy=0.6 + q,
                              benchmark=0.33 + q / 2)
        c = Candidate(id=seed_row_id(name, s), campaign=name, name=s, code=_seed_code(s), kind=Kind.SEED.value,
                      motivation=f"seed architecture {s} (baseline)", stage="verify", status="finished",
                      status_reason="seed baseline", explore=explore, verify=verify,
                      check_report=_check_report(rng, None), device_seconds=90.0 + 600.0, tokens_trained=3_000_000,
                      created_at=start + dt.timedelta(seconds=i))
        rows.append(c)
        quality[c.id] = q
        for stage, m in (("explore", explore), ("verify", verify)):
            baselines[stage][s] = {"eval_loss": m.eval_loss, "benchmark": m.benchmark, "mqar_accuracy": m.mqar_accuracy}
    names: set[str] = set()
    scored: list[Candidate] = [c for c in rows]
    spent = 90.0 * len(SEEDS)  # device-seconds so far, in proposal order: the seeds' explore runs, then each trial
    for i in range(n):
        pool = sorted(scored, key=lambda c: -(c.fitness or 0))[:10] if rng.random() < 0.8 else scored
        parent = rng.choice(pool)
        others = [c for c in scored if c.id != parent.id]
        parents = [parent] + ([rng.choice(others)] if others and rng.random() < 0.15 else [])
        fresh = [m for m in sorted(_MOTIFS) if f"# motif: {m}" not in parent.code]
        motif = rng.choice(fresh or sorted(_MOTIFS))
        base = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
        label = base if base not in names else f"{base}-{i}"
        names.add(label)
        q = quality[parent.id] + rng.gauss(-0.004, 0.025)  # most changes hurt a little; selection keeps the good ones
        cid = f"{name}-{i:05d}"
        created = start + dt.timedelta(seconds=60 + 90 * i + rng.randint(0, 60))
        c = Candidate(id=cid, campaign=name, name=label, code=_mutate(parent.code, rng, motif),
                      motivation=f"{_MOTIFS[motif][0].capitalize()} on top of {parent.name}: it should help recall "
                                 f"when many key-value pairs compete for the state.",
                      parent_ids=[p.id for p in parents], generation=parent.generation + 1, created_at=created,
                      llm_input_tokens=rng.randint(2000, 9000), llm_output_tokens=rng.randint(300, 1500),
                      llm_usd=round(rng.uniform(0.01, 0.06), 4))
        fate = rng.random()
        in_flight = i >= n - max(1, n // 40)
        if in_flight:
            c.status = rng.choice(("proposed", "validated", "training"))
            c.check_report = _check_report(rng, None) if c.status != "proposed" else {}
        elif fate < 0.10:
            failing = rng.choice(("causality", "complexity", "shape", "param_budget"))
            c.status, c.check_report = "rejected", _check_report(rng, failing)
            c.status_reason = f"{failing}: {c.check_report['results'][-1]['reason']}"
            c.repairs = [{"attempt": k + 1, "failures": [{"check": failing}], "fixed": False} for k in range(2)]
        elif fate < 0.13:
            c.status, c.check_report, c.reached_training = "failed", _check_report(rng, None), True
            c.status_reason = "training: loss became NaN at step 212"
            c.device_seconds = round(rng.uniform(10, 40), 1)
        else:
            stopped = fate < 0.38
            points = rng.randint(5, 10) if stopped else 20
            loss = anchor["eval_loss"] - q + (0.15 if stopped else 0.0) + rng.gauss(0, 0.02)
            bench = max(0.0, min(1.0, anchor["benchmark"] + q + rng.gauss(0, 0.02)))
            c.explore = StageMetrics(loss_curve=_curve(rng, loss, 20)[:points], eval_loss=round(loss, 4),
                                     mqar_accuracy=round(bench, 4), benchmark=round(bench, 4), benchmarks={"mqar": round(bench, 4)})
            c.check_report = _check_report(rng, None)
            c.status, c.reached_training = ("stopped" if stopped else "finished"), True
            c.status_reason = "stopped by ASHA at rung 1" if stopped else "explore run finished"
            c.device_seconds = round(rng.uniform(20, 45) if stopped else rng.uniform(70, 110), 1)
            c.tokens_trained = points * 25_000
            perf, innov, compl = (max(1, min(10, round(5 + 40 * q + rng.gauss(0, 1)))),
                                  rng.randint(3, 9), rng.randint(3, 9))
            overall = (0.5 * perf + 0.3 * innov + 0.2 * compl) / 10
            c.judge = {"performance": perf, "innovation": innov, "complexity": compl, "overall": round(overall, 3)}
            c.judge_rationale = (f"{'Beats' if q > 0 else 'Trails'} the seeds on eval loss by {abs(q):.3f}; "
                                 f"the {motif.replace('_', ' ')} is a {'fresh' if innov > 6 else 'familiar'} idea "
                                 f"at {'low' if compl > 6 else 'moderate'} cost.")
            c.analysis = (f"Compared with its parent {parent.name}, adding {_MOTIFS[motif][0]} moved eval loss "
                          f"by {q - quality[parent.id]:+.3f} and MQAR accuracy by {q - quality[parent.id]:+.3f}.")
            terms = {"loss": _sigmoid_term(anchor["eval_loss"] - loss, anchor["eval_loss"]),
                     "benchmark": _sigmoid_term(bench - anchor["benchmark"], anchor["benchmark"]), "judge": overall}
            c.explore.fitness = round(sum(terms.values()) / 3, 5)
            c.explore.fitness_parts = {"terms": terms, "missing": {}, "formula": "asi_arch_eq2", "stage": "explore",
                                       lifecycle.SCORED_AT: round((spent + c.device_seconds) / 3600, 6)}
            if rng.random() < 0.2:
                c.repairs = [{"attempt": 1, "failures": [{"check": "shape"}], "fixed": True}]
        rows.append(c)
        spent += c.device_seconds
        quality[cid] = q
        if c.fitness is not None:
            scored.append(c)
    # the fittest tenth of the explored go to verify; a breakthrough beats every seed there
    explored = sorted((c for c in rows if c.fitness is not None and not lifecycle.is_seed(c)), key=lambda c: -c.fitness)
    verify_anchor = baselines["verify"][SEEDS[0]]
    for c in explored[:max(1, len(explored) // 10)]:
        q = quality[c.id]
        loss = round(4.2 - 0.3 * q + rng.gauss(0, 0.03), 4)  # explore gains carry over only in part
        c.stage, c.status = "verify", "finished"  # promoted, then trained to the end of verify
        c.verify = StageMetrics(loss_curve=_curve(rng, loss, 30), eval_loss=loss, mqar_accuracy=round(0.6 + q, 4),
                                benchmark=round(0.33 + q / 2, 4))
        c.device_seconds += round(rng.uniform(500, 700), 1)
        c.tokens_trained += 2_500_000
        bench = round(0.33 + 0.2 * q + rng.gauss(0, 0.02), 4)
        c.verify.benchmark = bench
        beats = {s: loss < b["eval_loss"] - 0.02 and bench > b["benchmark"] + 0.02 for s, b in baselines["verify"].items()}
        terms = {"loss": _sigmoid_term(verify_anchor["eval_loss"] - loss, verify_anchor["eval_loss"]),
                 "benchmark": _sigmoid_term(bench - verify_anchor["benchmark"], verify_anchor["benchmark"]),
                 "judge": c.judge["overall"]}
        c.verify.fitness = round(sum(terms.values()) / 3, 5)
        tests = {s: {"beats": beats[s], "loss": {"diff": loss - b["eval_loss"], "ci": [loss - b["eval_loss"] - 0.03,
                                                                              loss - b["eval_loss"] + 0.03],
                                                 "p": 0.01 if beats[s] else 0.4, "effect_size": -2.0, "n": [3, 3]},
                     "benchmark": {"diff": bench - b["benchmark"], "ci": None, "p": 0.02 if beats[s] else 0.3,
                                   "effect_size": None, "n": [3, 3]}}
                 for s, b in baselines["verify"].items()}  # synthetic, like every number of the demo
        c.verify.fitness_parts = {"terms": terms, "missing": {}, "formula": "asi_arch_eq2", "stage": "verify",
                                  "beats": beats, "tests": tests, "significance": 0.05}
        c.breakthrough = all(beats.values())  # beats every seed on both loss and benchmark
        c.status_reason = ("breakthrough: beats every seed at verify scale" if c.breakthrough
                           else f"verified; beats {sum(beats.values())}/{len(beats)} seed(s)")
    for first in range(0, len(rows), batch):
        memory.upsert_candidates(rows[first:first + batch])
    memory.upsert_insights([
        Insight(id=f"{name}-insight-{k}", kind="experiment", source=c.id, campaign=name,
                design_insight=f"{_MOTIFS[m][0].capitalize()} helps associative recall when the state is crowded.",
                trigger_patterns=[f"recall drops as key-value pairs grow ({m.replace('_', ' ')})"], motifs=[m])
        for k, (m, c) in enumerate(zip(sorted(_MOTIFS), explored[:len(_MOTIFS)]))
    ])
    memory.optimize()
    # the state file, as the campaign writes it
    hours, count, discovery = 0.0, 0, []
    for c in sorted(rows, key=lambda c: c.created_at):
        hours += c.device_seconds / 3600
        if lifecycle.is_verified(c):
            count += int(lifecycle.is_breakthrough(c))
            discovery.append({"device_hours": round(hours, 4), "breakthroughs": count, "candidate_id": c.id,
                              "at": c.created_at.isoformat(timespec="seconds")})
    counts = lifecycle.count(rows)
    running = any(c.status in ("proposed", "validated", "training") for c in rows if not lifecycle.is_seed(c))
    end = max(c.created_at for c in rows) + dt.timedelta(minutes=5)
    state = {
        "name": name, "status": "running" if running else "finished",
        "phase": "explore", "scale": "cpu_tiny", "verify_scale": "cpu_tiny", "seed": seed,
        "started_at": start.isoformat(timespec="seconds"), "updated_at": end.isoformat(timespec="seconds"),
        "budget": {"max_candidates": max(n, 1) + n // 4, "device_hours": round(hours * 1.5 + 1, 1), "usd": 50.0,
                   "wall_seconds": None},
        "used": {"candidates": counts.trained, "device_seconds": round(counts.device_seconds, 1),
                 "usd": round(counts.usd, 4), "wall_seconds": (end - start).total_seconds()},
        "counts": counts.by_status, "best_fitness": counts.best_fitness,
        "baselines": baselines, "discovery": discovery,
    }
    paths.state.write_text(json.dumps(state, indent=2))
    set_latest(Path(runs_dir), name)
    paths.tune.mkdir(exist_ok=True)
    return paths.root
