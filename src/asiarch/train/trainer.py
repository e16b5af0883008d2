"""The trainer: AdamW, warmup + cosine or WSD, grad clipping, LM loss mixed with MQAR.

One loop in the spirit of nanoGPT. Every ``report_every`` steps it evaluates and calls
``report(metrics)``; Tune trials report through that callback. Its full state (model,
optimizer, step, data RNG) round-trips through ``state_dict``/``load_state_dict`` so a
resumed run continues exactly where the uninterrupted one would be.
"""

from __future__ import annotations

import math
import statistics
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from asiarch.arch.model import HarnessHead


class StopReason(str, Enum):
    COMPLETED = "completed"
    NON_FINITE_LOSS = "non_finite_loss"
    WALL_TIME = "wall_time"
    REQUESTED = "requested"  # the report callback returned False


# stop reasons whose results are a measurement of the design: trained to the end, or for the whole wall-time budget
MEASURED_STOPS = (StopReason.COMPLETED.value, StopReason.WALL_TIME.value)

@dataclass
class TrainConfig:
    """How one model is trained; the defaults equal ``scale.train`` of ``conf/scale/cpu_tiny.yaml``."""

    steps: int = 300
    schedule_steps: int | None = None  # the learning-rate schedule's length (None: steps); longer: the run is the head of a longer one
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 6e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 16  # capped at steps, so shortening a run for a smoke test needs no other change
    schedule: str = "cosine"  # "cosine" or "wsd" (warmup-stable-decay)
    decay_fraction: float = 0.2  # WSD: the last fraction of steps decays linearly
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    mqar_every: int = 1  # an MQAR batch joins every k-th step (0: LM only)
    mqar_batch_size: int = 16
    mqar_weight: float = 1.0
    report_every: int = 50
    eval_batches: int = 8
    eval_mqar_examples: int = 256
    max_wall_seconds: float | None = 600.0  # for `steps` steps; a longer stage gets it in proportion (stage_scale); None: no limit
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"schedule must be 'cosine' or 'wsd', got {self.schedule!r}")
        for name in ("steps", "batch_size", "seq_len", "report_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.schedule_steps is not None and self.schedule_steps < self.steps:
            raise ValueError(f"TrainConfig.schedule_steps ({self.schedule_steps}) must be null or at least steps "
                             f"({self.steps}): a run stops at steps, its learning rate follows schedule_steps")
        self.betas = tuple(self.betas)


def tokens_after(step: int, cfg: TrainConfig, mqar_seq_len: int) -> int:
    """Tokens the training loop has trained on after ``step`` steps: an LM batch every step and
    an MQAR batch on every ``mqar_every``-th (from step 0). The sandbox's parent counts a
    trial's progress with it instead of taking the candidate's process's word."""
    mqar_batches = -(-step // cfg.mqar_every) if cfg.mqar_every else 0
    return step * cfg.batch_size * cfg.seq_len + mqar_batches * cfg.mqar_batch_size * mqar_seq_len


def passes_rungs(tokens: int, pending: list[int]) -> bool:
    """Whether an evaluation at ``tokens`` is the first at or past one of the ``pending`` rungs (sorted,
    in tokens); drops the rungs it passed. The worker and the sandbox's parent keep one list each."""
    passed = bool(pending) and tokens >= pending[0]
    while pending and tokens >= pending[0]:
        pending.pop(0)
    return passed


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for ``step`` (0-based): linear warmup, then cosine or WSD down to min_lr at
    ``schedule_steps`` (or ``steps``); a run shorter than its schedule stops before the decay ends."""
    total = cfg.schedule_steps or cfg.steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    warmup = min(cfg.warmup_steps, total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = total - int(cfg.decay_fraction * total)
    if step < decay_start:
        return cfg.lr
    progress = (step - decay_start) / max(1, total - decay_start)
    return cfg.lr - (cfg.lr - min_lr) * min(1.0, progress)


class LMData(Protocol):
    vocab_size: int  # its tokens are ids 0..vocab_size-1

    def batch(self, split: str, batch_size: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...
    def val_batches(self, batch_size: int, seq_len: int, num_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]: ...


class RecallData(Protocol):
    vocab_range: tuple[int, int]  # its tokens are ids lo..hi-1 of the model's vocabulary

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...
    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]: ...


MQAR_CHUNK = 64  # MQAR test examples per evaluation forward pass
MQAR_SCORES = ("mqar_accuracy", "mqar_binding", "mqar_binding_se")  # what score_outputs measures of MQAR


def eval_sets(cfg: TrainConfig, lm_data: LMData, mqar: RecallData | None):
    """The fixed evaluation sets: ``cfg.eval_batches`` validation batches and the first
    ``cfg.eval_mqar_examples`` MQAR test examples (None without MQAR)."""
    val = lm_data.val_batches(cfg.batch_size, cfg.seq_len, cfg.eval_batches)
    if mqar is None:
        return val, None
    inputs, labels = mqar.test_set()
    return val, (inputs[: cfg.eval_mqar_examples], labels[: cfg.eval_mqar_examples])


@torch.no_grad()
def score_outputs(outputs: dict[str, list[torch.Tensor]], val, mqar_test, lm_range: tuple[int, int],
                  mqar_range: tuple[int, int] | None, head: HarnessHead) -> dict[str, float]:
    """Eval loss and MQAR accuracy of ``eval_outputs``' features, through ``head``, against ``eval_sets``' targets.

    A pure function of tensors, so a parent process can score a sandboxed trial's outputs
    with its own, untouched torch and the head weights of the trial's checkpoint.
    """
    losses = []
    for features, (_, targets) in zip(outputs["lm"], val, strict=True):
        logits = head.logits(features, lm_range)
        targets = torch.where(targets == -100, targets, targets - lm_range[0]).to(logits.device)
        losses.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100).item())
    metrics = {"eval_loss": sum(losses) / len(losses)}
    if mqar_test is not None and mqar_range is not None:
        labels = mqar_test[1]
        correct = total = 0
        binding: list[float] = []  # one value per example: the mean over its queries
        for i, features in enumerate(outputs["mqar"]):
            y = labels[i * MQAR_CHUNK : (i + 1) * MQAR_CHUNK]
            logits = head.logits(features, mqar_range).float().cpu()
            pred = logits.argmax(-1) + mqar_range[0]
            mask = y != -100
            correct += (pred[mask] == y[mask]).sum().item()
            total += mask.sum().item()
            binding += recall_binding(logits, y, mqar_range[0])
        metrics["mqar_accuracy"] = correct / max(1, total)
        if len(binding) >= 2:
            metrics["mqar_binding"] = statistics.fmean(binding)
            metrics["mqar_binding_se"] = statistics.stdev(binding) / math.sqrt(len(binding))
    return metrics


def recall_binding(logits: torch.Tensor, labels: torch.Tensor, offset: int) -> list[float]:
    """MQAR recall as a continuous score whose chance level is known: per example, the mean over its queries of
    log p(the queried key's value) - log(mean p over the example's K context values).

    Every key is queried once, so the labels of an example are its K context values. A design that knows which
    values appear but not which key each belongs to (a bag of tokens) spreads its probability evenly over them and
    scores 0; one whose prediction does not depend on which of them is asked scores at most 0 on average (Jensen);
    only binding keys to values scores above 0. Unlike argmax accuracy it moves before the right value wins.
    ``logits`` [B, T, V] over the MQAR tokens, ``labels`` [B, T] in global ids (value - ``offset`` indexes V)."""
    scores = []
    log_probs = torch.log_softmax(logits, dim=-1)
    for row, y in zip(log_probs, labels):
        mask = y != -100
        values = (y[mask] - offset).long()
        if values.numel() == 0:
            continue
        at_queries = row[mask]  # [Q, V]
        over_context = at_queries[:, values]  # [Q, K]: every context value, at every query
        right = at_queries.gather(1, values[:, None]).squeeze(1)
        score = right - (torch.logsumexp(over_context, dim=1) - math.log(values.numel()))
        scores.append(score.mean().item())
    return scores


@dataclass
class TrainResult:
    stop_reason: StopReason
    message: str
    step: int
    tokens_seen: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; norms, biases and parameters marked ``_no_weight_decay`` are exempt."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Trains ``model`` on an LM corpus (and MQAR) and reports metrics through a callback."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        lm_data: LMData,
        mqar: RecallData | None = None,
        report: Callable[[dict[str, float]], bool | None] | None = None,
        final_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
        evaluate: bool = True,
    ):
        """``final_metrics(model)``: measurements taken once, after the last step, that ride on
        the last report (a scheduler may stop the trial on that report, before anything after it).
        ``evaluate=False``: reports carry training numbers only, and the evaluation sets are never
        built: a sandboxed candidate's process holds no evaluation data to train on (its parent
        evaluates each report's checkpoint in another process)."""
        if cfg.mqar_every and mqar is None:
            raise ValueError("TrainConfig.mqar_every > 0 needs an MQAR dataset (or set mqar_every=0)")
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.model = model.to(self.device)
        self.lm_data, self.mqar, self.report, self.final_metrics = lm_data, mqar, report, final_metrics
        self._lm_range = (0, lm_data.vocab_size)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, fused=fused
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.tokens_seen = 0
        self.history: list[dict[str, float]] = []
        self._val, self._mqar_test = eval_sets(cfg, lm_data, mqar) if evaluate else (None, None)
        self.evaluates = evaluate
        self.eval_cpu_seconds = 0.0  # CPU time spent evaluating (final_metrics too): a training pace leaves it out

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()  # fp32 on CPU: exact and deterministic

    def _logits(self, inputs: torch.Tensor, vocab_range: tuple[int, int]) -> torch.Tensor:
        with self._autocast():
            return self.model(inputs.to(self.device), vocab_range=vocab_range).float()

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor, vocab_range: tuple[int, int]) -> torch.Tensor:
        """Cross-entropy over one task's slice of the vocabulary (targets are absolute ids)."""
        targets = targets.to(self.device)
        targets = torch.where(targets == -100, targets, targets - vocab_range[0])
        logits = self._logits(inputs, vocab_range)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)

    @torch.no_grad()
    def eval_outputs(self, device: str | torch.device = "cpu") -> dict[str, list[torch.Tensor]]:
        """The model's features (``LanguageModel.features``) on the evaluation sets (``eval_sets``), float32 on
        ``device``: what ``score_outputs`` scores (a sandboxed candidate's are computed by its parent's
        evaluation sandbox instead, ``asiarch.train.worker.audit``, from checkpoints).
        """
        was_training = self.model.training
        self.model.eval()

        def features(inputs: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.model.features(inputs.to(self.device)).float().to(device)

        outputs = {"lm": [features(x) for x, _ in self._val], "mqar": []}
        if self._mqar_test is not None:
            inputs = self._mqar_test[0]
            outputs["mqar"] = [features(inputs[i : i + MQAR_CHUNK]) for i in range(0, len(inputs), MQAR_CHUNK)]
        self.model.train(was_training)
        return outputs

    def evaluate(self) -> dict[str, float]:
        """Validation LM loss on fixed batches and MQAR accuracy on a fixed test slice."""
        return score_outputs(self.eval_outputs(self.device), self._val, self._mqar_test, self._lm_range,
                             self.mqar.vocab_range if self.mqar is not None else None, HarnessHead.of_model(self.model))

    def train(self) -> TrainResult:
        """Run until ``cfg.steps`` (or a stop condition); safe to call again after a restore."""
        cfg = self.cfg
        self.model.train()
        start = time.monotonic()
        window_start, window_tokens, window_losses = time.monotonic(), 0, []
        while self.step < cfg.steps:
            lr = lr_at(self.step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = self.lm_data.batch("train", cfg.batch_size, cfg.seq_len, self.generator)
            lm_loss = self._loss(inputs, targets, self._lm_range)
            loss = lm_loss
            step_tokens = inputs.numel()
            if cfg.mqar_every and self.step % cfg.mqar_every == 0:
                mq_inputs, mq_labels = self.mqar.train_batch(cfg.mqar_batch_size, self.generator)
                loss = loss + cfg.mqar_weight * self._loss(mq_inputs, mq_labels, self.mqar.vocab_range)
                step_tokens += mq_inputs.numel()
            if not torch.isfinite(loss):
                return self._stop(StopReason.NON_FINITE_LOSS, f"loss became {loss.item()} at step {self.step}")
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.tokens_seen += step_tokens
            window_tokens += step_tokens
            window_losses.append(lm_loss.item())

            if self.step % cfg.report_every == 0 or self.step == cfg.steps:
                elapsed = time.monotonic() - window_start
                metrics = {
                    "step": self.step,
                    "tokens_seen": self.tokens_seen,
                    "train_loss": sum(window_losses) / len(window_losses),
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens_per_second": window_tokens / max(elapsed, 1e-9),
                }
                cpu = time.process_time()
                if self.evaluates:
                    metrics.update(self.evaluate())
                if self.step == cfg.steps and self.final_metrics is not None:
                    metrics.update(self.final_metrics(self.model))
                self.eval_cpu_seconds += time.process_time() - cpu
                self.history.append(metrics)
                if self.report is not None and self.report(metrics) is False:
                    return self._stop(StopReason.REQUESTED, f"the report callback asked to stop at step {self.step}")
                window_start, window_tokens, window_losses = time.monotonic(), 0, []
            if cfg.max_wall_seconds is not None and time.monotonic() - start > cfg.max_wall_seconds:
                return self._stop(
                    StopReason.WALL_TIME, f"wall-time budget of {cfg.max_wall_seconds:.0f}s spent at step {self.step}"
                )
        return self._stop(StopReason.COMPLETED, f"trained {self.step} steps")

    def _stop(self, reason: StopReason, message: str) -> TrainResult:
        return TrainResult(reason, message, self.step, self.tokens_seen, list(self.history))

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "generator": self.generator.get_state(),
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.generator.set_state(state["generator"])
        self.history = list(state["history"])

    def save(self, path) -> None:
        """Write the full training state atomically (temp file, then rename)."""
        tmp = f"{path}.tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def restore(self, path) -> None:
        # weights only: a candidate controls what its modules save (get_extra_state), so loading
        # must never run pickled code
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
