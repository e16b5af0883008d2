"""The Judge and the Analyst compare designs at equal training progress, with the seeds' numbers and curves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from asiarch.agents import Analyst, Judge
from asiarch.memory import Candidate, FunctionEmbedder, Memory, StageMetrics
from asiarch.proposer import OfflineBackend, render, seed_genome

# eval loss at each of explore's evaluations: the parent finished all eight, the sibling was stopped after four
PARENT = [7.0, 6.0, 5.5, 5.2, 5.0, 4.9, 4.8, 4.75]
SIBLING = [6.9, 5.8, 5.3, 5.0]  # better than the parent at evaluation 4, worse than its final loss
CHILD = [6.8, 5.7, 5.2, 4.9, 4.7, 4.6, 4.5, 4.45]
SEED = {"name": "deltanet", "eval_loss": 4.6, "eval_loss_std": 0.02, "mqar_accuracy": 0.5, "benchmark": 0.5,
        "loss_curve": [6.9, 5.9, 5.4, 5.1, 4.9, 4.75, 4.65, 4.6]}


def stored(tmp_path) -> tuple[Memory, str]:
    memory = Memory(tmp_path / "mem", embedder=FunctionEmbedder(lambda texts: np.ones((len(texts), 8)), 8))
    parent, child = seed_genome("deltanet"), replace(seed_genome("deltanet"), output_gate="silu")

    def row(cid, curve, code, parents=(), status="finished"):
        return Candidate(id=cid, campaign="x", name=cid, code=code, parent_ids=list(parents), status=status,
                         explore=StageMetrics(loss_curve=curve, eval_loss=curve[-1], mqar_accuracy=0.5, fitness=0.5))

    memory.upsert_candidates(row("parent", PARENT, render(parent)))
    memory.upsert_candidates(row("sibling", SIBLING, render(replace(parent, window=32)), ["parent"], "stopped"))
    memory.upsert_candidates(row("child", CHILD, render(child), ["parent"]))
    return memory, str(tmp_path / "mem")


def test_the_analyst_compares_at_equal_progress_and_with_the_seeds(tmp_path):
    memory, uri = stored(tmp_path)
    analysed = Analyst(OfflineBackend(), uri, memory, "x").analyse("child", seeds=[SEED])
    text = analysed.analysis
    # the stopped sibling is compared at its last evaluation (4): the child is 0.1 better there, not 0.55 (4.45 - 5.0)
    assert "vs sibling 1 sibling: -0.100 eval loss at evaluation 4" in text
    assert "vs parent 4.750 (-0.300) at evaluation 8" in text
    assert "vs seed deltanet: -0.150 eval loss at evaluation 8" in text


def test_the_judge_reads_the_seed_at_the_candidates_progress(tmp_path):
    memory, uri = stored(tmp_path)
    judge = Judge(OfflineBackend(), uri, memory, "x")
    stopped = judge.score("sibling", seeds=[SEED])  # stopped at evaluation 4: the seed had 5.1 there, not 4.6
    assert "eval loss 5.000 vs best seed 5.100 at evaluation 4" in stopped.judge_rationale
    assert stopped.judge["performance"] > 5  # ahead of the seed at equal progress, although 0.4 behind its final
    finished = judge.score("child", seeds=[SEED])
    assert "eval loss 4.450 vs best seed 4.600 at evaluation 8" in finished.judge_rationale


def test_the_judge_scores_growth_only_beyond_its_measurement_noise(tmp_path):
    memory, uri = stored(tmp_path)
    code = render(seed_genome("deltanet"))

    def measured(cid: str, complexity: dict) -> None:
        report = {"passed": True, "results": [{"check": "complexity", "passed": True, "measurements": complexity},
                                              {"check": "param_budget", "passed": True, "measurements": {"ratio": 1.0}}]}
        memory.upsert_candidates(Candidate(id=cid, campaign="x", name=cid, code=code, status="finished",
                                           check_report=report,
                                           explore=StageMetrics(loss_curve=CHILD, eval_loss=CHILD[-1], fitness=0.5)))

    measured("steeper", {"time_exponent": 1.04, "time_exponent_se": 0.03})  # the seeds' run-to-run spread
    measured("flatter", {"time_exponent": 0.95, "time_exponent_se": 0.03})
    measured("unsure", {"time_exponent": 1.04})  # a record from before the standard error was measured
    measured("quadratic", {"time_exponent": 1.6, "time_exponent_se": 0.02})
    judge = Judge(OfflineBackend(), uri, memory, "x")
    scores = {cid: judge.score(cid, seeds=[SEED]) for cid in ("steeper", "flatter", "unsure", "quadratic")}
    complexity = {cid: c.judge["complexity"] for cid, c in scores.items()}
    # two linear designs whose exponents differ by noise score alike; the same exponent with no noise estimate counts
    assert complexity["steeper"] == complexity["flatter"] > complexity["unsure"] > complexity["quadratic"]
    assert "T^1.04 ± 0.03: linear within noise" in scores["steeper"].judge_rationale
    assert "faster than linear by 0.60 (beyond noise" in scores["quadratic"].judge_rationale


def seed_runs(finals: list[float], mqar: float) -> dict:
    """A seed as ``scoring.anchor_of`` gives it: the mean curve and each run's (step, loss, benchmark) rows."""
    runs = [[[24 * (i + 1), loss + (final - SEED["eval_loss"]), mqar] for i, loss in enumerate(SEED["loss_curve"])]
            for final in finals]
    mean_curve = [sum(run[i][1] for run in runs) / len(runs) for i in range(len(SEED["loss_curve"]))]
    return {**SEED, "eval_loss": mean_curve[-1], "loss_curve": mean_curve, "mqar_accuracy": mqar, "run_curves": runs}


