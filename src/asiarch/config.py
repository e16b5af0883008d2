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
section into checked dataclasses, naming any unknown or misspelt key and any value whose type is not
the field's (``build_dataclass``, the gate every config section goes through).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import threading
import types
import typing
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
    """``cls(**values)`` with an error that names the unknown key, or the value of the wrong type, and the
    config section. Hydra's overrides and YAML carry no schema: without the type check ``train.lr=abc`` reached
    every trial as a string, and a campaign ran on, failing its anchor and every candidate."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section '{where}'; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _is_a(value, hints[key]):
            raise ValueError(f"invalid config section '{where}': {key} must be {_type_text(hints[key])}, "
                             f"got {value!r}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid config section '{where}': {err}") from err


def _is_a(value: Any, hint: Any) -> bool:
    """Whether a config value (plain YAML data) fits a field's type hint; types it does not know pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_is_a(v, a) for v, a in zip(value, args))
        return not args or all(_is_a(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(_is_a(v, args[1]) for v in value.values()))
    return True  # a nested dataclass (built from a mapping by its owner) or a type this check does not know


_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _type_text(hint: Any) -> str:
    """A type hint as a config error names it: 'a number', 'a list of integers or null'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in args)
    named = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if hint in named:
        return named[hint]
    if origin in (list, tuple, collections.abc.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(_type_text(a) for a in args)})"
        return f"a list of {_PLURAL.get(args[0], _type_text(args[0]))}" if args else "a list"
    if origin is dict:
        return f"a mapping to {_type_text(args[1])}" if args else "a mapping"
    return getattr(hint, "__name__", str(hint))


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
