"""The Tune trainable: one design (candidate or seed) trained at one stage of the funnel.

A seed (trusted code) trains in this Tune worker. A candidate never loads here: it trains
in the sandbox (``asiarch.train.sandboxed``), which hands back checkpoints as plain tensors
and a final evaluation scored and audited outside the candidate's process. Every
evaluation is a ``tune.report`` with a checkpoint of the full trainer state, so ASHA can
stop it, PBT can clone it and a restarted campaign continues it. Beside the trainer state each
checkpoint holds ``lineage.json``, written here and never in a candidate's process: whose
initial weights the state descends from (``weights_of``, a training seed) and how often PBT
replaced this member's weights with another's (``clones``). Every report carries both, so
verify counts runs that share weights as one (``scoring.independent_values``). An error raised through
the candidate's own code (or results the parent refuses) is reported as a result
(``code_error``) instead of raised: retrying a deterministic bug would only burn compute,
and the Engineer repairs it. Any other error (data, Ray, memory, the harness) is raised, so
Tune retries the trial as an infrastructure fault (``FailureConfig.max_failures``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Any, Callable, Sequence

import ray
import torch
from ray import tune

from asiarch.arch import SEEDS
from asiarch.checks import ParameterBudget
from asiarch.config import ScaleConfig
from asiarch.sandbox import SandboxOptions
from asiarch.train.protocol import TrialData, train_mixer
from asiarch.train.qa import QAMonitor, TrainingQA
from asiarch.train.sandboxed import train_in_sandbox
from asiarch.train.trainer import MQAR_SCORES

FINISHED_STATUSES = ("stopped", "finished", "failed")  # an explore result already in the memory
LINEAGE_FILE = "lineage.json"  # beside trainer.pt in every checkpoint: written by this process only


def trial_scale(scale: ScaleConfig, config: dict[str, Any]) -> ScaleConfig:
    """The stage's scale with this trial's training seed and learning rate."""
    train = replace(scale.train, seed=int(config.get("training_seed", scale.train.seed)),
                    lr=float(config.get("lr", scale.train.lr)))
    return replace(scale, train=train)


def _already_trained(config: dict[str, Any], memory: Any) -> dict[str, Any] | None:
    """The stored explore result of a candidate trained before the driver restarted, if any (read through the
    campaign's memory writer: a trial process never loads LanceDB)."""
    if memory is None or config["kind"] != "candidate" or config["stage"] != "explore":
        return None
    c = ray.get(memory.get_candidate.remote(config["design"]))
    if c is None or c.status not in FINISHED_STATUSES or c.explore.eval_loss is None:
        return None
    return {"eval_loss": c.explore.eval_loss, "mqar_accuracy": c.explore.mqar_accuracy,
            "tokens_seen": c.tokens_trained, "already_trained": True}


def _data_seed(training_seed: int, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{training_seed}:{step}".encode()).digest()[:8], "little")


def run_trial(config: dict[str, Any], scales: dict[str, ScaleConfig], data: dict[str, TrialData],
              memory: Any = None, downstream: bool = False, sandbox: SandboxOptions | None = None,
              rung_tokens: Sequence[int] = (), budget: ParameterBudget | None = None) -> None:
    """Train ``config``'s design at ``config['stage']``; report every evaluation to Tune.

    ``memory``: the campaign's ``MemoryActor`` (explore looks up candidates a restarted driver already had
    trained).
    ``rung_tokens``: where the stage's scheduler decides (ASHA's rungs, in tokens); a
    candidate's evaluations there are verified outside its process, as its final one is.
    ``budget``: the parameter budget a candidate's checkpoints are held to (``CheckOptions.parameter_budget()``)."""
    stage = config["stage"]
    done = _already_trained(config, memory)
    if done is not None:
        tune.report(done)
        return
    scale = trial_scale(scales[stage], config)
    state, lineage = None, {"design": config.get("design"), "training_seed": scale.train.seed,
                            "weights_of": scale.train.seed, "clones": 0}
    # Tune's own restore, or the last checkpoint of this candidate's crashed trial (``CampaignPipeline.keep_checkpoint``)
    checkpoint = tune.get_checkpoint() or config.get("resume_from")
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = torch.load(os.path.join(folder, "trainer.pt"), map_location=scale.train.device,
                               weights_only=True)  # never unpickle objects a candidate chose (get_extra_state)
            written = _read_lineage(folder, saved, config.get("design"))
        if written["design"] != config.get("design"):  # PBT clones within a design only
            raise RuntimeError(f"checkpoint of design {written['design']!r} offered to design {config.get('design')!r}")
        state = saved["trainer"]
        lineage.update(weights_of=written["weights_of"], clones=written["clones"])
        if written["training_seed"] != scale.train.seed:
            # PBT cloned another member: keep its weights, but this member keeps its own data stream
            generator = torch.Generator().manual_seed(_data_seed(scale.train.seed, state["step"]))
            state["generator"] = generator.get_state()
            lineage["clones"] += 1
    if config["kind"] == "candidate":
        _train_candidate(config, scale, data[stage], state, downstream, sandbox, rung_tokens, budget, lineage)
        return
    holder: dict[str, Any] = {}

    def report(metrics: dict[str, float]) -> None:
        _report_with_checkpoint(metrics, scale, lambda path: torch.save(
            {"trainer": holder["trainer"].state_dict(), "training_seed": scale.train.seed,
             "design": config.get("design")}, path), lineage)

    summary = train_mixer(SEEDS[config["name"]], scale, data[stage], report=report, downstream=downstream,
                          state=state, on_trainer=lambda trainer: holder.__setitem__("trainer", trainer))
    tune.report({**_final_report(summary, scale, candidate=False), **_lineage_metrics(lineage)})


def _read_lineage(folder: str, saved: dict[str, Any], design: str | None) -> dict[str, Any]:
    """The lineage this process wrote beside a checkpoint's trainer state. A checkpoint from before lineages
    were kept falls back on the trainer file's own fields (a candidate's process wrote those: trusted only
    for such old checkpoints) and on the state being its own member's weights."""
    path = os.path.join(folder, LINEAGE_FILE)
    if os.path.exists(path):
        with open(path) as f:
            written = json.load(f)
        return {"design": written["design"], "training_seed": int(written["training_seed"]),
                "weights_of": int(written["weights_of"]), "clones": int(written["clones"])}
    seed = saved.get("training_seed")
    return {"design": saved.get("design", design), "training_seed": seed, "weights_of": seed, "clones": 0}


def _lineage_metrics(lineage: dict[str, Any]) -> dict[str, int]:
    return {"weights_of": int(lineage["weights_of"]), "clones": int(lineage["clones"])}


def _train_candidate(config: dict[str, Any], scale: ScaleConfig, data: TrialData, state: dict[str, Any] | None,
                     downstream: bool, options: SandboxOptions | None, rung_tokens: Sequence[int],
                     budget: ParameterBudget | None, lineage: dict[str, Any]) -> None:
    """A candidate trains only in the sandbox (``asiarch.train.sandboxed``); this process never loads its code."""

    def report(metrics: dict[str, float], checkpoint_file: str) -> None:
        _report_with_checkpoint(metrics, scale, lambda path: shutil.copyfile(checkpoint_file, path), lineage)

    qa = _qa_monitor(config.get("qa"), scale)
    outcome = train_in_sandbox(config["code"], config.get("design"), scale, data, on_report=report, state=state,
                               downstream=downstream, options=options, qa=qa, verify_tokens=rung_tokens,
                               budget=budget)
    if "code_error" in outcome:  # the candidate's code failed: a result for the Engineer, not a Tune retry
        tune.report({"code_error": outcome["code_error"], "tokens_seen": outcome.get("tokens_seen", 0)})
        return
    if "qa_stopped" in outcome:  # too slow against its seed: stopped as it stands, like an ASHA stop
        tune.report({**outcome["last"], **_lineage_metrics(lineage), "qa_stopped": outcome["qa_stopped"],
                     "total_steps": scale.train.steps})
        return
    final = {**_final_report(outcome["final"], scale, candidate=True), **_lineage_metrics(lineage)}
    if qa is not None and qa.notes:
        final["qa_notes"] = "; ".join(qa.notes)
    tune.report(final)


def _qa_monitor(qa: dict[str, Any] | None, scale: ScaleConfig) -> QAMonitor | None:
    """Training QA against the anchor seed, read from the campaign's pipeline actor once it has it
    (the anchor may still be training when the first candidates start)."""
    if not qa:
        return None
    import ray

    from asiarch.campaign.stage import tokens_per_step

    known: dict[str, Any] = {}

    def reference() -> dict[str, Any] | None:
        if "value" not in known:
            try:
                pipeline = ray.get_actor(qa["pipeline"], namespace=qa.get("namespace"))
                value = ray.get(pipeline.qa_reference.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - no pipeline (a trial run by hand) or a slow one: no QA this time
                return None
            if value is None:
                return None
            known["value"] = value
        return known["value"]

    settings = TrainingQA(slow_factor=qa.get("slow_factor"), leak_fraction=qa.get("leak_fraction"))
    return QAMonitor(settings, reference, tokens_per_report=scale.train.report_every * tokens_per_step(scale))


def _report_with_checkpoint(metrics: dict[str, float], scale: ScaleConfig, write: Callable[[str], Any],
                            lineage: dict[str, Any]) -> None:
    """One evaluation to Tune, with the trainer state ``write(path)`` puts at ``trainer.pt`` and this trial's
    ``lineage`` beside it."""
    with tempfile.TemporaryDirectory() as folder:
        write(os.path.join(folder, "trainer.pt"))
        with open(os.path.join(folder, LINEAGE_FILE), "w") as f:
            json.dump(lineage, f)
        tune.report({**metrics, **_lineage_metrics(lineage), "total_steps": scale.train.steps},
                    checkpoint=tune.Checkpoint.from_directory(folder))


def _final_report(summary: dict[str, Any], scale: ScaleConfig, candidate: bool) -> dict[str, Any]:
    final = {k: summary.get(k) for k in ("eval_loss", *MQAR_SCORES, "train_loss", "tokens_seen", "parameters",
                                         "tokens_per_second", "downstream_mean", "verified", "audited")
             if summary.get(k) is not None}
    final.update(stop_reason=summary["stop_reason"], stop_message=summary["stop_message"], final=True,
                 total_steps=scale.train.steps, step=summary["steps"])
    if summary["stop_reason"] == "non_finite_loss" and candidate:
        final["code_error"] = f"training diverged: {summary['stop_message']}"
    return final
