"""Who is to blame when training fails: the candidate (its own frames) or the infrastructure.

The rule is ``asiarch.arch.contract.candidate_frames``, shared with the check worker; the
trainable reports a candidate's fault as ``code_error`` and raises anything else, so Tune
retries it. The unit tests raise real errors through candidate source loaded with
``load_mixer_class``; the last ones run ``run_trial`` itself, with Tune's session stubbed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asiarch.arch import SEEDS, CandidateLoadError, load_mixer_class
from asiarch.arch.contract import candidate_at_fault, candidate_frames
from asiarch.campaign import trainable
from asiarch.campaign.trainable import run_trial
from asiarch.train.sandboxed import SandboxError

SOURCE = '''
import torch
import torch.nn.functional as F
from torch import nn


class Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("no gradient for you")


class Faulty(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, fault="none", **kwargs):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.fault = fault

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        if self.fault == "raise" and torch.is_grad_enabled():
            raise ValueError("planted: raises in training only")
        if self.fault == "shape":
            return F.linear(hidden_states, torch.zeros(3, 5))  # torch raises, called from here
        if self.fault == "backward":
            return Twice.apply(self.proj(hidden_states))
        if self.fault == "memory":
            raise MemoryError("the device is full")
        return self.proj(hidden_states)
'''
RAISE_LINE = SOURCE.splitlines().index('            raise ValueError("planted: raises in training only")') + 1


def failure(fn) -> BaseException:
    with pytest.raises(BaseException) as caught:
        fn()
    return caught.value


@pytest.fixture(scope="module")
def faulty():
    return load_mixer_class(SOURCE)


def test_an_error_raised_in_candidate_code_has_its_frame(faulty):
    err = failure(lambda: faulty(8, 2, fault="raise")(torch.randn(2, 4, 8)))
    assert [f.lineno for f in candidate_frames(err)] == [RAISE_LINE]
    assert candidate_at_fault(err)


def test_a_torch_error_inside_a_call_the_candidate_made_is_the_candidates(faulty):
    err = failure(lambda: faulty(8, 2, fault="shape")(torch.randn(2, 4, 8)))
    assert isinstance(err, RuntimeError) and candidate_frames(err) and candidate_at_fault(err)


def test_an_error_in_the_candidates_backward_is_the_candidates(faulty):
    out = faulty(8, 2, fault="backward")(torch.randn(2, 4, 8))
    err = failure(lambda: out.sum().backward())
    assert "no gradient for you" in str(err) and candidate_at_fault(err)


def test_an_error_the_harness_raises_by_itself_is_not_the_candidates():
    err = failure(lambda: F.linear(torch.randn(2, 8), torch.zeros(3, 5)))
    assert candidate_frames(err) == [] and not candidate_at_fault(err)
    seed_err = failure(lambda: SEEDS["deltanet"](8, 2)(torch.randn(2, 4, 7)))  # a seed is harness code
    assert not candidate_at_fault(seed_err)


def test_a_harness_error_raised_from_a_candidate_error_keeps_the_candidates_frames(faulty):
    def harness():
        try:
            faulty(8, 2, fault="raise")(torch.randn(2, 4, 8))
        except ValueError as err:
            raise RuntimeError("the training step failed") from err

    assert [f.lineno for f in candidate_frames(failure(harness))] == [RAISE_LINE]


def test_running_out_of_memory_and_bad_source_are_judged_apart(faulty):
    assert not candidate_at_fault(failure(lambda: faulty(8, 2, fault="memory")(torch.randn(2, 4, 8))))
    assert not candidate_at_fault(torch.OutOfMemoryError("CUDA out of memory"))
    assert candidate_at_fault(failure(lambda: load_mixer_class("class Nothing: pass")))
    assert isinstance(failure(lambda: load_mixer_class("class Nothing: pass")), CandidateLoadError)


# -- run_trial ---------------------------------------------------------------------------------------
class FakeTune:
    """Tune's session as ``run_trial`` uses it: no checkpoint to start from; reports are kept."""

    Checkpoint = trainable.tune.Checkpoint

    def __init__(self, fail_report: BaseException | None = None):
        self.reports: list[dict] = []
        self.fail_report = fail_report

    def get_checkpoint(self):
        return None

    def report(self, metrics: dict, checkpoint=None) -> None:
        if self.fail_report is not None and checkpoint is not None:
            raise self.fail_report
        self.reports.append(metrics)


def tiny_trial_inputs(cache_dir) -> tuple[dict, dict]:
    """``run_trial``'s scales and data: a 4-step explore at a shrunk cpu_tiny."""
    from asiarch.config import load_scale, stage_scale
    from asiarch.train.protocol import prepare_data

    scale = load_scale(["scale=cpu_tiny", "scale.corpus.max_documents=60", "scale.corpus.tokenizer_vocab_size=512",
                        f"scale.corpus.cache_dir={cache_dir}", "scale.mqar.num_train=200",
                        "scale.mqar.num_test=50", "scale.train.eval_batches=1", "scale.train.eval_mqar_examples=32",
                        "scale.train.warmup_steps=1"])
    scale = stage_scale(scale, 4)
    return {"explore": scale}, {"explore": prepare_data(scale)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_trial_inputs(tmp_path_factory.mktemp("cache"))


def candidate_config(code: str) -> dict:
    return {"kind": "candidate", "design": "c-1", "name": "faulty", "code": code, "stage": "explore",
            "training_seed": 0, "lr": 1e-3}


def test_run_trial_reports_the_candidates_error_for_the_engineer(tiny, monkeypatch):
    scales, data = tiny
    session = FakeTune()
    monkeypatch.setattr(trainable, "tune", session)
    code = SOURCE.replace('fault="none"', 'fault="raise"')
    run_trial(candidate_config(code), scales, data)
    (report,) = session.reports
    assert report["code_error"].startswith("ValueError: planted: raises in training only")
    assert "<asiarch_candidate>" in report["code_error"]


def test_run_trial_raises_an_infrastructure_fault_for_tune_to_retry(tiny, monkeypatch):
    scales, data = tiny
    session = FakeTune(fail_report=OSError(28, "No space left on device"))  # writing the first checkpoint fails
    monkeypatch.setattr(trainable, "tune", session)
    with pytest.raises(OSError, match="No space left"):
        run_trial(candidate_config(SOURCE), scales, data)
    assert session.reports == []  # nothing was blamed on the candidate

    # the harness fails inside the sandbox (the training tokens are too few for one window): Tune retries
    monkeypatch.setattr(trainable, "tune", FakeTune())
    monkeypatch.setitem(data["explore"].corpus._tokens, "train", data["explore"].corpus._tokens["train"][:5])
    with pytest.raises(SandboxError, match="fewer than seq_len"):
        run_trial(candidate_config(SOURCE), scales, data)
