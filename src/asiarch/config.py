"""Configuration: Hydra composes ``conf/``; dataclasses give the composed tree types.

The dataclasses are the schema: which keys exist, their types, and the checks on their
values. The YAML files in ``conf/`` (installed as the package ``asiarch.conf``) write every
key out, so ``asiarch config`` shows them all. Because tests, benchmarks and examples also
build the dataclasses directly, their defaults equal the default composition:
``conf/config.yaml`` for its sections, the default scale ``cpu_tiny`` for the scale
sections (the other scales set other values on purpose). ``tests/test_config_defaults.py``
fails when the two disagree or a key is on one side only; it lists the few fields that are
not settings (the model's ``vocab_size``, the API key) with their reason.

``compose`` reads ``conf/`` with Hydra overrides and ``ScaleConfig.from_dict`` turns a scale
section into checked dataclasses, naming any unknown or misspelt key.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from asiarch.arch.model import ModelConfig
from asiarch.data.corpus import CorpusConfig
from asiarch.data.downstream import TASKS
from asiarch.data.mqar import MQARConfig
from asiarch.train.trainer import TrainConfig


@dataclass
class DownstreamConfig:
    """The multiple-choice sets scored after training (``limit``: examples per set; None: all)."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # every set asiarch ships
    limit: int | None = 50
    max_len: int = 256
    batch_size: int = 16


