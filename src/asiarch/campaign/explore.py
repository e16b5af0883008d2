"""The explore stage: candidates from the pipeline → Tune + ASHA → scored → Judge and Analyst.

The ``CampaignPipeline`` actor keeps validated candidates ready; the ``CandidateSearcher``
hands them to Tune as trial slots free; ASHA stops weak ones at rungs measured in
tokens. After each trial the pipeline scores it (``scoring``: the one path), asks the
Judge and the Analyst, and writes through the memory. Meanwhile the anchor seed trains
once at the same scale, outside Tune, and anchors the fitness.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from typing import Any

import ray
from ray.tune import Callback, Checkpoint
from ray.tune.stopper import Stopper

from asiarch.arch import SEEDS
from asiarch.campaign import scoring
from asiarch.campaign.pipeline import CampaignPipeline, PipelineSettings
from asiarch.campaign.schedulers import first_rung_step
from asiarch.campaign.stage import (NAMESPACE, StageContext, StageInterrupted, fit_through_node_losses, tokens_per_step,
                                    trial_name)
from asiarch.memory import Status
from asiarch.config import ScaleConfig, seeded_scale
from asiarch.train.protocol import TrialData, train_mixer
from asiarch.train.trainer import MEASURED_STOPS
from asiarch.campaign.placement import on_this_node

log = logging.getLogger(__name__)


@ray.remote(max_retries=2)
def _train_seed(seed: str, scale: ScaleConfig, data: TrialData, downstream: bool) -> dict[str, Any]:
    """One seed trained outside Tune (the explore anchor trains while candidates are proposed)."""
    return train_mixer(SEEDS[seed], scale, data, downstream=downstream)


def _fork_backend(backend: Any, index: int) -> Any:
    """Each agent gets its own copy; a seeded offline proposer gets its own random stream."""
    forked = copy.deepcopy(backend)
    if isinstance(getattr(forked, "rng", None), random.Random):
        forked.rng = random.Random(f"{forked.rng.random()}-{index}")
    return forked



class ResumeCrashedTrials(Callback):
    """Hands the last checkpoint of a trial Tune gave up on to the pipeline, for its next trial.

    A trial crashes when its worker or node dies, never through the candidate's code (those
    errors are results: ``trainable``). Tune's retries fire at once, often before Ray has
    marked a lost node dead, and are spent in a second; the pipeline then trains the
    candidate in a new trial, which starts from this checkpoint instead of from step 0.
    """

    def __init__(self, pipeline_name: str, namespace: str):
        self.pipeline_name, self.namespace = pipeline_name, namespace

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        design, checkpoint = trial.config.get("design"), last_checkpoint(trial)
        if design is None or checkpoint is None:
            return
        try:
            pipeline = ray.get_actor(self.pipeline_name, namespace=self.namespace)
            ray.get(pipeline.keep_checkpoint.remote(design, checkpoint), timeout=30)
        except Exception as err:  # noqa: BLE001 - the candidate then trains again from step 0: slower, not wrong
            log.warning("explore: the last checkpoint of crashed trial %s (%s) was not handed on (%s: %s); "
                        "its candidate trains again from step 0", trial.trial_id, design, type(err).__name__, err)


def last_checkpoint(trial: Any) -> Checkpoint | None:
    """The trial's latest checkpoint, including one Tune has not registered yet.

    Tune registers a reported checkpoint through a second call to the trial's actor, after the
    result itself; a node lost between the two leaves ``trial.checkpoint`` at the one before,
    though the report's checkpoint is in storage already (``tune.report`` uploads it before it
    returns the result): its folder is named in the last result.
    """
    name = (trial.last_result or {}).get("checkpoint_dir_name")
    if not name:  # the last report carried no checkpoint: Tune's record (an earlier one, or none) is the latest
        return trial.checkpoint
    return Checkpoint(path=f"{trial.storage.trial_fs_path}/{name}", filesystem=trial.storage.storage_filesystem)


class AnchorStopper(Stopper):
    """Ends every explore trial once the anchor seed has failed (``CampaignPipeline.anchor_failed``): none of
    them could be scored. Holds the pipeline's name only, so Tune can save it with the experiment."""

    def __init__(self, pipeline_name: str, namespace: str):
        self.pipeline_name, self.namespace = pipeline_name, namespace

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        try:
            pipeline = ray.get_actor(self.pipeline_name, namespace=self.namespace)
            return ray.get(pipeline.anchor_error_text.remote(), timeout=30) is not None
        except Exception:  # noqa: BLE001 - no pipeline (explore is over) or a slow one: nothing to stop for
            return False


