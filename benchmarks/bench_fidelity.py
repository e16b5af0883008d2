"""Fidelity of a scale: can its explore and verify budgets tell designs apart beyond training noise?

A fixed ladder of designs (the eight seeds, 2024 and frontier, and four controls from
``asiarch.arch.layers.controls``)
is trained on several training seeds at the scale's explore budget and at its verify budget,
with the campaign's own training protocol (``train_mixer``). Printed, and written as JSON with
``--out``:

- mean Kendall tau of the design ranking (by eval loss, and by MQAR accuracy) between every
  pair of training seeds, at each fidelity;
- Spearman correlation of the explore means with the verify means;
- how many of the verify top 3 the explore ASHA rungs would keep (successive halving over the
  ladder at the campaign's rungs: the first after the warm-up, then x ``explore.reduction_factor``);
- every known pair (a design that must beat another, by construction or from the literature)
  and whether it is ordered correctly on every training seed;
- MQAR accuracy against its chance level, and explore cost per design as a fraction of verify cost;
- the explore fitness's loss term as a campaign computes it (each design's run on each training
  seed against the anchor seed's mean and spread, ``fitness: noise_aware``) for several
  ``noise_multiple`` values: how many designs it saturates (clipped: no longer told apart) and
  the Spearman correlation of the term with the verify loss. The clip belongs beyond the
  deltas real designs show at the scale.

Goals (issue 12): tau >= 0.8 at verify, >= 0.7 at explore; Spearman >= 0.8; known pairs all
correct; explore <= 1/3 of verify cost.

    .venv/bin/python benchmarks/bench_fidelity.py [--scale cpu_tiny] [--seeds 0 1 2] [--workers 2]
        [--set scale.stages.explore_steps=96 ...] [--out fidelity.json] [--runs runs.jsonl]

``--runs`` keeps every finished training run in a JSON-lines file and reuses it on the next
invocation, so an interrupted calibration continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from scipy import stats

from asiarch.campaign.schedulers import first_rung_step, rung_steps, successive_halving
from asiarch.campaign import scoring
from asiarch.campaign.scoring import benchmark_chance
from asiarch.config import ScaleConfig, compose, explore_scale, seeded_scale, stage_scale

LADDER = ["attention", "gated_deltanet", "deltanet", "mamba2",  # the 2024 seeds
          "kda", "gdn2", "rwkv7", "gated_deltaproduct",  # the 2025-26 frontier seeds
          "deltanet_noconv", "linear_attention", "causal_mean", "no_mixing"]  # the controls
# (better, worse, metric, why): orders known by construction or from the literature
KNOWN_PAIRS = [
    ("attention", "no_mixing", "eval_loss", "no_mixing sees no context (construction)"),
    ("deltanet", "no_mixing", "eval_loss", "no_mixing sees no context (construction)"),
    ("attention", "linear_attention", "eval_loss", "softmax over linear attention (Katharopoulos et al., 2020)"),
    ("deltanet", "linear_attention", "eval_loss", "the delta rule over linear attention (Yang et al., 2024)"),
    ("attention", "no_mixing", "mqar_accuracy", "recall needs context (construction)"),
    ("deltanet", "no_mixing", "mqar_accuracy", "recall needs context (construction)"),
    ("deltanet", "causal_mean", "mqar_accuracy", "a uniform average cannot match keys (construction)"),
    ("attention", "linear_attention", "mqar_accuracy", "Zoology (Arora et al., 2023)"),
    ("deltanet", "linear_attention", "mqar_accuracy", "DeltaNet (Yang et al., 2024)"),
    ("deltanet", "deltanet_noconv", "eval_loss", "DeltaNet's short-convolution ablation"),
    *((frontier, "no_mixing", "eval_loss", "no_mixing sees no context (construction)")
      for frontier in ("kda", "gdn2", "rwkv7", "gated_deltaproduct")),
]
METRICS = ("eval_loss", "mqar_accuracy")
LOWER_IS_BETTER = {"eval_loss": True, "mqar_accuracy": False}


def mixer_class(design: str):
    from asiarch.arch import SEEDS
    from asiarch.arch.layers.controls import CONTROLS

    return SEEDS.get(design) or CONTROLS[design]


def scale_fingerprint(scale: ScaleConfig) -> str:
    """What a run measures: the scale without its wall budget (a guard: a run it cut says so in its stop reason)
    and without ``stages`` (how a campaign uses the scale; ``stage_scale`` has set the run's steps and schedule)."""
    fields = dataclasses.asdict(scale)
    fields["train"].pop("max_wall_seconds", None)
    fields.pop("stages", None)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_one(design: str, scale: ScaleConfig, training_seed: int) -> dict[str, Any]:
    """One training run in a worker process; returns the measurements the tables need."""
    from asiarch.train.protocol import prepare_data, train_mixer
    from asiarch.train.trainer import MQAR_SCORES

    scale = seeded_scale(scale, training_seed)
    summary = train_mixer(mixer_class(design), scale, prepare_data(scale), downstream=False)
    keep = ("eval_loss", *MQAR_SCORES, "train_seconds", "steps", "stop_reason", "parameters")
    return {**{k: summary.get(k) for k in keep},
            "history": [{k: h.get(k) for k in ("step", "tokens_seen", "eval_loss", "mqar_accuracy", "mqar_binding")}
                        for h in summary.get("history") or []]}


# ----------------------------------------------------------------------------- statistics


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a of two score lists over the same items: tied pairs count as neither (MQAR
    accuracies of designs at chance tie; scipy's tau-b would rescale them away)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    concordant = sum(math.copysign(1, (a[i] - a[j]) * (b[i] - b[j])) if (a[i] - a[j]) * (b[i] - b[j]) else 0
                     for i, j in pairs)
    return concordant / len(pairs)


def spearman(a: list[float], b: list[float]) -> float:
    return float(stats.spearmanr(a, b).statistic)


def mean(values: list[float]) -> float:
    return scoring.mean(values)


def std(values: list[float]) -> float:
    """Sample standard deviation over training seeds (0 for a single seed)."""
    return scoring.std(values) or 0.0


def settling(designs: list[str], seeds: list[int], explore_run) -> list[dict[str, Any]]:
    """How well the ranking at each explore report step predicts the final explore ranking (by loss):
    mean Kendall tau over training seeds. ASHA's first rung belongs where this is high."""
    rows = []
    steps = sorted({h["step"] for h in explore_run(designs[0], seeds[0])["history"] if h.get("eval_loss") is not None})
    for step in steps:
        taus = []
        for s in seeds:
            at = [next((h["eval_loss"] for h in explore_run(d, s)["history"] if h["step"] == step), math.inf)
                  for d in designs]
            taus.append(kendall_tau(at, [explore_run(d, s)["eval_loss"] for d in designs]))
        rows.append({"step": step, "kendall_tau_to_final": mean(taus)})
    return rows


def loss_term_calibration(cfg, designs: list[str], seeds: list[int], run, verify: dict[str, Any],
                          bench_key: str) -> dict[str, Any]:
    """The noise-aware loss term of every design's explore run against the anchor (the campaign's seed),
    for several clips: how many designs saturate and how well the term still ranks verify loss."""
    from asiarch.campaign.fitness import clipped_sigmoid, noise_aware_fitness

    anchor_name = str(cfg.campaign.seed)
    anchor = scoring.anchor_of(anchor_name, scoring.stage_metrics([run(anchor_name, "explore", s) for s in seeds], bench_key))
    slope, conf_k = float(cfg.fitness.get("slope", 6.0)), cfg.fitness.get("noise_multiple")  # None under fitness=eq2
    sd = anchor["eval_loss_std"]
    z = {d: mean([(run(d, "explore", s)["eval_loss"] - anchor["eval_loss"]) / sd for s in seeds]) for d in designs}
    ceilings = (clipped_sigmoid(-1.0, slope), clipped_sigmoid(1.0, slope))  # what a clipped delta scores
    rows = []
    for k in sorted({3.0, 6.0, 12.0, 24.0} | ({float(conf_k)} if conf_k is not None else set())):
        terms = {d: [noise_aware_fitness({"eval_loss": run(d, "explore", s)["eval_loss"]}, anchor, None, slope=slope,
                                         noise_multiple=k).parts["terms"]["loss"] for s in seeds] for d in designs}
        saturated = sum(any(term in ceilings for term in terms[d]) for d in designs)
        rows.append({"noise_multiple": k, "saturated": saturated,
                     "spearman_verify": spearman([mean(terms[d]) for d in designs],
                                                 [-verify[d]["eval_loss_mean"] for d in designs])})
    return {"anchor": anchor_name, "anchor_loss": anchor["eval_loss"], "anchor_sd": sd, "slope": slope,
            "conf_noise_multiple": None if conf_k is None else float(conf_k), "z": z, "rows": rows}


def _g(value: float | None) -> str:
    return "- (the conf's fitness is not noise_aware)" if value is None else f"{value:g}"


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="cpu_tiny")
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides, e.g. scale.stages.explore_steps=96")
    parser.add_argument("--designs", nargs="*", default=LADDER)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--runs", type=Path, help="JSON-lines file of finished runs, reused when it matches")
    args = parser.parse_args()
    console = Console(width=160)

    cfg = compose([f"scale={args.scale}", *args.set])
    base = ScaleConfig.from_dict(cfg.scale)
    fidelities = {"explore": explore_scale(base),
                  "verify": stage_scale(base, base.stages.verify_steps)}
    grace, rf = float(cfg.explore.grace_fraction), int(cfg.explore.reduction_factor)

    done: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    if args.runs and args.runs.exists():
        for line in args.runs.read_text().splitlines():
            row = json.loads(line)
            done[(row["design"], row["fidelity"], row["seed"], row["fingerprint"])] = row["result"]
    jobs = [(d, f, s) for f in fidelities for d in args.designs for s in args.seeds
            if (d, f, s, scale_fingerprint(fidelities[f])) not in done]
    console.print(f"bench_fidelity: {len(args.designs)} designs x {len(args.seeds)} seeds at {args.scale} "
                  f"(explore {fidelities['explore'].train.steps} steps, verify {fidelities['verify'].train.steps}); "
                  f"{len(jobs)} run(s) to train, {args.workers} worker(s)", highlight=False)
    started = time.monotonic()
    if jobs:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(train_one, d, fidelities[f], s): (d, f, s) for d, f, s in jobs}
            for n, future in enumerate(as_completed(futures), 1):
                d, f, s = futures[future]
                result = future.result()
                key = (d, f, s, scale_fingerprint(fidelities[f]))
                done[key] = result
                if args.runs:
                    with args.runs.open("a") as out:
                        out.write(json.dumps({"design": d, "fidelity": f, "seed": s, "fingerprint": key[3],
                                              "result": result}) + "\n")
                console.print(f"  [{n}/{len(jobs)}, {time.monotonic() - started:.0f}s] {f} {d} seed {s}: "
                              f"loss {result['eval_loss']:.3f}, MQAR {result['mqar_accuracy']:.3f}, "
                              f"{result['train_seconds']:.0f}s", highlight=False)

    def run(design: str, fidelity: str, seed: int) -> dict[str, Any]:
        return done[(design, fidelity, seed, scale_fingerprint(fidelities[fidelity]))]

    designs, seeds = args.designs, args.seeds
    report: dict[str, Any] = {"scale": args.scale, "overrides": args.set, "designs": designs, "seeds": seeds,
                              "steps": {f: s.train.steps for f, s in fidelities.items()}, "fidelity": {}}
    chances = {f: benchmark_chance(s) for f, s in fidelities.items()}  # the campaign's own gate of the MQAR term
    chance = chances["explore"].level if chances["explore"] else float("nan")
    for fidelity in fidelities:
        entry: dict[str, Any] = {"per_design": {}}
        for design in designs:
            values = {m: [run(design, fidelity, s)[m] for s in seeds] for m in METRICS}
            entry["per_design"][design] = {
                **{f"{m}_mean": mean(values[m]) for m in METRICS}, **{f"{m}_std": std(values[m]) for m in METRICS},
                "seconds_mean": mean([run(design, fidelity, s)["train_seconds"] for s in seeds])}
        for m in METRICS:
            taus = [kendall_tau([run(d, fidelity, a)[m] for d in designs], [run(d, fidelity, b)[m] for d in designs])
                    for a, b in itertools.combinations(seeds, 2)]
            entry[f"kendall_tau_{m}"] = mean(taus) if taus else None
        entry["mqar_above_chance"] = {  # on every training seed, by the binomial test the fitness uses
            d: all(chances[fidelity].p_above(run(d, fidelity, s)["mqar_accuracy"]) < 0.05 for s in seeds)
            for d in designs} if chances[fidelity] else {}
        report["fidelity"][fidelity] = entry
    explore, verify = report["fidelity"]["explore"]["per_design"], report["fidelity"]["verify"]["per_design"]
    report["mqar_chance"] = chance
    report["spearman_explore_verify"] = {m: spearman([explore[d][f"{m}_mean"] for d in designs],
                                                     [verify[d][f"{m}_mean"] for d in designs]) for m in METRICS}
    et = fidelities["explore"].train
    rungs = rung_steps(et.steps, first_rung_step(et.steps, grace, et.warmup_steps, et.report_every), rf)  # as the campaign's
    verify_top3 = sorted(designs, key=lambda d: verify[d]["eval_loss_mean"])[:3]
    kept = []
    for s in seeds:
        curves = {d: {h["step"]: h["eval_loss"] for h in run(d, "explore", s)["history"] if h.get("eval_loss") is not None}
                  for d in designs}
        stops = successive_halving(curves, rungs, rf, et.steps)
        kept.append(sum(stops[d] == et.steps for d in verify_top3))
    report["asha"] = {"rung_steps": rungs, "reduction_factor": rf, "verify_top3": verify_top3,
                      "kept_per_seed": kept, "kept_mean": mean(kept)}
    pairs = []
    for better, worse, metric, why in KNOWN_PAIRS:
        if better not in designs or worse not in designs:
            continue
        for fidelity in fidelities:
            sign = -1 if LOWER_IS_BETTER[metric] else 1
            per_seed = [sign * (run(better, fidelity, s)[metric] - run(worse, fidelity, s)[metric]) > 0 for s in seeds]
            pairs.append({"better": better, "worse": worse, "metric": metric, "fidelity": fidelity, "why": why,
                          "correct_on_seeds": sum(per_seed), "of": len(seeds), "all_correct": all(per_seed)})
    report["known_pairs"] = pairs
    report["settling"] = settling(designs, seeds, lambda d, s: run(d, "explore", s))
    report["explore_cost_fraction"] = {d: explore[d]["seconds_mean"] / verify[d]["seconds_mean"] for d in designs}
    report["fitness_loss_term"] = loss_term_calibration(cfg, designs, seeds, run, verify,
                                                        scoring.benchmark_key(fidelities["explore"]))

    # ------------------------------------------------------------------ tables
    table = Table(title=f"Designs at {args.scale}: mean ± std over training seeds {seeds}")
    for header in ("design", "explore loss", "explore MQAR", "verify loss", "verify MQAR", "explore/verify cost"):
        table.add_column(header, justify="left" if header == "design" else "right")
    for d in sorted(designs, key=lambda d: verify[d]["eval_loss_mean"]):
        cells = [f"{p[f'{m}_mean']:.3f} ± {p[f'{m}_std']:.3f}" for p in (explore[d], verify[d]) for m in METRICS]
        table.add_row(d, *cells, f"{report['explore_cost_fraction'][d]:.2f}")
    console.print(table)
    goals = Table(title="Fidelity against the goals")
    for header in ("measure", "value", "goal", "met"):
        goals.add_column(header)
    rows = [
        ("Kendall tau between seeds, verify, by loss", report["fidelity"]["verify"]["kendall_tau_eval_loss"], 0.8),
        ("Kendall tau between seeds, explore, by loss", report["fidelity"]["explore"]["kendall_tau_eval_loss"], 0.7),
        ("Kendall tau between seeds, verify, by MQAR", report["fidelity"]["verify"]["kendall_tau_mqar_accuracy"], None),
        ("Kendall tau between seeds, explore, by MQAR", report["fidelity"]["explore"]["kendall_tau_mqar_accuracy"], None),
        ("Spearman explore vs verify means, loss", report["spearman_explore_verify"]["eval_loss"], 0.8),
        ("Spearman explore vs verify means, MQAR", report["spearman_explore_verify"]["mqar_accuracy"], None),
        ("verify top 3 kept by ASHA (mean over seeds)", report["asha"]["kept_mean"], 3),
        ("explore cost / verify cost (max over designs)", max(report["explore_cost_fraction"].values()), -1 / 3),
    ]
    for name, value, goal in rows:
        met = "" if goal is None or value is None else ("yes" if (value <= -goal if goal < 0 else value >= goal) else "NO")
        goal_text = "-" if goal is None else (f"<= {-goal:.2f}" if goal < 0 else f">= {goal}")
        goals.add_row(name, "-" if value is None else f"{value:.3f}", goal_text, met)
    console.print(goals)
    settle = Table(title="Explore ranking at each report step against its final ranking (by loss)")
    for header in ("step", "fraction of explore", "Kendall tau to final (mean over seeds)"):
        settle.add_column(header, justify="right")
    for row in report["settling"]:
        settle.add_row(str(row["step"]), f"{row['step'] / fidelities['explore'].train.steps:.3f}",
                       f"{row['kendall_tau_to_final']:.3f}")
    console.print(settle)
    term = report["fitness_loss_term"]
    calib = Table(title=f"The explore fitness's loss term (noise_aware, slope {term['slope']:g}) against anchor "
                        f"{term['anchor']} ({term['anchor_loss']:.3f} ± {term['anchor_sd']:.3f}): each design's run per "
                        f"seed; conf: noise_multiple {_g(term['conf_noise_multiple'])}")
    for header in ("noise_multiple", "designs saturated (|z| >= k on a seed)", "Spearman of mean term vs -verify loss"):
        calib.add_column(header, justify="right")
    for row in term["rows"]:
        calib.add_row(f"{row['noise_multiple']:g}", f"{row['saturated']}/{len(designs)}", f"{row['spearman_verify']:.3f}")
    console.print(calib)
    console.print("explore loss delta to the anchor in anchor sd, mean over seeds: " + ", ".join(
        f"{d} {z:+.1f}" for d, z in sorted(term["z"].items(), key=lambda kv: kv[1])), highlight=False)
    known = Table(title=f"Known pairs (correct on how many of {len(seeds)} training seeds); MQAR chance = {chance:.4f}")
    for header in ("better", "worse", "metric", "fidelity", "correct", "why"):
        known.add_column(header)
    for p in pairs:
        known.add_row(p["better"], p["worse"], p["metric"], p["fidelity"], f"{p['correct_on_seeds']}/{p['of']}"
                      + ("" if p["all_correct"] else " NO"), p["why"])
    console.print(known)
    above = {f: [d for d, ok in report["fidelity"][f]["mqar_above_chance"].items() if ok] for f in fidelities}
    console.print(f"MQAR above chance {chance:.4f} on every seed (binomial p < 0.05 over "
                  f"{chances['explore'].trials if chances['explore'] else '?'} queries): explore {above['explore'] or 'none'}; "
                  f"verify {above['verify'] or 'none'}", highlight=False)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
