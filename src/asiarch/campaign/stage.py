"""What the two funnel stages share: the campaign's context, seed results, trial naming.

``explore.py`` and ``verify.py`` have the same shape: set up trials, take their results,
score them with ``scoring``, hand them to the Judge and the Analyst, and write through
the memory's lifecycle. ``StageContext`` is everything they need from the campaign.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import ray

from asiarch.arch import seed_source
from asiarch.baselines import BaselineCache
from asiarch.campaign import scoring
from asiarch.campaign.fitness import FitnessFn
from asiarch.campaign.settings import CampaignSettings, ExploreSettings, RunSettings, VerifySettings
from asiarch.campaign.state import CampaignPaths, CampaignRecord
from asiarch.config import ScaleConfig, build_dataclass
from asiarch.memory import Candidate, Kind, Memory, StageMetrics, Status, seed_row_id
from asiarch.storage import tune_storage

NAMESPACE = "asiarch"


class StageInterrupted(Exception):
    """Tune stopped before the stage's trials finished (Ctrl-C, a stop request): nothing partial is scored."""


@dataclass
class StageContext:
    """The campaign as its stages see it."""

    name: str
    paths: CampaignPaths
    record: CampaignRecord
    writer: Any  # the MemoryActor: every write goes through it
    memory_uri: Any  # a Location: a local path or an asiarch.storage.ObjectPath
    settings: CampaignSettings
    explore: ExploreSettings
    verify: VerifySettings
    run: RunSettings
    agents: Any  # AgentsConfig
    seeds: list[str]  # every seed the campaign trains; settings.seed anchors the fitness
    scale: ScaleConfig  # the campaign's scale (its stages settings say which benchmark is used)
    fitness_fn: FitnessFn
    backend: Any  # the LLM backend the agents use
    check_options: dict[str, Any]
    sandbox: Any  # asiarch.sandbox.SandboxOptions: the limits candidates train under
    console: Any
    embedder: Any
    wall_left: Callable[[], float | None]

    @property
    def anchor_seed(self) -> str:
        return self.settings.seed

    @property
    def parameter_budget(self) -> Any:
        """The check's parameter budget, which candidate trials hold every checkpoint to (a ``ParameterBudget``)."""
        from asiarch.checks import CheckOptions

        return build_dataclass(CheckOptions, self.check_options, "checks").parameter_budget()

    @property
    def bench_key(self) -> str:
        return scoring.benchmark_key(self.scale)

    def memory(self) -> Memory:
        return Memory(self.memory_uri, read_only=True, embedder=self.embedder)

    @functools.cached_property
    def baselines(self) -> BaselineCache:
        """Seed runs shared by every campaign under the same output directory (one, so its secret is read once)."""
        return BaselineCache(self.paths.baselines)

    @property
    def hidden_from_candidates(self) -> list[str]:
        """The folders every process running candidate code hides, its checks' included."""
        from asiarch.train.sandboxed import hidden_from_candidates

        return hidden_from_candidates(self.scale.corpus, self.baselines.secret_dirs(), self.sandbox)

    def tune_storage(self, experiment: str) -> tuple[str, dict[str, Any]]:
        """Where the stage's Tune experiment ``experiment`` is (the path ``Tuner.can_restore``/``restore`` take)
        and the ``RunConfig`` storage arguments that put it there (a local directory or S3)."""
        storage = tune_storage(self.paths.tune)
        return tune_storage(self.paths.tune / experiment)["storage_path"], storage

    def slots(self) -> int:
        """Trials that can run at once: ``run.max_parallel_trials`` or what the cluster's resources allow."""
        if self.run.max_parallel_trials:
            return int(self.run.max_parallel_trials)
        resources = ray.cluster_resources()
        by_cpu = int(resources.get("CPU", 1) // max(self.run.cpus_per_trial, 1e-9)) if self.run.cpus_per_trial else 64
        by_gpu = int(resources.get("GPU", 0) // self.run.gpus_per_trial) if self.run.gpus_per_trial else by_cpu
        by_custom = [int(resources.get(k, 0) // v) for k, v in (self.run.trial_resources or {}).items()]
        return max(1, min([by_cpu, by_gpu, *by_custom]))

    def seed_result(self, seed: str, stage: str) -> dict[str, Any] | None:
        """A seed's stored result at ``stage`` as a fitness anchor (None before it is trained)."""
        stored = self.memory().get_candidate(seed_row_id(self.name, seed))
        if stored is None or getattr(stored, stage).eval_loss is None:
            return None
        return scoring.anchor_of(seed, getattr(stored, stage))

    def store_seed_result(self, seed: str, stage: str, summaries: Sequence[Mapping[str, Any]]) -> StageMetrics:
        """A seed's stage result (mean over training seeds), written as its memory row and returned."""
        metrics = scoring.stage_metrics(summaries, self.bench_key)
        anchor = scoring.anchor_of(seed, metrics)
        if stage == "explore":  # the seed scored against itself: where a candidate equal to it would land
            own = scoring.score(self.fitness_fn, seed, metrics, anchor, None, stage)
            metrics.fitness, metrics.fitness_parts = own.value, own.parts
        cid = seed_row_id(self.name, seed)
        row = self.memory().get_candidate(cid) or Candidate(
            id=cid, campaign=self.name, name=seed, code=seed_source(seed), kind=Kind.SEED.value,
            motivation=f"seed architecture {seed} (baseline)", status=Status.FINISHED.value,
            status_reason="seed baseline")
        setattr(row, stage, metrics)
        if stage == "verify":
            row.stage = "verify"
        row.device_seconds += sum(float(s.get("train_seconds") or s.get("time_total_s") or 0.0) for s in summaries)
        ray.get(self.writer.upsert_candidates.remote(row))
        self.record.set_in("baselines", stage, seed, {k: anchor[k] for k in ("eval_loss", "benchmark", "mqar_accuracy")})
        return metrics


def lost_with_its_node(error: BaseException | None) -> bool:
    """Whether a trial failed because the node it ran on died (not through anything it did).

    Ray reports this as an ``ActorDiedError`` whose cause is the node's death; the cause is
    only exposed in its message (which Tune may pass on wrapped), so that is what is read.
    """
    if error is None:
        return False
    text = str(error).lower()
    if "actor died" in text and ("node has died" in text or "node was terminated" in text):
        return True
    return "actor is temporarily unavailable" in text  # its node stopped answering before Ray marked it dead


def fit_through_node_losses(tuner: Any, restore: Callable[[], Any], ctx: StageContext, stage: str) -> Any:
    """``tuner.fit()``, continued from storage each time trials were lost with a dead node.

    Tune's own retries (``FailureConfig``) fire at once, often before the cluster has marked
    the node dead, so a lost worker spends them in a second. A trial lost with its node did
    nothing wrong: the stage restores its Tune experiment from storage (``restore()``) and
    fits again; those trials continue from their last checkpoints once the cluster has the
    resources (a node back, or the autoscaler's). At most ``run.max_node_losses`` times.
    """
    for attempt in range(ctx.run.max_node_losses + 1):
        grid = tuner.fit()
        lost = [r for r in grid if lost_with_its_node(r.error)]
        if not lost or attempt == ctx.run.max_node_losses:
            return grid
        ctx.console.print(f"{stage}: {len(lost)} trial(s) lost with their node; continuing the experiment from "
                          f"storage, from their last checkpoints ({attempt + 1} of at most "
                          f"{ctx.run.max_node_losses} node losses)", markup=False, highlight=False)
        tuner = restore()
    return grid


def trial_name(trial) -> str:
    """Short trial names (the config holds source code): stage, design name, training seed, trial id."""
    config = trial.config.get("run", trial.config)
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(config.get("name", "trial")))[:40]
    return f"{trial.config.get('stage', config.get('stage', 'trial'))}_{name}_s{config.get('training_seed', 0)}_{trial.trial_id}"


def tokens_per_step(scale: ScaleConfig) -> int:
    """Tokens one optimiser step trains on: the LM batch plus the MQAR batch when it is mixed into every step."""
    t = scale.train
    return t.batch_size * t.seq_len + (scale.mqar.seq_len * t.mqar_batch_size if t.mqar_every == 1 else 0)
