"""The trainer: exact resume, determinism, stop reasons, schedules, and that it learns."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from asiarch.arch import SEEDS, LanguageModel, ModelConfig
from asiarch.data.corpus import CorpusConfig, TokenCorpus
from asiarch.data.mqar import MQAR, MQARConfig
from asiarch.train import StopReason, TrainConfig, Trainer, lr_at
from asiarch.train.protocol import ShiftedRecall

REQUIRED_KEYS = {"step", "tokens_seen", "train_loss", "eval_loss", "mqar_accuracy", "tokens_per_second"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cfg = CorpusConfig(source="python_docs", tokenizer_vocab_size=512, max_documents=120,
                       cache_dir=str(tmp_path_factory.mktemp("cache")))
    return TokenCorpus.from_config(cfg)


@pytest.fixture(scope="module")
def mqar(corpus):
    recall = MQAR(MQARConfig(vocab_size=128, seq_len=32, num_kv_pairs=4, num_train=2000, num_test=200, seed=0))
    return ShiftedRecall(recall, offset=corpus.vocab_size)


def tiny_model(mixer: type[nn.Module] = SEEDS["deltanet"], seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=512 + 128, hidden_size=32, num_layers=1, num_heads=2, mixer_kwargs={"chunk_size": 16})
    return LanguageModel(cfg, mixer)


def config(**overrides) -> TrainConfig:
    base = TrainConfig(steps=8, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2, report_every=1,
                       eval_batches=2, eval_mqar_examples=64, mqar_batch_size=8, seed=3)
    return replace(base, **overrides)


def test_restored_run_continues_exactly_like_the_uninterrupted_one(corpus, mqar, tmp_path):
    full = Trainer(tiny_model(), config(), corpus, mqar).train()
    assert full.stop_reason is StopReason.COMPLETED and len(full.history) == 8

    interrupted = Trainer(tiny_model(), config(), corpus, mqar, report=lambda m: m["step"] < 4)
    first = interrupted.train()
    assert first.stop_reason is StopReason.REQUESTED and first.step == 4
    interrupted.save(tmp_path / "state.pt")

    resumed = Trainer(tiny_model(seed=99), config(), corpus, mqar)  # different init: state must overwrite it
    resumed.restore(tmp_path / "state.pt")
    rest = resumed.train()
    assert rest.stop_reason is StopReason.COMPLETED and rest.step == 8
    assert [h["train_loss"] for h in rest.history[4:]] == [h["train_loss"] for h in full.history[4:]]
    assert [h["eval_loss"] for h in rest.history] == [h["eval_loss"] for h in full.history]
    assert rest.tokens_seen == full.tokens_seen


def test_same_seed_same_numbers_other_seed_other_numbers(corpus, mqar):
    a = Trainer(tiny_model(), config(steps=3), corpus, mqar).train()
    b = Trainer(tiny_model(), config(steps=3), corpus, mqar).train()
    c = Trainer(tiny_model(), config(steps=3, seed=4), corpus, mqar).train()
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_reports_every_n_steps_with_the_documented_metrics(corpus, mqar):
    seen = []
    Trainer(tiny_model(), config(steps=6, report_every=3), corpus, mqar, report=seen.append).train()
    assert [m["step"] for m in seen] == [3, 6]
    assert all(REQUIRED_KEYS <= set(m) for m in seen)
    assert seen[-1]["tokens_seen"] == 6 * (4 * 32 + 8 * 32)


def test_it_learns(corpus, mqar):
    trainer = Trainer(tiny_model(), config(steps=40, report_every=20, lr=1e-2), corpus, mqar)
    before = trainer.evaluate()
    after = trainer.train().final
    assert after["eval_loss"] < before["eval_loss"] - 0.3


class NaNAfterThreeSteps(nn.Module):
    """A mixer that breaks on its fourth training forward, as a diverging candidate would."""

    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.calls = 0

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        if self.training:
            self.calls += 1
        out = self.proj(hidden_states)
        return out * float("nan") if self.calls > 3 else out


def test_non_finite_loss_stops_with_a_reason(corpus, mqar):
    trainer = Trainer(tiny_model(NaNAfterThreeSteps), config(steps=10, mqar_every=0), corpus, None)
    result = trainer.train()
    assert result.stop_reason is StopReason.NON_FINITE_LOSS
    assert result.step == 3
    assert "loss became nan at step 3" in result.message


def test_wall_time_budget_stops_with_a_reason(corpus, mqar):
    result = Trainer(tiny_model(), config(steps=50, max_wall_seconds=0.0), corpus, mqar).train()
    assert result.stop_reason is StopReason.WALL_TIME
    assert result.step == 1
    assert "wall-time budget" in result.message


def test_each_task_trains_on_its_own_vocabulary_slice(corpus, mqar):
    """MQAR ids sit after the corpus ids; its loss and accuracy only look at its own slice."""
    assert mqar.vocab_range == (512, 640)
    inputs, labels = mqar.test_set()
    assert inputs.min() >= 512 and labels[labels != -100].min() >= 512
    model = tiny_model()
    logits = model(inputs[:2], vocab_range=mqar.vocab_range)
    assert logits.shape[-1] == 128
    torch.testing.assert_close(logits, model(inputs[:2])[..., 512:640])


def test_mqar_is_learnt_alongside_the_lm(corpus, mqar):
    cfg = config(steps=200, report_every=100, lr=1e-2, mqar_batch_size=32, eval_mqar_examples=200)
    torch.manual_seed(0)
    # unscaled embeddings: at hidden 64 and 200 steps they learn recall faster (0.2-0.3 scaled)
    model_cfg = ModelConfig(vocab_size=640, hidden_size=64, num_layers=2, num_heads=2, mixer_kwargs={"chunk_size": 32},
                            scale_embeddings=False)
    result = Trainer(LanguageModel(model_cfg, SEEDS["deltanet"]), cfg, corpus, mqar).train()
    assert result.final["mqar_accuracy"] > 0.5  # chance is 1/64: values are half of the 128 MQAR ids
    # recall that binds scores above the binding score's chance level of 0, by far more than its standard error
    assert result.final["mqar_binding"] > 10 * result.final["mqar_binding_se"] > 0


def test_recall_binding_is_zero_for_a_bag_of_values_and_positive_only_for_binding():
    from asiarch.train.trainer import recall_binding

    offset, vocab, k = 1000, 16, 4
    labels = torch.full((3, 12), -100)
    values = torch.tensor([[9, 11, 12, 15], [8, 10, 13, 14], [9, 10, 11, 12]])
    labels[:, [5, 7, 9, 11]] = values + offset  # each of the K context values queried once
    bag = torch.full((3, 12, vocab), -5.0)
    for row, vs in enumerate(values):
        bag[row, :, vs] = 2.0  # knows which values appear, not which key asks for which
    assert recall_binding(bag, labels, offset) == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    unsure = bag.clone()
    unsure[:, :, values[:, 0]] += 3.0  # prefers one value whatever is asked: below 0
    assert all(score < 0 for score in recall_binding(unsure, labels, offset))
    binds = bag.clone()
    for row, vs in enumerate(values):
        for query, v in zip((5, 7, 9, 11), vs):
            binds[row, query, v] += 4.0
    scores = recall_binding(binds, labels, offset)
    # the right value e^4 times as likely as each other context value: log(K e^4 / (e^4 + K - 1)), at most log K
    assert scores == pytest.approx([math.log(k * math.exp(4) / (math.exp(4) + k - 1))] * 3, abs=1e-5)


def test_mqar_needs_a_dataset(corpus):
    with pytest.raises(ValueError, match="needs an MQAR dataset"):
        Trainer(tiny_model(), config(), corpus, None)


@pytest.mark.parametrize(
    "overrides,message",
    [({"schedule": "linear"}, "schedule must be"), ({"steps": 0}, "steps must be positive"),
     ({"warmup_steps": -1}, "warmup_steps must be >= 0")],
)
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_learning_rate_schedules():
    cos = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cos) == pytest.approx(0.1) and lr_at(9, cos) == pytest.approx(1.0)
    assert lr_at(55, cos) == pytest.approx(0.55)  # halfway through the cosine
    assert lr_at(100, cos) == pytest.approx(0.1)
    assert all(lr_at(s, cos) >= lr_at(s + 1, cos) for s in range(10, 100))
    wsd = replace(cos, schedule="wsd", decay_fraction=0.2)
    assert lr_at(50, wsd) == lr_at(79, wsd) == 1.0
    assert lr_at(90, wsd) == pytest.approx(0.55)
    assert lr_at(100, wsd) == pytest.approx(0.1)
    short = replace(cos, steps=5, warmup_steps=30)  # warmup capped at the run length
    assert lr_at(4, short) == pytest.approx(1.0)


def test_a_run_shorter_than_its_schedule_is_the_head_of_the_longer_run(corpus, mqar):
    """Explore trains the first steps of a verify run: its learning rate follows the verify schedule, not
    annealed at its own end, and the weights it reaches are the longer run's at the same step."""
    for schedule in ("cosine", "wsd"):
        long = TrainConfig(steps=768, warmup_steps=16, lr=1.0, min_lr_ratio=0.1, schedule=schedule)
        head = replace(long, steps=192, schedule_steps=768)
        assert [lr_at(s, head) for s in range(192)] == [lr_at(s, long) for s in range(192)]
        assert lr_at(191, head) > 0.8 > lr_at(191, replace(long, steps=192))  # its own schedule anneals
    with pytest.raises(ValueError, match="schedule_steps"):
        config(steps=8, schedule_steps=4)
    short = Trainer(tiny_model(), config(steps=4, schedule_steps=8), corpus, mqar).train()
    longer = Trainer(tiny_model(), config(steps=8), corpus, mqar, report=lambda m: m["step"] < 4).train()
    assert [h["lr"] for h in short.history] == [h["lr"] for h in longer.history][:4]
    assert short.history[-1]["eval_loss"] == pytest.approx(longer.history[3]["eval_loss"], abs=1e-5)


