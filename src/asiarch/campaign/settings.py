"""Typed views of the ``campaign``, ``explore``, ``verify`` and ``run`` sections of ``conf/``.

Their defaults equal ``conf/config.yaml`` (see ``asiarch.config`` for the rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CampaignSettings:
    name: str | None = None
    resume: str = "auto"
    seed: str = "deltanet"
    memory_uri: str | None = None
    max_candidates: int = 8
    max_device_hours: float | None = None
    max_usd: float | None = 50.0  # one account for every agent (with llm.budget_usd, the smaller wins)
    max_wall_hours: float | None = None
    researchers: int = 1
    engineers: int = 2
    lookahead: int | None = None
    max_proposals: int | None = None

    def __post_init__(self) -> None:
        if self.resume not in ("auto", "never"):
            raise ValueError(f"campaign.resume must be 'auto' or 'never', got {self.resume!r}")
        if self.max_candidates < 0:
            raise ValueError(f"campaign.max_candidates must be >= 0, got {self.max_candidates}")
        for name in ("researchers", "engineers"):
            if getattr(self, name) < 1:
                raise ValueError(f"campaign.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_device_hours", "max_usd", "max_wall_hours"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"campaign.{name} must be positive or null, got {value}")


@dataclass
class ExploreSettings:
    metric: str = "eval_loss"
    grace_fraction: float = 0.5
    reduction_factor: int = 3
    rung_significance: float | None = 0.05  # an ASHA stop stands only when the design is behind with p below this
    max_failures: int = 2
    # the explore anchor's training seeds: its spread is an estimate read with Student's t over len - 1 degrees of
    # freedom (scoring.single_run_gap_p), so 5 runs let an ASHA stop stand at 3.0 noise sd where 3 runs need 4.1
    anchor_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    qa_slow_factor: float | None = 3.0  # training QA (asiarch.train.qa): stop a trial this many times slower than its seed
    qa_leak_fraction: float | None = 0.10  # training QA: re-check a loss this fraction below the seed's before it counts

    def __post_init__(self) -> None:
        from asiarch.train.qa import TrainingQA

        TrainingQA(self.qa_slow_factor, self.qa_leak_fraction)  # validates both
        if len(self.anchor_seeds) < 1 or len(set(self.anchor_seeds)) != len(self.anchor_seeds):
            raise ValueError(f"explore.anchor_seeds must be distinct and non-empty, got {self.anchor_seeds}")
        if not 0 < self.grace_fraction <= 1:
            raise ValueError(f"explore.grace_fraction must be in (0, 1], got {self.grace_fraction}")
        if self.reduction_factor < 2:
            raise ValueError(f"explore.reduction_factor must be >= 2, got {self.reduction_factor}")
        if self.rung_significance is not None and not 0 < self.rung_significance < 1:
            raise ValueError(f"explore.rung_significance must be in (0, 1) or null, got {self.rung_significance}")


# pbt: PBT over the learning rate within each design (its members clone each other's weights, so the tests count
# runs by lineage); sweep: a grid of learning rates, each on every training seed; fixed: the scale's learning rate
# on every training seed, each run independent
VERIFY_SEARCHES = ("pbt", "sweep", "fixed")
# pbt's populations: one per design (its training seeds; a clone shares weights across seeds) or one per training seed
# (members started on lr_multipliers; clones stay within the seed, which keeps the seeds independent)
PBT_POPULATIONS = ("design", "seed")


@dataclass
class VerifySettings:
    top_fraction: float = 0.25
    min_promoted: int = 1
    training_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    significance: float = 0.05  # a breakthrough beats each seed with one-sided p below this, on loss and benchmark
    search: str = "fixed"  # one of VERIFY_SEARCHES
    lr_multipliers: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    perturbation_fraction: float = 0.25
    lr_bounds: list[float] = field(default_factory=lambda: [0.2, 5.0])
    pbt_population: str = "design"  # one of PBT_POPULATIONS

    @property
    def pbt_per_seed(self) -> bool:
        """PBT with a population per training seed (``pbt_population: seed``)."""
        return self.search == "pbt" and self.pbt_population == "seed"

    def __post_init__(self) -> None:
        if self.search not in VERIFY_SEARCHES:
            raise ValueError(f"verify.search must be one of {', '.join(VERIFY_SEARCHES)}, got {self.search!r}")
        if self.pbt_population not in PBT_POPULATIONS:
            raise ValueError(f"verify.pbt_population must be one of {', '.join(PBT_POPULATIONS)}, "
                             f"got {self.pbt_population!r}")
        if self.pbt_per_seed and len(self.lr_multipliers) < 2:
            raise ValueError("verify.pbt_population=seed starts each training seed's population on lr_multipliers: "
                             f"give at least two, got {self.lr_multipliers}")
        if not 0 <= self.top_fraction <= 1:
            raise ValueError(f"verify.top_fraction must be in [0, 1], got {self.top_fraction}")
        if len(self.training_seeds) < 1 or len(set(self.training_seeds)) != len(self.training_seeds):
            raise ValueError(f"verify.training_seeds must be distinct and non-empty, got {self.training_seeds}")
        if not 0 < self.significance < 1:
            raise ValueError(f"verify.significance must be in (0, 1), got {self.significance}")


@dataclass
class RunSettings:
    output_dir: str = "runs"
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    trial_resources: dict[str, float] | None = None  # custom Ray resources each trial needs
    max_parallel_trials: int | None = None
    max_node_losses: int = 10  # times a stage continues from storage after trials died with their node
    downstream: bool = False  # verify also scores the multiple-choice sets (see scoring.scores_downstream)

    def __post_init__(self) -> None:
        if self.max_node_losses < 0:
            raise ValueError(f"run.max_node_losses must be >= 0, got {self.max_node_losses}")
        resources = self.trial_resources or {}
        bad = {k: v for k, v in resources.items() if not isinstance(v, (int, float)) or v <= 0}
        if bad or {"CPU", "GPU", "cpu", "gpu"} & set(resources):
            raise ValueError(f"run.trial_resources takes custom resources with positive amounts (CPUs and GPUs: "
                             f"run.cpus_per_trial, run.gpus_per_trial), got {self.trial_resources}")

    def tune_resources(self) -> dict[str, float]:
        """What one trial holds, as ``tune.with_resources`` takes it: CPUs, GPUs and ``trial_resources``."""
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial, **(self.trial_resources or {})}

    def task_options(self) -> dict[str, Any]:
        """The same, as ``.options()`` of a Ray task that trains a seed."""
        return {"num_cpus": self.cpus_per_trial, "num_gpus": self.gpus_per_trial,
                **({"resources": dict(self.trial_resources)} if self.trial_resources else {})}


def section(cfg: Any, key: str, kind: type) -> Any:
    """``kind`` built from ``cfg[key]``; an unknown key is an error that names it."""
    from omegaconf import OmegaConf

    from asiarch.config import build_dataclass

    values = cfg.get(key) if cfg is not None else None
    if values is not None and not isinstance(values, dict):
        values = OmegaConf.to_container(values, resolve=True)
    return build_dataclass(kind, values, key)
