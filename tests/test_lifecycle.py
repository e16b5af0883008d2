"""The candidate lifecycle as the memory enforces it, and the predicates every reader counts with.

Every legal move of ``TRANSITIONS`` goes through ``Memory.update_candidate``; every other
move is refused with an ``IllegalTransition`` naming it and changes nothing;
``reached_training`` is set on entering training and never lost; the budget, "verified"
and "breakthrough" predicates give the same answer on a ``Candidate`` and on a scanned row.
"""

from __future__ import annotations

import itertools

import pytest

from asiarch.memory import (
    Candidate,
    IllegalTransition,
    Memory,
    MemoryInputError,
    StageMetrics,
    lifecycle,
)
from asiarch.memory.lifecycle import FACT_COLUMNS, STATUSES, TRANSITIONS, Status

LEGAL = sorted((old.value, new.value) for old, targets in TRANSITIONS.items() for new in targets)
ILLEGAL = sorted((old, new) for old, new in itertools.product(STATUSES, STATUSES)
                 if old != new and (old, new) not in LEGAL)


@pytest.fixture
def memory(tmp_path) -> Memory:
    return Memory(tmp_path / "mem", embedding_dim=8)


def add(memory: Memory, cid: str, status: str = "proposed", **fields) -> Candidate:
    """A new row, inserted straight in ``status`` (new rows may start anywhere)."""
    memory.upsert_candidates(Candidate(id=cid, campaign="c1", name=cid, status=status, **fields))
    return memory.get_candidate(cid)


def walk(memory: Memory, cid: str, *moves: str | tuple[str, str], **fields) -> Candidate:
    """A candidate proposed, then moved through ``moves``: a status, or (stage, status) for a stage move."""
    add(memory, cid, **fields)
    for move in moves:
        stage, status = move if isinstance(move, tuple) else (None, move)
        memory.update_candidate(cid, status=status, **({"stage": stage} if stage else {}))
    return memory.get_candidate(cid)


def test_the_tables_cover_every_status():
    assert set(TRANSITIONS) == set(Status) and len(LEGAL) > 10 and len(ILLEGAL) > 30


def test_every_legal_move_is_accepted(memory):
    for number, (old, new) in enumerate(LEGAL):
        cid = f"legal-{number}"
        add(memory, cid, status=old)
        memory.update_candidate(cid, status=old, status_reason="a write that only changes other fields")
        moved = memory.update_candidate(cid, status=new)
        assert memory.get_candidate(cid).status == new == moved.status, (old, new)


@pytest.mark.parametrize(("old", "new"), ILLEGAL)
def test_every_other_status_move_is_refused_naming_it(memory, old, new):
    add(memory, "x", status=old)
    before = memory.get_candidate("x")
    with pytest.raises(IllegalTransition, match=f"'x': illegal status move {old} -> {new} "):
        memory.update_candidate("x", status=new)
    with pytest.raises(IllegalTransition, match=f"illegal status move {old} -> {new}"):
        memory.upsert_candidates(Candidate(id="x", campaign="c1", name="x", status=new))  # a whole-row write too
    assert memory.get_candidate("x") == before


def test_the_representative_illegal_moves_say_what_is_allowed(memory):
    add(memory, "stopped", status="stopped")
    with pytest.raises(IllegalTransition, match=r"stopped -> promoted \(from stopped the allowed moves are: none: it is final\)"):
        memory.update_candidate("stopped", status="promoted")
    add(memory, "rejected", status="rejected")
    with pytest.raises(IllegalTransition, match="illegal status move rejected -> training"):
        memory.update_candidate("rejected", status="training")
    add(memory, "proposed")
    with pytest.raises(IllegalTransition, match=r"proposed -> promoted \(from proposed the allowed moves are: rejected, validated\)"):
        memory.update_candidate("proposed", status="promoted")


def test_stages_only_move_forward_and_kinds_never_change(memory):
    verified = walk(memory, "v", "validated", "training", "finished", "promoted", ("verify", "finished"))
    assert (verified.stage, verified.status) == ("verify", "finished")
    with pytest.raises(IllegalTransition, match="'v': illegal stage move verify -> explore"):
        memory.update_candidate("v", stage="explore")
    with pytest.raises(IllegalTransition, match=r"'v': its kind cannot change \(candidate -> seed\)"):
        memory.update_candidate("v", kind="seed")
    add(memory, "s", status="finished", kind="seed")
    with pytest.raises(IllegalTransition, match=r"its kind cannot change \(seed -> candidate\)"):
        memory.update_candidate("s", kind="candidate")
    assert memory.get_candidate("v").stage == "verify" and memory.get_candidate("s").kind == "seed"


