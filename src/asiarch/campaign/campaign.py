"""``Campaign``: the front door. Seeds, agents, explore with ASHA, verify with PBT, results.

A campaign lives in ``runs/<name>/``: the memory (LanceDB), Tune's experiments and
``campaign.json``. ``run()`` continues whatever an earlier driver left unfinished: the
memory says which candidates were proposed, validated, trained and scored; Tune's
experiment state brings back running trials with their checkpoints.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import ray
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from asiarch.agents import AgentsConfig
from asiarch.arch import SEEDS, seed_source
from asiarch.campaign.fitness import Fitness, FitnessFn, coerce_fitness
from asiarch.campaign.pipeline import CampaignPipeline, PipelineSettings, baseline_id, counts_toward_budget, is_baseline
from asiarch.campaign.settings import CampaignSettings, ExploreSettings, RunSettings, VerifySettings, section
from asiarch.campaign.state import CampaignPaths, find_campaign, now_iso, read_state, set_latest, write_json_atomic
from asiarch.config import ScaleConfig, build_dataclass, compose, load_scale, stage_scale
from asiarch.memory import Candidate, Memory, MemoryActor, StageMetrics
from asiarch.train.protocol import TrialData, prepare_data, train_mixer

NAMESPACE = "asiarch"
PROGRESS_EVERY_S = 15.0


def _fingerprint(cfg: DictConfig) -> str:
    """What makes two invocations "the same campaign" (its name and resume policy aside)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.get("campaign", {}).pop("name", None)
    plain.get("campaign", {}).pop("resume", None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(plain)).encode()).hexdigest()[:16]


def _fork_backend(backend: Any, index: int) -> Any:
    """Each agent gets its own copy; a seeded offline proposer gets its own random stream."""
    forked = copy.deepcopy(backend)
    if isinstance(getattr(forked, "rng", None), random.Random):
        forked.rng = random.Random(f"{forked.rng.random()}-{index}")
    return forked


@ray.remote(max_retries=2)
def _train_baseline(seed: str, scale: ScaleConfig, data: TrialData, downstream: bool) -> dict[str, Any]:
    """One seed trained outside Tune (the explore anchor runs while candidates are proposed)."""
    return train_mixer(SEEDS[seed], scale, data, downstream=downstream)


