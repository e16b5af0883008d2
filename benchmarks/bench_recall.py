"""Recall at the explore budget: argmax MQAR accuracy against the binding score, over a ladder of designs.

At the calibrated ``cpu_tiny`` explore budget (192 steps) every design's MQAR accuracy is at or
below its chance level (1/K: a design that only knows which values are in the context), so the
fitness leaves the recall term out there. The binding score (``trainer.recall_binding``: per
example, log p(right value) minus log of the mean p over the example's K context values; 0 for a
design that does not bind keys to values, at most 0 on average for one whose answer does not
depend on the key asked) is continuous and has a known chance level. This trains the ladder at
the explore budget on several training seeds, with the campaign's own protocol (``train_mixer``,
as ``bench_fidelity``), and prints for each measure: each design's mean ± sd over seeds, on how
many seeds it is above chance (accuracy: the fitness's binomial test; binding: one-sided z of
the mean over test examples against 0, p < 0.05), the mean Kendall tau between training seeds,
and the known recall pairs ordered correctly on every seed. ``--out`` writes it as JSON;
``--runs`` keeps finished runs in a JSON-lines file and reuses them.

    .venv/bin/python benchmarks/bench_recall.py [--designs ...] [--seeds 0 1 2] [--workers 2] [--out F] [--runs F]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from statistics import NormalDist

from rich.table import Table

from bench_fidelity import KNOWN_PAIRS, kendall_tau, mean, scale_fingerprint, std, train_one

from asiarch.campaign.scoring import benchmark_chance
from asiarch.config import ScaleConfig, compose, explore_scale
from asiarch.console import output_console

DESIGNS = ["attention", "gated_deltanet", "deltanet", "mamba2", "deltanet_noconv", "linear_attention", "causal_mean",
           "no_mixing"]  # the four 2024 seeds and the four controls
ALPHA = 0.05


def binding_p(run: dict) -> float | None:
    """One-sided p that a design whose binding score is 0 (chance) measures this mean over the test examples."""
    value, se = run.get("mqar_binding"), run.get("mqar_binding_se")
    if value is None or not se:
        return None
    return 1.0 - NormalDist().cdf(value / se)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="cpu_tiny")
    parser.add_argument("--set", nargs="*", default=[], help="Hydra overrides")
    parser.add_argument("--designs", nargs="*", default=DESIGNS)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--runs", type=Path, help="JSON-lines file of finished runs, reused when it matches")
    args = parser.parse_args()
    console = output_console()

    base = ScaleConfig.from_dict(compose([f"scale={args.scale}", *args.set]).scale)
    scale = explore_scale(base)
    fingerprint = scale_fingerprint(scale)
    done: dict[tuple[str, int], dict] = {}
    if args.runs and args.runs.exists():
        for line in args.runs.read_text().splitlines():
            row = json.loads(line)
            if row["fingerprint"] == fingerprint and row["result"].get("mqar_binding") is not None:
                done[(row["design"], row["seed"])] = row["result"]
    jobs = [(d, s) for d in args.designs for s in args.seeds if (d, s) not in done]
    console.print(f"bench_recall: {len(args.designs)} designs x {len(args.seeds)} seeds at {args.scale} explore "
                  f"({scale.train.steps} steps); {len(jobs)} run(s) to train, {args.workers} worker(s)", highlight=False)
    started = time.monotonic()
    if jobs:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(train_one, d, scale, s): (d, s) for d, s in jobs}
            for n, future in enumerate(as_completed(futures), 1):
                d, s = futures[future]
                done[(d, s)] = result = future.result()
                if args.runs:
                    with args.runs.open("a") as out:
                        out.write(json.dumps({"design": d, "seed": s, "fingerprint": fingerprint, "result": result}) + "\n")
                console.print(f"  [{n}/{len(jobs)}, {time.monotonic() - started:.0f}s] {d} seed {s}: "
                              f"MQAR {result['mqar_accuracy']:.3f}, binding {result['mqar_binding']:+.3f} "
                              f"± {result['mqar_binding_se']:.3f}", highlight=False)

    designs, seeds = args.designs, args.seeds
    chance = benchmark_chance(scale)
    above = {
        "mqar_accuracy": lambda r: chance.p_above(r["mqar_accuracy"]) < ALPHA,
        "mqar_binding": lambda r: (p := binding_p(r)) is not None and p < ALPHA,  # p can underflow to 0.0
    }
    report = {"scale": args.scale, "overrides": args.set, "steps": scale.train.steps, "seeds": seeds,
              "accuracy_chance": chance.level, "binding_chance": 0.0, "per_design": {}, "kendall_tau": {},
              "known_pairs": []}
    for d in designs:
        runs = [done[(d, s)] for s in seeds]
        report["per_design"][d] = {
            **{f"{m}_{k}": f([r[m] for r in runs]) for m in above for k, f in (("mean", mean), ("std", std))},
            **{f"{m}_above_chance_on": sum(above[m](r) for r in runs) for m in above},
            "mqar_binding_se_mean": mean([r["mqar_binding_se"] for r in runs])}
    for m in above:
        taus = [kendall_tau([done[(d, a)][m] for d in designs], [done[(d, b)][m] for d in designs])
                for a, b in itertools.combinations(seeds, 2)]
        report["kendall_tau"][m] = mean(taus) if taus else None
    for better, worse, metric, why in KNOWN_PAIRS:
        if metric != "mqar_accuracy" or better not in designs or worse not in designs:
            continue
        for m in above:
            right = [done[(better, s)][m] > done[(worse, s)][m] for s in seeds]
            report["known_pairs"].append({"better": better, "worse": worse, "measure": m, "why": why,
                                          "correct_on_seeds": sum(right), "of": len(seeds)})

    per = report["per_design"]
    table = Table(title=f"Recall at {args.scale}'s explore budget ({scale.train.steps} steps): mean ± sd over training "
                        f"seeds {seeds}; 'above' = on how many seeds it beats chance at p < {ALPHA}")
    for header in ("design", f"MQAR accuracy (chance {chance.level:.3f})", "above", "binding (chance 0)",
                   "se of one run", "above"):
        table.add_column(header, justify="left" if header == "design" else "right")
    for d in sorted(designs, key=lambda d: -per[d]["mqar_binding_mean"]):
        p = per[d]
        table.add_row(d, f"{p['mqar_accuracy_mean']:.3f} ± {p['mqar_accuracy_std']:.3f}",
                      f"{p['mqar_accuracy_above_chance_on']}/{len(seeds)}",
                      f"{p['mqar_binding_mean']:+.3f} ± {p['mqar_binding_std']:.3f}", f"{p['mqar_binding_se_mean']:.3f}",
                      f"{p['mqar_binding_above_chance_on']}/{len(seeds)}")
    console.print(table)
    summary = Table(title="Can each measure rank designs at explore?")
    for header in ("measure", "mean Kendall tau between seeds", "designs above chance on every seed",
                   "known recall pairs right on every seed"):
        summary.add_column(header, justify="left" if header == "measure" else "right")
    for m in above:
        pairs = [p for p in report["known_pairs"] if p["measure"] == m]
        tau = report["kendall_tau"][m]
        summary.add_row(m, "one seed" if tau is None else f"{tau:.3f}",
                        f"{sum(per[d][f'{m}_above_chance_on'] == len(seeds) for d in designs)}/{len(designs)}",
                        f"{sum(p['correct_on_seeds'] == p['of'] for p in pairs)}/{len(pairs)}")
    console.print(summary)
    for p in report["known_pairs"]:
        console.print(f"  {p['measure']}: {p['better']} > {p['worse']} on {p['correct_on_seeds']}/{p['of']} seeds "
                      f"({p['why']})", highlight=False)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
