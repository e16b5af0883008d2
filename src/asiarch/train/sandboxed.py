"""Train a candidate without running it here: the parent's side of ``asiarch.train.worker``.

``train_in_sandbox`` writes the trial's inputs to a fresh scratch directory, starts the
worker in the sandbox, and turns its lines into reports. It trusts nothing the worker
computes:

- the training process never holds an evaluation set (``TrialData.training_only``: no
  validation text, no MQAR test set), so it cannot train on what it is scored on; a design
  that found the evaluation windows in its process and trained on them scored a verified
  loss far below an honest one's;
- every evaluation is the parent's: each report names a checkpoint, which a fresh sandbox
  runs over the evaluation sets (``_evaluate``), returning the model's features before the
  harness's last norm (``LanguageModel.features``); this process applies the norm and head
  with the checkpoint's weights (``HarnessHead``) and scores them with its own torch
  (``trainer.score_outputs``). Features, not logits: hidden_size numbers a position instead
  of a vocabulary's, so the files stay within the scratch limit at the GPU scales too;
- the checkpoints are read weights-only, by names the parent checks (no paths, no links);
- a causality audit re-runs a few evaluation rows through the saved weights in another
  fresh sandbox, with every token after a secret position replaced: the features up to that
  position must equal the evaluated ones. It runs at every evaluation a decision reads: the
  final one, the first at or past each ASHA rung (``verify_tokens``), one training QA stops
  a trial at or flags as implausibly low, and the weights a run ends with between two
  evaluations; and at each other one with ``SandboxOptions.spot_audit_fraction``'s chance,
  drawn here (marked ``audited: 1``).

Every report's step and token count must be the parent's own count of the training loop's
progress, and so must where the run ended (its final summary's step, which says whether it
was cut short: after its last evaluation and before the next one), or the trial is refused.

Downstream scores (``downstream=True``) are never taken from the trial: the final weights
run the downstream batches in a fresh sandbox that holds no answers (the parent keeps the
gold choices and targets, and the wheel's answer files are hidden in its mount namespace),
the parent scores the returned features through the head, and a few multi-token answers are re-run in another
fresh sandbox with the tokens after a secret position replaced (the causality audit again).

Every checkpoint's model state is counted here too (``_StateAudit``): the stored parameter
counts are this count, everything but the mixers must be the training harness as the
harness builds it, and with a ``ParameterBudget`` every layer's mixer must hold the budget
the check applied to the one mixer it built (layer 0).

With a ``QAMonitor`` (``asiarch.train.qa``) the parent also applies training QA: a trial far
slower than its seed is stopped (``{"qa_stopped": reason}``, the evaluation it stands with
audited), and a report whose loss is implausibly far below the seed's is audited for
causality before it is passed on (``leak_checked: 1``), or refused.
"""

from __future__ import annotations

import math
import os
import random
import re
import secrets
import shutil
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from asiarch import sandbox
from asiarch.arch.model import HarnessHead, count_state
from asiarch.checks import ParameterBudget
from asiarch.checks.executable import param_band_violation
from asiarch.config import ScaleConfig
from asiarch.data.corpus import CorpusConfig, source_dirs
from asiarch.data.downstream import ChoiceBatches, downstream_requests, downstream_scores, tasks_root
from asiarch.sandbox import SandboxOptions
from asiarch.train.protocol import TrialData
from asiarch.train.qa import QAMonitor
from asiarch.train.trainer import MQAR_CHUNK, eval_sets, passes_rungs, score_outputs, tokens_after

# what a worker's report may carry; anything else it sends is dropped
# (never a downstream score: the parent measures those itself, see _Trial.score_downstream)
REPORTED = ("step", "tokens_seen", "train_loss", "lr", "grad_norm", "tokens_per_second")
SUMMARY = ("steps", "tokens_seen", "train_loss", "parameters", "non_embedding_parameters", "tokens_per_second",
           "train_seconds")


class SandboxError(RuntimeError):
    """The trial's harness failed inside the sandbox (not the candidate): Tune retries it."""


