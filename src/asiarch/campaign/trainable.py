"""The Tune trainable: one design (candidate or seed) trained at one stage of the funnel.

It runs in a Tune trial worker, never in the driver: the candidate's class is loaded from
its source here. Every evaluation is a ``tune.report`` with a checkpoint of the full
trainer state, so ASHA can stop it, PBT can clone it and a restarted campaign continues
it. An error raised through the candidate's own code is reported as a result
(``code_error``) instead of raised: retrying a deterministic bug would only burn compute,
and the Engineer repairs it. Any other error (data, Ray, memory, the harness) is raised, so
Tune retries the trial as an infrastructure fault (``FailureConfig.max_failures``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import traceback
from dataclasses import replace
from typing import Any

import torch
from ray import tune

from asiarch.config import ScaleConfig
from asiarch.train.protocol import TrialData, train_mixer

FINISHED_STATUSES = ("stopped", "finished", "failed")  # an explore result already in the memory


def trial_scale(scale: ScaleConfig, config: dict[str, Any]) -> ScaleConfig:
    """The stage's scale with this trial's training seed and learning rate."""
    train = replace(scale.train, seed=int(config.get("training_seed", scale.train.seed)),
                    lr=float(config.get("lr", scale.train.lr)))
    return replace(scale, train=train)


def _mixer_class(config: dict[str, Any]):
    if config["kind"] != "candidate":  # a seed of the campaign
        from asiarch.arch import SEEDS

        return SEEDS[config["name"]]
    from asiarch.arch import load_mixer_class

    return load_mixer_class(config["code"])


def _already_trained(config: dict[str, Any], memory_uri: str | None) -> dict[str, Any] | None:
    """The stored explore result of a candidate trained before the driver restarted, if any."""
    if memory_uri is None or config["kind"] != "candidate" or config["stage"] != "explore":
        return None
    from asiarch.memory import Memory

    c = Memory(memory_uri, read_only=True).get_candidate(config["design"])
    if c is None or c.status not in FINISHED_STATUSES or c.explore.eval_loss is None:
        return None
    return {"eval_loss": c.explore.eval_loss, "mqar_accuracy": c.explore.mqar_accuracy,
            "tokens_seen": c.tokens_trained, "already_trained": True}


def candidate_at_fault(err: BaseException) -> bool:
    """Whether a training error is the candidate's: raised through its own code, memory aside.

    The candidate's frames decide (``asiarch.arch.contract.candidate_frames``, the rule the
    checks use too): a torch error inside a call the candidate made is the candidate's, an
    error in data loading, Ray or the harness is not. Running out of memory never is: it
    depends on what else shares the device, and the checks already bound the candidate's
    memory.
    """
    from asiarch.arch.contract import CandidateLoadError, candidate_frames

    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return False
    return isinstance(err, CandidateLoadError) or bool(candidate_frames(err))


def _data_seed(training_seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{training_seed}:{step}".encode()).digest()[:8], "little")


def run_trial(config: dict[str, Any], scales: dict[str, ScaleConfig], data: dict[str, TrialData],
              memory_uri: str | None = None, downstream: bool = False) -> None:
    """Train ``config``'s design at ``config['stage']``; report every evaluation to Tune."""
    stage = config["stage"]
    done = _already_trained(config, memory_uri)
    if done is not None:
        tune.report(done)
        return
    scale = trial_scale(scales[stage], config)
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(os.path.join(folder, "trainer.pt"), map_location=scale.train.device,
                               weights_only=True)  # never unpickle objects a candidate chose (get_extra_state)
        if saved.get("design", config.get("design")) != config.get("design"):  # PBT clones within a design only
            raise RuntimeError(f"checkpoint of design {saved['design']!r} offered to design {config.get('design')!r}")
        state = saved["trainer"]
        if saved.get("training_seed") != scale.train.seed:
            # PBT cloned another member: keep its weights, but this member keeps its own data stream
            generator = torch.Generator().manual_seed(_data_seed(scale.train.seed, state["step"]))
            state["generator"] = generator.get_state()
    holder: dict[str, Any] = {}

    def report(metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"trainer": holder["trainer"].state_dict(), "training_seed": scale.train.seed,
                        "design": config.get("design")}, os.path.join(folder, "trainer.pt"))
            tune.report({**metrics, "total_steps": scale.train.steps}, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        mixer = _mixer_class(config)
        summary = train_mixer(mixer, scale, data[stage], report=report, downstream=downstream, state=state,
                              on_trainer=lambda trainer: holder.__setitem__("trainer", trainer))
    except Exception as err:
        if not candidate_at_fault(err):
            raise  # an infrastructure fault: Tune retries the trial
        # the candidate's code failed: a result for the Engineer, not a Tune retry
        tune.report({"code_error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-8)}",
                     "tokens_seen": holder["trainer"].tokens_seen if "trainer" in holder else 0})
        return
    final = {k: summary.get(k) for k in ("eval_loss", "mqar_accuracy", "train_loss", "tokens_seen", "parameters",
                                         "tokens_per_second", "downstream_mean")
             if summary.get(k) is not None}
    final.update(stop_reason=summary["stop_reason"], stop_message=summary["stop_message"], final=True,
                 total_steps=scale.train.steps, step=summary["steps"])
    if summary["stop_reason"] == "non_finite_loss" and config["kind"] == "candidate":
        final["code_error"] = f"training diverged: {summary['stop_message']}"
    tune.report(final)