def test_weight_decay_skips_norms_biases_and_marked_parameters():
    from asiarch.train.trainer import _param_groups

    model = tiny_model(SEEDS["gated_deltanet"])
    decay, no_decay = _param_groups(model, 0.1)
    no_decay_ids = {id(p) for p in no_decay["params"]}
    mixer = model.blocks[0].mixer
    assert id(mixer.A_log) in no_decay_ids and id(mixer.dt_bias) in no_decay_ids
    assert id(model.norm.weight) in no_decay_ids
    assert id(mixer.q_proj.weight) in {id(p) for p in decay["params"]}


class _Payload:
    """What a hostile mixer could hide in its checkpoint: unpickling it would call ``__reduce__``'s target."""

    def __reduce__(self):
        return (print, ("payload ran",))


class ExtraStateMixer(nn.Module):
    """The DeltaNet seed, plus extra state that is an arbitrary picklable object."""

    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.inner = SEEDS["deltanet"](hidden_size, num_heads, layer_idx=layer_idx, **kwargs)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return self.inner(hidden_states, attention_mask=attention_mask)

    def get_extra_state(self):
        return _Payload()

    def set_extra_state(self, state):
        pass


def test_a_checkpoint_never_unpickles_objects_a_candidate_chose(corpus, mqar, tmp_path, capsys):
    trainer = Trainer(tiny_model(ExtraStateMixer), config(steps=2), corpus, mqar)
    trainer.train()
    trainer.save(tmp_path / "state.pt")
    fresh = Trainer(tiny_model(ExtraStateMixer), config(steps=2), corpus, mqar)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        fresh.restore(tmp_path / "state.pt")
    assert "payload ran" not in capsys.readouterr().out
    plain = Trainer(tiny_model(), config(steps=2), corpus, mqar)  # an ordinary model's state loads weights-only
    plain.train()
    plain.save(tmp_path / "plain.pt")
    Trainer(tiny_model(), config(steps=2), corpus, mqar).restore(tmp_path / "plain.pt")