class Campaign:
    """An autonomous architecture-research campaign.

    ``Campaign(overrides=["campaign.max_candidates=20"])`` composes the embedded ``conf/``;
    keyword arguments replace parts of it: ``llm`` (an ``LLMBackend``), ``fitness`` (a
    callable like ``asi_arch_fitness``), ``seed``, ``scale``, ``memory_uri``, ``name``,
    ``output_dir``, ``max_candidates``.
    """

    def __init__(self, config: DictConfig | None = None, *, overrides: Sequence[str] = (), llm: Any = None,
                 fitness: FitnessFn | None = None, seed: str | None = None, scale: str | None = None,
                 memory_uri: str | None = None, name: str | None = None, output_dir: str | Path | None = None,
                 max_candidates: int | None = None, embedder: Any = None, console: Console | None = None):
        extra = list(overrides)
        for key, value in (("campaign.seed", seed), ("campaign.memory_uri", memory_uri), ("campaign.name", name),
                           ("campaign.max_candidates", max_candidates), ("run.output_dir", output_dir)):
            if value is not None:
                extra.append(f"{key}={value}")
        if scale is not None:
            extra.append(f"scale={scale}")
        if config is None:
            config = compose(extra)
        elif extra:
            config = OmegaConf.merge(config, OmegaConf.from_dotlist([e for e in extra if not e.startswith("scale=")]))
        self.cfg = config
        self.settings: CampaignSettings = section(config, "campaign", CampaignSettings)
        self.explore_settings: ExploreSettings = section(config, "explore", ExploreSettings)
        self.verify_settings: VerifySettings = section(config, "verify", VerifySettings)
        self.run_settings: RunSettings = section(config, "run", RunSettings)
        self.agents_config: AgentsConfig = section(config, "agents", AgentsConfig)
        self.scale = ScaleConfig.from_dict(config.scale)
        seeds = list(config.seeds)
        unknown = [s for s in [self.settings.seed, *seeds] if s not in SEEDS]
        if unknown:
            raise ValueError(f"unknown seed(s) {unknown}; known seeds: {sorted(SEEDS)}")
        self.seeds = seeds if self.settings.seed in seeds else [self.settings.seed, *seeds]
        self.check_options = dict(OmegaConf.to_container(config.get("checks") or {}, resolve=True))
        from asiarch.checks import CheckOptions

        build_dataclass(CheckOptions, self.check_options, "checks")  # an unknown key fails here, not in a worker
        self._llm, self._fitness, self._embedder = llm, fitness, embedder
        self.console = console or _console()
        self.output_dir = Path(self.run_settings.output_dir)
        self.name = self.settings.name
        self.paths: CampaignPaths | None = None
        self.state: dict[str, Any] = {}
        self._verify_plan: tuple[int, int] | None = None  # (trials, steps per trial) once verify starts

    # -- public API ------------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str | None = None, output_dir: str | Path = "runs", **kwargs: Any) -> "Campaign":
        """The campaign ``name`` (or the latest) under ``output_dir``, with the config it was started with."""
        root = find_campaign(output_dir, name)
        cfg = OmegaConf.load(root / "config.yaml")
        campaign = cls(cfg, **kwargs)
        campaign.name, campaign.output_dir = root.name, root.parent
        campaign.paths = CampaignPaths(root.resolve())
        campaign.state = read_state(campaign.paths.state)
        return campaign

    @property
    def memory_uri(self) -> str:
        assert self.paths is not None
        return self.settings.memory_uri or str(self.paths.memory.resolve())

    def memory(self) -> Memory:
        return Memory(self.memory_uri, read_only=True, embedder=self._embedder)

    def top(self, k: int = 10, stage: str | None = None) -> list[Candidate]:
        """The ``k`` fittest candidates by explore fitness (seed baselines left out)."""
        self._locate()
        memory = self.memory()
        ranked = memory.top_k(k + len(self.seeds), campaign=self.name, stage=stage)
        return [c for c in ranked if not is_baseline(c)][:k]

    def status(self) -> dict[str, Any]:
        """Counts per status, budget used, best fitness, breakthroughs and the phase."""
        self._locate()
        memory = self.memory()
        candidates = memory.list_candidates(campaign=self.name)
        mine = [c for c in candidates if not is_baseline(c)]
        counts = {s: 0 for s in ("proposed", "validated", "rejected", "training", "stopped", "finished", "failed",
                                 "promoted")}
        for c in mine:
            counts[c.status] = counts.get(c.status, 0) + 1
        scored = [c.fitness for c in mine if c.fitness is not None]
        state = read_state(self.paths.state) if self.paths.state.exists() else {}
        return {
            "name": self.name, "status": state.get("status"), "phase": state.get("phase"),
            "counts": counts, "verified": sum(1 for c in mine if c.stage == "verify" and c.verify.eval_loss is not None),
            "breakthroughs": sum(1 for c in mine if c.fitness_parts.get("breakthrough")),
            "best_fitness": max(scored) if scored else None,
            "trained": sum(1 for c in mine if counts_toward_budget(c)),
            "max_candidates": self.settings.max_candidates,
            "device_hours": sum(c.device_seconds for c in candidates) / 3600,
            "usd": sum(c.llm_usd for c in candidates),
        }

    def resume(self) -> dict[str, Any]:
        """Continue this campaign (or the latest under ``output_dir``) where it stopped."""
        if self.paths is None:
            self.paths = CampaignPaths(find_campaign(self.output_dir, self.name).resolve())
            self.name = self.paths.root.name
        return self.run()

    # -- the run -----------------------------------------------------------------------------------
    def _locate(self) -> None:
        if self.paths is None:
            self.paths = CampaignPaths(find_campaign(self.output_dir, self.name).resolve())
            self.name = self.paths.root.name

    def _choose(self) -> None:
        """Which campaign directory this run writes: named, resumed, or new."""
        if self.paths is not None:
            return
        fingerprint = _fingerprint(self.cfg)
        if self.name is None and self.settings.resume == "auto":
            try:
                root = find_campaign(self.output_dir)
                state = read_state(root / "campaign.json")
                if state.get("status") != "finished" and state.get("fingerprint") == fingerprint:
                    self.name = root.name
                    self.console.print(f"[bold]resuming[/] campaign {self.name} (unfinished, same configuration; "
                                       "campaign.resume=never starts a new one)")
            except (FileNotFoundError, ValueError):
                pass
        if self.name is None:
            self.name = "campaign-" + time.strftime("%Y%m%d-%H%M%S")
        self.paths = CampaignPaths((self.output_dir / self.name).resolve())

    def _save_state(self, **changes: Any) -> None:
        self.state.update(changes, updated_at=now_iso())
        write_json_atomic(self.paths.state, self.state)

    def run(self) -> dict[str, Any]:
        """Run (or continue) the campaign to the end of its budget; return its final status."""
        self._backend(), self.fitness_fn  # a missing API key or a bad fitness target fails before anything is written
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # error reports carry no loss
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we want every snapshot
        # Ray and Tune start helper processes from the driver (fork, then exec at once): LanceDB's
        # fork warning is about code running in the forked child, which never happens here
        warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
        self._choose()
        paths = self.paths
        paths.root.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint(self.cfg)
        if paths.state.exists():
            self.state = read_state(paths.state)
            if self.state.get("fingerprint") not in (None, fingerprint):
                raise ValueError(f"campaign {self.name} was started with another configuration; "
                                 f"compare {paths.root / 'config.yaml'} or choose a new campaign.name")
        else:
            verify_base = self.scale.stages.verify_scale or self.scale.name
            self.state = {
                "name": self.name, "status": "running", "phase": "explore", "fingerprint": fingerprint,
                "scale": self.scale.name, "verify_scale": verify_base, "seed": self.settings.seed,
                "started_at": now_iso(), "wall_seconds_before": 0.0,
                "budget": {"max_candidates": self.settings.max_candidates, "device_hours": self.settings.max_device_hours,
                           "usd": self.settings.max_usd, "wall_seconds": None if self.settings.max_wall_hours is None
                           else self.settings.max_wall_hours * 3600},
                "used": {}, "counts": {}, "best_fitness": None, "baselines": {"explore": {}, "verify": {}},
                "discovery": [],
            }
            (paths.root / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg))
        set_latest(self.output_dir, self.name)
        self._save_state(status="running")
        started = time.monotonic()
        started_ray = not ray.is_initialized()
        if started_ray:
            if os.environ.get("RAY_ADDRESS"):  # `ray job submit` or a user pointing at a cluster: join it
                ray.init(namespace=NAMESPACE, log_to_driver=False)
            else:
                ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, configure_logging=False)
        stop_progress = threading.Event()
        try:
            self.writer = MemoryActor.options(name=f"asiarch-memory-{self.name}", namespace=NAMESPACE).remote(
                self.memory_uri, embedder=self._embedder)
            ray.get(self.writer.uri.remote())  # the writer has created the tables
            if self.memory().count_insights() == 0:
                with self.console.status("loading the cognition base into the memory"):
                    ray.get(self.writer.load_cognition_base.remote())
            explore_scale = stage_scale(self.scale, self.scale.stages.explore_steps)
            verify_base = load_scale(self.scale.stages.verify_scale) if self.scale.stages.verify_scale else self.scale
            verify_scale = stage_scale(verify_base, self.scale.stages.verify_steps)
            with self.console.status("preparing data: tokenizer, token cache, MQAR"):
                data = {"explore": prepare_data(explore_scale)}
                data["verify"] = data["explore"] if verify_base is self.scale else prepare_data(verify_scale)
            self._wall_started = started
            progress = threading.Thread(target=self._progress_loop, args=(stop_progress,), daemon=True)
            progress.start()
            if self.state["phase"] == "explore":
                self._explore(explore_scale, verify_scale, data)
                self._save_state(phase="verify")
            if self.state["phase"] == "verify":
                self._verify(verify_scale, data)
                self._save_state(phase="done")
            stop_progress.set()
            summary = self.status()
            self._save_state(status="finished", counts=summary["counts"], best_fitness=summary["best_fitness"],
                             used=self._used(started))
            self._print_results()
            return self.status()
        except KeyboardInterrupt:
            self._save_state(status="interrupted", used=self._used(started))
            raise
        except BaseException:
            self._save_state(status="failed", used=self._used(started))
            raise
        finally:
            stop_progress.set()
            if started_ray:
                ray.shutdown()

    def _used(self, started: float) -> dict[str, Any]:
        summary = self.status()
        wall = self.state.get("wall_seconds_before", 0.0) + time.monotonic() - started
        self.state["wall_seconds_before"] = wall
        return {"candidates": summary["trained"], "device_seconds": summary["device_hours"] * 3600,
                "usd": summary["usd"], "wall_seconds": wall}

    def _wall_left(self) -> float | None:
        if self.settings.max_wall_hours is None:
            return None
        spent = self.state.get("wall_seconds_before", 0.0) + time.monotonic() - self._wall_started
        return max(1.0, self.settings.max_wall_hours * 3600 - spent)

    def _resources(self) -> dict[str, float]:
        return {"cpu": self.run_settings.cpus_per_trial, "gpu": self.run_settings.gpus_per_trial}

    def _slots(self) -> int:
        if self.run_settings.max_parallel_trials:
            return int(self.run_settings.max_parallel_trials)
        resources = ray.cluster_resources()
        by_cpu = int(resources.get("CPU", 1) // max(self.run_settings.cpus_per_trial, 1e-9)) if self.run_settings.cpus_per_trial else 64
        by_gpu = int(resources.get("GPU", 0) // self.run_settings.gpus_per_trial) if self.run_settings.gpus_per_trial else by_cpu
        return max(1, min(by_cpu, by_gpu))

    # -- explore -------------------------------------------------------------------------------------
    def _explore_baseline(self, scale: ScaleConfig, data: TrialData, pipeline) -> threading.Thread | None:
        """Train the campaign's seed at explore scale (once) and hand it to the pipeline."""
        seed = self.settings.seed
        stored = self.memory().get_candidate(baseline_id(self.name, seed))
        if stored is not None and stored.explore.eval_loss is not None:
            return None
        options = {"num_cpus": self.run_settings.cpus_per_trial, "num_gpus": self.run_settings.gpus_per_trial}
        ref = _train_baseline.options(**options, name=f"baseline:{seed}").remote(seed, scale, data, False)

        def wait() -> None:
            summary = ray.get(ref)
            baseline = self._store_baseline(seed, "explore", [summary])
            pipeline.set_baseline.remote(baseline)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        return thread

    def _store_baseline(self, seed: str, stage: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
        """A seed's result (mean over training seeds) as a memory row and as the fitness anchor."""
        benchmark_key = "mqar_accuracy" if self.scale.stages.benchmark == "mqar" else "downstream_mean"
        eval_loss = _mean([s.get("eval_loss") for s in summaries])
        mqar = _mean([s.get("mqar_accuracy") for s in summaries])
        benchmark = _mean([s.get(benchmark_key) for s in summaries])
        curve = [h["eval_loss"] for h in (summaries[0].get("history") or [])]
        metrics = StageMetrics(loss_curve=curve, eval_loss=eval_loss, mqar_accuracy=mqar, benchmark=benchmark,
                               benchmarks={"runs": [{k: s.get(k) for k in ("eval_loss", "mqar_accuracy", benchmark_key)}
                                                    for s in summaries]})
        cid = baseline_id(self.name, seed)
        existing = self.memory().get_candidate(cid)
        row = existing or Candidate(id=cid, campaign=self.name, name=seed, code=seed_source(seed),
                                    motivation=f"seed architecture {seed} (baseline)", status="finished",
                                    status_reason="seed baseline")
        setattr(row, stage, metrics)
        row.stage = "verify" if stage == "verify" else row.stage
        row.device_seconds += sum(float(s.get("train_seconds") or s.get("time_total_s") or 0.0) for s in summaries)
        row.fitness_parts = {**row.fitness_parts, "baseline": True}
        anchor = {"name": seed, "eval_loss": eval_loss, "benchmark": benchmark, "mqar_accuracy": mqar}
        if stage == "explore":
            own = coerce_fitness(self.fitness_fn(anchor, anchor, None))
            row.fitness, row.fitness_parts = own.value, {**own.parts, "baseline": True, "stage": "explore"}
        ray.get(self.writer.upsert_candidates.remote(row))
        self.state["baselines"].setdefault(stage, {})[seed] = {k: anchor[k] for k in ("eval_loss", "benchmark", "mqar_accuracy")}
        self._save_state()
        return anchor

    @property
    def fitness_fn(self) -> FitnessFn:
        if self._fitness is None:
            from hydra.utils import instantiate

            self._fitness = instantiate(self.cfg.fitness)
        return self._fitness

    def _backend(self) -> Any:
        if self._llm is None:
            from asiarch.llm.select import backend_from_config

            self._llm = backend_from_config(self.cfg.get("llm"))
        return self._llm

    def _explore(self, scale: ScaleConfig, verify_scale: ScaleConfig, data: dict[str, TrialData]) -> None:
        from ray import tune

        from asiarch.campaign.schedulers import explore_scheduler
        from asiarch.campaign.searcher import CandidateSearcher
        from asiarch.campaign.trainable import run_trial

        s, slots = self.settings, self._slots()
        stored = self.memory().get_candidate(baseline_id(self.name, s.seed))
        baseline = None
        if stored is not None and stored.explore.eval_loss is not None:
            baseline = {"name": s.seed, "eval_loss": stored.explore.eval_loss, "benchmark": stored.explore.benchmark,
                        "mqar_accuracy": stored.explore.mqar_accuracy}
        settings = PipelineSettings(
            campaign=self.name, seed=s.seed, memory_uri=self.memory_uri, max_candidates=s.max_candidates,
            lookahead=s.lookahead or slots + 1, researchers=s.researchers, engineers=s.engineers,
            max_proposals=s.max_proposals or 5 * max(1, s.max_candidates),
            max_device_seconds=None if s.max_device_hours is None else s.max_device_hours * 3600,
            max_usd=s.max_usd, explore_lr=scale.train.lr, explore_seed=scale.train.seed,
            crash_retries=self.explore_settings.max_failures if self.explore_settings.max_failures >= 0 else 10**6,
            check_options=self.check_options, agents=self.agents_config)
        backend = self._backend()
        self.pipeline = CampaignPipeline.options(name=f"asiarch-pipeline-{self.name}", namespace=NAMESPACE).remote(
            settings, _fork_backend(backend, 0), self.writer, scale, self.fitness_fn, baseline)
        waiter = self._explore_baseline(scale, data["explore"], self.pipeline)

        trainable = tune.with_resources(
            tune.with_parameters(run_trial, scales={"explore": scale, "verify": verify_scale}, data=data,
                                 memory_uri=self.memory_uri, downstream=False),
            self._resources())
        path = self.paths.tune / "explore"
        tokens_per_step = _tokens_per_step(scale)
        if tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
            in_tune = [r.config.get("design") for r in tuner.get_results() if r.config]
            orphans = ray.get(self.pipeline.requeue_orphans.remote(in_tune))
            self.console.print(f"explore: restored Tune experiment with {len(in_tune)} trial(s); "
                               f"{len(orphans)} candidate(s) Tune never saw go back to the queue")
        else:
            e = self.explore_settings
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=CandidateSearcher(f"asiarch-pipeline-{self.name}", NAMESPACE, metric=e.metric),
                    scheduler=explore_scheduler(scale.train.steps * tokens_per_step, e.grace_fraction,
                                                e.reduction_factor, metric=e.metric),
                    num_samples=-1, max_concurrent_trials=slots, time_budget_s=self._wall_left(),
                    reuse_actors=True,  # no actor start-up between candidates
                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                run_config=tune.RunConfig(
                    name="explore", storage_path=str(self.paths.tune.resolve()), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=e.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
            )
        self.console.print(f"explore: {s.max_candidates} candidate(s) at {scale.name}, {scale.train.steps} steps, "
                           f"{slots} trial slot(s), ASHA rungs from {self.explore_settings.grace_fraction:.0%} of the budget")
        tuner.fit()
        if waiter is not None:
            waiter.join()
        # let the last judgements and analyses land before promotion reads the memory
        while True:
            st = ray.get(self.pipeline.status.remote())
            if st["scoring"] == 0:
                break
            time.sleep(0.5)
        ray.get(self.pipeline.stop.remote())

    # -- verify --------------------------------------------------------------------------------------
    def _promote(self) -> list[Candidate]:
        memory = self.memory()
        promoted = [c for c in memory.list_candidates(campaign=self.name) if c.status == "promoted" or
                    (c.stage == "verify" and not is_baseline(c))]
        if promoted:
            return promoted
        eligible = sorted((c for c in memory.list_candidates(campaign=self.name, status="finished")
                           if not is_baseline(c) and c.fitness is not None),
                          key=lambda c: (-c.fitness, c.id))
        if not eligible:
            return []
        n = min(len(eligible), max(self.verify_settings.min_promoted,
                                   math.ceil(self.verify_settings.top_fraction * len(eligible))))
        for c in eligible[:n]:
            ray.get(self.writer.update_candidate.remote(
                c.id, status="promoted", status_reason=f"explore fitness {c.fitness:.3f}: top {n} of {len(eligible)}"))
        return memory.get_candidates([c.id for c in eligible[:n]])

    def _verify(self, scale: ScaleConfig, data: dict[str, TrialData]) -> None:
        from ray import tune

        from asiarch.campaign.schedulers import verify_scheduler

        promoted = self._promote()
        if not promoted:
            self.console.print("verify: no candidate finished explore with a fitness; nothing to verify")
            return
        v = self.verify_settings
        runs = [{"kind": "candidate", "design": c.id, "name": c.name, "code": c.code} for c in promoted]
        runs += [{"kind": "baseline", "design": seed, "name": seed, "code": ""} for seed in self.seeds]
        runs = [{**r, "training_seed": t} for r in runs for t in v.training_seeds]
        lr = scale.train.lr
        if v.search == "sweep":
            param_space = {"run": tune.grid_search(runs), "stage": "verify",
                           "lr": tune.grid_search([lr * m for m in v.lr_multipliers])}
            scheduler = None
        else:
            param_space = {"run": tune.grid_search(runs), "stage": "verify", "lr": lr}
            scheduler = verify_scheduler(int(v.perturbation_fraction * scale.train.steps) * _tokens_per_step(scale),
                                         tune.loguniform(lr * v.lr_bounds[0], lr * v.lr_bounds[1]),
                                         group_of=_design_of)
        trainable = tune.with_resources(
            tune.with_parameters(_run_verify_trial, scales={"verify": scale}, data={"verify": data["verify"]},
                                 downstream=self.scale.stages.benchmark == "downstream"),
            self._resources())
        path = self.paths.tune / "verify"
        if tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable, param_space=param_space,
                tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=self._slots(),
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                                            time_budget_s=self._wall_left(), reuse_actors=True,
                                            metric=None if scheduler else "eval_loss", mode=None if scheduler else "min"),
                run_config=tune.RunConfig(name="verify", storage_path=str(self.paths.tune.resolve()), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=self.explore_settings.max_failures)),
            )
        self._verify_plan = (len(runs) * (len(v.lr_multipliers) if v.search == "sweep" else 1), scale.train.steps)
        self.console.print(f"verify: {len(promoted)} candidate(s) and {len(self.seeds)} seed(s) x "
                           f"{len(v.training_seeds)} training seed(s) at {scale.name}, {scale.train.steps} steps, "
                           f"{'PBT over the learning rate' if v.search == 'pbt' else 'learning-rate sweep'}")
        grid = tuner.fit()
        self._record_verify(grid, promoted)

    def _record_verify(self, grid, promoted: list[Candidate]) -> None:
        """Mean over training seeds per design; breakthroughs; the discovery curve."""
        v = self.verify_settings
        by_design: dict[str, dict[tuple, list[dict[str, Any]]]] = {}
        for result in grid:
            if result.config is None or not result.metrics:
                continue
            run = result.config["run"]
            lr_key = result.config["lr"] if v.search == "sweep" else "pbt"
            metrics = dict(result.metrics)
            metrics["history"] = [{"eval_loss": m} for m in (result.metrics_dataframe["eval_loss"].dropna().tolist()
                                                             if result.metrics_dataframe is not None and
                                                             "eval_loss" in result.metrics_dataframe else [])]
            metrics["train_seconds"] = metrics.get("time_total_s", 0.0)
            by_design.setdefault(run["design"], {}).setdefault(lr_key, []).append(metrics)

        def best_runs(design: str) -> list[dict[str, Any]]:
            groups = by_design.get(design, {})
            finite = {k: rs for k, rs in groups.items() if _mean([r.get("eval_loss") for r in rs]) is not None}
            if not finite:
                return []
            key = min(finite, key=lambda k: _mean([r.get("eval_loss") for r in finite[k]]))
            return finite[key]

        seeds = {}
        for seed in self.seeds:
            runs = best_runs(seed)
            if runs:
                seeds[seed] = self._store_baseline(seed, "verify", runs)
        anchor = seeds.get(self.settings.seed)
        explore_hours = sum(c.device_seconds for c in self.memory().list_candidates(campaign=self.name)) / 3600
        events = []
        for c in promoted:
            runs = best_runs(c.id)
            seconds = sum(float(r.get("time_total_s") or 0.0) for r in by_design.get(c.id, {}).values() for r in r)
            if not runs:
                ray.get(self.writer.update_candidate.remote(c.id, stage="verify", status="failed",
                                                            status_reason="no verify run finished"))
                continue
            benchmark_key = "mqar_accuracy" if self.scale.stages.benchmark == "mqar" else "downstream_mean"
            mine = {"name": c.name, "eval_loss": _mean([r.get("eval_loss") for r in runs]),
                    "benchmark": _mean([r.get(benchmark_key) for r in runs])}
            beats = {seed: bool(mine["eval_loss"] is not None and b["eval_loss"] is not None and b["benchmark"] is not None
                                and mine["benchmark"] is not None and mine["eval_loss"] < b["eval_loss"]
                                and mine["benchmark"] > b["benchmark"])
                     for seed, b in seeds.items()}
            breakthrough = bool(beats) and all(beats.values()) and len(seeds) == len(self.seeds)
            fitness = coerce_fitness(self.fitness_fn(mine, anchor, c.judge.get("overall"))) if anchor else Fitness(
                None, {"missing": {"baseline": f"the seed {self.settings.seed} has no verify result"}})
            metrics = StageMetrics(
                loss_curve=[h["eval_loss"] for h in runs[0]["history"]], eval_loss=mine["eval_loss"],
                mqar_accuracy=_mean([r.get("mqar_accuracy") for r in runs]), benchmark=mine["benchmark"],
                benchmarks={"runs": [{k: r.get(k) for k in ("eval_loss", "mqar_accuracy", benchmark_key, "lr")}
                                     for r in runs],
                            "eval_loss_std": _std([r.get("eval_loss") for r in runs])})
            parts = {**c.fitness_parts, "breakthrough": breakthrough,
                     "verify": {"fitness": fitness.value, **fitness.parts, "beats": beats}}
            ray.get(self.writer.update_candidate.remote(
                c.id, stage="verify", status="finished", verify=metrics, fitness_parts=parts,
                device_seconds=c.device_seconds + seconds,
                status_reason="breakthrough: beats every seed at verify scale" if breakthrough else
                f"verified; beats {sum(beats.values())}/{len(beats)} seed(s)"))
            finished_at = max(float(r.get("timestamp") or 0) for r in runs)
            events.append((finished_at, seconds, c.id, breakthrough))
        discovery, hours, count = [], explore_hours, 0
        for finished_at, seconds, cid, breakthrough in sorted(events):
            hours += seconds / 3600
            count += int(breakthrough)
            discovery.append({"device_hours": hours, "breakthroughs": count, "candidate_id": cid, "at": now_iso()})
        self._save_state(discovery=discovery)
        self._cleanup_checkpoints()

    def _cleanup_checkpoints(self) -> None:
        """PBT keeps every checkpoint (num_to_keep breaks it); finished verify trials need none."""
        import shutil

        for folder in (self.paths.tune / "verify").glob("*/checkpoint_*"):
            shutil.rmtree(folder, ignore_errors=True)

    # -- progress and results --------------------------------------------------------------------------
    def _progress_loop(self, stop: threading.Event) -> None:
        """A status line when something changed, and at least every few minutes while nothing does."""
        last, last_at = None, 0.0
        while not stop.wait(PROGRESS_EVERY_S):
            try:
                line = self.progress_line()
                if line != last or time.monotonic() - last_at > 12 * PROGRESS_EVERY_S:
                    self.console.print(line, highlight=False, markup=False, soft_wrap=True)
                    last, last_at = line, time.monotonic()
            except Exception as err:  # progress must never kill the run
                self.console.print(f"(progress unavailable: {err})", markup=False)

    def progress_line(self) -> str:
        st = self.status()
        c = st["counts"]
        best = "-" if st["best_fitness"] is None else f"{st['best_fitness']:.3f}"
        return (f"[{self.state.get('phase', '?')}] proposed {c['proposed']} | validated {c['validated']} | "
                f"rejected {c['rejected']} | training {c['training']} | stopped {c['stopped']} | finished {c['finished']} | "
                f"failed {c['failed']} | promoted {c['promoted']} | verified {st['verified']} | "
                f"breakthroughs {st['breakthroughs']} | best fitness {best} | budget: {st['trained']}/{st['max_candidates']} "
                f"candidates, {st['device_hours']:.3f} device-h, ${st['usd']:.2f}" + self._verify_progress())

    def _verify_progress(self) -> str:
        """Verify trials' progress, read from Tune's result files (the pipeline follows explore only)."""
        if self._verify_plan is None or self.state.get("phase") != "verify":
            return ""
        total, steps = self._verify_plan
        reached = []
        for path in (self.paths.tune / "verify").glob("*/result.json"):
            lines = path.read_text().strip().splitlines()
            if lines:
                reached.append(int(json.loads(lines[-1]).get("step") or 0))
        done = sum(1 for r in reached if r >= steps)
        running = [r for r in reached if r < steps]
        mean = f" at step {sum(running) / len(running):.0f}/{steps}" if running else ""
        return f" | verify trials: {done}/{total} done, {len(running)} running{mean}"

    def _print_results(self) -> None:
        from asiarch.campaign.summary import results_rows, write_campaign_results, campaign_table

        rows = results_rows(self.memory(), self.name)
        write_campaign_results(self.paths.results, rows, self.name)
        self.console.print(campaign_table(rows, title=f"Campaign {self.name}: best candidates against the seeds"))
        self.console.print(self.progress_line(), highlight=False, markup=False, soft_wrap=True)
        self.console.print(f"results: {self.paths.results}")


