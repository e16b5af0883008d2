"""``Campaign``: the front door. Configuration, the run directory, Ray, start or resume, the stages.

A campaign lives in ``<run.output_dir>/<name>/``, a local directory or an ``s3://`` prefix
(``asiarch.storage``): the memory (LanceDB), Tune's experiments, ``campaign.json``, results. ``run()`` continues whatever an earlier driver left unfinished: the
memory says which candidates were proposed, validated, trained and scored; Tune's
experiment state brings back running trials with their checkpoints. The work itself is
done by the two stages, ``explore.ExploreStage`` and ``verify.VerifyStage``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import ray
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from asiarch.agents import AgentsConfig
from asiarch.arch import SEEDS
from asiarch.campaign.fitness import FitnessFn
from asiarch.campaign.settings import CampaignSettings, ExploreSettings, RunSettings, VerifySettings, section
from asiarch.campaign.explore import ExploreStage
from asiarch.campaign.stage import NAMESPACE, StageContext, StageInterrupted
from asiarch.campaign.tune_progress import TrialProgress
from asiarch.campaign.verify import VerifyStage
from asiarch.campaign.state import CampaignPaths, CampaignRecord, find_campaign, now_iso, read_state, set_latest
from asiarch.console import output_console
from asiarch.config import ScaleConfig, build_dataclass, compose, explore_scale, load_scale, stage_scale
from asiarch.memory import Candidate, Kind, Memory, MemoryActor
from asiarch.sandbox import SandboxOptions
from asiarch.storage import Location, StorageError, StorageSettings, check_access, is_remote, location
from asiarch.campaign.placement import on_this_node

PROGRESS_EVERY_S = 15.0


def _fingerprint(cfg: DictConfig) -> str:
    """What makes two invocations "the same campaign" (its name and resume policy aside)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.get("campaign", {}).pop("name", None)
    plain.get("campaign", {}).pop("resume", None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(plain)).encode()).hexdigest()[:16]


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
        self.sandbox_options: SandboxOptions = section(config, "sandbox", SandboxOptions)
        self.storage: StorageSettings = section(config, "storage", StorageSettings)
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
        self.console = console or output_console()
        self.output_dir: Location = location(self.run_settings.output_dir, self.storage)
        self.name = self.settings.name
        self.paths: CampaignPaths | None = None
        self.record: CampaignRecord | None = None  # campaign.json, shared by the driver's threads
        self._trial_progress: dict[str, Any] = {}  # stage -> its TrialProgress, the Tune callback following its trials

    # -- public API ------------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str | None = None, output_dir: str | Path | Location = "runs", **kwargs: Any) -> "Campaign":
        """The campaign ``name`` (or the latest) under ``output_dir`` (a directory or ``s3://`` URI),
        with the config it was started with."""
        root = find_campaign(output_dir, name)
        cfg = OmegaConf.create((root / "config.yaml").read_text())
        campaign = cls(cfg, **kwargs)
        campaign.name, campaign.output_dir = root.name, root.parent
        campaign.paths = CampaignPaths(root.resolve())
        campaign.record = CampaignRecord(campaign.paths.state, read_state(campaign.paths.state))
        return campaign

    @property
    def state(self) -> dict[str, Any]:
        """A copy of ``campaign.json`` as this driver holds it ({} before the run starts)."""
        return self.record.snapshot() if self.record is not None else {}

    @property
    def memory_uri(self) -> Location:
        """Where the memory is: ``campaign.memory_uri``, else ``memory/`` in the campaign's directory."""
        assert self.paths is not None
        if self.settings.memory_uri:
            return location(self.settings.memory_uri, self.storage).resolve()
        return self.paths.memory.resolve()

    def memory(self) -> Memory:
        return Memory(self.memory_uri, read_only=True, embedder=self._embedder)

    def top(self, k: int = 10, stage: str | None = None) -> list[Candidate]:
        """The ``k`` fittest candidates by explore fitness (seeds left out)."""
        self._locate()
        return self.memory().top_k(k, campaign=self.name, stage=stage, kind=Kind.CANDIDATE.value)

    def status(self) -> dict[str, Any]:
        """Counts per status, budget used, best fitness, verified, breakthroughs and the phase."""
        self._locate()
        counts = self.memory().campaign_counts(self.name)
        try:
            state = read_state(self.paths.state)
        except FileNotFoundError:
            state = {}
        return {"name": self.name, "status": state.get("status"), "phase": state.get("phase"), **counts.as_dict(),
                "max_candidates": self.settings.max_candidates}

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
        self.record.update(**changes)

    def run(self) -> dict[str, Any]:
        """Run (or continue) the campaign to the end of its budget; return its final status."""
        self._backend(), self.fitness_fn  # a missing API key or a bad fitness target fails before anything is written
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # error reports carry no loss
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we want every snapshot
        # Ray and Tune start helper processes from the driver (fork, then exec at once): LanceDB's
        # fork warning is about code running in the forked child, which never happens here
        warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
        self._check_storage()  # no credentials or no endpoint: one line, before anything is written
        self._choose()
        started_ray = not ray.is_initialized()
        if started_ray:
            if (os.environ.get("RAY_ADDRESS") or "local") != "local":  # `ray job submit` or a user's cluster: join it
                ray.init(namespace=NAMESPACE, log_to_driver=False)
            else:
                ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            self._open_record()
        except BaseException:
            if started_ray:
                ray.shutdown()
            raise
        paths, started = self.paths, time.monotonic()
        stop_progress = threading.Event()
        try:
            self.writer = MemoryActor.options(name=self._actor_name("memory"), namespace=NAMESPACE,
                                              **on_this_node()).remote(
                self.memory_uri, embedder=self._embedder)
            ray.get(self.writer.uri.remote())  # the writer has created the tables
            self.console.print(f"campaign {self.name}: {paths.root} (stop with Ctrl-C; the same command, or "
                               f"`asiarch resume`, continues it)", markup=False, highlight=False, soft_wrap=True)
            self._share_llm_budget()
            if self.memory().count_insights() == 0:
                with self.console.status("loading the cognition base into the memory"):
                    ray.get(self.writer.load_cognition_base.remote())
            explore_at = explore_scale(self.scale)
            verify_base = load_scale(self.scale.stages.verify_scale) if self.scale.stages.verify_scale else self.scale
            verify_scale = stage_scale(verify_base, self.scale.stages.verify_steps)
            ctx = self._stage_context()
            with self.console.status("preparing data: tokenizer, token cache, MQAR"):
                # MQAR's test set is drawn with the output directory's secret, as the cached seed runs were
                data = {"explore": ctx.baselines.prepare_data(explore_at)}
                data["verify"] = (data["explore"] if verify_base is self.scale
                                  else ctx.baselines.prepare_data(verify_scale))
            self._report_sandbox(ctx.hidden_from_candidates)
            self._wall_started = started
            progress = threading.Thread(target=self._progress_loop, args=(stop_progress,), daemon=True)
            progress.start()
            if self.record.get("phase") == "explore":
                self._trial_progress["explore"] = TrialProgress("explore")
                ExploreStage(ctx, explore_at, verify_scale, data, callbacks=[self._trial_progress["explore"]]).run()
                self._save_state(phase="verify")
            if self.record.get("phase") == "verify":
                # PBT needs checkpoints while it runs; the callback deletes each finished trial's
                self._trial_progress["verify"] = TrialProgress("verify", delete_checkpoints=True)
                VerifyStage(ctx, verify_scale, data, callbacks=[self._trial_progress["verify"]]).run()
                self._save_state(phase="done")
            stop_progress.set()
            summary = self.status()
            self._save_state(status="finished", counts=summary["counts"], best_fitness=summary["best_fitness"],
                             used=self._used(started))
            self._print_results()
            return self.status()
        except StageInterrupted as err:
            stop_progress.set()
            self._save_state(status="interrupted", used=self._used(started))
            self.console.print(f"{err}: nothing part-trained was scored. Run the same command again (or "
                               f"`asiarch resume`) to continue campaign {self.name}.", markup=False, highlight=False)
            return self.status()
        except KeyboardInterrupt:  # outside Tune's own Ctrl-C handling; the CLI says how to resume
            self._save_state(status="interrupted", used=self._used(started))
            raise
        except BaseException:
            self._save_state(status="failed", used=self._used(started))
            raise
        finally:
            stop_progress.set()
            if started_ray:
                ray.shutdown()
            else:  # a Ray the user keeps: free the campaign's actors and their names (a resume creates them again)
                self._release_actors()

    def _actor_name(self, role: str) -> str:
        """The name of this campaign's ``role`` actor (memory writer, usd account) in ``NAMESPACE``."""
        return f"asiarch-{role}-{self.name}"

    def _release_actors(self) -> None:
        """Kill the actors this campaign created on a Ray it did not start (its stages end their own)."""
        for role in ("memory", "usd"):
            try:
                ray.kill(ray.get_actor(self._actor_name(role), namespace=NAMESPACE))
            except ValueError:  # never created (the offline proposer has no account) or already gone
                continue

    def _open_record(self) -> None:
        """Refuse storage other nodes cannot reach, then open (or create) ``campaign.json``, before any work."""
        self._check_cluster_storage()
        paths = self.paths
        paths.root.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint(self.cfg)
        if paths.state.exists():
            self.record = CampaignRecord(paths.state, read_state(paths.state))
            if self.record.get("fingerprint") not in (None, fingerprint):
                raise ValueError(f"campaign {self.name} was started with another configuration; "
                                 f"compare {paths.root / 'config.yaml'} or choose a new campaign.name")
        else:
            verify_base = self.scale.stages.verify_scale or self.scale.name
            self.record = CampaignRecord(paths.state, {
                "name": self.name, "status": "running", "phase": "explore", "fingerprint": fingerprint,
                "scale": self.scale.name, "verify_scale": verify_base, "seed": self.settings.seed,
                "started_at": now_iso(), "wall_seconds_before": 0.0,
                "budget": {"max_candidates": self.settings.max_candidates, "device_hours": self.settings.max_device_hours,
                           "usd": self.settings.max_usd, "wall_seconds": None if self.settings.max_wall_hours is None
                           else self.settings.max_wall_hours * 3600},
                "used": {}, "counts": {}, "best_fitness": None, "baselines": {"explore": {}, "verify": {}},
                "discovery": [],
            })
            (paths.root / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg))  # no secrets: credentials are env-only
        set_latest(self.output_dir, self.name)
        self._save_state(status="running")

    def _check_storage(self) -> None:
        for where in (self.output_dir, *([location(self.settings.memory_uri, self.storage)]
                                         if self.settings.memory_uri else [])):
            check_access(where)

    def _check_cluster_storage(self) -> None:
        """On a cluster of several nodes, trials on other nodes must reach the memory and Tune's storage."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        local = [str(p) for p in (self.paths.root, self.memory_uri) if not is_remote(p)]
        if len(nodes) > 1 and local and not self.storage.shared_filesystem:
            raise StorageError(
                f"this Ray cluster has {len(nodes)} nodes but campaign {self.name} lives on this machine's disk "
                f"({local[0]}): trials on other nodes cannot reach it. Set run.output_dir=s3://bucket/prefix "
                "(with storage.endpoint for MinIO and the like), or storage.shared_filesystem=true if that "
                "directory is a mount every node sees")

    def _used(self, started: float) -> dict[str, Any]:
        summary = self.status()
        wall = self.record.get("wall_seconds_before", 0.0) + time.monotonic() - started
        self.record.update(wall_seconds_before=wall)
        return {"candidates": summary["trained"], "device_seconds": summary["device_hours"] * 3600,
                "usd": summary["usd"], "wall_seconds": wall}

    def _report_sandbox(self, hidden: list[str]) -> None:
        """Say once what the sandbox candidates run in lacks on the driver's machine (trials on other nodes lock
        down with their own kernel), and keep it in campaign.json. ``hidden``: the folders candidates' processes
        hide (``StageContext.hidden_from_candidates``)."""
        from rich.markup import escape

        from asiarch.sandbox import gaps_here

        gaps = gaps_here(hidden)
        self.record.update(sandbox_gaps=gaps)
        if not gaps:
            self.console.print("sandbox: complete (namespaces, read-only filesystem, hidden folders, user switch)")
            return
        self.console.print("[bold yellow]sandbox[/] on this machine lacks: " + escape("; ".join(gaps)), soft_wrap=True)

    def _wall_left(self) -> float | None:
        if self.settings.max_wall_hours is None:
            return None
        spent = self.record.get("wall_seconds_before", 0.0) + time.monotonic() - self._wall_started
        return max(1.0, self.settings.max_wall_hours * 3600 - spent)

    def _stage_context(self) -> StageContext:
        return StageContext(
            name=self.name, paths=self.paths, record=self.record, writer=self.writer, memory_uri=self.memory_uri,
            settings=self.settings, explore=self.explore_settings, verify=self.verify_settings, run=self.run_settings,
            agents=self.agents_config, seeds=self.seeds, scale=self.scale, fitness_fn=self.fitness_fn,
            backend=self._backend(), check_options=self.check_options, sandbox=self.sandbox_options,
            console=self.console, embedder=self._embedder,
            wall_left=self._wall_left)

    @property
    def fitness_fn(self) -> FitnessFn:
        if self._fitness is None:
            from hydra.utils import instantiate

            self._fitness = instantiate(self.cfg.fitness)
        return self._fitness

    def _share_llm_budget(self) -> None:
        """Open the campaign's one LLM account (a Ray actor) and make every copy of the backend draw on it."""
        backend = self._backend()
        if not hasattr(backend, "share_budget"):
            return  # the offline proposer spends nothing
        from asiarch.llm import UsdAccount

        limits = [x for x in (getattr(backend.config, "budget_usd", None), self.settings.max_usd) if x is not None]
        limit = min(limits) if limits else None
        spent = self.memory().campaign_counts(self.name).usd  # a resumed campaign keeps what it spent
        account = ray.remote(UsdAccount).options(name=self._actor_name("usd"), namespace=NAMESPACE,
                                                 get_if_exists=True, num_cpus=0, **on_this_node()).remote(limit, spent)
        backend.share_budget(account)
        self.console.print("LLM budget: " + ("no limit" if limit is None else
                           f"${limit:.2f} for the whole campaign (${spent:.2f} spent before), shared by every agent"))

    def _backend(self) -> Any:
        if self._llm is None:
            from asiarch.llm.select import backend_from_config

            self._llm = backend_from_config(self.cfg.get("llm"))
        return self._llm

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
        phase = self.record.get("phase", "?") if self.record is not None else "?"
        return (f"[{phase}] proposed {c['proposed']} | validated {c['validated']} | "
                f"rejected {c['rejected']} | training {c['training']} | stopped {c['stopped']} | finished {c['finished']} | "
                f"failed {c['failed']} | promoted {c['promoted']} | verified {st['verified']} | "
                f"breakthroughs {st['breakthroughs']} | best fitness {best} | budget: {st['trained']}/{st['max_candidates']} "
                f"candidates, {st['device_hours']:.3f} device-h, ${st['usd']:.2f}" + self._verify_progress())

    def _verify_progress(self) -> str:
        """Verify trials' progress as Tune reports it to this driver (the pipeline follows explore only)."""
        progress = self._trial_progress.get("verify")
        line = progress.line() if progress is not None else ""  # empty for a restored experiment: see tune_progress
        if not line or self.record is None or self.record.get("phase") != "verify":
            return ""
        return " | " + line

    def _print_results(self) -> None:
        from asiarch.campaign import scoring
        from asiarch.campaign.summary import results_rows, write_campaign_results, campaign_table

        rows = results_rows(self.memory(), self.name, recall_chance=scoring.mqar_chance(self.scale),
                            significance=self.agents_config.significance)
        write_campaign_results(self.paths.results, rows, self.name)
        self.console.print(campaign_table(rows, title=f"Campaign {self.name}: best candidates against the seeds"))
        self.console.print(self.progress_line(), highlight=False, markup=False, soft_wrap=True)
        self.console.print(f"results: {self.paths.results}")

