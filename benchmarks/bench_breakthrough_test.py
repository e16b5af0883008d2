"""How the verify stage's significance test behaves with a handful of training runs (a simulation).

A breakthrough needs one-sided Welch t-tests (``scoring.one_sided_test``) below
``verify.significance`` on loss and on the benchmark, against each seed, from
``verify.training_seeds`` runs a side (3 by default). Welch's test assumes normal means; MQAR
accuracy is bounded, piles up near 1 and at verify is sometimes bimodal over training seeds. This
draws synthetic runs (no training: random numbers shaped like the metrics) and measures, with the
campaign's own test function:

1. false positives: both sides drawn from the same distribution, the share of p below the level
   (a well-behaved test gives at most the level);
2. power: the candidate's mean better by a number of the seed's run-to-run sd, the share of
   p below the level, for 3 and 5 runs a side: how large a gain the default can see.

    .venv/bin/python benchmarks/bench_breakthrough_test.py [--draws 20000] [--alpha 0.05] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Callable

from rich.table import Table

from asiarch.campaign.scoring import one_sided_test
from asiarch.console import output_console

Draw = Callable[[random.Random], float]

NULLS: dict[str, Draw] = {  # one distribution for both sides
    "normal (a loss)": lambda r: r.gauss(0.0, 1.0),
    "near its ceiling: min(1, N(0.99, 0.01)) (MQAR of a good design)": lambda r: min(1.0, r.gauss(0.99, 0.01)),
    "bimodal, half 0.99, half 0.60, each ± 0.005 (MQAR of a gated design)":
        lambda r: (0.99 if r.random() < 0.5 else 0.60) + r.gauss(0.0, 0.005),
    "bimodal, 80 % 0.99, 20 % 0.60, each ± 0.005": lambda r: (0.99 if r.random() < 0.8 else 0.60) + r.gauss(0.0, 0.005),
}
SHIFTS = [0.5, 1.0, 2.0, 3.0, 4.0, 6.0]  # the candidate's gain in the seed's run-to-run sd (normal metric)


def below(rng: random.Random, mine: Draw, theirs: Draw, runs: int, draws: int, alpha: float) -> float:
    """The share of ``draws`` simulated comparisons (``runs`` a side) whose one-sided p is below ``alpha``."""
    hits = 0
    for _ in range(draws):
        test = one_sided_test([mine(rng) for _ in range(runs)], [theirs(rng) for _ in range(runs)],
                              higher_is_better=True)
        hits += test["p"] is not None and test["p"] < alpha
    return hits / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20000, help="simulated comparisons per cell")
    parser.add_argument("--alpha", type=float, default=0.05, help="the level (verify.significance)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the tables as JSON")
    args = parser.parse_args()
    rng, console = random.Random(args.seed), output_console()

    nulls = {name: below(rng, draw, draw, 3, args.draws, args.alpha) for name, draw in NULLS.items()}
    table = Table(title=f"False positives: both sides from one distribution, 3 runs a side, p < {args.alpha} "
                        f"({args.draws} simulated comparisons each; synthetic draws, no training)")
    table.add_column("distribution of a run's metric")
    table.add_column("share with p < level", justify="right")
    table.add_column("at most the level", justify="right")
    for name, share in nulls.items():
        table.add_row(name, f"{share:.4f}", "yes" if share <= args.alpha else "NO")
    console.print(table)

    power: dict[str, dict[str, float]] = {}
    table = Table(title=f"Power: the candidate better by k sd of the seed's runs (normal metric), p < {args.alpha} "
                        f"({args.draws} simulated comparisons each; synthetic draws, no training)")
    table.add_column("gain (sd)", justify="right")
    for runs in (3, 5):
        table.add_column(f"{runs} runs a side: one test", justify="right")
        table.add_column(f"{runs} runs a side: loss and benchmark", justify="right")
    for shift in SHIFTS:
        row = {}
        for runs in (3, 5):
            one = below(rng, lambda r, s=shift: r.gauss(s, 1.0), NULLS["normal (a loss)"], runs, args.draws, args.alpha)
            row[f"{runs} runs"] = one
            row[f"{runs} runs, both"] = one * one  # two independent tests of the same gain must both pass
        power[f"{shift:g}"] = row
        table.add_row(f"{shift:g}", *(f"{row[k]:.3f}" for k in ("3 runs", "3 runs, both", "5 runs", "5 runs, both")))
    console.print(table)
    console.print("Both: loss and benchmark each better by the same k sd, their runs independent (the product of "
                  "the two shares); a breakthrough needs that against every seed.", soft_wrap=True)
    if args.out:
        args.out.write_text(json.dumps({"alpha": args.alpha, "draws": args.draws, "seed": args.seed,
                                        "false_positives_3_runs": nulls, "power": power}, indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