class ExploreStage:
    """Runs (or resumes) explore to the end of the candidate budget."""

    def __init__(self, ctx: StageContext, scale: ScaleConfig, verify_scale: ScaleConfig, data: dict[str, TrialData],
                 callbacks: list[Any] | None = None):
        self.ctx, self.scale, self.verify_scale, self.data = ctx, scale, verify_scale, data
        self.callbacks = list(callbacks or [])
        self.pipeline = None
        self.anchor_error: str | None = None  # why the anchor seed did not train (explore stops)

    def _downstream(self) -> bool:
        return scoring.scores_downstream(self.scale, "explore")

    def _start_anchor(self) -> threading.Thread | None:
        """The anchor seed at explore scale on each of ``explore.anchor_seeds``: each run from the
        baseline cache, else trained once (and cached); their mean anchors the fitness, their
        spread is the noise the fitness reads deltas against."""
        ctx, seed = self.ctx, self.ctx.anchor_seed
        if ctx.seed_result(seed, "explore") is not None:
            return None
        cache = ctx.baselines
        scales = [seeded_scale(self.scale, s) for s in ctx.explore.anchor_seeds]
        downstream = self._downstream()  # as the explore trials measure
        cached = [cache.get(seed, scale, downstream) for scale in scales]
        options = ctx.run.task_options()
        refs = {i: _train_seed.options(**options, name=f"baseline:{seed}:s{scale.train.seed}").remote(
                    seed, scale, self.data["explore"], downstream)
                for i, (scale, hit) in enumerate(zip(scales, cached)) if hit is None}
        if len(refs) < len(scales):
            ctx.console.print(f"explore: anchor seed {seed}: {len(scales) - len(refs)} of {len(scales)} run(s) from the "
                              f"baseline cache ({cache.root})", markup=False, highlight=False)

        def finish() -> None:
            summaries = []
            try:
                for i, (scale, hit) in enumerate(zip(scales, cached)):
                    if hit is not None:
                        summaries.append({**hit, "train_seconds": 0.0})  # trained by an earlier campaign
                        continue
                    summary = ray.get(refs[i])
                    if summary.get("stop_reason") in MEASURED_STOPS:
                        cache.put(seed, scale, downstream, summary)
                    summaries.append(summary)
                baseline = scoring.anchor_of(seed, ctx.store_seed_result(seed, "explore", summaries))
            except Exception as err:  # noqa: BLE001 - said, and explore stops: unscored trials would wait for it
                if isinstance(err, ray.exceptions.RayTaskError) and err.cause is not None:
                    err = err.cause  # the task's own error, not Ray's wrapping of it with the remote traceback
                self.anchor_error = (f"training seed {scales[len(summaries)].train.seed}: " if len(summaries) < len(scales)
                                     else "") + f"{type(err).__name__}: {str(err)[:500]}"
                log.exception("explore: the anchor seed %s did not train", seed)
                ctx.console.print(f"explore: the anchor seed {seed} did not train ({self.anchor_error}); every explore "
                                  "fitness is relative to it, so explore stops", markup=False, highlight=False)
                ctx.record.update(explore_anchor_failed=self.anchor_error)  # the next run starts a new experiment
                try:
                    ray.get(self.pipeline.anchor_failed.remote(self.anchor_error))
                except ray.exceptions.RayError:  # explore already ended (Ctrl-C): its driver reads anchor_error
                    pass
                return
            self.pipeline.set_baseline.remote(baseline)

        if not refs:
            finish()
            return None
        thread = threading.Thread(target=finish, daemon=True)
        thread.start()
        return thread

    def _pipeline_settings(self, slots: int) -> PipelineSettings:
        ctx, s = self.ctx, self.ctx.settings
        return PipelineSettings(
            campaign=ctx.name, seed=s.seed, memory_uri=ctx.memory_uri, max_candidates=s.max_candidates,
            lookahead=s.lookahead or slots + 1, researchers=s.researchers, engineers=s.engineers,
            max_proposals=s.max_proposals or 5 * max(1, s.max_candidates),
            max_device_seconds=None if s.max_device_hours is None else s.max_device_hours * 3600,
            max_usd=s.max_usd, explore_lr=self.scale.train.lr, explore_seed=self.scale.train.seed,
            bench_key=ctx.bench_key, bench_chance=scoring.benchmark_chance(self.scale),
            crash_retries=ctx.explore.max_failures if ctx.explore.max_failures >= 0 else 10**6,
            check_options=ctx.check_options, hidden_dirs=ctx.hidden_from_candidates, agents=ctx.agents, qa=self._qa())

    @property
    def pipeline_name(self) -> str:
        """The campaign's pipeline actor, by name: the searcher and the trials find it with this."""
        return f"asiarch-pipeline-{self.ctx.name}"

    def _qa(self) -> dict[str, Any] | None:
        """Training QA's settings as every explore trial receives them (with where to read the seed's curve)."""
        e = self.ctx.explore
        if e.qa_slow_factor is None and e.qa_leak_fraction is None:
            return None
        return {"pipeline": self.pipeline_name, "namespace": NAMESPACE,
                "slow_factor": e.qa_slow_factor, "leak_fraction": e.qa_leak_fraction}

    def _callbacks(self) -> list[Any]:
        return [*self.callbacks, ResumeCrashedTrials(self.pipeline_name, NAMESPACE)]

    def _tuner(self, slots: int, after_failed_anchor: str | None = None):
        from ray import tune

        from asiarch.campaign.searcher import CandidateSearcher
        from asiarch.campaign.trainable import run_trial

        ctx, e = self.ctx, self.ctx.explore
        scheduler = self.scheduler()
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, scales={"explore": self.scale, "verify": self.verify_scale}, data=self.data,
                                 memory=ctx.writer, downstream=self._downstream(), sandbox=ctx.sandbox,
                                 rung_tokens=[int(rung) for rung in scheduler.rungs],  # verified outside
                                 budget=ctx.parameter_budget),
            ctx.run.tune_resources())
        path, storage = ctx.tune_storage("explore")
        fs = {k: v for k, v in storage.items() if k == "storage_filesystem"}
        if after_failed_anchor is not None:
            # Tune's stop of every trial finished that experiment's searcher for good; the candidates it stopped are
            # back in the queue (``CampaignPipeline.send_back_unscored``, and any still marked training go now), so
            # a new experiment beside the old trials continues
            orphans = ray.get(self.pipeline.requeue_orphans.remote([]))
            ctx.console.print(f"explore: a new Tune experiment (the last one stopped when the anchor seed failed: "
                              f"{after_failed_anchor}); {len(orphans)} candidate(s) still marked training go back to "
                              "the queue", markup=False, highlight=False)
        elif tune.Tuner.can_restore(path, **fs):
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True, **fs)
            in_tune = [r.config.get("design") for r in tuner.get_results() if r.config]
            orphans = ray.get(self.pipeline.requeue_orphans.remote(in_tune))
            ctx.console.print(f"explore: restored Tune experiment with {len(in_tune)} trial(s); "
                              f"{len(orphans)} candidate(s) Tune never saw go back to the queue")
            return tuner
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=CandidateSearcher(self.pipeline_name, NAMESPACE, metric=e.metric),
                scheduler=scheduler,
                num_samples=self.max_trials() or -1, max_concurrent_trials=slots, time_budget_s=ctx.wall_left(),
                reuse_actors=True,  # no actor start-up between candidates
                trial_name_creator=trial_name, trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name="explore", **storage, verbose=0, callbacks=self._callbacks(),
                failure_config=tune.FailureConfig(max_failures=e.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                stop=AnchorStopper(self.pipeline_name, NAMESPACE)),
        )

    def max_trials(self) -> int | None:
        """The most explore trials the candidate budget can take: each candidate trains once, again after
        each training repair (``agents.max_repairs``) and after each crash (``explore.max_failures``).
        Tune's header shows it as "Number of trials" (None: unbounded retries)."""
        retries = self.ctx.explore.max_failures
        if retries < 0:
            return None
        return self.ctx.settings.max_candidates * (1 + self.ctx.agents.max_repairs + retries)

    def scheduler(self):
        """Explore's ASHA: rungs in training tokens, each stop put to the pipeline's referee."""
        from asiarch.campaign.schedulers import PipelineRungReferee, explore_scheduler

        e, per_step = self.ctx.explore, tokens_per_step(self.scale)
        return explore_scheduler(self.scale.train.steps * per_step, e.grace_fraction, e.reduction_factor,
                                 metric=e.metric, first_rung_tokens=self.first_rung() * per_step,
                                 referee=PipelineRungReferee(self.pipeline_name, NAMESPACE, e.rung_significance))

    def _rung_rule(self) -> str:
        alpha = self.ctx.explore.rung_significance
        if alpha is None:
            return " (every stop as ASHA makes it)"
        runs = len(self.ctx.explore.anchor_seeds)
        return f" (a stop within the anchor's noise, p >= {alpha:g} by Student's t over its {runs} runs, trains on)"

    def first_rung(self) -> int:
        """The explore step of ASHA's first rung (after the warm-up)."""
        t = self.scale.train
        return first_rung_step(t.steps, self.ctx.explore.grace_fraction, t.warmup_steps, t.report_every)

    def _stop_if_no_anchor(self) -> None:
        if self.anchor_error is not None:
            ray.get(self.pipeline.stop.remote())
            ray.get(self.pipeline.send_back_unscored.remote())
            raise StageInterrupted(f"explore stopped: the anchor seed {self.ctx.anchor_seed} did not train "
                                   f"({self.anchor_error}); the candidates it stopped train again once it has")

    def run(self) -> None:
        ctx = self.ctx
        slots = ctx.slots()
        self.pipeline = CampaignPipeline.options(name=self.pipeline_name, namespace=NAMESPACE, **on_this_node()).remote(
            self._pipeline_settings(slots), _fork_backend(ctx.backend, 0), ctx.writer, self.scale, ctx.fitness_fn,
            ctx.seed_result(ctx.anchor_seed, "explore"))
        previous = ctx.record.get("explore_anchor_failed")  # the last run's anchor failed: a new experiment
        try:
            waiter = self._start_anchor()
            tuner = self._tuner(slots, after_failed_anchor=previous)
            ctx.console.print(f"explore: {ctx.settings.max_candidates} candidate(s) at {self.scale.name}, "
                              f"{self.scale.train.steps} steps"
                              + (f" (the head of a {self.scale.train.schedule_steps}-step schedule)"
                                 if self.scale.train.schedule_steps else "")
                              + f", {slots} trial slot(s), ASHA's first rung at step "
                              f"{self.first_rung()} (after the {self.scale.train.warmup_steps}-step warm-up), then x"
                              f"{ctx.explore.reduction_factor}{self._rung_rule()}; at most {self.max_trials() or 'unbounded'} trials "
                              f"(Tune's count: retrains after repairs and crashes included)")
            fit_through_node_losses(tuner, lambda: self._tuner(slots), ctx, "explore")
            # let the last judgements and analyses land before promotion reads the memory
            while ray.get(self.pipeline.status.remote())["scoring"]:
                time.sleep(0.5)
            self._stop_if_no_anchor()
            left = ctx.wall_left()
            if not ray.get(self.pipeline.explore_over.remote()) and (left is None or left > 1.0):
                ray.get(self.pipeline.stop.remote())  # Tune stopped early (Ctrl-C, a stop request), not the budget
                raise StageInterrupted("explore stopped before its candidate budget was spent")
            ray.get(self.pipeline.stop.remote())
            if waiter is not None:
                waiter.join()
            self._stop_if_no_anchor()
            if previous is not None:  # the new experiment ran to its end, and this time the anchor trained
                ctx.record.update(explore_anchor_failed=None)
            training = ctx.memory().list_candidates(campaign=ctx.name, status=Status.TRAINING.value)
            if training:  # Tune stopped under running trials: they continue on the next run
                raise StageInterrupted(f"explore stopped with {len(training)} candidate(s) still training")
        finally:  # its agents go with it; a resume in this Ray session creates them again under the same name
            ray.kill(self.pipeline)
