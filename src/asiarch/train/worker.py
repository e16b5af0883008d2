"""A training trial's worker: ``python -m asiarch.train.worker`` runs one candidate's training in the sandbox.

The parent (``asiarch.train.sandboxed``) writes the trial's inputs (scale, data, resume
state) into a fresh scratch directory and starts this process. It isolates itself
(``asiarch.sandbox``), reads the inputs and imports what it trusts, locks down, and only
then executes the candidate's source. Its data holds no evaluation set: each evaluation step
becomes a checkpoint file in the scratch directory and one nonce-stamped line with the
training numbers, and the parent evaluates that checkpoint in another fresh process. Mode
``audit`` is that process: it runs given inputs through given weights and returns the
model's features (the evaluation sets, the causality audit's rows with a secret suffix
replaced, the downstream batches); the parent keeps the targets and answers, applies the
checkpoint's head and scores.
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

    # written by the trusted parent and read before any candidate code exists in this process; its data holds
    # no evaluation set (TrialData.training_only): the parent evaluates every checkpoint in another process
    inputs = torch.load(request["inputs"], weights_only=False)
    scale, data, state = inputs["scale"], inputs["data"], inputs["state"]
    torch.set_num_threads(scale.torch_threads)
    _warm_up()
    workdir, more = lock_down(request["limits"], request["scratch"], isolated=not gaps,
                              hide=request.get("hide", ()))
    emit({"sandbox": gaps + more})
    holder: dict[str, Any] = {}

    def save_checkpoint() -> str:
        trainer = holder["trainer"]
        name = f"report-{trainer.step}.pt"
        torch.save({"trainer": trainer.state_dict(), "training_seed": scale.train.seed, "design": request["design"]},
                   os.path.join(workdir, name))
        return name

    def report(metrics: dict[str, float]) -> None:
        emit({"report": metrics, "checkpoint": save_checkpoint()})  # the parent evaluates the checkpoint
        holder["reported_at"] = holder["trainer"].step

    try:
        mixer = load_mixer_class(request["source"])
        # nothing is evaluated here (no evaluation data, no downstream sets): the parent evaluates the checkpoints
        summary = train_mixer(mixer, scale, data, report=report, downstream=False, state=state, evaluate=False,
                              on_trainer=lambda trainer: holder.__setitem__("trainer", trainer))
        final = {"final": {k: v for k, v in summary.items() if k != "history" and k != "downstream"}}
        if holder.get("reported_at") != summary["steps"] and summary["stop_reason"] != "non_finite_loss":
            # stopped between evaluations (wall time), or resumed where it had ended: the weights it stands with
            final["checkpoint"] = save_checkpoint()
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
            size = scale.train.batch_size  # the rows of an evaluation set in batches, as the trainer ran them
            features: dict[str, Any] = {task: torch.cat([model.features(rows[i : i + size].to(device)).float().cpu()
                                                         for i in range(0, len(rows), size)])
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
