"""Does a design's loss at the explore budget predict its loss at the verify budget, and under which schedule?

Explore trains ``stages.explore_steps`` (192 at cpu_tiny) either as the head of a verify run
(``stages.explore_schedule: verify``: the verify run's learning-rate schedule, not annealed by
then) or as a whole schedule of its own (``explore``: annealed to the minimum at its end). This
reads a ``bench_funnel.py --against explore verify`` work directory: its candidates (the
campaign's memory), their 768-step verify-budget runs and their full explore runs, trains the
same candidates under the other explore schedule (kept in ``bench_horizon_<schedule>.json`` there,
reused), and prints, against the verify-budget loss of the runs that were not cut short, the
Spearman correlation of: each schedule's 192-step loss, and the verify runs' own loss at every
report step. A bootstrap over candidates gives each an interval: the candidates are a campaign's
close variants, the question's hard case. The same comparison on the bench_fidelity ladder is in
the README (from its runs file's curves).

    .venv/bin/python benchmarks/bench_horizon.py --work DIR [--slots 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from bench_funnel import SMALL, _loss_at, train_all  # noqa: E402

from asiarch.config import ScaleConfig, compose, explore_scale  # noqa: E402
from asiarch.console import output_console  # noqa: E402


def bootstrap(statistic, n: int, draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    """90 % interval of ``statistic(pick)`` over ``n`` candidates drawn with replacement (at least 4 distinct)."""
    rng, values = np.random.default_rng(seed), []
    for _ in range(draws):
        pick = rng.integers(0, n, n)
        if len(set(pick.tolist())) >= 4:
            values.append(statistic(pick))
    low, high = np.nanpercentile(values, [5, 95])
    return float(low), float(high)


def rho_of(x: list[float], y: list[float]):
    """Spearman's rho of ``x`` and ``y`` over the candidates a bootstrap picked."""
    xs, ys = np.asarray(x), np.asarray(y)
    return lambda pick: spearmanr(xs[pick], ys[pick]).statistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a bench_funnel work directory (--against explore verify)")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    console, log = output_console(), Console(stderr=True, width=160)
    from asiarch.campaign import Campaign
    from asiarch.memory import Memory

    verify_runs = json.loads((args.work / "bench_funnel_full_verify.json").read_text())
    own_runs = json.loads((args.work / "bench_funnel_full.json").read_text())
    memory = Memory(Campaign.load("funnel-asha", args.work / "runs", console=log).memory_uri, read_only=True)
    codes = {c.id: c.code for c in memory.list_candidates(campaign="funnel-asha") if c.id in verify_runs}
    cfg = compose(SMALL)
    base = ScaleConfig.from_dict(cfg.scale)
    default = base.stages.explore_schedule
    other = "explore" if default == "verify" else "verify"
    other_scale = explore_scale(ScaleConfig.from_dict(compose([*SMALL, f"scale.stages.explore_schedule={other}"]).scale))
    walls: dict[str, float] = {}
    other_runs = train_all({cid: (code, other_scale) for cid, code in codes.items()},
                           args.work / f"bench_horizon_{other}.json", args.slots, walls, f"explore ({other})", log)
    runs = {default: own_runs, other: other_runs}

    budget = max(r.get("steps") or 0 for r in verify_runs.values())
    ids = sorted(cid for cid in codes if verify_runs[cid].get("steps") == budget and "error" not in verify_runs[cid]
                 and all("error" not in runs[s].get(cid, {"error": 1}) for s in runs))
    final = [verify_runs[cid]["eval_loss"] for cid in ids]
    rows = []
    for schedule in ("verify", "explore"):
        losses = [runs[schedule][cid]["eval_loss"] for cid in ids]
        rho = spearmanr(losses, final).statistic
        rows.append({"predictor": f"explore run, {base.stages.explore_steps} steps, schedule '{schedule}'"
                     + (" (default)" if schedule == default else ""), "rho": rho, "ci90": bootstrap(rho_of(losses, final), len(ids))})
    steps = sorted({h["step"] for cid in ids for h in verify_runs[cid].get("history") or []})
    for step in steps:
        at = [_loss_at(verify_runs[cid], step) for cid in ids]
        if None in at:
            continue
        rows.append({"predictor": f"the verify run's own loss at step {step}", "rho": spearmanr(at, final).statistic,
                     "ci90": bootstrap(rho_of(at, final), len(ids))})
    table = Table(title=f"Which loss predicts the verify-budget loss ({budget} steps) of {len(ids)} campaign candidates "
                        f"(runs cut short left out): Spearman, 90 % bootstrap interval over candidates")
    for header in ("predictor", "Spearman", "90 % interval"):
        table.add_column(header, justify="left" if header == "predictor" else "right")
    for r in rows:
        table.add_row(r["predictor"], f"{r['rho']:.2f}", f"{r['ci90'][0]:.2f} to {r['ci90'][1]:.2f}")
    console.print(table)
    head, whole = (rho_of([runs[schedule][cid]["eval_loss"] for cid in ids], final) for schedule in ("verify", "explore"))
    low, high = bootstrap(lambda pick: head(pick) - whole(pick), len(ids), seed=1)
    gain = rows[0]["rho"] - rows[1]["rho"]
    console.print(f"head of a verify run minus whole schedule: {gain:+.2f} (90 % interval {low:+.2f} to {high:+.2f}, "
                  f"paired bootstrap over candidates)", highlight=False)
    if args.out:
        args.out.write_text(json.dumps({"work": str(args.work), "candidates": len(ids), "verify_steps": budget,
                                        "rows": rows, "head_minus_whole": gain, "head_minus_whole_ci90": [low, high]},
                                       indent=2))
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
