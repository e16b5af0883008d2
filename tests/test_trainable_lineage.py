"""Which training seed's weights a verify run ended on: the trainable's lineage, kept beside each checkpoint.

PBT clones one member's checkpoint into another; the runs then share weights and are not
independent samples (``scoring.independent_samples``). The lineage is written by the Tune
trainable, never by a candidate's process, so a trainer file that claims another training
seed changes nothing. ``run_trial`` itself runs here, with Tune's session stubbed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from asiarch.campaign import trainable
from asiarch.campaign.trainable import LINEAGE_FILE, run_trial
from test_trainable_blame import FakeTune, tiny_trial_inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_trial_inputs(tmp_path_factory.mktemp("cache"))


class KeepingTune(FakeTune):
    """Tune's session starting from ``start`` and keeping a copy of every checkpoint reported."""

    def __init__(self, folder, start=None):
        super().__init__()
        self.folder, self.start, self.saved = folder, start, []

    def get_checkpoint(self):
        return self.start

    def report(self, metrics, checkpoint=None):
        if checkpoint is not None:
            kept = self.folder / f"checkpoint-{len(self.saved)}"
            shutil.copytree(checkpoint.path, kept)
            self.saved.append(trainable.tune.Checkpoint.from_directory(str(kept)))
        super().report(metrics)


def seed_config(training_seed: int, design: str = "deltanet") -> dict:
    return {"kind": "seed", "design": design, "name": "deltanet", "code": "", "stage": "explore",
            "training_seed": training_seed, "lr": 1e-3}


def train(tmp_path, monkeypatch, tiny, training_seed, start=None, name="run", design="deltanet"):
    folder = tmp_path / name
    folder.mkdir()
    session = KeepingTune(folder, start)
    monkeypatch.setattr(trainable, "tune", session)
    run_trial(seed_config(training_seed, design), *tiny)
    return session


def test_a_clone_runs_on_the_weights_of_the_member_it_copied(tiny, tmp_path, monkeypatch):
    own = train(tmp_path, monkeypatch, tiny, 0, name="seed0")
    assert {(r["weights_of"], r["clones"]) for r in own.reports} == {(0, 0)}
    written = json.loads(Path(own.saved[0].path, LINEAGE_FILE).read_text())
    assert written == {"design": "deltanet", "training_seed": 0, "weights_of": 0, "clones": 0}

    clone = train(tmp_path, monkeypatch, tiny, 1, start=own.saved[0], name="seed1")  # PBT: seed 1 takes seed 0's
    assert clone.reports[-1]["final"] and (clone.reports[-1]["weights_of"], clone.reports[-1]["clones"]) == (0, 1)
    assert {r["weights_of"] for r in clone.reports} == {0}

    resumed = train(tmp_path, monkeypatch, tiny, 1, start=clone.saved[0], name="seed1-again")  # its own checkpoint
    assert (resumed.reports[-1]["weights_of"], resumed.reports[-1]["clones"]) == (0, 1)  # not a second clone


def test_the_lineage_is_the_trainables_not_the_trainer_files(tiny, tmp_path, monkeypatch):
    own = train(tmp_path, monkeypatch, tiny, 0, name="seed0")
    forged = tmp_path / "forged"
    shutil.copytree(own.saved[0].path, forged)
    saved = torch.load(forged / "trainer.pt", weights_only=True)
    torch.save({**saved, "training_seed": 1}, forged / "trainer.pt")  # what a candidate's process could write
    start = trainable.tune.Checkpoint.from_directory(str(forged))
    clone = train(tmp_path, monkeypatch, tiny, 1, start=start, name="seed1")
    assert (clone.reports[-1]["weights_of"], clone.reports[-1]["clones"]) == (0, 1)

    with pytest.raises(RuntimeError, match="checkpoint of design 'deltanet' offered to design 'other'"):
        train(tmp_path, monkeypatch, tiny, 1, start=start, name="other", design="other")

    (forged / LINEAGE_FILE).unlink()  # a checkpoint from before lineages were kept: its trainer file is all there is
    legacy = train(tmp_path, monkeypatch, tiny, 1, start=start, name="legacy")
    assert (legacy.reports[-1]["weights_of"], legacy.reports[-1]["clones"]) == (1, 0)