def _console() -> Console:
    """Rich output; wide when it goes to a log (``ray job logs``, CI) so tables are not cut."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _trial_name(trial) -> str:
    """Short trial names (the config holds source code): stage, design name, training seed, trial id."""
    config = trial.config.get("run", trial.config)
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(config.get("name", "trial")))[:40]
    return f"{trial.config.get('stage', config.get('stage', 'trial'))}_{name}_s{config.get('training_seed', 0)}_{trial.trial_id}"


def _design_of(config: dict[str, Any]) -> str:
    return config["run"]["design"]


def _tokens_per_step(scale: ScaleConfig) -> int:
    t = scale.train
    return t.batch_size * t.seq_len + (scale.mqar.seq_len * t.mqar_batch_size if t.mqar_every == 1 else 0)


def _run_verify_trial(config: dict[str, Any], scales: dict[str, ScaleConfig], data: dict[str, TrialData],
                      downstream: bool = False) -> None:
    from asiarch.campaign.trainable import run_trial

    flat = {**config["run"], "stage": "verify", "lr": config["lr"]}
    run_trial(flat, scales, data, memory_uri=None, downstream=downstream)


def _mean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _std(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(finite) < 2:
        return None
    m = sum(finite) / len(finite)
    return (sum((v - m) ** 2 for v in finite) / (len(finite) - 1)) ** 0.5
