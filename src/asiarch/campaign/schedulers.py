"""The funnel's Tune schedulers: ASHA for explore, PBT within each design for verify."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search.sample import Domain

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

GroupOf = Callable[[dict[str, Any]], str]


def first_rung_step(steps: int, grace_fraction: float, warmup_steps: int, report_every: int) -> int:
    """The step of ASHA's first rung: ``grace_fraction`` of the steps, but never inside the warm-up.

    During the learning-rate warm-up every design's loss is still close to its initial
    value, so a comparison there separates nothing; the rung moves to the first
    evaluation after the warm-up (evaluations land every ``report_every`` steps).
    """
    step = max(grace_fraction * steps, warmup_steps + 1)
    return int(min(steps, math.ceil(step / report_every) * report_every))


def rung_steps(total_steps: int, first_step: int, reduction_factor: int) -> list[int]:
    """ASHA's rungs in steps: ``first_step``, then x ``reduction_factor``, below ``total_steps``."""
    if first_step < 1 or reduction_factor < 2:
        raise ValueError(f"need first_step >= 1 and reduction_factor >= 2, got {first_step} and {reduction_factor}")
    rungs, rung = [], first_step
    while rung < total_steps:
        rungs.append(int(rung))
        rung *= reduction_factor
    return rungs


def successive_halving(curves: Mapping[str, Mapping[int, float]], rungs: Sequence[int], reduction_factor: int,
                       total_steps: int) -> dict[str, int]:
    """Synchronous successive halving replayed over measured loss curves: the step each design stops at.

    ``curves`` maps a design to its eval loss by step. At each rung a design is read at its
    last evaluation at or before the rung (none: it ranks last); the best ``ceil(n / rf)`` of
    those still running go on, the rest stop there; survivors of every rung reach
    ``total_steps``. The benchmarks use it to ask what the campaign's rungs would keep;
    Tune's ASHA, asynchronous, keeps more of the designs that arrive first.
    """
    def at(design: str, rung: int) -> float:
        seen = [step for step in curves[design] if step <= rung]
        return curves[design][max(seen)] if seen else math.inf

    alive, stop = set(curves), {design: total_steps for design in curves}
    for rung in rungs:
        keep = max(1, math.ceil(len(alive) / reduction_factor))
        ranked = sorted(alive, key=lambda d: (at(d, rung), d))
        for design in ranked[keep:]:
            stop[design] = rung
        alive = set(ranked[:keep])
    return stop


RungReferee = Callable[[str, dict[str, Any]], bool]


class ExploreASHA(ASHAScheduler):
    """Tune's ASHA (one bracket) whose stops are put to a referee, and say what they were measured against.

    ASHA stops a trial at a rung when its metric is behind the best ``1 / reduction_factor``
    of the trials recorded at that rung before it. That cutoff is ASHA's own bookkeeping,
    so this scheduler keeps the same record (the metric of each trial at its first result
    at or past each rung) and, for every stop at a rung, asks ``referee(design, rung)``
    with the step, the trial's metric, the cutoff it missed and how many trials set it.
    The referee returns whether the stop stands; a stop that does not stand continues the
    trial to the next rung (Tune's bracket has recorded it at this one either way). The
    campaign's referee (``PipelineRungReferee``) reads the gap against the anchor's noise.
    Without a referee the decisions are ASHA's, unchanged.
    """

    def __init__(self, *, referee: RungReferee | None = None, **asha: Any):
        if asha.setdefault("brackets", 1) != 1:
            raise ValueError("ExploreASHA mirrors one bracket only")
        if asha.get("metric") is None or asha.get("mode") not in ("min", "max"):
            raise ValueError("ExploreASHA needs its metric and mode up front (it keeps ASHA's record itself)")
        super().__init__(**asha)
        max_t, grace, rf = asha["max_t"], asha["grace_period"], asha["reduction_factor"]
        count = int(math.log(max_t / grace) / math.log(rf) + 1)  # as Tune's bracket sizes its rungs
        self.rungs = [grace * rf ** k for k in reversed(range(count))]
        self._record_of: dict[float, dict[str, float]] = {rung: {} for rung in self.rungs}
        self._watch = (asha.get("time_attr", "training_iteration"), asha["metric"], 1.0 if asha["mode"] == "max" else -1.0)
        self._budget, self._rf, self._referee = max_t, rf, referee
        self.stopped = self.spared = 0  # stops that stood, and stops the referee overruled

    def _record(self, trial: Trial, result: dict) -> dict[str, Any] | None:
        """Record ``result`` at the rung it reaches first, as Tune's bracket does; the rung's verdict on it."""
        time_attr, metric, sign = self._watch
        t, value = result.get(time_attr), result.get(metric)
        if t is None or value is None:
            return None
        for rung in self.rungs:  # descending, as Tune's bracket walks them
            recorded = self._record_of[rung]
            if t < rung or trial.trial_id in recorded:
                continue
            ordered = [sign * v for v in recorded.values()]  # ASHA compares in "max" space
            recorded[trial.trial_id] = float(value)
            if not ordered:
                return None
            cutoff = float(np.nanpercentile(ordered, (1 - 1 / self._rf) * 100))
            return {"step": result.get("step"), "tokens": t, "metric": metric, "value": float(value),
                    "cutoff": sign * cutoff, "designs": len(ordered), "mode": "max" if sign > 0 else "min",
                    "reduction_factor": self._rf}
        return None

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        t = result.get(self._watch[0])
        if t is not None and t >= self._budget:  # the end of the budget, not a rung (Tune's bracket is not asked)
            return decision
        rung = self._record(trial, result)
        if decision == TrialScheduler.STOP and rung is not None and self._referee is not None:
            if not self._referee((trial.config or {}).get("design", trial.trial_id), rung):
                self.spared += 1
                return TrialScheduler.CONTINUE
        self.stopped += decision == TrialScheduler.STOP and rung is not None
        return decision

    def debug_string(self) -> str:
        return f"ExploreASHA: {self.stopped} stopped at rungs {self.rungs}, {self.spared} stop(s) overruled by the referee"

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._record(trial, result)  # Tune's bracket records a final result too


