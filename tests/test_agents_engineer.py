"""The Engineer's repair path serves failures found later by a training trial, and gives up cleanly."""

from __future__ import annotations

from dataclasses import replace

from asiarch.agents import Engineer
from asiarch.proposer import OfflineBackend, genome_from_source, render, seed_genome
from asiarch.memory import Candidate, FunctionEmbedder, Memory

import numpy as np


def memory_at(tmp_path) -> Memory:
    return Memory(tmp_path / "mem", embedder=FunctionEmbedder(lambda texts: np.ones((len(texts), 8)), 8))


def test_a_training_failure_is_repaired_and_rechecked(tmp_path):
    memory = memory_at(tmp_path)
    genome = replace(seed_genome("deltanet"), window=32, output_gate="sigmoid")
    memory.upsert_candidates(Candidate(id="c1", campaign="x", name="windowed", code=render(genome), status="failed"))
    engineer = Engineer(OfflineBackend(), str(tmp_path / "mem"), memory, "x")
    fixed = engineer.repair_training_failure("c1", "loss became nan at step 3", check_timeout=60, complexity_repeats=2)
    assert fixed.status == "validated" and fixed.check_report["passed"]
    (attempt,) = fixed.repairs
    assert attempt["failures"] == [{"check": "training", "reason": "loss became nan at step 3"}] and attempt["passed"]
    assert genome_from_source(fixed.code) != genome.normalised()
    assert not attempt["drift"]["drifted"]  # its motivation names nothing the repair removed


def test_a_repair_that_turns_a_design_into_a_seed_is_drift(tmp_path):
    memory = memory_at(tmp_path)  # DeltaNet plus a window: the training repair removes the window, leaving DeltaNet
    memory.upsert_candidates(Candidate(id="c3", campaign="x", name="windowed", status="failed",
                                       code=render(replace(seed_genome("deltanet"), window=32))))
    engineer = Engineer(OfflineBackend(), str(tmp_path / "mem"), memory, "x")
    drifted = engineer.repair_training_failure("c3", "loss became nan at step 3", check_timeout=60, complexity_repeats=2)
    assert drifted.status == "rejected" and "the repair turned it into the seed deltanet" in drifted.status_reason


def test_a_repair_that_drops_what_the_motivation_claims_is_rejected_as_drift(tmp_path):
    """The same repair as above (the stabilisers, and no sliding window), but this design's motivation is the
    window: passing its checks without it would train something else under its name."""
    memory = memory_at(tmp_path)
    genome = replace(seed_genome("deltanet"), window=32, output_gate="sigmoid")
    memory.upsert_candidates(Candidate(id="c1", campaign="x", name="windowed", code=render(genome), status="failed",
                                       motivation="DeltaNet plus a 32-token sliding_window branch for local detail."))
    engineer = Engineer(OfflineBackend(), str(tmp_path / "mem"), memory, "x")
    drifted = engineer.repair_training_failure("c1", "loss became nan at step 3", check_timeout=60, complexity_repeats=2)
    assert drifted.status == "rejected"
    assert drifted.status_reason.startswith("drift: the repaired code no longer implements its motivation")
    assert "sliding_window" in drifted.status_reason
    (attempt,) = drifted.repairs
    assert attempt["passed"] and attempt["drift"]["drifted"]  # its checks passed; the drift check did not


def test_unrepairable_code_is_rejected_with_the_reasons(tmp_path):
    memory = memory_at(tmp_path)
    memory.upsert_candidates(Candidate(id="c2", campaign="x", name="broken", code="import os\n"))
    engineer = Engineer(OfflineBackend(), str(tmp_path / "mem"), memory, "x")
    rejected = engineer.validate("c2", max_repairs=2)
    assert rejected.status == "rejected" and "policy" in rejected.status_reason
    # the code came back unchanged: no second request for the same answer, and the reason says so
    assert len(rejected.repairs) == 1 and not rejected.repairs[0]["passed"]
    assert "returned the code unchanged" in rejected.status_reason


def test_duplicates_trigger_bounded_replans_and_never_crash(tmp_path):
    from asiarch.agents import AgentsConfig, Researcher

    memory = memory_at(tmp_path)  # every motivation embeds to the same vector: all proposals look alike
    researcher = Researcher(OfflineBackend(seed=2), str(tmp_path / "mem"), memory, "x",
                            config=AgentsConfig(max_replans=2))
    first = researcher.propose()
    second = researcher.propose()
    assert first.status == "proposed" and first.status_reason == ""
    assert second.status == "rejected" and second.status_reason.startswith("still a duplicate after 2 re-plans")
    assert memory.count_candidates("x") == 2 and first.name != second.name
