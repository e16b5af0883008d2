"""Researcher -> Engineer -> Analyst -> Judge through the real anthropic client and a local Messages API
server that scripts Claude's replies, including a 429, a check failure with its repair and a malformed reply."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from asiarch.agents import Analyst, Engineer, Judge, Researcher
from asiarch.llm import AnthropicBackend, AnthropicConfig
from asiarch.llm.schemas import context_of
from asiarch.memory import FunctionEmbedder, Memory
from messages_server import MessagesServer, Step

FIXED = '''
import torch
from torch import nn


class CumulativeMixer(nn.Module):
    def __init__(self, hidden_size, num_heads, layer_idx=None, **kwargs):
        super().__init__()
        self.q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        v = self.v(hidden_states)
        steps = torch.arange(1, hidden_states.shape[1] + 1, dtype=v.dtype, device=v.device)
        mixed = v.cumsum(1) / steps[None, :, None]
        return self.o(mixed * torch.sigmoid(self.q(hidden_states)))
'''
PEEKING = FIXED.replace("mixed = v.cumsum(1) / steps[None, :, None]",
                        "mixed = v.cumsum(1) / steps[None, :, None] + v.mean(1, keepdim=True)")


def hashed_words(texts):
    """A real (if crude) embedding: hashed bag of words, so this test needs no model download."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
    return out


def test_claude_drives_the_four_roles(tmp_path):
    memory = Memory(tmp_path / "mem", embedder=FunctionEmbedder(hashed_words, 64))
    with MessagesServer() as server:
        server.script(
            Step(tool_input={"name": "cummean", "motivation": "a running mean with a global context term",
                             "code": PEEKING}),  # researcher
            Step(status=429, headers={"retry-after": "0.1"}),  # engineer, throttled once
            Step(tool_input={"code": FIXED, "explanation": "removed the full-sequence mean that leaked the future"}),
            Step(tool_input={"drifted": False, "reason": "still a running mean with a gate; only the leak is gone"}),
            Step(tool_input={"analysis": "the causal running mean trains", "insights": [
                {"design_insight": "a causal running mean is a weak but safe mixer",
                 "trigger_patterns": ["recall stays at chance"], "motifs": ["residual_skip"]}]}),  # analyst
            Step(tool_input={"performance": 6, "innovation": 4, "complexity": 9}),  # judge: rationale missing
            Step(tool_input={"performance": 6, "innovation": 4, "complexity": 9, "rationale": "fine for its size"}),
        )
        llm = AnthropicBackend(AnthropicConfig(api_key="k", base_url=server.url, timeout_s=5, backoff_base_s=0.01))
        roles = {kind.__name__: kind(llm, str(tmp_path / "mem"), memory, campaign="claude")
                 for kind in (Researcher, Engineer, Analyst, Judge)}

        proposed = roles["Researcher"].propose()
        assert proposed.name == "cummean" and proposed.status == "proposed" and proposed.llm_input_tokens > 0
        validated = roles["Engineer"].validate(proposed.id, check_timeout=60, complexity_repeats=2)
        assert validated.status == "validated", validated.status_reason
        (repair,) = validated.repairs
        assert [f["check"] for f in repair["failures"]] == ["causality"] and repair["passed"]
        assert repair["drift"] == {"drifted": False, "reason": "still a running mean with a gate; only the leak is gone"}
        assert validated.code == FIXED and validated.check_report["passed"]
        memory.update_candidate(proposed.id, status="training")
        memory.set_stage(proposed.id, "explore", fitness=0.4, status="finished")
        analysed = roles["Analyst"].analyse(proposed.id)
        judged = roles["Judge"].score(proposed.id, seeds=[{"name": "deltanet", "eval_loss": 5.4, "mqar_accuracy": 0.7}])

        tools = [request["tools"][0]["name"] for request in server.requests]
        systems = [request["system"] for request in server.requests]
    # one stable prefix for every role and request, long enough to be cached, with the breakpoint after it
    assert all(system == systems[0] for system in systems)
    (block,) = systems[0]
    assert block["cache_control"] == {"type": "ephemeral"} and len(block["text"].encode()) >= 4 * 1024
    assert "class DeltaNet(" in block["text"] and "data_dependent_decay" in block["text"]
    assert tools == ["submit_researcher", "submit_engineer", "submit_engineer", "submit_drift", "submit_analyst",
                     "submit_judge", "submit_judge"]
    drift_context = context_of(server.requests[3]["messages"])
    assert drift_context["motivation"] == "a running mean with a global context term"
    assert drift_context["original_code"] == PEEKING and drift_context["repaired_code"] == FIXED
    assert analysed.analysis == "the causal running mean trains"
    (insight,) = [i for i, _ in memory.search_insights("running mean", k=5, mode="fts", kind="experiment")]
    assert insight.source == proposed.id
    assert judged.judge["performance"] == 6 and judged.judge_rationale == "fine for its size"
    assert judged.judge["overall"] == pytest.approx((0.3 * 6 + 0.25 * 4 + 0.45 * 9) / 10)  # ASI-Arch's weights
    assert memory.get_candidate(proposed.id).llm_usd > 0


