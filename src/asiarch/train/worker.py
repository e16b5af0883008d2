"""A training trial's worker: ``python -m asiarch.train.worker`` runs one candidate's training in the sandbox.

The parent (``asiarch.train.sandboxed``) writes the trial's inputs (scale, data, resume
state) into a fresh scratch directory and starts this process. It isolates itself
(``asiarch.sandbox``), reads the inputs and imports what it trusts, locks down, and only
then executes the candidate's source. Each evaluation becomes a checkpoint file in the
scratch directory and one nonce-stamped line; the final evaluation (and each ASHA rung's)
also leaves the model's features on the evaluation sets, which the parent turns into
logits with the checkpoint's head, scores and audits itself. Mode ``audit`` runs given inputs
through given weights in a fresh process: the second half of the parent's causality audit,
and the downstream evaluation (the parent keeps the answers, applies the head and scores).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Callable

from asiarch.sandbox import Channel, isolate, lock_down

Emit = Callable[[dict[str, Any]], None]


def main() -> int:
    request = json.loads(sys.stdin.read())
    gaps = isolate()
    channel = Channel(request.pop("nonce"))
    try:
        return (audit if request["mode"] == "audit" else train)(request, channel.emit, gaps)
    except BaseException as err:  # noqa: BLE001 - the harness failed outside the candidate's code
        channel.emit({"infra_error": f"{type(err).__name__}: {err}"[-2000:],
                      "traceback": traceback.format_exc(limit=-6)[-4000:]})
        return 1
    finally:
        channel.emit({"done": True})


def _warm_up() -> None:
    """Import what training imports lazily (the optimizer), while the interpreter can still read everything."""
    import torch

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    weight.sum().backward()
    torch.nn.utils.clip_grad_norm_([weight], 1.0)
    optimizer.step()


def train(request: dict[str, Any], emit: Emit, gaps: list[str]) -> int:
    import torch

    from asiarch.arch.contract import candidate_at_fault, load_mixer_class
    from asiarch.train.protocol import train_mixer
    from asiarch.train.trainer import passes_rungs

    # written by the trusted parent and read before any candidate code exists in this process
    inputs = torch.load(request["inputs"], weights_only=False)
    scale, data, state = inputs["scale"], inputs["data"], inputs["state"]
    torch.set_num_threads(scale.torch_threads)
    _warm_up()
    workdir, more = lock_down(request["limits"], request["scratch"], isolated=not gaps,
                              hide=request.get("hide", ()))
    emit({"sandbox": gaps + more})
    holder: dict[str, Any] = {}

    def save_outputs(step: int) -> str:
        name = f"outputs-{step}.pt"
        torch.save(holder["trainer"].eval_outputs(), os.path.join(workdir, name))
        return name

    def save_checkpoint() -> str:
        trainer = holder["trainer"]
        name = f"report-{trainer.step}.pt"
        torch.save({"trainer": trainer.state_dict(), "training_seed": scale.train.seed, "design": request["design"]},
                   os.path.join(workdir, name))
        return name

    verify_tokens = sorted(int(t) for t in request.get("verify_tokens", ()))  # the ASHA rungs, in tokens

    def report(metrics: dict[str, float]) -> None:
        trainer = holder["trainer"]
        record = {"report": metrics, "checkpoint": save_checkpoint()}
        # the final evaluation and the first one at or past each rung: the parent scores their raw outputs
        if passes_rungs(trainer.tokens_seen, verify_tokens) or trainer.step == scale.train.steps:
            record["outputs"] = save_outputs(trainer.step)
            holder["scored_at"] = trainer.step
        emit(record)

    try:
        mixer = load_mixer_class(request["source"])
        # downstream scores are never computed here: the parent scores the final weights in a fresh process
        summary = train_mixer(mixer, scale, data, report=report, downstream=False, state=state,
                              on_trainer=lambda trainer: holder.__setitem__("trainer", trainer))
        final = {"final": {k: v for k, v in summary.items() if k != "history" and k != "downstream"}}
        if holder.get("scored_at") != summary["steps"] and summary["stop_reason"] != "non_finite_loss":
            # stopped early (wall time), or resumed where it had ended: scored as it stands, audited with the
            # weights it stands with (the parent scores the numbers a run ends with from their outputs)
            final.update(outputs=save_outputs(summary["steps"]), checkpoint=save_checkpoint())
        emit(final)
    except BaseException as err:  # noqa: BLE001 - SystemExit, MemoryError ... may come from the candidate
        if not candidate_at_fault(err):
            raise
        emit({"code_error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-8)}",
              "tokens_seen": holder["trainer"].tokens_seen if "trainer" in holder else 0})
    return 0


def audit(request: dict[str, Any], emit: Emit, gaps: list[str]) -> int:
    """Features (``LanguageModel.features``) of the audit rows under the saved weights, in eval mode, in this
    fresh process; with ``choices`` (downstream batches: inputs and continuation masks, never the answers) the
    features at their continuations. The parent applies the harness's head."""
    import torch

    from asiarch.arch.contract import load_mixer_class
    from asiarch.arch.model import LanguageModel
    from asiarch.data.downstream import continuation_outputs

    inputs = torch.load(request["inputs"], weights_only=False)  # the trusted parent's
    scale = inputs["scale"]
    torch.set_num_threads(scale.torch_threads)
    weights = torch.load(request["checkpoint"], weights_only=True)["trainer"]["model"]
    workdir, more = lock_down(request["limits"], request["scratch"], isolated=not gaps,
                              hide=request.get("hide", ()))
    emit({"sandbox": gaps + more})
    try:
        mixer = load_mixer_class(request["source"])
        device = torch.device(scale.train.device)
        model = LanguageModel(replace(scale.model, vocab_size=inputs["vocab_size"]), mixer).to(device)
        model.load_state_dict(weights)
        model.eval()
        # the trainer's precision: bf16 autocast on CUDA, fp32 on the CPU
        precision = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        with torch.no_grad(), precision:
            features: dict[str, Any] = {task: model.features(rows.to(device)).float().cpu()
                                        for task, rows in inputs["rows"].items() if len(rows)}
        with torch.no_grad():  # as evaluate_downstream scores the seeds: no autocast
            features["choices"] = {task: continuation_outputs(model.features, batches, device)
                                   for task, batches in inputs.get("choices", {}).items()}
        torch.save(features, os.path.join(workdir, "audit.pt"))
    except BaseException as err:  # noqa: BLE001 - whatever fails here, the candidate's weights or code did it
        emit({"code_error": f"the audit could not re-run the final weights: {type(err).__name__}: {err}"})
        return 0
    emit({"audit": "audit.pt"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