def test_reached_training_is_set_on_entering_training_and_never_lost(memory):
    assert not walk(memory, "r", "validated").reached_training
    assert memory.update_candidate("r", status="training").reached_training
    for status in ("failed", "validated"):  # a training failure, repaired: it waits to train again
        assert memory.update_candidate("r", status=status).reached_training, status
    memory.upsert_candidates(Candidate(id="r", campaign="c1", name="r", status="validated", reached_training=False))
    assert memory.get_candidate("r").reached_training  # a whole-row write cannot unset it
    with pytest.raises(MemoryInputError, match="'reached_training' is set by the memory"):
        memory.update_candidate("r", reached_training=False)
    assert lifecycle.counts_toward_budget(memory.get_candidate("r"))
    crashed = walk(memory, "crash", "validated", "training", "validated")  # the trial crashed: it trains again
    assert crashed.reached_training and crashed.status == "validated"


def small_campaign(memory: Memory) -> dict[str, tuple[bool, bool, bool]]:
    """One row per case the readers used to disagree on; returns id -> (budget, verified, breakthrough)."""
    memory.upsert_candidates(Candidate(
        id="c1-seed-deltanet", campaign="c1", name="deltanet", kind="seed", stage="verify", status="finished",
        explore=StageMetrics(eval_loss=5.0, fitness=0.5), verify=StageMetrics(eval_loss=4.0), device_seconds=60.0))
    walk(memory, "proposed")
    walk(memory, "rejected", "validated", "rejected")
    walk(memory, "repaired", "validated", "training", "failed", "validated")
    walk(memory, "stopped", "validated", "training", "stopped")
    walk(memory, "explored", "validated", "training", "finished")
    memory.set_stage("explored", "explore", fitness=0.6, eval_loss=5.1)
    walk(memory, "verifying", "validated", "training", "finished", ("verify", "promoted"))
    walk(memory, "verify-failed", "validated", "training", "finished", "promoted", ("verify", "failed"))
    walk(memory, "verified", "validated", "training", "finished", ("verify", "promoted"))
    memory.set_stage("verified", "verify", status="finished", eval_loss=4.1, fitness=0.55)
    walk(memory, "winner", "validated", "training", "finished", ("verify", "promoted"))
    memory.set_stage("winner", "verify", status="finished", eval_loss=3.9, fitness=0.7,
                     fitness_parts={"beats": {"deltanet": True}}, breakthrough=True)
    memory.set_stage("winner", "explore", fitness=0.8)
    memory.update_candidate("verifying", breakthrough=True)  # flagged, but without a verify result it is no breakthrough
    return {"proposed": (False, False, False), "rejected": (False, False, False), "repaired": (True, False, False),
            "stopped": (True, False, False), "explored": (True, False, False), "verifying": (True, False, False),
            "verify-failed": (True, False, False), "verified": (True, True, False), "winner": (True, True, True),
            "c1-seed-deltanet": (False, False, False)}


def test_predicates_agree_on_candidates_and_on_scanned_rows(memory):
    expected = small_campaign(memory)
    candidates = {c.id: c for c in memory.list_candidates(campaign="c1")}
    rows = {row["id"]: row for row in memory.scan_candidates("c1", ["id", *FACT_COLUMNS]).to_pylist()}
    assert set(candidates) == set(rows) == set(expected)
    for cid, wanted in expected.items():
        for record in (candidates[cid], rows[cid]):
            seen = (lifecycle.counts_toward_budget(record), lifecycle.is_verified(record), lifecycle.is_breakthrough(record))
            assert seen == wanted, (cid, type(record).__name__)
            assert lifecycle.is_seed(record) == (cid == "c1-seed-deltanet")
    counts = memory.campaign_counts("c1")
    assert (counts.proposals, counts.seeds, counts.trained, counts.verified, counts.breakthroughs) == (9, 1, 7, 2, 1)
    assert counts.best_fitness == 0.8  # explore fitness of a candidate; the seed's 0.5 is not a candidate's
    assert counts.by_status == {"proposed": 1, "validated": 1, "rejected": 1, "training": 0, "stopped": 1,
                                "finished": 3, "failed": 1, "promoted": 1}
    assert counts == lifecycle.count(candidates.values()) == lifecycle.count(rows.values())
    assert counts.device_seconds == 60.0  # the seed's training ran on the campaign's devices too


def test_kind_filters_the_listing_and_the_ranking(memory):
    small_campaign(memory)
    assert [c.id for c in memory.list_candidates(campaign="c1", kind="seed")] == ["c1-seed-deltanet"]
    assert [c.id for c in memory.top_k(5, campaign="c1", kind="candidate")] == ["winner", "explored"]
    assert [c.id for c in memory.top_k(5, campaign="c1")] == ["winner", "explored", "c1-seed-deltanet"]