def test_the_judge_reads_a_loss_gap_against_the_seeds_noise_and_recall_against_chance(tmp_path):
    from asiarch.campaign.scoring import Chance

    memory, uri = stored(tmp_path)
    memory.upsert_candidates(Candidate(id="guessing", campaign="x", name="guessing", code=render(seed_genome("deltanet")),
                                       status="finished", explore=StageMetrics(loss_curve=CHILD, eval_loss=CHILD[-1],
                                                                               mqar_accuracy=0.13, fitness=0.5)))
    judge = Judge(OfflineBackend(), uri, memory, "x")
    close = seed_runs([4.43, 4.46, 4.49], mqar=0.5)  # the child's 4.45 is inside this seed's spread (sd 0.03)
    tie = judge.score("child", seeds=[close])
    assert tie.judge["performance"] == 5.0 + max(-1.0, min(1.0, 2 * (0.5 - 0.5)))  # loss: a tie; recall: equal
    assert "within the seed's noise" in tie.judge_rationale
    far = seed_runs([4.59, 4.60, 4.61], mqar=0.5)  # 0.15 behind the child with sd 0.01: beyond noise
    ahead = judge.score("child", seeds=[far])
    assert ahead.judge["performance"] > 5 and "within the seed's noise" not in ahead.judge_rationale

    chance = Chance(level=0.125, trials=2048)  # cpu_tiny's MQAR: 256 examples x 8 pairs, 1/8 by a bag of values
    guessing = judge.score("guessing", seeds=[seed_runs([4.59, 4.60, 4.61], mqar=0.12)], recall_chance=chance)
    assert "recall at chance, not scored" in guessing.judge_rationale
    recalling = judge.score("guessing", seeds=[seed_runs([4.59, 4.60, 4.61], mqar=0.5)], recall_chance=chance)
    assert "MQAR 0.130 vs best seed 0.500" in recalling.judge_rationale  # the seed recalls: the gap is real
    assert recalling.judge["performance"] < guessing.judge["performance"]


def test_the_analyst_draws_no_insight_from_a_gap_within_noise(tmp_path):
    memory, uri = stored(tmp_path)
    near = PARENT[:-1] + [PARENT[-1] - 0.03]  # 0.03 below its parent: above the old fixed 0.02, inside the noise
    memory.upsert_candidates(Candidate(id="near", campaign="x", name="near", parent_ids=["parent"], status="finished",
                                       code=render(replace(seed_genome("deltanet"), output_gate="silu")),
                                       explore=StageMetrics(loss_curve=near, eval_loss=near[-1], fitness=0.5)))
    anchor = seed_runs([4.57, 4.60, 4.63], mqar=0.5)  # sd 0.03 at every evaluation: two runs differ by ~0.042
    analyst = Analyst(OfflineBackend(), uri, memory, "x")
    noise = analyst.analyse("near", seeds=[anchor])
    assert "vs parent 4.750 (-0.030) at evaluation 8 (within noise)" in noise.analysis
    real = analyst.analyse("child", seeds=[anchor])  # 0.3 below the same parent
    assert "vs parent 4.750 (-0.300) at evaluation 8 (better beyond noise)" in real.analysis
    sources = {row["source"] for row in memory.list_insights(kind="experiment")}
    assert "child" in sources and "near" not in sources  # only the gap beyond noise became an insight
