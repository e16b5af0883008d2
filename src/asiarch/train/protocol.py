"""One training trial: a mixer class at a scale, trained and measured the same way for all.

The Tune trainables of the campaign and the seed-baseline job both call ``train_mixer``;
keeping a single path means a candidate and its baseline are never measured differently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from asiarch.arch.model import LanguageModel, VocabView, count_parameters
from asiarch.config import ScaleConfig
from asiarch.data.corpus import TokenCorpus
from asiarch.data.downstream import evaluate_downstream
from asiarch.data.mqar import IGNORE_INDEX, MQAR
from asiarch.train.trainer import MQAR_SCORES, Trainer


class ShiftedRecall:
    """MQAR with its token ids moved past the LM vocabulary.

    The two tasks share one model; without the shift, MQAR keys and values would reuse
    the ids of the corpus's most frequent byte tokens and the tasks would interfere.
    """

    def __init__(self, mqar: MQAR, offset: int):
        self.mqar, self.offset = mqar, offset
        self.vocab_range = (offset, offset + mqar.cfg.vocab_size)

    def _shift(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs + self.offset, torch.where(labels == IGNORE_INDEX, labels, labels + self.offset)

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self._shift(*self.mqar.train_batch(batch_size, generator))

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._shift(*self.mqar.test_set())


@dataclass
class TrialData:
    """Tokenised corpus and MQAR sets, built once and shared by every trial (Ray object store)."""

    corpus: TokenCorpus
    mqar: ShiftedRecall
    # folders holding what the evaluation data is drawn with (the MQAR test secret's): hidden from every sandbox
    # that runs a candidate's training or evaluation, where the user running the campaign could read them
    secret_dirs: tuple[str, ...] = ()

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: corpus tokens, then the MQAR tokens after them."""
        return self.corpus.vocab_size + self.mqar.mqar.cfg.vocab_size

    def training_only(self) -> TrialData:
        """The training streams without any evaluation data (the validation text, MQAR's test set): what a
        sandboxed candidate's training process is given, so it cannot train on what it is scored on."""
        return TrialData(self.corpus.training_only(), ShiftedRecall(self.mqar.mqar.training_only(), self.mqar.offset),
                         self.secret_dirs)


def prepare_data(scale: ScaleConfig, mqar_secret: int | None = None, secret_dirs: Sequence[str] = ()) -> TrialData:
    """Train/load the tokenizer and token cache, generate MQAR (seconds at cpu_tiny, cached).

    ``mqar_secret``: MQAR's test set is drawn with it (``MQAR``), so a candidate's training process
    cannot regenerate it from the scale; ``secret_dirs``: where it is kept. Campaigns take both from
    their ``BaselineCache`` (``BaselineCache.prepare_data``)."""
    corpus = TokenCorpus.from_config(scale.corpus)
    return TrialData(corpus=corpus, mqar=ShiftedRecall(MQAR(scale.mqar, test_secret=mqar_secret),
                                                       offset=corpus.vocab_size), secret_dirs=tuple(secret_dirs))


def build_model(scale: ScaleConfig, mixer_cls: type[nn.Module], data: TrialData) -> LanguageModel:
    """The harness around ``mixer_cls``, seeded so a mixer's initial weights depend only on the scale."""
    torch.manual_seed(scale.train.seed)
    return LanguageModel(replace(scale.model, vocab_size=data.vocab_size), mixer_cls)


def train_mixer(
    mixer_cls: type[nn.Module],
    scale: ScaleConfig,
    data: TrialData,
    report: Callable[[dict[str, float]], bool | None] | None = None,
    downstream: bool = True,
    state: dict[str, Any] | None = None,
    on_trainer: Callable[[Trainer], None] | None = None,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train ``mixer_cls`` at ``scale`` and return a JSON-ready summary of what was measured.

    ``state`` resumes from ``Trainer.state_dict()``; ``on_trainer`` receives the trainer
    before training starts (Tune trials keep it to write checkpoints from ``report``).
    ``evaluate=False``: no evaluation here (``Trainer``'s); a sandboxed trial's parent evaluates.
    """
    torch.set_num_threads(scale.torch_threads)
    started, cpu_started = time.monotonic(), time.process_time()
    model = build_model(scale, mixer_cls, data)
    wanted = downstream and bool(scale.downstream.tasks)
    scores: dict[str, Any] = {}

    def score_downstream(trained: nn.Module) -> dict[str, float]:
        cfg = scale.downstream
        scores.update(evaluate_downstream(
            VocabView(trained, (0, data.corpus.vocab_size)), data.corpus.tokenizer, tasks=cfg.tasks, limit=cfg.limit,
            max_len=cfg.max_len, batch_size=cfg.batch_size, device=scale.train.device))
        trained.train()
        return {"downstream_mean": scores["mean"]}

    trainer = Trainer(model, scale.train, data.corpus, data.mqar, report=report,
                      final_metrics=score_downstream if wanted else None, evaluate=evaluate)
    if state is not None:
        trainer.load_state_dict(state)
    if on_trainer is not None:
        on_trainer(trainer)
    result = trainer.train()
    train_seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    summary: dict[str, Any] = {
        "mixer": mixer_cls.__name__,
        "scale": scale.name,
        "parameters": count_parameters(model),
        "non_embedding_parameters": count_parameters(model, exclude_embeddings=True),
        "stop_reason": result.stop_reason.value,
        "stop_message": result.message,
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "train_seconds": train_seconds,
        "wall_tokens_per_second": result.tokens_seen / max(train_seconds, 1e-9),  # evaluations included
        "history": result.history,
        # training QA's pace where CPU time measures the work (not on a GPU, whose kernels run while the CPU waits),
        # evaluations left out: a sandboxed candidate's training process evaluates nothing
        **({"cpu_tokens_per_second": result.tokens_seen / max(cpu_seconds - trainer.eval_cpu_seconds, 1e-9)}
           if str(scale.train.device).startswith("cpu") else {}),
        **{k: result.final.get(k) for k in ("train_loss", "eval_loss", *MQAR_SCORES)},
    }
    if result.history:
        rates = [h["tokens_per_second"] for h in result.history]
        summary["tokens_per_second"] = sum(rates) / len(rates)
    if wanted and not scores:  # stopped before the last step (wall time): scored as it stands
        score_downstream(model)
    if scores:
        summary["downstream"] = dict(scores)
        summary["downstream_mean"] = scores["mean"]
    return summary
