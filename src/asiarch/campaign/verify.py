"""The verify stage: promoted candidates and every seed → Tune + PBT per design → scored → Analyst.

The top ``verify.top_fraction`` of explore's finishers are promoted; they and every seed
train at the verify scale on each of ``verify.training_seeds``: at the scale's learning rate
(``verify.search: fixed``), with PBT over it within each design, or on a grid of rates. Each
design's result is the mean over its independent training runs at its best learning rate
(runs PBT made share weights are one sample); ``scoring`` gives the verify fitness against
the anchor seed and which seeds it beats; the Analyst reads the result.
"""

from __future__ import annotations

import math
import os
from typing import Any

import ray

from asiarch.campaign import scoring
from asiarch.campaign.stage import StageContext, StageInterrupted, fit_through_node_losses, tokens_per_step, trial_name
from asiarch.campaign.state import now_iso
from asiarch.checks import ParameterBudget
from asiarch.config import ScaleConfig
from asiarch.memory import Candidate, Kind, Status
from asiarch.sandbox import SandboxOptions
from asiarch.train.protocol import TrialData
from asiarch.campaign.placement import on_this_node


SEARCH_TEXT = {"pbt": "PBT over the learning rate (runs that clone another's weights count as one in the tests)",
               "pbt/seed": "PBT over the learning rate within each training seed (each seed's result is its best member's)",
               "sweep": "learning-rate sweep", "fixed": "the scale's learning rate, every run independent"}


def _design_of(config: dict[str, Any]) -> str:
    return config["run"]["design"]


def _design_and_seed_of(config: dict[str, Any]) -> str:
    return f"{config['run']['design']}/s{config['run']['training_seed']}"


def _run_verify_trial(config: dict[str, Any], scales: dict[str, ScaleConfig], data: dict[str, TrialData],
                      downstream: bool = False, sandbox: SandboxOptions | None = None,
                      budget: ParameterBudget | None = None) -> None:
    from asiarch.campaign.trainable import run_trial

    flat = {**config["run"], "stage": "verify", "lr": config["lr"]}
    run_trial(flat, scales, data, memory=None, downstream=downstream, sandbox=sandbox, budget=budget)


def failed_runs(grid) -> list[str]:
    """The verify runs Tune gave up on (an error past ``explore.max_failures`` retries), each as its trial folder
    (design and training seed) and the error's first line: they are left out of their design's result."""
    out = []
    for result in grid:
        if result.error is None:
            continue
        error = getattr(result.error, "cause", None) or result.error  # a Ray task's own error, not Ray's wrapping
        first = (str(error).strip().splitlines() or [""])[0][:200]
        out.append(f"{os.path.basename(str(result.path).rstrip('/'))}: {type(error).__name__}: {first}")
    return out


