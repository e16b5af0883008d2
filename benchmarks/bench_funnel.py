"""The ASHA funnel: compute per candidate of ASHA explore against full training of the same candidates.

Arm 1 (ASHA): an offline campaign (``llm=offline``) with ``campaign.max_candidates`` candidates
(16 by default) explored by Tune's ASHA with the configured rungs. Arm 2 (full): every one
of those candidates, with its final code from the memory, trained for the whole explore
budget with the same ``train_mixer``, scale, training seed and learning rate, in Ray tasks.
Both are scored with the campaign's own scoring path (``scoring.score``: the configured
fitness, the anchor seed's mean and spread over ``explore.anchor_seeds``, the benchmark's
chance filter) and the same Judge score (the one the campaign stored; the Judge is not
asked again). A candidate ASHA stopped is scored at equal progress, as the campaign does.

Reported: training compute per candidate (tokens, and device seconds) of ASHA against
full training, the Spearman rank correlation of the two fitnesses, and how many of the
five best candidates by full training ASHA kept (did not stop). Goal (issue 12): <= 1/3
of the compute, Spearman >= 0.8, at least 4 of the top 5 kept. The explore anchor trains
first (into the baseline cache), so the campaign's rung rule (``explore.rung_significance``:
a stop within the anchor's noise trains on) reads every stop. Also: how many stops the rule
overruled, how many stops that stood were within noise of the rung's cutoff (p >= the rule's
level; only stops decided without a noise estimate, or every one with the rule off), and a
what-if over the same runs: had those designs trained on (their full runs stand in), the
tokens spent and the top 5 kept.

With ``--against verify`` the second arm is full training at the verify budget instead
(``scale.stages.verify_steps`` of the calibrated scale, 4x explore): every candidate trains as
long as a verified design does, and the explore anchor's seed trains on each of
``explore.anchor_seeds`` at that budget to anchor its fitness. This asks whether the cheap
funnel picks what the long training would: compute per candidate is ASHA's explore tokens
against the verify budget's, the ranking and the top 5 are the verify budget's. ``--against
explore verify`` runs both.

Then, from the full-training curves (every candidate evaluated at every report step),
successive halving is replayed for every first rung and reduction factor: the same three
measures for each, so the trade-off is visible. This replay is synchronous halving over
measured curves (a simulation), labelled so; the campaign's own ASHA is asynchronous.

    .venv/bin/python benchmarks/bench_funnel.py [--candidates 16] [--explore-steps N] [--grace-fraction F] [--reduction-factor N]
    .venv/bin/python benchmarks/bench_funnel.py --work DIR --reuse   # score an earlier run's campaign again
    .venv/bin/python benchmarks/bench_funnel.py --work DIR --reuse --against explore verify   # add the verify arm
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from asiarch.console import output_console  # noqa: E402
from asiarch.config import ScaleConfig  # noqa: E402

SMALL = [  # the calibrated cpu_tiny research scale itself
    "scale=cpu_tiny", "seeds=[deltanet]", "checks.complexity_repeats=2",
]
# the campaign's own verify is not measured here: one promoted candidate and the seed, one run each. Its steps stay
# the calibrated ones: an explore trial trains the head of a verify run (stages.explore_schedule), so shortening
# verify would change what explore measures
TINY_VERIFY = ["verify.top_fraction=0", "verify.min_promoted=1", "verify.training_seeds=[0]"]


@ray.remote(num_cpus=1, max_retries=0)
def train_fully(code: str, scale: ScaleConfig, data) -> dict[str, Any]:
    """The candidate trains in the sandbox, as in a campaign: never loaded in this worker or the driver."""
    from asiarch.train.sandboxed import train_in_sandbox

    history: list[dict[str, float]] = []
    outcome = train_in_sandbox(code, None, scale, data, on_report=lambda metrics, checkpoint: history.append(metrics))
    if "code_error" in outcome:
        raise RuntimeError(outcome["code_error"])
    return {**outcome["final"], "history": history}  # every evaluation, for the replay of other rungs


def tune_compute(path: Path) -> dict[str, dict[str, float]]:
    """Training tokens and seconds per design over every explore trial (repaired candidates train twice)."""
    from ray.tune import ExperimentAnalysis

    spent: dict[str, dict[str, float]] = {}
    for trial in ExperimentAnalysis(str(path)).trials:
        last = trial.run_metadata.last_result or {}
        design = (trial.config or {}).get("design")
        if design is None or last.get("already_trained"):
            continue
        entry = spent.setdefault(design, {"tokens": 0.0, "seconds": 0.0, "trials": 0})
        entry["tokens"] += float(last.get("tokens_seen") or 0)
        entry["seconds"] += float(last.get("time_total_s") or 0.0)
        entry["trials"] += 1
    return spent


def halving_floor(grace: float, rf: int) -> float:
    """Compute of synchronous successive halving with these rungs, as a fraction of full training."""
    rungs, r = [], grace
    while r < 1.0 - 1e-9:
        rungs.append(r)
        r *= rf
    total, previous = 0.0, 0.0
    for i, rung in enumerate([*rungs, 1.0]):
        total += (rung - previous) * rf ** -i
        previous = rung
    return total


def metrics_until(summary: dict[str, Any], step: int, bench_key: str):
    """A run's stage metrics as they stood at ``step`` (its evaluation there), as if stopped then."""
    from asiarch.campaign import scoring

    history = [h for h in summary.get("history") or [] if h.get("step", 0) <= step and h.get("eval_loss") is not None]
    if not history or history[-1]["step"] != step:
        raise ValueError(f"the run has no evaluation at step {step}")
    return scoring.stage_metrics([{**history[-1], "history": history}], bench_key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=16, help="campaign.max_candidates (>= 16 for the issue's goal)")
    parser.add_argument("--explore-steps", type=int, default=None, help="scale.stages.explore_steps (default: cpu_tiny's own)")
    parser.add_argument("--grace-fraction", type=float, default=None, help="explore.grace_fraction (default: conf)")
    parser.add_argument("--reduction-factor", type=int, default=None, help="explore.reduction_factor (default: conf)")
    parser.add_argument("--slots", type=int, default=2, help="run.max_parallel_trials, and full-training tasks at once")
    parser.add_argument("--work", type=Path, default=None, help="where runs/ goes (default: a new temporary directory)")
    parser.add_argument("--reuse", action="store_true", help="reuse the campaign (and full-training runs) already under --work")
    parser.add_argument("--against", nargs="+", choices=("explore", "verify"), default=["explore"],
                        help="full training at the explore budget (default), at the verify budget, or both")
    args = parser.parse_args()

    from hydra.utils import instantiate

    from asiarch.baselines import run_seed_baselines
    from asiarch.campaign import Campaign, scoring
    from asiarch.config import compose, explore_scale
    from asiarch.memory import Memory, counts_toward_budget, is_seed as is_baseline

    if args.reuse and args.work is None:
        parser.error("--reuse needs --work (the directory of the earlier run)")
    console = output_console()  # a log file gets the whole table
    log = Console(stderr=True, width=160)
    work = (args.work or Path(tempfile.mkdtemp(prefix="asiarch-bench-funnel-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    funnel = [f"explore.grace_fraction={args.grace_fraction}"] if args.grace_fraction is not None else []
    funnel += [f"explore.reduction_factor={args.reduction_factor}"] if args.reduction_factor is not None else []
    funnel += [f"scale.stages.explore_steps={args.explore_steps}"] if args.explore_steps else []
    overrides = [*SMALL, *TINY_VERIFY, *funnel, f"run.max_parallel_trials={args.slots}", "llm=offline"]
    name = "funnel-asha"
    log.print(f"runs under {work}")

    # arm 1: the ASHA campaign
    timing_file = work / "bench_funnel_wall.json"
    if args.reuse:
        campaign = Campaign.load(name, work / "runs", console=log)
        walls = json.loads(timing_file.read_text()) if timing_file.exists() else {}
        if "asha" not in walls:
            log.print("the campaign's wall time was not recorded (a run stopped before this fix): shown as 0")
    else:
        # the explore anchor first (into the baseline cache, as `asiarch baselines --stage explore` does): the
        # rung rule reads every stop against its noise, not only the stops after it finished training
        run_seed_baselines(compose([*overrides, f"run.output_dir={work / 'runs'}"]), log, stage="explore")
        campaign = Campaign(overrides=[*overrides, f"campaign.max_candidates={args.candidates}", f"campaign.name={name}",
                                       "campaign.resume=never", f"run.output_dir={work / 'runs'}"], console=log)
        started = time.monotonic()
        campaign.run()
        walls = {"asha": time.monotonic() - started}
        timing_file.write_text(json.dumps(walls))  # now: a run stopped during full training resumes with --reuse
    memory = Memory(campaign.memory_uri, read_only=True)
    rows = memory.list_candidates(campaign=name)
    candidates = sorted((c for c in rows if not is_baseline(c) and counts_toward_budget(c)), key=lambda c: c.created_at)
    (seed_row,) = [c for c in rows if is_baseline(c) and c.name == campaign.settings.seed]
    anchor = scoring.anchor_of(seed_row.name, seed_row.explore)  # the explore anchor the campaign scored against
    spent = tune_compute(campaign.paths.tune / "explore")

    # arm 2: full training of the same candidates, same scale, same training seed and learning rate
    cfg = compose(overrides)
    base = ScaleConfig.from_dict(cfg.scale)
    scale = explore_scale(base)
    fitness_fn = instantiate(cfg.fitness)
    bench_key, chance = scoring.benchmark_key(scale), scoring.benchmark_chance(scale)
    # what ASHA measured at explore, scored with the current conf (equal to the stored fitness unless --reuse changed
    # conf; a candidate the campaign promoted stores its verify fitness, so its explore one is scored again here)
    asha_fitness = {c.id: scoring.score(
        fitness_fn, c.name, c.explore, anchor, c.judge.get("overall"), "explore", chance=chance,
        stopped_at=c.fitness_parts.get("reached_step") if c.fitness_parts.get("early_stopped") else None).value
        for c in candidates}
    if "verify" in args.against:
        against_verify(candidates, spent, asha_fitness, cfg, fitness_fn, args, work, walls, timing_file, log, console)
    if "explore" not in args.against:
        return
    jobs = {c.id: (c.code, scale) for c in candidates}
    full = train_all(jobs, work / "bench_funnel_full.json", args.slots, walls, "full", log)
    timing_file.write_text(json.dumps(walls))

    records = []
    for c in candidates:
        summary = full[c.id]
        judge = c.judge.get("overall")
        fit = None if "error" in summary else scoring.score(
            fitness_fn, c.name, scoring.stage_metrics([summary], bench_key), anchor, judge, "explore", chance=chance)
        parts = c.fitness_parts
        early = bool(parts.get("early_stopped"))
        asha_fit = asha_fitness[c.id]
        records.append({
            "id": c.id, "name": c.name, "status": c.status, "early_stopped": early,
            "reached_step": parts.get("reached_step"), "total_steps": parts.get("total_steps"),
            "asha_tokens": spent.get(c.id, {}).get("tokens", 0.0), "asha_seconds": spent.get(c.id, {}).get("seconds", 0.0),
            "asha_trials": spent.get(c.id, {}).get("trials", 0), "asha_fitness": asha_fit, "stored_fitness": c.fitness, "asha_loss": c.explore.eval_loss,
            "asha_compared_at_step": parts.get("compared_at_step"),
            "asha_rung_p": (parts.get("asha_rung") or {}).get("p"),  # how sure the stop was (scoring.rung_confidence)
            "asha_spared": [(r["step"], r["p"]) for r in parts.get("asha_spared") or []],  # stops overruled as noise
            "judge": judge, "full_tokens": float(summary.get("tokens_seen") or 0), "full_seconds": summary.get("train_seconds", 0.0),
            "full_loss": summary.get("eval_loss"), "full_benchmark": summary.get(bench_key),
            "full_fitness": fit.value if fit else None, "full_missing": (fit.parts.get("missing") if fit else None),
            "full_error": summary.get("error"),
        })
    (work / "bench_funnel.json").write_text(json.dumps(records, indent=2, default=str))
    args.explore_steps = scale.train.steps
    report(records, args, campaign, walls, work, console)
    replay(candidates, full, {r["id"]: r["full_fitness"] for r in records}, anchor, fitness_fn, bench_key, chance,
           scale, console)


def train_all(jobs: dict[str, tuple[str, ScaleConfig]], file: Path, slots: int, walls: dict[str, float], arm: str,
              log: Console) -> dict[str, dict[str, Any]]:
    """Each job's code trained in full at its scale, ``slots`` at once in Ray tasks; results kept in ``file`` as
    they come (a stopped run resumes with --reuse), a job whose code fails recorded with its error. MQAR's test
    set is the campaign's (drawn with the secret of its output directory, ``file``'s folder's runs/)."""
    from asiarch.baselines import BaselineCache

    done: dict[str, dict[str, Any]] = json.loads(file.read_text()) if file.exists() else {}
    todo = {key: job for key, job in jobs.items() if key not in done}
    if not todo:
        return done
    started = time.monotonic()
    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # the corpus and MQAR do not depend on steps or seed
        data = ray.put(BaselineCache(file.parent / "runs" / "baselines").prepare_data(next(iter(todo.values()))[1]))
        refs = {key: train_fully.remote(code, scale, data) for key, (code, scale) in todo.items()}
        for key, ref in refs.items():
            try:
                done[key] = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a candidate whose code fails: recorded, not scored
                done[key] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
            file.write_text(json.dumps(done, default=str))
            log.print(f"{arm} training: {sum(k in done for k in jobs)}/{len(jobs)}")
    finally:
        ray.shutdown()
    walls[arm] = walls.get(arm, 0.0) + time.monotonic() - started
    return done


def against_verify(candidates, spent: dict[str, dict[str, float]], asha_fitness: dict[str, float | None], cfg,
                   fitness_fn, args, work: Path,
                   walls: dict[str, float], timing_file: Path, log: Console, console: Console) -> None:
    """The second arm at the verify budget: every candidate (the campaign's training seed) and the explore anchor's
    seed on each anchor training seed, trained as long as a verified design is; ASHA's explore against it."""

    from scipy.stats import spearmanr

    from asiarch.arch import seed_source
    from asiarch.campaign import scoring
    from asiarch.config import seeded_scale, stage_scale

    base = ScaleConfig.from_dict(cfg.scale)
    vscale = stage_scale(base, base.stages.verify_steps)
    seed = str(cfg.campaign.seed)
    anchor_seeds = [int(t) for t in cfg.explore.anchor_seeds]
    jobs = {c.id: (c.code, vscale) for c in candidates}
    jobs.update({f"anchor:{seed}:s{t}": (seed_source(seed), seeded_scale(vscale, t)) for t in anchor_seeds})
    runs = train_all(jobs, work / "bench_funnel_full_verify.json", args.slots, walls, "full_verify", log)
    timing_file.write_text(json.dumps(walls))
    bench_key, chance = scoring.benchmark_key(vscale), scoring.benchmark_chance(vscale)
    anchor_runs = [runs[f"anchor:{seed}:s{t}"] for t in anchor_seeds]
    broken = [r["error"] for r in anchor_runs if "error" in r]
    if broken:
        raise RuntimeError(f"the anchor seed failed at the verify budget: {broken[0]}")
    anchor = scoring.anchor_of(seed, scoring.stage_metrics(anchor_runs, bench_key))

    records = []
    for c in candidates:
        run, parts, judge = runs[c.id], c.fitness_parts, c.judge.get("overall")
        early = bool(parts.get("early_stopped"))
        verify_fit = None if "error" in run else scoring.score(
            fitness_fn, c.name, scoring.stage_metrics([run], bench_key), anchor, judge, "verify", chance=chance)
        records.append({
            "id": c.id, "name": c.name, "early_stopped": early, "reached_step": parts.get("reached_step"),
            "total_steps": parts.get("total_steps"), "asha_tokens": spent.get(c.id, {}).get("tokens", 0.0),
            "asha_seconds": spent.get(c.id, {}).get("seconds", 0.0), "asha_fitness": asha_fitness[c.id],
            "asha_loss": c.explore.eval_loss,
            "verify_tokens": float(run.get("tokens_seen") or 0), "verify_seconds": run.get("train_seconds", 0.0),
            "verify_loss": run.get("eval_loss"), "verify_benchmark": run.get(bench_key),
            "verify_binding": run.get("mqar_binding"),
            "verify_head_loss": _loss_at(run, base.stages.explore_steps),
            "verify_fitness": verify_fit.value if verify_fit else None,
            "verify_missing": verify_fit.parts.get("missing") if verify_fit else None, "verify_error": run.get("error")})
    (work / "bench_funnel_verify.json").write_text(json.dumps({"anchor": {
        "name": seed, "eval_loss": anchor["eval_loss"], "eval_loss_std": anchor["eval_loss_std"],
        "benchmark": anchor["benchmark"], "benchmark_std": anchor["benchmark_std"]}, "records": records}, indent=2,
        default=str))

    a = _agreement(records, "verify")
    asha_rank, verify_rank = a["asha_rank"], a["arm_rank"]
    table = _table(f"funnel: the same {len(records)} candidates, ASHA explore ({base.stages.explore_steps} steps) "
                   f"vs full training at the verify budget ({vscale.train.steps} steps, one training seed)",
                   ("candidate", "ASHA", "ASHA tokens", "verify tokens", "ASHA loss", "verify loss", "verify MQAR",
                    "verify binding", "ASHA fitness", "verify fitness", "rank ASHA", "rank verify"), ("candidate", "ASHA"))
    for r in sorted(records, key=lambda r: verify_rank.get(r["id"], 10**6)):
        kept = f"stopped at {r['reached_step']}/{r['total_steps']}" if r["early_stopped"] else "kept"
        table.add_row(r["name"], kept, f"{r['asha_tokens']:,.0f}", f"{r['verify_tokens']:,.0f}", _f(r["asha_loss"]),
                      _f(r["verify_loss"]), _f(r["verify_benchmark"]), _f(r["verify_binding"]), _f(r["asha_fitness"]),
                      _f(r["verify_fitness"]) if not r["verify_error"] else r["verify_error"][:30],
                      str(asha_rank.get(r["id"], "-")), str(verify_rank.get(r["id"], "-")))
    console.print(table)
    n, scored, top, kept_top = len(records), a["scored"], a["top"], a["kept_top"]
    token_ratio, second_ratio, rho, rho_loss = a["token_ratio"], a["second_ratio"], a["rho"], a["rho_loss"]
    top_asha = {r["id"] for r in sorted(scored, key=lambda r: -r["asha_fitness"])[:5]}
    summary = _table("funnel: ASHA explore against full training at the verify budget (goals from issue 12)",
                     ("measure", "ASHA", "verify budget", "ratio / value", "goal", "met"), ("measure", "goal"))
    per = lambda key: sum(r[key] or 0 for r in records) / max(1, n)  # noqa: E731
    summary.add_row("training tokens per candidate", f"{per('asha_tokens'):,.0f}", f"{per('verify_tokens'):,.0f}",
                    f"{token_ratio:.2f}x", "<= 0.33x", _yes(token_ratio <= 1 / 3))
    summary.add_row("device seconds per candidate", f"{per('asha_seconds'):.1f}", f"{per('verify_seconds'):.1f}",
                    f"{second_ratio:.2f}x", "<= 0.33x", _yes(second_ratio <= 1 / 3))
    summary.add_row("Spearman of fitness", "", "", f"{rho:.2f} (n={len(scored)})", ">= 0.8", _yes(rho >= 0.8))
    summary.add_row("top-5 by verify-budget fitness kept by ASHA", "", "", f"{kept_top}/5", ">= 4/5", _yes(kept_top >= 4))
    summary.add_row("... of them in ASHA's own top 5", "", "", f"{sum(r['id'] in top_asha for r in top)}/5", "", "")
    summary.add_row("top-5 by verify-budget loss kept by ASHA", "", "", f"{a['kept_by_loss']}/5", "", "")
    summary.add_row("Spearman of eval loss (diagnostic)", "", "", f"{rho_loss:.2f} (n={a['loss_pairs']})", "", "")
    finished = [r for r in records if r["verify_head_loss"] is not None and not r["verify_error"]
                and r["verify_tokens"] >= max(x["verify_tokens"] for x in records)]  # not cut short
    head = spearmanr([r["verify_head_loss"] for r in finished], [r["verify_loss"] for r in finished]).statistic \
        if len(finished) >= 3 else float("nan")
    summary.add_row(f"Spearman of the verify runs' own loss at step {base.stages.explore_steps} (their head) vs their "
                    "final (diagnostic)", "", "", f"{head:.2f} (n={len(finished)} not cut short)", "", "")
    summary.add_row(f"anchor {seed} at the verify budget ({len(anchor_runs)} runs)", "", "",
                    f"loss {anchor['eval_loss']:.3f} ± {anchor['eval_loss_std'] or 0:.3f}", "", "")
    summary.add_row("wall time (s)", f"{walls.get('asha', 0):.0f} (whole campaign)", f"{walls.get('full_verify', 0):.0f}",
                    "", "", "")
    console.print(summary)


def replay(candidates, full: dict[str, dict[str, Any]], final: dict[str, float | None], anchor: dict[str, Any],
           fitness_fn, bench_key: str, chance, scale: ScaleConfig, console: Console) -> None:
    """Successive halving replayed over the full-training curves for every first rung and reduction factor
    (``final``: each candidate's fitness after full training)."""
    from scipy.stats import spearmanr

    from asiarch.campaign import scoring
    from asiarch.campaign.schedulers import rung_steps, successive_halving

    ok = [c for c in candidates if "error" not in full[c.id]]
    total = scale.train.steps
    curves = {c.id: {h["step"]: h["eval_loss"] for h in full[c.id].get("history") or [] if h.get("eval_loss") is not None}
              for c in ok}
    if not curves or not all(total in curve for curve in curves.values()):
        console.print("no replay: the full-training runs kept no evaluation curves (an older run of this benchmark)")
        return
    steps = sorted(set.intersection(*(set(v) for v in curves.values())))
    judge = {c.id: c.judge.get("overall") for c in ok}
    final = {c.id: final[c.id] for c in ok}  # candidates whose full training failed have no curve to replay

    def fitness_at(c, step: int) -> float | None:
        if step >= total:
            return final[c.id]
        return scoring.score(fitness_fn, c.name, metrics_until(full[c.id], step, bench_key), anchor, judge[c.id],
                             "explore", chance=chance, stopped_at=step).value

    top5 = sorted(final, key=lambda cid: -(final[cid] if final[cid] is not None else -math.inf))[:5]
    top5_loss = sorted(curves, key=lambda cid: curves[cid][total])[:5]
    n = len(ok)
    table = _table(f"successive halving replayed over the {n} full-training curves (a simulation over measured "
                   f"curves; synchronous halving, keep ceil(n / rf) per rung)",
                   ("first rung (step)", "fraction", "rf", "compute / full", "Spearman of fitness", "top-5 kept",
                    "top-5 by loss kept", "finishers", "all goals met"))
    for first in [s for s in steps if scale.train.warmup_steps < s < total]:
        for rf in (2, 3, 4):
            rungs = rung_steps(total, first, rf)
            if any(rung not in steps for rung in rungs):
                continue  # a rung between evaluations: not replayable
            stop = successive_halving(curves, rungs, rf, total)
            compute = sum(stop.values()) / (n * total)
            funnel_fit = {c.id: fitness_at(c, stop[c.id]) for c in ok}
            pairs = [(funnel_fit[k], final[k]) for k in final if None not in (funnel_fit[k], final[k])]
            rho = spearmanr(*zip(*pairs)).statistic if len(pairs) >= 3 else float("nan")
            kept = sum(stop[cid] == total for cid in top5)
            finishers = sum(s == total for s in stop.values())
            met = compute <= 1 / 3 and rho >= 0.8 and kept >= 4
            kept_loss = sum(stop[cid] == total for cid in top5_loss)
            table.add_row(str(first), f"{first / total:.3f}", str(rf), f"{compute:.2f}", f"{rho:.2f}", f"{kept}/5",
                          f"{kept_loss}/5", f"{finishers}/{n}", _yes(met))
    console.print(table)
    console.print(f"Whatever the rungs, keeping k finishers of n costs at least (k + (n - k) x first rung) / n of full "
                  f"training: 4 of {n} within 1/3 needs the first rung at or below "
                  f"{(n / 3 - 4) / max(1, n - 4):.3f} of the budget.", highlight=False)


def _table(title: str, headers: tuple[str, ...], left: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="left" if header in left else "right")
    return table


def _agreement(records: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    """ASHA's measurements against the ``arm``'s (``full`` or ``verify``) over the same candidates: compute ratios,
    rank correlations, ranks, and the arm's top 5 (by fitness, by loss) with how many ASHA let finish."""
    from scipy.stats import spearmanr

    scored = [r for r in records if r["asha_fitness"] is not None and r[f"{arm}_fitness"] is not None]
    loss_pairs = [(r["asha_loss"], r[f"{arm}_loss"]) for r in records if None not in (r["asha_loss"], r[f"{arm}_loss"])]
    top = sorted(scored, key=lambda r: -r[f"{arm}_fitness"])[:5]
    by_loss = sorted((r for r in records if r[f"{arm}_loss"] is not None), key=lambda r: r[f"{arm}_loss"])[:5]
    return {
        "scored": scored, "top": top, "kept_top": sum(not r["early_stopped"] for r in top),
        "kept_by_loss": sum(not r["early_stopped"] for r in by_loss), "loss_pairs": len(loss_pairs),
        "token_ratio": sum(r["asha_tokens"] for r in records) / max(1.0, sum(r[f"{arm}_tokens"] for r in records)),
        "second_ratio": sum(r["asha_seconds"] for r in records) / max(1e-9, sum(r[f"{arm}_seconds"] or 0 for r in records)),
        "rho": spearmanr([r["asha_fitness"] for r in scored], [r[f"{arm}_fitness"] for r in scored]).statistic
        if len(scored) >= 3 else float("nan"),
        "rho_loss": spearmanr(*zip(*loss_pairs)).statistic if len(loss_pairs) >= 3 else float("nan"),
        "asha_rank": dict(zip((r["id"] for r in scored), _ranks([r["asha_fitness"] for r in scored]))),
        "arm_rank": dict(zip((r["id"] for r in scored), _ranks([r[f"{arm}_fitness"] for r in scored])))}


def _loss_at(run: dict[str, Any], step: int | None) -> float | None:
    """The run's evaluated loss at ``step`` (None where it did not evaluate there)."""
    return next((h.get("eval_loss") for h in run.get("history") or [] if h.get("step") == step), None)


def _ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    for r, i in enumerate(order, 1):
        ranks[i] = r
    return ranks


def report(records, args, campaign, walls: dict[str, float], work: Path, console: Console) -> None:

    a = _agreement(records, "full")
    asha_rank, full_rank = a["asha_rank"], a["arm_rank"]
    table = _table(f"funnel: the same {len(records)} candidates, ASHA explore vs full training ({args.explore_steps} steps)",
                   ("candidate", "ASHA", "ASHA tokens", "full tokens", "ASHA s", "full s", "judge", "ASHA fitness",
                    "full fitness", "rank ASHA", "rank full"), ("candidate", "ASHA"))
    for r in sorted(records, key=lambda r: full_rank.get(r["id"], 10**6)):
        kept = f"stopped at {r['reached_step']}/{r['total_steps']}" if r["early_stopped"] else "kept"
        kept += "".join(f" kept@{step} p={p:.2g}" for step, p in r.get("asha_spared") or [])
        if r["early_stopped"] and r.get("asha_rung_p") is not None:
            kept += f" p={r['asha_rung_p']:.2g}"
        table.add_row(r["name"], kept + (f" ({r['asha_trials']} trials)" if r["asha_trials"] > 1 else ""),
                      f"{r['asha_tokens']:,.0f}", f"{r['full_tokens']:,.0f}", f"{r['asha_seconds']:.1f}",
                      f"{r['full_seconds']:.1f}", _f(r["judge"]), _f(r["asha_fitness"]),
                      _f(r["full_fitness"]) if not r["full_error"] else r["full_error"][:30],
                      str(asha_rank.get(r["id"], "-")), str(full_rank.get(r["id"], "-")))
    console.print(table)

    n, scored, top, kept_top, kept_by_loss = len(records), a["scored"], a["top"], a["kept_top"], a["kept_by_loss"]
    token_ratio, second_ratio, rho, rho_loss = a["token_ratio"], a["second_ratio"], a["rho"], a["rho_loss"]
    restored = [r["name"] for r in records if r["stored_fitness"] is not None and r["asha_fitness"] is not None
                and abs(r["stored_fitness"] - r["asha_fitness"]) > 1e-9]
    stopped = sum(r["early_stopped"] for r in records)
    e = campaign.explore_settings
    # the rung rule's level (conf: explore.rung_significance); with the rule off, the campaign's verify level
    alpha = e.rung_significance if e.rung_significance is not None else campaign.verify_settings.significance
    spared = [r for r in records if r.get("asha_spared")]
    measured_stops = [r for r in records if r["early_stopped"] and r.get("asha_rung_p") is not None]
    within_noise = {r["id"] for r in measured_stops if r["asha_rung_p"] >= alpha}

    summary = _table("funnel: ASHA against full training (goals from issue 12)",
                     ("measure", "ASHA", "full training", "ratio / value", "goal", "met"), ("measure", "goal"))
    per = lambda key: sum(r[key] for r in records) / max(1, n)  # noqa: E731
    summary.add_row("training tokens per candidate", f"{per('asha_tokens'):,.0f}", f"{per('full_tokens'):,.0f}",
                    f"{token_ratio:.2f}x", "<= 0.33x", _yes(token_ratio <= 1 / 3))
    summary.add_row("device seconds per candidate", f"{per('asha_seconds'):.1f}", f"{per('full_seconds'):.1f}",
                    f"{second_ratio:.2f}x", "<= 0.33x", _yes(second_ratio <= 1 / 3))
    summary.add_row("Spearman of fitness", "", "", f"{rho:.2f} (n={len(scored)})", ">= 0.8", _yes(rho >= 0.8))
    summary.add_row("top-5 by full training kept by ASHA", "", "", f"{kept_top}/5", ">= 4/5", _yes(kept_top >= 4))
    summary.add_row("top-5 by full-training loss kept by ASHA", "", "", f"{kept_by_loss}/5", "", "")
    summary.add_row("Spearman of eval loss (diagnostic)", "", "", f"{rho_loss:.2f} (n={a['loss_pairs']})", "", "")
    summary.add_row("stopped early by ASHA", f"{stopped}/{n}", "", "", "", "")
    summary.add_row(f"... of them within noise of the rung's cutoff (p >= {alpha:g})",
                    f"{len(within_noise)}/{len(measured_stops)}" if measured_stops else "not recorded", "", "", "", "")
    rule = "off" if e.rung_significance is None else f"p >= {e.rung_significance:g} trains on"
    summary.add_row(f"stops overruled as within noise (rung rule: {rule})", f"{len(spared)}/{n}", "", "",
                    "", "")
    summary.add_row("... of them in the top 5 by full training", f"{sum(1 for r in top if r.get('asha_spared'))}/5",
                    "", "", "", "")
    if measured_stops:  # what-if over these runs: a stop not sure at alpha trains on to the end (its full run stands in)
        unsure = within_noise | {r["id"] for r in records if r["early_stopped"] and r.get("asha_rung_p") is None}
        sure_tokens = sum(r["full_tokens"] if r["id"] in unsure else r["asha_tokens"] for r in records)
        sure_ratio = sure_tokens / max(1.0, sum(r["full_tokens"] for r in records))
        sure_kept = sum(not r["early_stopped"] or r["id"] in unsure for r in top)
        summary.add_row(f"what-if: only stops with p < {alpha:g} stop (tokens; top-5 kept)", "", "",
                        f"{sure_ratio:.2f}x; {sure_kept}/5", "", "")
    summary.add_row("wall time (s)", f"{walls.get('asha', 0):.0f} (whole campaign)", f"{walls.get('full', 0):.0f}", "", "", "")
    console.print(summary)
    if restored:
        console.print(f"ASHA fitness rescored with the current conf (differs from the campaign's stored value): "
                      f"{len(restored)} of {n}", highlight=False)
    console.print(f"ASHA rungs: grace {e.grace_fraction:g} of the budget, reduction factor {e.reduction_factor} "
                  f"(conf: explore); synchronous successive halving with these rungs spends "
                  f"{halving_floor(e.grace_fraction, e.reduction_factor):.2f} of full training; runs under {work}",
                  highlight=False)


def _f(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


if __name__ == "__main__":
    main()