def test_the_researchers_request_stays_bounded_as_the_campaign_grows(tmp_path):
    """At 300 stored candidates the request is no larger than 1.5x the one at 60, and carries the code of
    the parent and its references only: what else was tried arrives as names and one-line motivations."""
    import json
    import random

    from asiarch.memory import Candidate, StageMetrics
    from asiarch.proposer import mutate, name_for, render, seed_genome

    def reply(tool, body):
        if tool == "submit_researcher":
            return Step(tool_input={"name": "bounded", "motivation": "a running mean", "code": FIXED})
        return Step(tool_input={"duplicate": False, "reason": "new"})

    largest, forwards = {}, {}
    with MessagesServer(responder=reply) as server:
        llm = AnthropicBackend(AnthropicConfig(api_key="k", base_url=server.url, timeout_s=5, backoff_base_s=0.01))
        rng, genome, stored = random.Random(0), seed_genome("deltanet"), []
        memory = Memory(tmp_path / "mem", embedder=FunctionEmbedder(hashed_words, 64))
        for size in (60, 300):
            while len(stored) < size:
                genome = mutate(genome, rng)
                i = len(stored)
                stored.append(Candidate(id=f"c{i:04d}", campaign="grow", name=f"{name_for(genome)}-{i}",
                                        code=render(genome), motivation=f"design {i} changes the decay. " * 3,
                                        status="finished", explore=StageMetrics(eval_loss=4.0 - i / 1000, fitness=i / 1000)))
            memory.upsert_candidates(stored)
            server.requests.clear()
            Researcher(llm, str(tmp_path / "mem"), memory, campaign="grow").propose()
            requests = [r for r in server.requests if r["tools"][0]["name"] == "submit_researcher"]
            largest[size] = max(len(json.dumps(r).encode()) for r in requests)
            codes = {c.code for c in stored}
            forwards[size] = max(sum(code in codes for code in _codes(context_of(r["messages"]))) for r in requests)
    assert largest[300] <= 1.5 * largest[60], largest
    assert 1 <= forwards[300] <= 5  # the parent and ASI-Arch's four references, nothing else


def _codes(value):
    """Every ``code`` string anywhere in a request's context."""
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "code" and isinstance(v, str)] + [
            c for v in value.values() for c in _codes(v)]
    if isinstance(value, list):
        return [c for v in value for c in _codes(v)]
    return []


def test_novelty_sees_code_and_motivations_and_a_renamed_copy_is_replanned(tmp_path):
    """A copy of a stored design under another class name is re-planned without an LLM call, and the
    re-plan is told what it duplicated; the novelty judge then sees the neighbours' motivation and code."""
    from asiarch.memory import Candidate

    memory = Memory(tmp_path / "mem", embedder=FunctionEmbedder(hashed_words, 64))
    memory.upsert_candidates(Candidate(id="old", campaign="n", name="running-mean",
                                       motivation="a causal running mean with an output gate", code=FIXED))
    renamed = FIXED.replace("CumulativeMixer", "RenamedMixer").replace("v = self.v", "# same thing\n        v = self.v")
    other = FIXED.replace("mixed * torch.sigmoid", "mixed * torch.tanh")
    replies = iter([{"name": "copy", "motivation": "a causal running mean with an output gate", "code": renamed},
                    {"name": "tanh-gate", "motivation": "a causal running mean with an output gate", "code": other}])

    def reply(tool, body):
        if tool == "submit_researcher":
            return Step(tool_input=next(replies))
        return Step(tool_input={"duplicate": False, "reason": "tanh instead of sigmoid gating"})

    with MessagesServer(responder=reply) as server:
        llm = AnthropicBackend(AnthropicConfig(api_key="k", base_url=server.url, timeout_s=5, backoff_base_s=0.01))
        proposed = Researcher(llm, str(tmp_path / "mem"), memory, campaign="n").propose(novelty_threshold=0.5)
        requests = list(server.requests)
    assert [r["tools"][0]["name"] for r in requests] == ["submit_researcher", "submit_researcher", "submit_novelty"]
    assert "running-mean" in str(context_of(requests[1]["messages"])["duplicates_so_far"])
    (neighbour,) = context_of(requests[2]["messages"])["neighbours"]
    assert neighbour["code"] == FIXED and neighbour["motivation"].startswith("a causal running mean")
    assert context_of(requests[2]["messages"])["proposal"]["code"] == other
    assert proposed.name == "tanh-gate" and proposed.status == "proposed"