class VerifyStage:
    """Runs (or resumes) verify for the promoted candidates and the seeds."""

    def __init__(self, ctx: StageContext, scale: ScaleConfig, data: dict[str, TrialData],
                 callbacks: list[Any] | None = None):
        self.ctx, self.scale, self.data = ctx, scale, data
        self.callbacks = list(callbacks or [])

    # -- set up ----------------------------------------------------------------------------------
    def promote(self) -> list[Candidate]:
        """The candidates to verify: those promoted before a restart, else the top of explore's finishers."""
        ctx, memory = self.ctx, self.ctx.memory()
        mine = memory.list_candidates(campaign=ctx.name, kind=Kind.CANDIDATE.value)
        promoted = [c for c in mine if c.status == Status.PROMOTED or c.stage == "verify"]
        if promoted:
            return promoted
        eligible = sorted((c for c in mine if c.status == Status.FINISHED and c.fitness is not None),
                          key=lambda c: (-c.fitness, c.id))
        if not eligible:
            return []
        n = min(len(eligible), max(ctx.verify.min_promoted, math.ceil(ctx.verify.top_fraction * len(eligible))))
        reason = f"top {n} of {len(eligible)}"
        if n < len(eligible):  # how sure the cut was: said, recorded, and kept with each promoted candidate
            anchor = ctx.seed_result(ctx.anchor_seed, "explore") or {}
            cut = scoring.promotion_cut((eligible[n - 1].name, eligible[n - 1].explore.eval_loss),
                                        (eligible[n].name, eligible[n].explore.eval_loss), anchor.get("eval_loss_std"),
                                        anchor.get("eval_loss_runs") or 0)
            ctx.record.update(promotion_cut=cut)
            line = scoring.describe_cut(cut, ctx.verify.significance)
            ctx.console.print(f"verify: promoted the top {n} of {len(eligible)} by explore fitness; {line}",
                              markup=False, highlight=False)
            if cut["p"] is not None:
                reason += f"; cut p {cut['p']:.2g} (explore loss gap {cut['loss_gap']:+.4f} to {eligible[n].name})"
        for c in eligible[:n]:
            ray.get(ctx.writer.update_candidate.remote(
                c.id, status=Status.PROMOTED, status_reason=f"explore fitness {c.fitness:.3f}: {reason}"))
        return memory.get_candidates([c.id for c in eligible[:n]])

    def _tuner(self, runs: list[dict[str, Any]]):
        from ray import tune

        from asiarch.campaign.schedulers import pbt_checkpoints_to_keep, verify_scheduler

        ctx, v, scale = self.ctx, self.ctx.verify, self.scale
        lr = scale.train.lr
        param_space, scheduler = {"run": tune.grid_search(runs), "stage": "verify", "lr": lr}, None
        if v.search == "sweep" or v.pbt_per_seed:
            param_space["lr"] = tune.grid_search([lr * m for m in v.lr_multipliers])
        if v.search == "pbt":
            scheduler = verify_scheduler(int(v.perturbation_fraction * scale.train.steps) * tokens_per_step(scale),
                                         tune.loguniform(lr * v.lr_bounds[0], lr * v.lr_bounds[1]),
                                         group_of=_design_and_seed_of if v.pbt_per_seed else _design_of)
        trainable = tune.with_resources(
            tune.with_parameters(_run_verify_trial, scales={"verify": scale}, data={"verify": self.data["verify"]},
                                 downstream=self._downstream(), sandbox=ctx.sandbox, budget=ctx.parameter_budget),
            ctx.run.tune_resources())
        path, storage = ctx.tune_storage("verify")
        fs = {k: v for k, v in storage.items() if k == "storage_filesystem"}
        if tune.Tuner.can_restore(path, **fs):
            return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True, **fs)
        return tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=ctx.slots(),
                                        trial_name_creator=trial_name, trial_dirname_creator=trial_name,
                                        time_budget_s=ctx.wall_left(), reuse_actors=True,
                                        metric=None if scheduler else "eval_loss", mode=None if scheduler else "min"),
            run_config=tune.RunConfig(
                name="verify", **storage, verbose=0, callbacks=self.callbacks,
                failure_config=tune.FailureConfig(max_failures=ctx.explore.max_failures),
                # PBT clones members' checkpoints: keep enough of them; the progress callback deletes a
                # finished trial's checkpoints
                checkpoint_config=tune.CheckpointConfig(num_to_keep=pbt_checkpoints_to_keep(
                    int(v.perturbation_fraction * scale.train.steps), scale.train.report_every) if scheduler else 1)),
        )

    # -- seeds from the baseline cache -----------------------------------------------------------
    def _protocol(self) -> dict[str, Any]:
        """What besides the scale makes a seed's verify runs the same measurement in another campaign."""
        v = self.ctx.verify
        search: dict[str, Any] = {}
        if v.search == "sweep":
            search = {"lr_multipliers": list(v.lr_multipliers)}
        elif v.search == "pbt":
            # runs cached before the trainable kept lineages cannot say which shared weights: not reused
            search = {"perturbation_fraction": v.perturbation_fraction, "lr_bounds": list(v.lr_bounds), "lineage": True}
            if v.pbt_per_seed:
                search.update(population="seed", lr_multipliers=list(v.lr_multipliers))
        return {"stage": "verify", "training_seeds": list(v.training_seeds), "search": v.search, **search}

    def _downstream(self) -> bool:
        return scoring.scores_downstream(self.scale, "verify", self.ctx.run.downstream)

    def cached_seeds(self) -> dict[str, list[dict[str, Any]]]:
        """Seeds whose verify runs another campaign under this output directory already trained."""
        found = {seed: self.ctx.baselines.get(seed, self.scale, self._downstream(), self._protocol())
                 for seed in self.ctx.seeds}
        return {seed: runs for seed, runs in found.items() if runs}

    def _cache_seed(self, seed: str, runs: list[dict[str, Any]]) -> None:
        if len(runs) != len(self.ctx.verify.training_seeds):
            return  # only a complete measurement is reused
        keep = (*scoring.RUN_KEYS, "history", "train_seconds", "timestamp")
        self.ctx.baselines.put(seed, self.scale, self._downstream(),
                               [{k: r[k] for k in keep if k in r} for r in runs], self._protocol())

    def run(self) -> None:
        ctx, v = self.ctx, self.ctx.verify
        promoted = self.promote()
        if not promoted:
            ctx.console.print("verify: no candidate finished explore with a fitness; nothing to verify")
            return
        cached = self.cached_seeds()
        if cached:
            ctx.console.print(f"verify: seed(s) {', '.join(cached)} from the baseline cache ({ctx.baselines.root}): "
                              f"not trained again", markup=False, highlight=False)
        to_train = [seed for seed in ctx.seeds if seed not in cached]
        runs = [{"kind": Kind.CANDIDATE.value, "design": c.id, "name": c.name, "code": c.code} for c in promoted]
        runs += [{"kind": Kind.SEED.value, "design": seed, "name": seed, "code": ""} for seed in to_train]
        runs = [{**r, "training_seed": t} for r in runs for t in v.training_seeds]
        tuner = self._tuner(runs)
        ctx.console.print(f"verify: {len(promoted)} candidate(s) and {len(to_train)} seed(s) x "
                          f"{len(v.training_seeds)} training seed(s) at {self.scale.name}, {self.scale.train.steps} steps, "
                          f"{SEARCH_TEXT['pbt/seed' if v.pbt_per_seed else v.search]}")
        grid = fit_through_node_losses(tuner, lambda: self._tuner(runs), ctx, "verify")
        unfinished = [r for r in grid if r.error is None and not (r.metrics or {}).get("final")
                      and not (r.metrics or {}).get("code_error")]
        if unfinished:  # scoring part-trained runs would report numbers that do not mean what they say
            raise StageInterrupted(f"verify stopped with {len(unfinished)} of {len(grid)} trial(s) unfinished")
        lost = failed_runs(grid)
        if lost:  # said and kept: the table's runs column alone would not say why a design stands on fewer runs
            ctx.record.update(verify_failed_runs=lost)
            ctx.console.print(f"verify: {len(lost)} run(s) failed past Tune's retries and are left out of their "
                              f"design's mean and tests: " + "; ".join(lost), markup=False, highlight=False)
        self.record(grid, promoted, cached)

    # -- results ----------------------------------------------------------------------------------
    def _runs_by_design(self, grid) -> dict[str, dict[Any, list[dict[str, Any]]]]:
        """Each design's finished runs, grouped by learning rate (one group unless a sweep). Under PBT with a
        population per training seed each seed gives one run, its best member's (the lowest final eval loss)."""
        v = self.ctx.verify
        by_design: dict[str, dict[Any, list[dict[str, Any]]]] = {}
        best: dict[tuple[str, Any], dict[str, Any]] = {}
        population_seconds: dict[tuple[str, Any], float] = {}  # every member's device time counts
        for result in grid:
            if result.config is None or not result.metrics:
                continue
            run = result.config["run"]
            lr_key = result.config["lr"] if v.search == "sweep" else "one"
            metrics = dict(result.metrics)
            frame = result.metrics_dataframe
            metrics["history"] = [{"eval_loss": m} for m in (frame["eval_loss"].dropna().tolist()
                                                             if frame is not None and "eval_loss" in frame else [])]
            metrics["train_seconds"] = metrics.get("time_total_s", 0.0)
            if v.pbt_per_seed:
                key = (run["design"], run["training_seed"])
                population_seconds[key] = population_seconds.get(key, 0.0) + float(metrics["train_seconds"] or 0.0)
                loss = metrics.get("eval_loss")
                if key not in best or (loss is not None and (best[key].get("eval_loss") is None
                                                             or loss < best[key]["eval_loss"])):
                    best[key] = metrics
                continue
            by_design.setdefault(run["design"], {}).setdefault(lr_key, []).append(metrics)
        for key, metrics in sorted(best.items(), key=lambda item: str(item[0])):
            by_design.setdefault(key[0], {}).setdefault("one", []).append(
                {**metrics, "train_seconds": population_seconds[key]})
        return by_design

    @staticmethod
    def _best_runs(groups: dict[Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The runs of the learning rate with the lowest mean eval loss."""
        finite = {k: rs for k, rs in groups.items() if scoring.mean([r.get("eval_loss") for r in rs]) is not None}
        if not finite:
            return []
        return finite[min(finite, key=lambda k: scoring.mean([r.get("eval_loss") for r in finite[k]]))]

    def record(self, grid, promoted: list[Candidate], cached: dict[str, list[dict[str, Any]]] | None = None) -> None:
        """Verify metrics and fitness per design; which seeds each beats; breakthroughs; the discovery curve.

        ``cached``: seeds' runs from the baseline cache, used where this grid did not train the seed."""
        ctx, cached = self.ctx, cached or {}
        by_design = self._runs_by_design(grid)
        seed_metrics = {}
        for seed in ctx.seeds:
            runs = self._best_runs(by_design.get(seed, {}))
            if runs:
                self._cache_seed(seed, runs)
            elif seed in cached:  # trained by an earlier campaign: no device time in this one
                runs = [{**r, "train_seconds": 0.0, "time_total_s": 0.0} for r in cached[seed]]
            if runs:
                seed_metrics[seed] = ctx.store_seed_result(seed, "verify", runs)
        anchor = (scoring.anchor_of(ctx.anchor_seed, seed_metrics[ctx.anchor_seed]) if ctx.anchor_seed in seed_metrics
                  else ctx.seed_result(ctx.anchor_seed, "verify"))
        memory = ctx.memory()
        explore_hours = sum(c.device_seconds for c in memory.list_candidates(campaign=ctx.name)) / 3600
        events = []
        for c in memory.get_candidates([c.id for c in promoted]):
            if c.stage == "verify" and c.status != Status.PROMOTED:
                continue  # recorded before a restart
            runs = self._best_runs(by_design.get(c.id, {}))
            seconds = sum(float(r.get("train_seconds") or 0.0) for rs in by_design.get(c.id, {}).values() for r in rs)
            if not runs:
                ray.get(ctx.writer.update_candidate.remote(c.id, stage="verify", status=Status.FAILED,
                                                           status_reason="no verify run finished"))
                continue
            metrics = scoring.stage_metrics(runs, ctx.bench_key)
            tests = scoring.compare_with_seeds(metrics, seed_metrics, ctx.verify.significance)
            beaten = scoring.beats(tests)
            breakthrough = scoring.is_breakthrough(beaten, ctx.seeds)
            short = scoring.short_runs(runs)
            fitness = scoring.score(ctx.fitness_fn, c.name, metrics, anchor, c.judge.get("overall"), "verify",
                                    chance=scoring.benchmark_chance(self.scale), alpha=ctx.verify.significance,
                                    significance=ctx.verify.significance, beats=beaten, tests=tests,
                                    **({"short_runs": short} if short else {}))
            reason = (f"breakthrough: beats every seed at verify scale (p < {ctx.verify.significance})"
                      if breakthrough else f"verified; beats {sum(beaten.values())}/{len(beaten)} seed(s) "
                      f"significantly (p < {ctx.verify.significance})") + (f"; {short}" if short else "")
            ray.get(ctx.writer.set_stage.remote(
                c.id, "verify", loss_curve=metrics.loss_curve, eval_loss=metrics.eval_loss,
                mqar_accuracy=metrics.mqar_accuracy, benchmark=metrics.benchmark, benchmarks=metrics.benchmarks,
                fitness=fitness.value, fitness_parts=fitness.parts, stage="verify", status=Status.FINISHED,
                breakthrough=breakthrough, device_seconds=c.device_seconds + seconds, status_reason=reason))
            finished_at = max(float(r.get("timestamp") or 0) for r in runs)
            events.append((finished_at, seconds, c.id, breakthrough))
        self._analyse([cid for _, _, cid, _ in events])
        discovery, hours, count = list(ctx.record.get("discovery") or []), explore_hours, 0
        if not discovery:
            for finished_at, seconds, cid, breakthrough in sorted(events):
                hours += seconds / 3600
                count += int(breakthrough)
                discovery.append({"device_hours": hours, "breakthroughs": count, "candidate_id": cid, "at": now_iso()})
        ctx.record.update(discovery=discovery)

    def _analyse(self, candidate_ids: list[str]) -> None:
        """The Analyst reads each verified result (its insights feed the next proposals)."""
        if not candidate_ids:
            return
        from asiarch.agents import AnalystActor

        ctx = self.ctx
        analyst = AnalystActor.options(**on_this_node()).remote(backend=ctx.backend, uri=ctx.memory_uri, writer=ctx.writer, campaign=ctx.name,
                                      config=ctx.agents)
        for cid in candidate_ids:
            try:
                ray.get(analyst.analyse.remote(cid))
            except Exception as err:  # an analysis is advice: its failure is reported, the results stand
                ctx.console.print(f"verify: the Analyst failed on {cid}: {type(err).__name__}: {err}", markup=False)
        ray.kill(analyst)