def _cpu_budget(scale: ScaleConfig) -> int:
    wall = scale.train.max_wall_seconds
    return 10**7 if wall is None else int(2 * wall * max(1, scale.torch_threads) + 600)


def _wall_deadline(scale: ScaleConfig, startup: float) -> float | None:
    """Wall seconds a worker process may run at most (None where the scale sets no wall budget): start-up, the
    training budget twice over and 10 minutes for evaluations and checkpoints, as its CPU-time limit."""
    wall = scale.train.max_wall_seconds
    return None if wall is None else startup + 2 * wall + 600


def _scratch_file(scratch: str, name: Any, pattern: str) -> str:
    """A file the worker named: a plain file directly in its scratch directory, never a link or a path."""
    if not isinstance(name, str) or not re.fullmatch(pattern, name):
        raise ValueError(f"the worker named an unexpected file {str(name)[:80]!r}")
    path = os.path.join(scratch, name)
    if os.path.islink(path) or not os.path.isfile(path):
        raise ValueError(f"{name} is not a plain file")
    return path


def _load(path: str) -> Any:
    """Tensors, lists, dicts and numbers only: a file from the sandbox cannot run code here."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def _numbers(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key in keys:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = value
    return out


MIXER_KEY = re.compile(r"blocks\.(\d+)\.mixer\.")  # a mixer's tensors in the model's state dict


class _NoMixer(torch.nn.Module):
    """A mixer without state: the harness built around it has exactly the harness's tensors."""

    def __init__(self, hidden_size: int, num_heads: int, layer_idx: int | None = None, **kwargs: Any):
        super().__init__()