class PipelineRungReferee:
    """``ExploreASHA``'s referee in a campaign: the pipeline actor rules on each stop (``rule_on_rung_stop``).

    The pipeline holds the anchor's per-step spread; a stop stands unless the design is
    within that noise of the cutoff (p >= ``significance``; None: every stop stands, and
    is still recorded). If the pipeline cannot answer, ASHA's stop stands. Picklable (Tune
    saves its scheduler with the experiment): it holds the actor's name, not a handle.
    """

    def __init__(self, pipeline_name: str, namespace: str, significance: float | None, timeout_s: float = 30.0):
        self.pipeline_name, self.namespace = pipeline_name, namespace
        self.significance, self.timeout_s = significance, timeout_s

    def __call__(self, design: str, rung: dict[str, Any]) -> bool:
        import ray

        try:
            pipeline = ray.get_actor(self.pipeline_name, namespace=self.namespace)
            return bool(ray.get(pipeline.rule_on_rung_stop.remote(design, rung, self.significance),
                                timeout=self.timeout_s))
        except (ValueError, ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            return True  # no pipeline (a restored experiment being inspected), or no answer: ASHA's decision


def explore_scheduler(budget_tokens: int, grace_fraction: float, reduction_factor: int,
                      metric: str = "eval_loss", mode: str = "min", first_rung_tokens: int | None = None,
                      referee: RungReferee | None = None) -> ExploreASHA:
    """ASHA whose rungs are fractions of the explore token budget (``tokens_seen``), the first at
    ``first_rung_tokens`` when given (see ``first_rung_step``); ``referee`` rules on every stop at a rung."""
    grace = first_rung_tokens if first_rung_tokens is not None else int(grace_fraction * budget_tokens)
    return ExploreASHA(time_attr="tokens_seen", metric=metric, mode=mode, max_t=budget_tokens,
                       grace_period=max(1, grace), reduction_factor=reduction_factor, referee=referee)


class DesignPBT(TrialScheduler):
    """Population-based training in which a trial only exploits members of its own group.

    In verify the population holds several designs: copying one design's weights into
    another would be meaningless (their state dicts differ). So this scheduler keeps one
    stock ``PopulationBasedTraining`` per group (a design) and hands each Tune callback to
    the PBT of the trial's group, with Tune's controller unchanged: quantiles, cloning
    and perturbation all happen inside one design.

    When a member clones another, PBT's new config is the clone's config with the mutated
    hyperparameters perturbed. The member must keep everything else (its design, its
    training seed), so every PBT gets ``custom_explore_fn=self._keep_own_identity``, which
    puts the member's own config back around the perturbed hyperparameters. PBT calls it
    while handling the result of the member that exploits (asynchronous PBT only exploits
    the trial that just reported), which is how this scheduler knows whose config it is.
    """

    def __init__(self, group_of: GroupOf, *, metric: str | None = None, mode: str | None = None,
                 time_attr: str = "time_total_s", **pbt_options: Any):
        if pbt_options.get("synch"):
            raise ValueError("DesignPBT supports asynchronous PBT only (synch=False)")
        if "custom_explore_fn" in pbt_options:
            raise ValueError("DesignPBT sets custom_explore_fn itself (to keep each member's own config)")
        super().__init__()
        self._group_of = group_of
        self._metric, self._mode = metric, mode
        self._time_attr = time_attr
        self._pbt_options = pbt_options
        self._mutated = tuple((pbt_options.get("hyperparam_mutations") or {}).keys())
        self._populations: dict[str, PopulationBasedTraining] = {}
        self._group: dict[Trial, str] = {}
        self._progress: dict[Trial, float] = {}  # last time_attr reported, for fair time-sharing
        self._reporting: Trial | None = None  # the trial whose result PBT is handling

    def _population(self, trial: Trial) -> PopulationBasedTraining:
        return self._populations[self._group[trial]]

    def _keep_own_identity(self, perturbed: dict[str, Any]) -> dict[str, Any]:
        """The exploiting member's own config, with only the mutated hyperparameters from PBT."""
        if self._reporting is None:
            raise RuntimeError("PBT explored outside a trial result; DesignPBT cannot tell whose config it is")
        own = copy.deepcopy(self._reporting.config)
        own.update({key: perturbed[key] for key in self._mutated})
        return own

    # -- Tune's scheduler interface ----------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return all(pbt.set_search_properties(metric, mode, **spec) for pbt in self._populations.values())

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        group = self._group.setdefault(trial, self._group_of(trial.config))
        if group not in self._populations:
            self._populations[group] = PopulationBasedTraining(
                time_attr=self._time_attr, metric=self._metric, mode=self._mode,
                custom_explore_fn=self._keep_own_identity, **self._pbt_options)
        self._progress.setdefault(trial, 0.0)
        self._populations[group].on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        if isinstance(result.get(self._time_attr), (int, float)):
            self._progress[trial] = float(result[self._time_attr])
        self._reporting = trial
        try:
            return self._population(trial).on_trial_result(tune_controller, trial, result)
        finally:
            self._reporting = None

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict) -> None:
        self._population(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        self._population(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self._population(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        """PBT's rule across all designs: the waiting trial that has trained least runs first.

        It also lets a member that just cloned another run before that other member
        trains on (the clone is further along), so the cloned checkpoint is read soon.
        """
        waiting = [t for t in tune_controller.get_trials()
                   if t.status in (Trial.PENDING, Trial.PAUSED) and t in self._group]
        return min(waiting, key=lambda t: self._progress.get(t, 0.0), default=None)

    def debug_string(self) -> str:
        return "DesignPBT: " + "; ".join(f"{group}: {pbt.debug_string()}" for group, pbt in self._populations.items())


def pbt_checkpoints_to_keep(perturbation_interval: float, report_interval: float) -> int:
    """``CheckpointConfig.num_to_keep`` that never deletes a checkpoint PBT may still clone.

    Tune deletes a trial's oldest registered checkpoints beyond ``num_to_keep``. A member
    clones another's checkpoint from that member's last perturbation point and reads it
    when it restarts. Until then the cloned member registers the same checkpoint up to
    twice more (PBT's save, the pause), at most one interval of reports (it pauses at its
    next perturbation point while anyone waits, and the cloning member, behind it,
    restarts first) and two more at that point; one more for a result in flight. Ray 2.60
    warns at ``num_to_keep <= 2`` with PBT, and 1 or 2 do lose clones' checkpoints.
    """
    per_interval = max(1, math.ceil(perturbation_interval / max(report_interval, 1e-12)))
    return per_interval + 6


def _design(config: dict[str, Any]) -> str:
    return config["design"]


def verify_scheduler(perturbation_tokens: int, lr_domain: Domain, metric: str = "eval_loss", mode: str = "min",
                     group_of: GroupOf | None = None) -> DesignPBT:
    """PBT over the learning rate, perturbing every ``perturbation_tokens`` within each design."""
    return DesignPBT(group_of or _design, time_attr="tokens_seen", metric=metric, mode=mode,
                     perturbation_interval=max(1, perturbation_tokens), hyperparam_mutations={"lr": lr_domain},
                     quantile_fraction=0.5, resample_probability=0.25)
