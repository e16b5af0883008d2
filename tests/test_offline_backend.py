"""The offline backend answers every agent role through the same protocol, by visible rules."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from asiarch.llm import LLMError
from asiarch.proposer import OfflineBackend, genome_from_source, render, seed_genome
from asiarch.llm.schemas import ROLE_SCHEMAS, context_of, with_context
from asiarch.memory.cognition import MOTIFS
from asiarch.memory.schema import code_hash


def ask(backend: OfflineBackend, role: str, context: dict):
    messages = [{"role": "user", "content": with_context(f"Act as the {role}.", context)}]
    return backend.complete(role, "system prompt", messages, ROLE_SCHEMAS[role]).data


SEED_CODE = render(seed_genome("deltanet"))


def test_researcher_proposes_a_changed_design_deterministically():
    context = {"parent": {"name": "deltanet", "code": SEED_CODE}, "insights": []}
    first, again = ask(OfflineBackend(seed=1), "researcher", context), ask(OfflineBackend(seed=1), "researcher", context)
    assert first == again
    child, parent = genome_from_source(first["code"]), seed_genome("deltanet").normalised()
    assert child is not None and child != parent
    assert first["name"] and "From parent deltanet" in first["motivation"]


def test_researcher_follows_the_motifs_of_retrieved_insights():
    def gated_share(insights):
        backend = OfflineBackend(seed=0)
        proposals = [ask(backend, "researcher", {"parent": {"code": SEED_CODE}, "insights": insights}) for _ in range(120)]
        return Counter(genome_from_source(p["code"]).output_gate != "none" for p in proposals)[True] / 120

    assert gated_share([{"motifs": ["output_gate"]}] * 10) > gated_share([]) + 0.2


def test_researcher_avoids_designs_already_in_memory():
    backend = OfflineBackend(seed=3)
    seen = set()
    for _ in range(15):
        proposal = ask(backend, "researcher", {"parent": {"code": SEED_CODE}, "avoid_codes": sorted(seen)})
        assert proposal["code"] not in seen
        seen.add(proposal["code"])


@pytest.mark.parametrize(
    "failing,field,expected",
    [("complexity", "window", 0), ("param_budget", "value_expand", 1), ("finite_gradients", "qk_norm", "l2")],
)
def test_engineer_undoes_what_the_failing_check_points_at(failing, field, expected):
    broken = replace(seed_genome("deltanet"), window=64, value_expand=2, output_gate="none")
    answer = ask(OfflineBackend(), "engineer", {"code": render(broken), "failures": [{"check": failing, "reason": "x"}]})
    assert getattr(genome_from_source(answer["code"]), field) == expected
    assert failing in answer["explanation"]


def test_engineer_leaves_foreign_code_alone_and_says_so():
    answer = ask(OfflineBackend(), "engineer", {"code": "class Mine: pass", "failures": [{"check": "shape"}]})
    assert answer["code"] == "class Mine: pass" and "can only repair designs it rendered" in answer["explanation"]


def test_novelty_flags_same_code_and_near_identical_motivations():
    backend = OfflineBackend()
    same = ask(backend, "novelty", {"code_hash": code_hash(SEED_CODE), "neighbours": [
        {"name": "a", "code_hash": code_hash(SEED_CODE), "similarity": 0.5}]})
    close = ask(backend, "novelty", {"code_hash": "x", "neighbours": [{"name": "b", "code_hash": "y", "similarity": 0.99}]})
    fresh = ask(backend, "novelty", {"code_hash": "x", "neighbours": [{"name": "c", "code_hash": "y", "similarity": 0.8}]})
    assert same["duplicate"] and close["duplicate"] and not fresh["duplicate"]


def test_judge_scores_against_the_seeds():
    seeds = [{"name": "deltanet", "eval_loss": 5.4, "mqar_accuracy": 0.7}, {"name": "attention", "eval_loss": 5.1, "mqar_accuracy": 0.5}]
    backend = OfflineBackend()
    better = ask(backend, "judge", {"seeds": seeds, "candidate": {"eval_loss": 4.9, "mqar_accuracy": 0.8, "code": SEED_CODE}})
    worse = ask(backend, "judge", {"seeds": seeds, "candidate": {"eval_loss": 5.6, "mqar_accuracy": 0.2, "code": SEED_CODE}})
    quadratic = ask(backend, "judge", {"seeds": seeds, "candidate": {"eval_loss": 5.0, "growth_exponent": 1.9}})
    assert better["performance"] > 5 > worse["performance"]
    assert quadratic["complexity"] < better["complexity"]
    assert "best seed 5.100" in better["rationale"]


def test_analyst_distils_what_the_change_did():
    parent = seed_genome("deltanet")
    child = replace(parent, output_gate="silu")
    answer = ask(OfflineBackend(), "analyst", {
        "candidate": {"name": "child", "eval_loss": 5.0, "code": render(child)},
        "parent": {"name": "parent", "eval_loss": 5.3, "code": render(parent), "candidate_vs_this_at_equal_progress": {
            "evaluation": 8, "loss": 5.0, "their_loss": 5.3, "delta": -0.3}},
        "sibling_1": {"name": "sib", "eval_loss": 5.1, "candidate_vs_this_at_equal_progress": {
            "evaluation": 4, "loss": 5.4, "their_loss": 5.1, "delta": 0.3}},
    })
    assert "vs parent 5.300 (-0.300) at evaluation 8" in answer["analysis"]
    assert "vs sibling 1 sib: +0.300 eval loss at evaluation 4" in answer["analysis"]
    (insight,) = answer["insights"]
    assert "output_gate" in insight["design_insight"] and set(insight["motifs"]) <= MOTIFS


def test_unknown_role_and_context_parsing():
    with pytest.raises(LLMError, match="no rule for the role 'poet'"):
        OfflineBackend().complete("poet", "", [], {"type": "object"})
    blocks = [{"role": "user", "content": [{"type": "text", "text": with_context("hi", {"a": 1})}]}]
    assert context_of(blocks) == {"a": 1} and context_of([{"role": "user", "content": "no context"}]) == {}


def test_engineer_never_swaps_a_design_for_a_seed():
    """With no rule for the failure, the offline Engineer returns the design unchanged and says so
    (the Engineer then rejects it): a seed under the design's name would be no repair."""
    design = replace(seed_genome("deltanet"), output_gate="none", window=64)
    code = render(design)
    answer = ask(OfflineBackend(), "engineer", {"code": code, "failures": [{"check": "causality", "reason": "leaks"}]})
    assert answer["code"] == code and "no repair for causality" in answer["explanation"]
