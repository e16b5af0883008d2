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

Every number above compares runs on the campaign's one training seed, so a predictor taken from
the verify run itself shares that run's noise with its target. ``--seeds 1 [2 ...]`` trains the
same candidates again on other training seeds at both budgets (``bench_horizon_seed<t>_*.json``,
reused) and asks how reproducible the target is: the Spearman between training seeds at each
budget (the ceiling a predictor of one verify run can reach), every predictor against a verify run
on another seed (no shared noise), and against the mean over seeds.

    .venv/bin/python benchmarks/bench_horizon.py --work DIR [--slots 2] [--seeds 1] [--out FILE]
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

from asiarch.config import ScaleConfig, compose, explore_scale, seeded_scale, stage_scale  # noqa: E402
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


def spearman_table(title: str, rows: list[dict]) -> Table:
    """``rows`` ({"predictor", "rho", "ci90"}) as a table."""
    table = Table(title=title)
    for header in ("predictor", "Spearman", "90 % interval"):
        table.add_column(header, justify="left" if header == "predictor" else "right")
    for r in rows:
        table.add_row(r["predictor"], f"{r['rho']:.2f}", f"{r['ci90'][0]:.2f} to {r['ci90'][1]:.2f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a bench_funnel work directory (--against explore verify)")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="*", default=[],
                        help="other training seeds to train the candidates on at both budgets (the campaign's is 0)")
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
    console.print(spearman_table(f"Which loss predicts the verify-budget loss ({budget} steps) of {len(ids)} campaign "
                                 "candidates (runs cut short left out): Spearman, 90 % bootstrap interval over candidates",
                                 rows))
    head, whole = (rho_of([runs[schedule][cid]["eval_loss"] for cid in ids], final) for schedule in ("verify", "explore"))
    low, high = bootstrap(lambda pick: head(pick) - whole(pick), len(ids), seed=1)
    gain = rows[0]["rho"] - rows[1]["rho"]
    console.print(f"head of a verify run minus whole schedule: {gain:+.2f} (90 % interval {low:+.2f} to {high:+.2f}, "
                  f"paired bootstrap over candidates)", highlight=False)
    result = {"work": str(args.work), "candidates": len(ids), "verify_steps": budget,
              "rows": rows, "head_minus_whole": gain, "head_minus_whole_ci90": [low, high]}
    if args.seeds:
        base_seed = base.train.seed
        if base_seed in args.seeds:
            parser.error(f"--seeds: training seed {base_seed} is the campaign's, already trained")
        verify_scale = stage_scale(base, budget)
        explore_default = explore_scale(base)
        seeded = {base_seed: {"verify": verify_runs, "explore": own_runs}}
        for t in args.seeds:
            seeded[t] = {
                "verify": train_all({cid: (codes[cid], seeded_scale(verify_scale, t)) for cid in ids},
                                    args.work / f"bench_horizon_seed{t}_verify.json", args.slots, walls,
                                    f"verify budget, training seed {t}", log),
                "explore": train_all({cid: (codes[cid], seeded_scale(explore_default, t)) for cid in ids},
                                     args.work / f"bench_horizon_seed{t}_explore.json", args.slots, walls,
                                     f"explore ({default}), training seed {t}", log)}
        result["across_seeds"] = across_seeds(seeded, ids, budget, base.stages.explore_steps, console)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.out}")


def across_seeds(seeded: dict[int, dict[str, dict]], ids: list[str], budget: int, explore_steps: int,
                 console: Console) -> dict:
    """How reproducible the verify-budget ranking is over training seeds, and each predictor against a verify run
    on another seed (no noise shared with its target) and against the mean over seeds."""
    kept = [cid for cid in ids if all(cid in runs[b] and runs[b][cid].get("steps") == steps and "error" not in runs[b][cid]
                                      for runs in seeded.values() for b, steps in (("verify", budget),
                                                                                  ("explore", explore_steps)))]
    seeds = sorted(seeded)
    final = {t: np.array([seeded[t]["verify"][cid]["eval_loss"] for cid in kept]) for t in seeds}
    head = {t: np.array([seeded[t]["explore"][cid]["eval_loss"] for cid in kept]) for t in seeds}
    mean_final = np.mean([final[t] for t in seeds], axis=0)
    pairs = [(s, t) for s in seeds for t in seeds if s != t]

    def mean_rho(x: dict[int, np.ndarray], y: dict[int, np.ndarray], same: bool):
        """Mean Spearman of ``x[s]`` against ``y[t]``, over s == t (same seed) or over s != t."""
        chosen = [(t, t) for t in seeds] if same else pairs
        return lambda pick: float(np.mean([spearmanr(x[s][pick], y[t][pick]).statistic for s, t in chosen]))

    def against_mean(x: dict[int, np.ndarray]):
        return lambda pick: float(np.mean([spearmanr(x[s][pick], mean_final[pick]).statistic for s in seeds]))

    n = len(kept)
    every = np.arange(n)
    rows: list[dict] = []

    def add(name: str, statistic) -> None:
        rows.append({"predictor": name, "rho": statistic(every), "ci90": bootstrap(statistic, n)})

    add(f"verify run ({budget} steps) vs a verify run on another training seed", mean_rho(final, final, same=False))
    add(f"explore run ({explore_steps} steps) vs an explore run on another training seed", mean_rho(head, head, same=False))
    add("explore run vs the verify run on its own training seed", mean_rho(head, final, same=True))
    add("explore run vs a verify run on another training seed", mean_rho(head, final, same=False))
    add(f"explore run vs the verify loss's mean over {len(seeds)} training seeds", against_mean(head))
    report_steps = sorted({h["step"] for t in seeds for cid in kept for h in seeded[t]["verify"][cid].get("history") or []})
    for step in report_steps:
        at = {t: [_loss_at(seeded[t]["verify"][cid], step) for cid in kept] for t in seeds}
        if step >= budget or any(None in v for v in at.values()):
            continue
        at = {t: np.array(v) for t, v in at.items()}
        add(f"the verify run's loss at step {step} vs a verify run on another training seed", mean_rho(at, final, same=False))
    within = np.std(np.array([final[t] for t in seeds]), axis=0, ddof=1)
    spread = {"seed_sd_of_verify_loss_mean": float(np.mean(within)), "seed_sd_of_verify_loss_max": float(np.max(within)),
              "between_candidates_sd_of_verify_mean": float(np.std(mean_final, ddof=1))}
    console.print(spearman_table(f"Is the verify-budget ranking of {n} campaign candidates reproducible? Training seeds "
                                 f"{', '.join(map(str, seeds))}: Spearman, 90 % bootstrap interval over candidates", rows))
    console.print(f"verify loss, sd over training seeds per candidate: mean {spread['seed_sd_of_verify_loss_mean']:.3f}, "
                  f"max {spread['seed_sd_of_verify_loss_max']:.3f}; sd of the candidates' means "
                  f"{spread['between_candidates_sd_of_verify_mean']:.3f}", highlight=False)
    return {"seeds": seeds, "candidates": n, "rows": rows, **spread,
            "verify_loss": {t: dict(zip(kept, final[t].tolist())) for t in seeds},
            "explore_loss": {t: dict(zip(kept, head[t].tolist())) for t in seeds}}


if __name__ == "__main__":
    main()
