"""The Hydra tree in conf/ stays true to the dataclasses, and bad keys are named."""

from __future__ import annotations

import dataclasses
import re

import pytest
from omegaconf import OmegaConf

from asiarch.config import ScaleConfig, compose, load_scale

SCALES = ["cpu_tiny", "paper_20m", "paper_340m"]
DERIVED = {("model", "vocab_size")}  # filled in from the data at run time


@pytest.mark.parametrize("name", SCALES)
def test_every_field_is_in_the_yaml_so_every_field_can_be_overridden(name):
    values = OmegaConf.to_container(compose([f"scale={name}"]).scale)
    scale = ScaleConfig.from_dict(values)
    assert set(values) == {f.name for f in dataclasses.fields(ScaleConfig)}, f"conf/scale/{name}.yaml: top-level keys"
    for section in ("model", "train", "mqar", "corpus", "downstream", "stages"):
        fields = {f.name for f in dataclasses.fields(getattr(scale, section))}
        missing = {f for f in fields - set(values[section]) if (section, f) not in DERIVED}
        assert not missing, f"conf/scale/{name}.yaml: scale.{section} lacks {sorted(missing)}"


def test_overrides_reach_the_dataclasses():
    scale = load_scale(["scale=cpu_tiny", "scale.train.steps=7", "scale.model.num_layers=3", "scale.corpus.source=huggingface"])
    assert (scale.train.steps, scale.model.num_layers, scale.corpus.source) == (7, 3, "huggingface")


def test_default_scale_is_cpu_tiny():
    assert compose().scale.name == "cpu_tiny"


def test_unknown_and_invalid_keys_are_named():
    values = OmegaConf.to_container(compose().scale)
    values["train"]["shedule"] = "cosine"
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['shedule'\] in config section 'scale.train'"):
        ScaleConfig.from_dict(values)
    values["train"].pop("shedule")
    values["train"]["schedule"] = "linear"
    with pytest.raises(ValueError, match="invalid config section 'scale.train': schedule must be"):
        ScaleConfig.from_dict(values)


def test_a_longer_stage_gets_the_wall_budget_in_proportion():
    """A design slower than the anchor but within training QA's factor was cut short by verify's wall budget
    at cpu_tiny (4x explore's steps, one budget); the budget is per train.steps, and longer stages scale it."""
    from asiarch.config import stage_scale

    base = load_scale("cpu_tiny")
    wall, steps = base.train.max_wall_seconds, base.train.steps
    explore = stage_scale(base, base.stages.explore_steps)
    verify = stage_scale(base, base.stages.verify_steps)
    assert base.stages.explore_steps < steps < base.stages.verify_steps  # the shape this test reads
    assert explore.train.max_wall_seconds == wall  # a shorter stage keeps it: tests' few-step runs are not cut
    assert verify.train.max_wall_seconds == pytest.approx(wall * base.stages.verify_steps / steps)
    assert verify.train.max_wall_seconds / verify.train.steps == pytest.approx(wall / steps)
    unlimited = dataclasses.replace(base, train=dataclasses.replace(base.train, max_wall_seconds=None))
    assert stage_scale(unlimited, 10 * steps).train.max_wall_seconds is None


def test_explore_trains_the_head_of_a_verify_run_or_a_whole_schedule():
    from asiarch.config import explore_scale

    base = load_scale("cpu_tiny")
    head = explore_scale(base)
    assert head.train.steps == base.stages.explore_steps and head.train.schedule_steps == base.stages.verify_steps
    whole = explore_scale(load_scale(["scale=cpu_tiny", "scale.stages.explore_schedule=explore"]))
    assert whole.train.steps == base.stages.explore_steps and whole.train.schedule_steps is None
    with pytest.raises(ValueError, match="explore_schedule must be"):
        load_scale(["scale=cpu_tiny", "scale.stages.explore_schedule=longer"])
    with pytest.raises(ValueError, match="verify runs at 'paper_340m'"):  # another scale: no run to be the head of
        load_scale(["scale=paper_20m", "scale.stages.explore_schedule=verify"])
    assert explore_scale(load_scale("paper_20m")).train.schedule_steps is None


def test_values_of_the_wrong_type_are_named_with_their_section():
    """Hydra's overrides and the YAML carry no types: the dataclasses' hints are checked where a section is
    built, so a typo fails at start-up instead of inside every trial."""
    from asiarch.campaign.settings import VerifySettings, section
    from asiarch.checks import CheckOptions
    from asiarch.config import build_dataclass

    for override, message in [("scale.train.lr=abc", "'scale.train': lr must be a number, got 'abc'"),
                              ("scale.model.hidden_size=1.5", "'scale.model': hidden_size must be an integer"),
                              ("scale.train.steps=true", "'scale.train': steps must be an integer, got True"),
                              ("scale.corpus.max_documents=many", "max_documents must be an integer or null")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            load_scale(["scale=cpu_tiny", override])
    with pytest.raises(ValueError, match=re.escape("training_seeds must be a list of integers, got ['a']")):
        section({"verify": {"training_seeds": ["a"]}}, "verify", VerifySettings)
    with pytest.raises(ValueError, match=re.escape("param_band must be a list of 2 (a number, a number)")):
        build_dataclass(CheckOptions, {"param_band": [0.5]}, "checks")
    # what YAML writes for these types still builds: an integer where a number is asked, null where it may be
    scale = load_scale(["scale=cpu_tiny", "scale.train.lr=1", "scale.corpus.max_documents=null"])
    assert scale.train.lr == 1 and scale.corpus.max_documents is None
    assert build_dataclass(CheckOptions, {"param_band": [1, 2.5], "checks": None}, "checks").param_band == (1, 2.5)