def build_dataclass(cls: type, values: dict[str, Any] | None, where: str):
    """``cls(**values)`` with an error that names the unknown key and the config section."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section '{where}'; known keys: {sorted(known)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid config section '{where}': {err}") from err


@dataclass
class StagesConfig:
    """How a campaign's funnel uses this scale: explore budget, where and how long to verify."""

    explore_steps: int | None = 192  # train.steps of an explore trial (None: the scale's train.steps)
    verify_scale: str | None = None  # scale name to verify at (None: this scale)
    verify_steps: int | None = 768  # train.steps of a verify trial (None: the verify scale's train.steps)
    explore_schedule: str = "verify"  # "verify": explore trains the head of a verify run (its lr schedule); "explore": a whole schedule
    benchmark: str = "mqar"  # the fitness's benchmark term: "mqar" accuracy or the "downstream" mean
    reports_per_trial: int = 8  # evaluations per trial; ASHA rungs and PBT perturbations land on them

    def __post_init__(self) -> None:
        if self.benchmark not in ("mqar", "downstream"):
            raise ValueError(f"stages.benchmark must be 'mqar' or 'downstream', got {self.benchmark!r}")
        for name in ("explore_steps", "verify_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"stages.{name} must be positive, got {value}")
        if self.reports_per_trial <= 0:
            raise ValueError(f"stages.reports_per_trial must be positive, got {self.reports_per_trial}")
        if self.explore_schedule not in ("verify", "explore"):
            raise ValueError(f"stages.explore_schedule must be 'verify' or 'explore', got {self.explore_schedule!r}")
        if self.explore_schedule == "verify" and self.verify_scale is not None:
            raise ValueError("stages.explore_schedule 'verify' makes an explore trial the head of a verify run at this "
                             f"scale; verify runs at {self.verify_scale!r} (stages.verify_scale): use 'explore'")


@dataclass
class ScaleConfig:
    """Everything that fixes one training scale: model shape, trainer, data, evaluation."""

    name: str
    model: ModelConfig
    train: TrainConfig
    mqar: MQARConfig
    corpus: CorpusConfig
    downstream: DownstreamConfig
    stages: StagesConfig = field(default_factory=StagesConfig)
    torch_threads: int = 1

    @classmethod
    def from_dict(cls, values: dict[str, Any] | DictConfig) -> "ScaleConfig":
        if isinstance(values, DictConfig):
            values = OmegaConf.to_container(values, resolve=True)
        values = dict(values)
        sections = {"model": ModelConfig, "train": TrainConfig, "mqar": MQARConfig, "corpus": CorpusConfig, "downstream": DownstreamConfig,
                    "stages": StagesConfig}
        unknown = sorted(set(values) - set(sections) - {"name", "torch_threads"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in config section 'scale'")
        if "name" not in values:
            raise ValueError("config section 'scale' needs a 'name'")
        built = {key: build_dataclass(kind, values.get(key), f"scale.{key}") for key, kind in sections.items()}
        if "torch_threads" in values:
            built["torch_threads"] = int(values["torch_threads"])
        return cls(name=values["name"], **built)


_HYDRA_LOCK = threading.Lock()


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The embedded ``conf/`` tree with Hydra ``overrides`` applied (``key=value`` strings)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with _HYDRA_LOCK:  # Hydra keeps one global instance; compose from several threads one at a time
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="asiarch.conf", version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))


def load_scale(name_or_overrides: str | Sequence[str] = ()) -> ScaleConfig:
    """A scale by name (``"cpu_tiny"``) or from overrides (``["scale=cpu_tiny", "scale.train.steps=50"]``)."""
    overrides = [f"scale={name_or_overrides}"] if isinstance(name_or_overrides, str) else list(name_or_overrides)
    return ScaleConfig.from_dict(compose(overrides).scale)


def seeded_scale(scale: ScaleConfig, training_seed: int) -> ScaleConfig:
    """``scale`` trained on ``training_seed`` (its initialisation and data order)."""
    return dataclasses.replace(scale, train=dataclasses.replace(scale.train, seed=training_seed))


def explore_scale(scale: ScaleConfig) -> ScaleConfig:
    """The scale an explore trial (and the explore anchor) trains at: ``stages.explore_steps`` steps, under the
    learning-rate schedule of a verify run when ``stages.explore_schedule`` is "verify".

    A run of explore's length with a whole schedule of its own anneals in its last steps, and the
    annealing re-orders designs: at cpu_tiny the first 192 steps of a verify run ranked the ladder
    closer to its verify results than a 192-step run with its own schedule (bench_fidelity; on a
    campaign's close variants neither ranks well, bench_horizon; README "Explore is the head of a
    verify run"). A verify
    run no longer than explore has no head to train: explore then trains a whole schedule (the
    campaign's explore banner names the schedule whenever it is a verify run's).
    """
    steps = scale.stages.explore_steps or scale.train.steps
    head_of = scale.stages.verify_steps or scale.train.steps
    if scale.stages.explore_schedule == "explore" or head_of <= steps:
        return stage_scale(scale, steps)
    return stage_scale(scale, steps, schedule_steps=head_of)


def stage_scale(scale: ScaleConfig, steps: int | None, schedule_steps: int | None = None) -> ScaleConfig:
    """``scale`` trained for ``steps`` (None: unchanged) under a learning-rate schedule of ``schedule_steps``
    (None: its own ``steps``), reporting ``stages.reports_per_trial`` times.

    ``train.max_wall_seconds`` is the wall budget of a run of ``train.steps`` steps; a longer stage
    gets it in proportion (never less). With one budget for every length, a design that explore
    let through (slower than the anchor, but within training QA's ``qa_slow_factor``) was cut at
    35-41 % of cpu_tiny's 4x longer verify runs (docs/funnel_cpu_tiny_verify.txt): verify then
    compared it as it stood. Slowness is judged once, by explore's training QA, not by a fixed clock.
    """
    steps = steps or scale.train.steps
    report_every = max(1, steps // scale.stages.reports_per_trial)
    wall = scale.train.max_wall_seconds
    if wall is not None and steps > scale.train.steps:
        wall = wall * steps / scale.train.steps
    return dataclasses.replace(scale, train=dataclasses.replace(scale.train, steps=steps, report_every=report_every,
                                                                max_wall_seconds=wall, schedule_steps=schedule_steps))