class _StateAudit:
    """The trainable's own count of the model state in a checkpoint the worker wrote.

    The harness (embeddings, norms, MLPs) is trusted code, but it ran in the candidate's
    process: its tensors must have the names and shapes the harness gives them here (built
    on the meta device around a mixer without state). Each layer's mixer is held to the
    parameter budget; the counts stored for the trial are these, not the worker's.
    """

    def __init__(self, scale: ScaleConfig, data: TrialData, budget: ParameterBudget | None):
        from asiarch.arch.model import LanguageModel

        config = replace(scale.model, vocab_size=data.vocab_size)
        self.layers, self.budget = config.num_layers, budget
        with torch.device("meta"):  # shapes only: no memory, no draw from this process's random generator
            model = LanguageModel(config, _NoMixer)
        self.harness = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        self.reference = (0 if budget is None else
                          budget.reference(config.hidden_size, config.num_heads, dict(config.mixer_kwargs)))

    def __call__(self, checkpoint: Any) -> dict[str, int]:
        trainer = checkpoint.get("trainer") if isinstance(checkpoint, dict) else None
        state = trainer.get("model") if isinstance(trainer, dict) else None
        if (not isinstance(state, dict) or not state
                or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
            raise _Rejected("a checkpoint of the trial carries no model state the trainable can count")
        layer_of = {k: int(m.group(1)) for k in state if (m := MIXER_KEY.match(k))}
        stray = sorted(k for k, layer in layer_of.items() if layer >= self.layers)
        if stray:
            raise _Rejected(f"the trial's checkpoint holds mixer tensors for layers the model does not have: {stray[:3]}")
        theirs = {k: tuple(v.shape) for k, v in state.items() if k not in layer_of}
        if theirs != self.harness:
            differ = sorted(k for k in self.harness.keys() | theirs.keys() if self.harness.get(k) != theirs.get(k))
            raise _Rejected(f"the trial's checkpoint is not the training harness around the candidate's mixers: "
                            f"{len(differ)} tensor(s) differ from the harness's ({', '.join(differ[:3])})")
        if self.budget is not None:
            mixers: list[dict[str, torch.Tensor]] = [{} for _ in range(self.layers)]
            for key, layer in layer_of.items():
                mixers[layer][key] = state[key]
            for layer, mixer in enumerate(mixers):
                violation = param_band_violation(count_state(mixer), self.reference, self.budget.band)
                if violation is not None:
                    raise _Rejected(f"parameter budget: layer {layer}'s mixer in the trial's checkpoint has {violation} "
                                    f"(the check built layer 0's only)")
        total = count_state(state)
        embed = state.get("embed.weight")
        return {"parameters": total, "non_embedding_parameters": total - (embed.numel() if embed is not None else 0)}


def hidden_from_candidates(corpus: CorpusConfig, secret_dirs: Sequence[str], options: SandboxOptions) -> list[str]:
    """Every folder a process running candidate code hides (its checks' and its trials'): the downstream sets'
    answers, the text the validation split is built from and the cache that holds it, where MQAR's test secret
    is kept, and the user's own ``sandbox.hidden_dirs``. The checks too: what a check reads can leave in its
    failure reason, which the Engineer reads and answers with code."""
    root = tasks_root()
    return [*([str(root)] if root is not None else []), *source_dirs(corpus), *secret_dirs, *options.hidden_dirs]


class _Trial:
    def __init__(self, source: str, design: str | None, scale: ScaleConfig, data: TrialData,
                 options: SandboxOptions, budget: ParameterBudget | None = None, downstream: bool = False):
        self.source, self.design, self.scale, self.data, self.options = source, design, scale, data, options
        self.downstream = downstream and bool(scale.downstream.tasks)
        self.choices: dict[str, ChoiceBatches] | None = None  # the downstream requests, built on first use
        self.downstream_scores: dict[str, Any] | None = None  # the last weights' scores, measured here
        self.audit_state = _StateAudit(scale, data, budget)
        self.counted: dict[str, int] = {}  # the last checkpoint's count
        self.heads: dict[str, HarnessHead] = {}  # the last checkpoint's head, by its file
        self.val, self.mqar_test = eval_sets(scale.train, data.corpus, data.mqar)
        self.ranges = {"lm": (0, data.corpus.vocab_size), "mqar": tuple(data.mqar.vocab_range)}
        self.gaps: list[str] = []
        self.spot = random.Random(secrets.randbits(64))  # which evaluations no decision reads are audited too
        self.hide = hidden_from_candidates(scale.corpus, data.secret_dirs, options)  # for every sandbox it starts

    def _start(self, mode: str, scratch: str, inputs: dict[str, Any], **request: Any) -> sandbox.Reader:
        path = os.path.join(scratch, "inputs.pt")
        torch.save(inputs, path)
        nonce = secrets.token_hex(16)
        proc = sandbox.launch("asiarch.train.worker", {
            "mode": mode, "source": self.source, "design": self.design, "inputs": path, "scratch": scratch,
            "limits": self.options.limits(_cpu_budget(self.scale)), "nonce": nonce, "hide": self.hide, **request})
        return sandbox.Reader(proc, nonce)

    def _records(self, reader: sandbox.Reader):
        """The worker's records; a silent worker is killed after the start-up timeout, then after
        its wall-time budget between two records; one that keeps writing, at the run's wall deadline
        (``_wall_deadline``: the trainer's own wall budget is kept by candidate code)."""
        wall = self.scale.train.max_wall_seconds
        deadline = _wall_deadline(self.scale, self.options.startup_timeout)
        reader.expire_in(deadline)
        for record in reader.records(timeout=self.options.startup_timeout):
            if record is None:
                sandbox.kill(reader.proc)
                yield {"code_error": f"the sandboxed worker ran past its {deadline:.0f}s of wall time and was killed"
                       if reader.expired else f"the sandboxed worker went silent for {reader.timeout:.0f}s and was killed"}
                return
            if "sandbox" in record:
                self.gaps = [str(g) for g in record["sandbox"]][:10]
                reader.timeout = None if wall is None else 1.5 * wall + 300
                continue
            yield record

    def train(self, state: dict[str, Any] | None, on_report: Callable[[dict[str, float], str], None],
              qa: QAMonitor | None, verify_tokens: Sequence[int] = ()) -> dict[str, Any]:
        scratch = sandbox.scratch_dir("trial")
        try:
            verify_tokens = sorted(int(t) for t in verify_tokens)
            # the training process gets no evaluation data: it cannot train on what its checkpoints are scored on
            reader = self._start("train", scratch, {"scale": self.scale, "data": self.data.training_only(),
                                                    "state": state})
            try:
                # the parent's own count of steps (a resumed trial continues where its state was)
                step = int(state["step"]) if state else 0
                return self._follow(reader, scratch, on_report, qa, step, verify_tokens)
            finally:
                sandbox.kill(reader.proc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _progress(self, step: int, metrics: dict[str, float]) -> int:
        """The step of the evaluation after ``step``, by the parent's count; the report must claim it, and
        the tokens the loop trains on up to it (``tokens_after``): ASHA's rungs are read in those tokens."""
        t = self.scale.train
        step = min((step // t.report_every + 1) * t.report_every, t.steps)
        tokens = tokens_after(step, t, self.scale.mqar.seq_len)
        if metrics.get("step") != step or metrics.get("tokens_seen") != tokens:
            raise _Rejected(f"forged progress: an evaluation claims step {metrics.get('step')} and "
                            f"{metrics.get('tokens_seen')} tokens; the training loop is at step {step} and {tokens} tokens")
        return step

    def _ended_at(self, step: int, claimed: Any) -> dict[str, int]:
        """Where the run ended, by the parent's count: at its last evaluation, ``step`` (the budget's end, or a
        wall-time stop right after it), or after it and before the next one (a wall-time stop or a diverged loss
        between evaluations), where the worker's claim must lie; and the tokens the loop trains on up to there.
        The worker's own summary could say a run that stopped early finished."""
        t = self.scale.train
        following = min((step // t.report_every + 1) * t.report_every, t.steps)
        possible = range(step, following) if step < t.steps else range(t.steps, t.steps + 1)
        if isinstance(claimed, bool) or not isinstance(claimed, (int, float)) or claimed not in possible:
            raise _Rejected(f"forged progress: the run claims it ended at step {str(claimed)[:20]}; its evaluations "
                            f"reached step {step}" + (f" and the next was due at step {following}" if step < t.steps else ""))
        return {"steps": int(claimed), "tokens_seen": tokens_after(int(claimed), t, self.scale.mqar.seq_len)}

    def _follow(self, reader: sandbox.Reader, scratch: str, on_report: Callable[[dict[str, float], str], None],
                qa: QAMonitor | None, step: int, verify_tokens: list[int]) -> dict[str, Any]:
        evaluated: tuple[int, dict[str, float], dict[str, list[torch.Tensor]]] | None = None  # step, scores, features
        checkpoint: str | None = None  # the latest checkpoint file; the ones before it are removed once handed on
        reports = step // self.scale.train.report_every  # evaluations so far, training QA's count
        for record in self._records(reader):
            if "infra_error" in record:
                raise SandboxError(f"the trial's harness failed in the sandbox: {str(record['infra_error'])[:2000]}\n"
                                   f"{str(record.get('traceback', ''))[:4000]}")
            trained = self._trained(step)  # what a failure or a refusal at this record is charged
            if "code_error" in record:
                return {"code_error": str(record["code_error"]), "tokens_seen": trained}
            try:
                if "report" in record:
                    previous = checkpoint
                    checkpoint = self._take(_scratch_file(scratch, record.get("checkpoint"), r"report-\d{1,9}\.pt"))
                    if previous and previous != checkpoint:  # handed to Tune already: the scratch keeps the latest
                        os.remove(previous)
                    metrics = _numbers(record["report"] if isinstance(record["report"], dict) else {}, REPORTED)
                    step = self._progress(step, metrics)
                    evaluated = (step, *self._evaluate(checkpoint, f"the evaluation at step {step}"))
                    scores = evaluated[1]
                    last = step == self.scale.train.steps  # the evaluation the fitness reads
                    flag = qa.leak_suspected(reports, scores["eval_loss"]) if qa is not None else None
                    decided = last or passes_rungs(metrics["tokens_seen"], verify_tokens) or flag is not None
                    if decided or self.spot.random() < self.options.spot_audit_fraction:
                        self._audited(evaluated, checkpoint, flag)  # what a decision reads (and spot checks)
                    metrics.update(scores)
                    if flag is not None:
                        metrics["leak_checked"] = 1
                        qa.notes.append(f"{flag}; its features audited in a fresh sandbox (a secret suffix "
                                        "replaced): causal")
                    if self.downstream and last:  # rides on the last report
                        metrics["downstream_mean"] = self.score_downstream(checkpoint)
                    reports += 1
                elif "final" in record:
                    final = record["final"] if isinstance(record["final"], dict) else {}
                    summary = {**_numbers(final, SUMMARY), **self._ended_at(step, final.get("steps"))}
                    summary["stop_reason"] = str(final.get("stop_reason", ""))[:40]
                    summary["stop_message"] = str(final.get("stop_message", ""))[:300]
                    if (evaluated is None or evaluated[0] != summary["steps"]) and "checkpoint" in record:
                        # stopped between evaluations, or resumed where it had ended: evaluated as it stands
                        checkpoint = self._take(_scratch_file(scratch, record["checkpoint"], r"report-\d{1,9}\.pt"))
                        what = f"the run's end, at step {summary['steps']}"
                        evaluated = (summary["steps"], *self._evaluate(checkpoint, what))
                        self._audited(evaluated, checkpoint)
                        if self.downstream:
                            self.score_downstream(checkpoint)
                    if evaluated is None or evaluated[0] != summary["steps"]:
                        if summary["stop_reason"] != "non_finite_loss":  # a diverged run fails without them
                            raise _Rejected(f"the run ended at step {summary['steps']} without the checkpoint its "
                                            "final numbers are evaluated from")
                    else:  # audited here where it stopped at an evaluation no decision had read
                        summary.update(self._audited(evaluated, checkpoint))
                    if self.downstream_scores is not None:
                        summary["downstream_mean"] = self.downstream_scores["mean"]
                    # the parameter counts are ours; a trial that never wrote a checkpoint has none
                    for key in ("parameters", "non_embedding_parameters"):
                        summary.pop(key, None)
                    summary.update(self.counted)
                    return {"final": summary}
            except SandboxError:
                raise
            except _Rejected as rejected:
                return {"code_error": str(rejected), "tokens_seen": trained}
            except (ValueError, RuntimeError, OSError, EOFError, KeyError, TypeError) as err:
                # a file the worker wrote could not be read as plain tensors: the candidate's doing
                return {"code_error": f"the trial's results could not be read safely: {type(err).__name__}: "
                                      f"{str(err)[:300]}", "tokens_seen": trained}
            if "report" in record:
                on_report(metrics, checkpoint)  # outside the try: a failure to report is not the candidate's
                slow = qa.too_slow(lambda: reader.cpu_at_record) if qa is not None else None
                if slow is not None and step < self.scale.train.steps:
                    try:  # stopped as it stands: the fitness reads this evaluation, so it is audited
                        stands = self._audited(evaluated, checkpoint)
                    except _Rejected as rejected:  # its report was accepted: it trained to there
                        return {"code_error": str(rejected), "tokens_seen": self._trained(step)}
                    return {"qa_stopped": slow, "last": {**metrics, **stands}}
        return {"code_error": f"the sandboxed trial ended without a result: {reader.died()}",
                "tokens_seen": self._trained(step)}

    def _audited(self, evaluated: tuple[int, dict[str, float], dict[str, list[torch.Tensor]]], checkpoint: str,
                 flag: str | None = None) -> dict[str, float]:
        """``evaluated``'s scores (its step, scores and features, of ``checkpoint``), audited for causality once
        (``_audit``; ``flag``: training QA's reason, which a refusal then names): ``audited: 1`` marks them."""
        scores = evaluated[1]
        if not scores.get("audited"):
            self._audit(evaluated[2], checkpoint, flag)
            scores["audited"] = 1
        return scores

    def _trained(self, step: int) -> int:
        """The tokens a trial trained on up to ``step``, its last accepted evaluation: what a failed or refused
        trial is charged (the parent's count; the worker's own could be anything)."""
        return tokens_after(step, self.scale.train, self.scale.mqar.seq_len)

    def _take(self, checkpoint: str) -> str:
        """Read a checkpoint the worker wrote (tensors only), count it (the harness, the budget) and keep its head."""
        saved = _load(checkpoint)
        self.counted = self.audit_state(saved)
        self.heads = {checkpoint: HarnessHead.of_state(saved["trainer"]["model"], self.scale.model.norm_eps,
                                                       self.scale.train.device)}
        return checkpoint

    def _audit(self, outputs: dict[str, list[torch.Tensor]], checkpoint: str, flag: str | None = None) -> None:
        """Re-run a few rows of ``outputs``' evaluation sets (MQAR's when it has them), each with its tokens after a
        secret position replaced, in a fresh sandbox: their features up to that position must be ``outputs``'."""
        rng = random.Random(secrets.randbits(64))
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        picks: dict[str, list[tuple[torch.Tensor, int]]] = {"lm": [], "mqar": []}  # (claimed features, position)
        rows: dict[str, list[torch.Tensor]] = {"lm": [], "mqar": []}
        lm_rows = [(b, r) for b, (x, _) in enumerate(self.val) for r in range(x.shape[0])]
        mqar_rows = list(range(len(self.mqar_test[0]))) if self.mqar_test is not None and outputs.get("mqar") else []
        plan = [("lm", i) for i in rng.sample(lm_rows, min(self.options.audit_rows, len(lm_rows)))]
        plan += [("mqar", i) for i in rng.sample(mqar_rows, min(max(1, self.options.audit_rows // 2), len(mqar_rows)))]
        for task, index in plan:
            if task == "lm":
                b, r = index
                x, claimed = self.val[b][0][r], outputs["lm"][b][r]
            else:
                x, claimed = self.mqar_test[0][index], outputs["mqar"][index // MQAR_CHUNK][index % MQAR_CHUNK]
            position = rng.randrange(0, x.shape[0] - 1)
            rows[task].append(_replace_after(x, position, self.ranges[task], generator))
            picks[task].append((claimed, position))
        inputs = {task: torch.stack(r) if r else torch.zeros(0, 1, dtype=torch.long) for task, r in rows.items()}
        features = self._rerun(inputs, checkpoint, "causality audit")
        for task, task_picks in picks.items():
            for j, (claimed, position) in enumerate(task_picks):
                got = features.get(task) if isinstance(features, dict) else None
                if not isinstance(got, torch.Tensor) or got.shape[0] <= j or got.shape[1:] != claimed.shape:
                    raise _Rejected("causality audit: the re-run returned features of the wrong shape")
                diff, tolerance = self._prefix_gap(claimed, got[j], position)
                if not diff <= tolerance:
                    raise _Rejected(
                        (f"{flag}; " if flag else "") +
                        f"causality audit failed: re-run in a fresh process with every {task} token after position "
                        f"{position} replaced, the model's features up to position {position} differ from the trial's by {diff:.3g} "
                        f"(tolerance {tolerance:.3g}): the trial's outputs depended on later tokens or on state the "
                        f"weights do not hold")

    def score_downstream(self, checkpoint: str) -> float:
        """The downstream mean of ``checkpoint``'s weights, scored here (through the checkpoint's head) from the
        features a fresh sandbox returns at the answers of the requests' batches (inputs and continuation masks:
        the answers themselves never leave this process)."""
        if self.choices is None:
            cfg = self.scale.downstream
            self.choices = downstream_requests(self.data.corpus.tokenizer, cfg.tasks, cfg.limit, cfg.max_len,
                                               cfg.batch_size)
        batches = {task: requests.batches for task, requests in self.choices.items()}
        features = self._rerun({}, checkpoint, "downstream evaluation", choices=batches).get("choices")
        width = self.scale.model.hidden_size
        if not isinstance(features, dict) or not all(
                isinstance(task, list) and all(isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] == width
                                               and bool(torch.isfinite(t).all()) for t in task)
                for task in features.values()):
            raise _Rejected("the downstream evaluation returned features that are missing, misshapen or not finite")
        head = self.heads[checkpoint]
        logits = {task: [head.logits(t, self.ranges["lm"]).cpu() for t in task_features]
                  for task, task_features in features.items()}
        try:
            scores = downstream_scores(self.choices, logits)
        except ValueError as err:
            raise _Rejected(f"the downstream evaluation's outputs cannot be scored: {err}") from err
        self._audit_choices(features, checkpoint)
        self.downstream_scores = scores
        return scores["mean"]

    def _audit_choices(self, features: dict[str, list[torch.Tensor]], checkpoint: str) -> None:
        """Re-run a few downstream rows with their tokens after a secret position inside the answer replaced,
        in another fresh sandbox: the answer's features up to that position must not change. Only answers of
        two or more tokens are picked (the last one is never an input, so a one-token answer cannot be seen)."""
        assert self.choices is not None
        rng = random.Random(secrets.randbits(64))
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        eligible = [(task, b, r) for task, requests in self.choices.items()
                    for b, (_, mask) in enumerate(requests.batches) for r in range(mask.shape[0]) if mask[r].sum() >= 2]
        plan = rng.sample(eligible, min(self.options.audit_rows, len(eligible)))
        rows, claims = [], []
        for task, b, r in plan:
            inputs, mask = self.choices[task].batches[b]
            answer = mask[r].nonzero().flatten()
            start, position = int(answer[0]), rng.randrange(int(answer[0]), int(answer[-1]))
            offset = int(mask[:r].sum())  # where row r's answer starts among the batch's answer features
            claims.append((task, position, features[task][b][offset : offset + position - start + 1]))
            audit_mask = torch.zeros_like(mask[r])
            audit_mask[start : position + 1] = True
            rows.append((_replace_after(inputs[r], position, self.ranges["lm"], generator)[None], audit_mask[None]))
        if not rows:
            return
        again = self._rerun({}, checkpoint, "downstream causality audit", choices={"audit": rows}).get("choices")
        again = again.get("audit") if isinstance(again, dict) else None
        if not isinstance(again, list) or len(again) != len(rows):
            raise _Rejected("downstream causality audit: the re-run returned the wrong number of rows")
        for (task, position, claimed), other in zip(claims, again):
            if not isinstance(other, torch.Tensor) or other.shape != claimed.shape:
                raise _Rejected("downstream causality audit: the re-run returned features of the wrong shape")
            diff, tolerance = self._prefix_gap(claimed, other, claimed.shape[0] - 1)
            if not diff <= tolerance:
                raise _Rejected(
                    f"causality audit failed: a {task} answer re-run in a fresh process with every token after position "
                    f"{position} replaced has features up to that position that differ from the downstream evaluation's by "
                    f"{diff:.3g} (tolerance {tolerance:.3g}): the design's answers depended on later tokens")

    def _prefix_gap(self, mine: torch.Tensor, other: torch.Tensor, position: int) -> tuple[float, float]:
        """How far two rows' features differ up to ``position``, and how far a causal design's may (the one rule
        of the causality audit and of training QA's re-check)."""
        head, again = mine[: position + 1], other[: position + 1]
        return (head - again).abs().max().item(), self.options.audit_tolerance * max(1.0, head.abs().max().item())

    def _rerun(self, rows: dict[str, torch.Tensor], checkpoint: str, what: str,
               choices: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = None) -> dict[str, Any]:
        """The features of ``rows`` under ``checkpoint``'s weights, from a fresh sandbox (the audit worker); with
        ``choices`` (downstream batches) also the features at their continuations, under ``"choices"``."""
        scratch = sandbox.scratch_dir("audit")
        try:
            inputs = {"scale": self.scale, "vocab_size": self.data.vocab_size, "rows": rows,
                      "choices": choices or {}}
            reader = self._start("audit", scratch, inputs, checkpoint=checkpoint)
            try:
                outputs = None
                for record in self._records(reader):
                    if "audit" in record:
                        outputs = _load(_scratch_file(scratch, record["audit"], r"audit\.pt"))
                    elif "code_error" in record:
                        raise _Rejected(f"{what}: {str(record['code_error'])[:500]}")
                    elif "infra_error" in record:
                        raise SandboxError(f"the {what}'s harness failed: {str(record['infra_error'])[:2000]}")
                if not isinstance(outputs, dict):
                    raise _Rejected(f"{what}: the worker ended without a result: {reader.died()}")
                return outputs
            finally:
                sandbox.kill(reader.proc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _evaluate(self, checkpoint: str, what: str) -> tuple[dict[str, float], dict[str, list[torch.Tensor]]]:
        """The evaluation sets through ``checkpoint``'s weights in a fresh sandbox (the training process never
        holds them), scored here through its head: the scores, and the features the causality audit checks."""
        rows = {"lm": torch.cat([x for x, _ in self.val])}
        if self.mqar_test is not None:
            rows["mqar"] = self.mqar_test[0]
        features = self._rerun(rows, checkpoint, what)  # features: the head is applied here
        width = self.scale.model.hidden_size
        if any(not isinstance(features.get(task), torch.Tensor) or tuple(features[task].shape) != (*x.shape, width)
               or not bool(torch.isfinite(features[task]).all()) for task, x in rows.items()):
            raise _Rejected(f"{what} returned features that are missing, misshapen or not finite")
        outputs = {"lm": list(features["lm"].split([x.shape[0] for x, _ in self.val])),
                   "mqar": list(features["mqar"].split(MQAR_CHUNK)) if "mqar" in rows else []}
        scores = score_outputs(outputs, self.val, self.mqar_test, self.ranges["lm"],
                               self.ranges["mqar"] if self.mqar_test is not None else None, self.heads[checkpoint])
        if not math.isfinite(scores["eval_loss"]):
            raise _Rejected(f"{what}: the loss is {scores['eval_loss']}")
        return {**scores, "verified": 1}, outputs


class _Rejected(Exception):
    """The parent refuses the trial's results: the candidate's fault."""


def _replace_after(row: torch.Tensor, position: int, vocab_range: tuple[int, int],
                   generator: torch.Generator) -> torch.Tensor:
    """A copy of ``row`` with every token after ``position`` drawn at random from ``vocab_range``."""
    out = row.clone()
    out[position + 1 :] = torch.randint(vocab_range[0], vocab_range[1], (row.shape[0] - position - 1,),
                                        generator=generator)
    return out


def train_in_sandbox(source: str, design: str | None, scale: ScaleConfig, data: TrialData, *,
                     on_report: Callable[[dict[str, float], str], None], state: dict[str, Any] | None = None,
                     downstream: bool = False, options: SandboxOptions | None = None,
                     qa: QAMonitor | None = None, verify_tokens: Sequence[int] = (),
                     budget: ParameterBudget | None = None) -> dict[str, Any]:
    """Train candidate ``source`` at ``scale`` in the sandbox; ``on_report(metrics, checkpoint_file)`` per evaluation.

    Every evaluation is the parent's (``verified: 1``): the checkpoint the report names, run over the
    evaluation sets in a fresh sandbox and scored here. ``verify_tokens``: ASHA's rungs in training
    tokens; the first evaluation at or past each is also audited for causality like the final one
    (``audited: 1``). Every report's step and tokens are the parent's own count.
    ``budget``: the parameter budget every layer's mixer is held to in every checkpoint
    (``CheckOptions.parameter_budget()``; with None the harness is still checked, no mixer is held to a budget).
    ``downstream``: score the final weights on ``scale.downstream`` here (``downstream_mean`` on the last
    report and in the summary); the trial's own process never computes or reports one.

    Returns ``{"final": summary}`` (its eval loss and MQAR accuracy evaluated and audited here),
    ``{"code_error": reason, "tokens_seen": n}`` when the candidate's code failed or its
    results were refused, or ``{"qa_stopped": reason, "last": metrics}`` when training QA
    stopped it. Raises ``SandboxError`` when the harness itself failed.
    """
    trial = _Trial(source, design, scale, data, options or SandboxOptions(), budget, downstream)
    return trial.train(state, on_report, qa, verify_tokens)
