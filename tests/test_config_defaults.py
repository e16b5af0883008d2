"""One source of defaults: every dataclass default equals what the default conf/ composition sets.

The dataclasses are the schema (fields, types, checks) and are also built directly by tests,
benchmarks and examples, so their defaults must not drift from conf/. The rule: a default
equals the default composition (conf/config.yaml, the default scale cpu_tiny, and the llm
option that holds the setting); every field appears in conf/ unless ``NOT_IN_CONF`` says
why not; every conf/ key is a field. Other scales set other values on purpose.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from asiarch.agents import AgentsConfig
from asiarch.arch import SEEDS
from asiarch.arch.model import ModelConfig
from asiarch.campaign.settings import CampaignSettings, ExploreSettings, RunSettings, VerifySettings
from asiarch.checks import CheckOptions
from asiarch.sandbox import SandboxOptions
from asiarch.storage import StorageSettings
from asiarch.config import ScaleConfig, compose
from asiarch.llm.anthropic_backend import AnthropicConfig
from asiarch.proposer import OfflineBackend

# Fields that conf/ deliberately leaves out, and why.
NOT_IN_CONF: dict[type, dict[str, str]] = {
    ModelConfig: {"vocab_size": "set at run time from the tokenizer plus the MQAR tokens"},
    AnthropicConfig: {"api_key": "a secret: read from ANTHROPIC_API_KEY, never written into a config file"},
    CheckOptions: {"policy": "the sandbox's import allow-list is part of the code, not a setting"},
}

# The sections of conf/config.yaml typed by a dataclass.
SECTIONS: dict[str, type] = {
    "campaign": CampaignSettings,
    "explore": ExploreSettings,
    "verify": VerifySettings,
    "run": RunSettings,
    "agents": AgentsConfig,
    "checks": CheckOptions,
    "sandbox": SandboxOptions,
    "storage": StorageSettings,
    "scale": ScaleConfig,
}
# The sections typed by a function's keyword arguments, or checked by hand below.
OTHER_SECTIONS = {"llm", "fitness", "seeds"}


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, so a dataclass's ``(0.9, 0.95)`` equals YAML's ``[0.9, 0.95]``."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _field_default(f: dataclasses.Field, owner: Any) -> Any:
    """The field's value on ``owner`` (a default instance), else its declared default, else MISSING."""
    if owner is not None:
        return getattr(owner, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def dataclass_problems(kind: type, values: Mapping[str, Any], where: str, owner: Any = None) -> list[str]:
    """Where ``kind``'s defaults (or ``owner``'s values) and the conf/ section ``values`` disagree."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    hints = typing.get_type_hints(kind)
    exempt = NOT_IN_CONF.get(kind, {})
    problems = [f"{where}.{key}: set in conf/ but {kind.__name__} has no such field" for key in sorted(set(values) - set(fields))]
    for name, f in fields.items():
        if name in exempt:
            if name in values:
                problems.append(f"{where}.{name}: in conf/ although NOT_IN_CONF says {exempt[name]!r}")
            continue
        if name not in values:
            problems.append(f"{where}.{name}: {kind.__name__} field missing from conf/")
            continue
        default = _field_default(f, owner)
        nested = hints[name] if dataclasses.is_dataclass(hints[name]) else None
        if nested is not None and isinstance(values[name], Mapping):
            problems += dataclass_problems(nested, values[name], f"{where}.{name}", None if default is dataclasses.MISSING else default)
        elif default is not dataclasses.MISSING and _plain(default) != _plain(values[name]):
            problems.append(f"{where}.{name}: conf/ sets {values[name]!r}, {kind.__name__} defaults to {default!r}")
    return problems


def signature_problems(fn: Callable[..., Any], values: Mapping[str, Any], where: str, ignore: set[str]) -> list[str]:
    """The same comparison for a section whose keys are keyword arguments of ``fn``."""
    params = {p.name: p for p in inspect.signature(fn).parameters.values() if p.default is not inspect.Parameter.empty}
    keys = set(values) - ignore
    problems = [f"{where}.{key}: set in conf/ but {fn.__qualname__} has no such keyword" for key in sorted(keys - set(params))]
    problems += [f"{where}.{name}: keyword of {fn.__qualname__} missing from conf/" for name in sorted(set(params) - keys)]
    problems += [f"{where}.{name}: conf/ sets {values[name]!r}, {fn.__qualname__} defaults to {params[name].default!r}"
                 for name in sorted(keys & set(params)) if _plain(params[name].default) != _plain(values[name])]
    return problems


def _section(overrides: list[str], key: str) -> dict[str, Any]:
    return OmegaConf.to_container(compose(overrides)[key], resolve=True)


def test_every_top_level_section_is_checked():
    assert set(compose()) == set(SECTIONS) | OTHER_SECTIONS


@pytest.mark.parametrize("key", sorted(SECTIONS))
def test_config_sections_agree_with_their_dataclass(key):
    problems = dataclass_problems(SECTIONS[key], _section([], key), key)
    assert not problems, "\n".join(problems)


def test_default_scale_is_the_one_the_scale_dataclasses_mirror():
    assert compose().scale.name == "cpu_tiny"


def test_llm_options_agree_with_their_backends():
    anthropic, offline, auto = (_section([f"llm={name}"], "llm") for name in ("anthropic", "offline", "auto"))
    problems = dataclass_problems(AnthropicConfig, {k: v for k, v in anthropic.items() if k != "name"}, "llm=anthropic")
    problems += signature_problems(OfflineBackend.__init__, offline, "llm=offline", {"name"})
    auto_offline = auto.pop("offline", {})
    problems += dataclass_problems(AnthropicConfig, {k: v for k, v in auto.items() if k != "name"}, "llm=auto")
    problems += signature_problems(OfflineBackend.__init__, auto_offline, "llm=auto: offline", {"name"})
    assert (anthropic["name"], offline["name"], auto["name"]) == ("anthropic", "offline", "auto")
    assert not problems, "\n".join(problems)


def test_fitness_section_agrees_with_its_function():
    fitness = _section([], "fitness")
    assert fitness["_partial_"] is True
    problems = signature_problems(get_method(fitness["_target_"]), fitness, "fitness", {"_target_", "_partial_"})
    assert not problems, "\n".join(problems)


def test_seeds_are_known_architectures():
    seeds = _section([], "seeds")
    assert seeds and set(seeds) <= set(SEEDS), f"unknown seed(s) {sorted(set(seeds) - set(SEEDS))}"


def test_the_walk_catches_a_disagreement_a_missing_field_and_an_unknown_key():
    values = _section([], "explore")
    values["grace_fraction"] = 0.25
    values["grace_fractoin"] = 0.5
    values.pop("metric")
    problems = "\n".join(dataclass_problems(ExploreSettings, values, "explore"))
    assert "explore.grace_fraction: conf/ sets 0.25, ExploreSettings defaults to 0.5" in problems
    assert "explore.grace_fractoin: set in conf/ but ExploreSettings has no such field" in problems
    assert "explore.metric: ExploreSettings field missing from conf/" in problems
