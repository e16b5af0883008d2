"""The one scoring path: stage metrics over training runs, fitness against the anchor, significance against seeds."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from asiarch.campaign import asi_arch_fitness, scoring


def runs(losses, benches):
    return [{"eval_loss": loss, "mqar_accuracy": bench, "history": [{"eval_loss": loss + 1}, {"eval_loss": loss}]}
            for loss, bench in zip(losses, benches)]


def test_stage_metrics_average_the_runs_and_keep_each():
    m = scoring.stage_metrics(runs([5.0, 5.2, 5.4], [0.1, 0.2, 0.3]), "mqar_accuracy")
    assert m.eval_loss == pytest.approx(5.2) and m.benchmark == pytest.approx(0.2)
    assert [r["benchmark"] for r in m.benchmarks["runs"]] == [0.1, 0.2, 0.3]
    assert m.benchmarks["eval_loss_std"] == pytest.approx(0.2)
    assert m.loss_curve == [6.0, 5.0]  # the first run's curve


def test_welch_test_matches_scipy_and_reports_effect_and_interval():
    mine, theirs = [4.8, 4.9, 5.0], [5.3, 5.1, 5.4]
    test = scoring.one_sided_test(mine, theirs, higher_is_better=False)
    expected = stats.ttest_ind(mine, theirs, equal_var=False, alternative="less").pvalue
    assert test["p"] == pytest.approx(expected, rel=1e-9)
    assert test["diff"] == pytest.approx(sum(mine) / 3 - sum(theirs) / 3)
    low, high = test["ci"]
    assert low < test["diff"] < high < 0  # clearly better: the whole interval is below zero
    assert test["effect_size"] < -1
    worse = scoring.one_sided_test(theirs, mine, higher_is_better=False)
    assert worse["p"] == pytest.approx(1 - test["p"])


def test_no_test_without_two_runs_or_without_spread():
    assert scoring.one_sided_test([5.0], [5.1, 5.2], higher_is_better=False)["p"] is None
    flat = scoring.one_sided_test([5.0, 5.0], [5.1, 5.1], higher_is_better=False)
    assert flat["p"] is None and "spread" in flat["why_no_test"]


def test_beating_a_seed_needs_both_loss_and_benchmark_to_be_significant():
    seed = scoring.stage_metrics(runs([5.3, 5.1, 5.4], [0.10, 0.12, 0.11]), "mqar_accuracy")
    clear = scoring.stage_metrics(runs([4.8, 4.9, 5.0], [0.30, 0.32, 0.31]), "mqar_accuracy")
    noisy_recall = scoring.stage_metrics(runs([4.8, 4.9, 5.0], [0.05, 0.30, 0.12]), "mqar_accuracy")
    tests = scoring.compare_with_seeds(clear, {"deltanet": seed}, alpha=0.05)
    assert tests["deltanet"]["beats"] and scoring.is_breakthrough(scoring.beats(tests), ["deltanet"])
    tests = scoring.compare_with_seeds(noisy_recall, {"deltanet": seed}, alpha=0.05)
    assert noisy_recall.benchmark > seed.benchmark  # better on average ...
    assert not tests["deltanet"]["beats"]  # ... but not beyond the noise
    assert not scoring.is_breakthrough({"deltanet": True}, ["deltanet", "mamba2"])  # every seed must be beaten


def lineage(summaries, weights_of):
    """The runs as PBT left them: ``weights_of[i]`` is the training seed whose weights run i ended on."""
    return [{**s, "weights_of": w} for s, w in zip(summaries, weights_of)]


def test_runs_that_share_weights_are_one_sample():
    """PBT cloned run 0 into run 2: they are one sample (their mean), so the mean, the spread and the tests
    count two independent runs, not three."""
    shared = scoring.stage_metrics(lineage(runs([5.0, 5.2, 5.1], [0.1, 0.2, 0.3]), [0, 1, 0]), "mqar_accuracy")
    assert scoring.independent_values(shared, "eval_loss") == pytest.approx([5.05, 5.2])
    assert shared.eval_loss == pytest.approx(5.125)  # not 5.1: the cloned lineage does not count twice
    assert shared.benchmark == pytest.approx((0.2 + 0.2) / 2)
    assert shared.benchmarks["independent_runs"] == 2 and len(shared.benchmarks["runs"]) == 3
    assert shared.benchmarks["eval_loss_std"] == pytest.approx(scoring.std([5.05, 5.2]))
    alone = scoring.stage_metrics(lineage(runs([5.0, 5.2, 5.1], [0.1, 0.2, 0.3]), [0, 1, 2]), "mqar_accuracy")
    assert alone.eval_loss == pytest.approx(5.1) and alone.benchmarks["independent_runs"] == 3
    unknown = scoring.stage_metrics(runs([5.0, 5.2, 5.1], [0.1, 0.2, 0.3]), "mqar_accuracy")  # no lineage kept
    assert scoring.independent_values(unknown, "eval_loss") == pytest.approx([5.0, 5.2, 5.1])


def test_a_test_over_clones_counts_independent_runs_and_says_so():
    seed = scoring.stage_metrics(lineage(runs([5.3, 5.1, 5.4], [0.10, 0.12, 0.11]), [0, 1, 2]), "mqar_accuracy")
    # three runs that look clearly better and tightly grouped, but two of them are one lineage
    cloned = scoring.stage_metrics(lineage(runs([4.80, 4.81, 5.00], [0.30, 0.31, 0.32]), [1, 1, 2]), "mqar_accuracy")
    test = scoring.compare_with_seeds(cloned, {"deltanet": seed}, alpha=0.05)["deltanet"]
    assert test["loss"]["n"] == [2, 3] and test["loss"]["runs"] == [3, 3]
    expected = stats.ttest_ind([4.805, 5.00], [5.3, 5.1, 5.4], equal_var=False, alternative="less").pvalue
    assert test["loss"]["p"] == pytest.approx(expected, rel=1e-9)
    as_if_independent = stats.ttest_ind([4.80, 4.81, 5.00], [5.3, 5.1, 5.4], equal_var=False, alternative="less").pvalue
    assert as_if_independent < test["loss"]["p"]  # counting the clone twice would have overstated the evidence
    one = scoring.stage_metrics(lineage(runs([4.80, 4.81, 4.79], [0.3, 0.3, 0.3]), [1, 1, 1]), "mqar_accuracy")
    none = scoring.compare_with_seeds(one, {"deltanet": seed}, alpha=0.05)["deltanet"]
    assert none["loss"]["p"] is None and "independent" in none["loss"]["why_no_test"] and not none["beats"]


def test_score_names_a_missing_anchor_and_otherwise_uses_the_fitness_function():
    m = scoring.stage_metrics(runs([5.0, 5.2], [0.2, 0.2]), "mqar_accuracy")
    missing = scoring.score(asi_arch_fitness, "x", m, None, 0.5, "verify")
    assert missing.value is None and "baseline" in missing.parts["missing"]
    anchor = scoring.anchor_of("deltanet", scoring.stage_metrics(runs([5.5, 5.5], [0.1, 0.1]), "mqar_accuracy"))
    scored = scoring.score(asi_arch_fitness, "x", m, anchor, 0.5, "verify", note=1)
    assert scored.value == pytest.approx(asi_arch_fitness({"eval_loss": 5.1, "benchmark": 0.2}, anchor, 0.5).value)
    assert scored.parts["stage"] == "verify" and scored.parts["note"] == 1 and math.isfinite(scored.value)


def test_a_benchmark_at_chance_for_both_sides_is_named_missing_not_scored():
    chance = scoring.Chance(level=1 / 256, trials=1024)
    assert chance.p_above(0.004) > 0.05 and chance.p_above(0.05) < 1e-6
    guess = scoring.stage_metrics(runs([5.0], [0.002]), "mqar_accuracy")
    anchor = scoring.anchor_of("deltanet", scoring.stage_metrics(runs([5.1], [0.006]), "mqar_accuracy"))
    gated = scoring.score(asi_arch_fitness, "x", guess, anchor, 0.5, "explore", chance=chance)
    assert "benchmark" not in gated.parts["terms"] and "at chance" in gated.parts["missing"]["benchmark"]
    ungated = scoring.score(asi_arch_fitness, "x", guess, anchor, 0.5, "explore")
    assert "benchmark" in ungated.parts["terms"]  # without the gate, Eq. 2 turns the two guesses into a term
    recalls = scoring.stage_metrics(runs([5.0], [0.20]), "mqar_accuracy")
    kept = scoring.score(asi_arch_fitness, "x", recalls, anchor, 0.5, "explore", chance=chance)
    assert "benchmark" in kept.parts["terms"]  # one side recalls: the comparison carries signal


def test_noise_aware_fitness_reads_deltas_against_the_anchor_spread():
    from asiarch.campaign.fitness import noise_aware_fitness

    anchor = {"name": "deltanet", "eval_loss": 5.0, "benchmark": 0.2, "eval_loss_std": 0.05, "benchmark_std": 0.01}
    within = noise_aware_fitness({"eval_loss": 4.98, "benchmark": 0.2}, anchor, None)
    assert 0.5 < within.parts["terms"]["loss"] < 0.75  # 0.4 sd: a small push, not a verdict
    eq2 = asi_arch_fitness({"eval_loss": 4.98, "benchmark": 0.2}, anchor, None)
    assert eq2.parts["terms"]["loss"] == pytest.approx(1 / (1 + math.exp(-6 * 0.02 / 0.5)))  # Eq. 2 kept exactly
    ahead = noise_aware_fitness({"eval_loss": 4.80, "benchmark": 0.2}, anchor, None)
    further = noise_aware_fitness({"eval_loss": 4.60, "benchmark": 0.2}, anchor, None)
    assert within.parts["terms"]["loss"] < ahead.parts["terms"]["loss"] < further.parts["terms"]["loss"] < 0.99  # 4 and 8 sd told apart
    beyond = noise_aware_fitness({"eval_loss": 4.35, "benchmark": 0.2}, anchor, None)
    assert beyond.parts["terms"]["loss"] == pytest.approx(1 / (1 + math.exp(-6)))  # 13 sd > 12 sd: saturated
    unknown = noise_aware_fitness({"eval_loss": 4.8, "benchmark": 0.3}, {**anchor, "eval_loss_std": None}, 0.5)
    assert "loss" not in unknown.parts["terms"] and "spread" in unknown.parts["missing"]["loss"]
    assert unknown.parts["formula"] == "noise_aware" and unknown.value is not None


def test_mqar_chance_is_a_bag_of_values_guess_not_a_vocabulary_guess():
    from asiarch.config import load_scale

    scale = load_scale("cpu_tiny")
    chance = scoring.benchmark_chance(scale)
    assert chance.level == pytest.approx(1 / scale.mqar.num_kv_pairs)  # 1/K = 0.25 > 2/V = 0.0039 at cpu_tiny
    assert chance.trials == min(scale.train.eval_mqar_examples, scale.mqar.num_test) * scale.mqar.num_kv_pairs


def test_downstream_chance_follows_the_choices_of_the_scored_sets():
    """The downstream mean is gated like MQAR: its level is the mean of 1/choices over the sets scored."""
    import dataclasses

    from asiarch.config import load_scale
    from asiarch.data.downstream import load_task

    base = load_scale("paper_20m")
    two = dataclasses.replace(base.downstream, tasks=["piqa", "lambada"], limit=20)
    chance = scoring.benchmark_chance(dataclasses.replace(base, downstream=two))
    assert {len(d.continuations) for d in load_task("piqa", 20)} == {2}
    assert chance.level == pytest.approx((1 / 2 + 0.0) / 2) and chance.trials == 40  # LAMBADA has no guessing level
    arc = scoring.benchmark_chance(dataclasses.replace(base, downstream=dataclasses.replace(two, tasks=["arc_easy"])))
    arc_docs = load_task("arc_easy", 20)
    assert arc.level == pytest.approx(sum(1 / len(d.continuations) for d in arc_docs) / len(arc_docs))
    none = dataclasses.replace(base, downstream=dataclasses.replace(two, tasks=[]))
    assert scoring.benchmark_chance(none) is None


def test_scores_downstream_where_the_fitness_reads_it():
    import dataclasses

    from asiarch.config import load_scale

    tiny, paper = load_scale("cpu_tiny"), load_scale("paper_20m")
    assert paper.stages.benchmark == "downstream" and tiny.stages.benchmark == "mqar"
    assert scoring.scores_downstream(paper, "explore") and scoring.scores_downstream(paper, "verify")
    assert not scoring.scores_downstream(tiny, "explore") and not scoring.scores_downstream(tiny, "verify")
    assert scoring.scores_downstream(tiny, "verify", also_at_verify=True)  # run.downstream: extra results
    assert not scoring.scores_downstream(tiny, "explore", also_at_verify=True)
    with pytest.raises(ValueError, match="stage must be"):
        scoring.scores_downstream(dataclasses.replace(tiny), "scale")


def curve_runs(curves):
    """Runs whose evaluations are ``{step: (eval_loss, mqar)}``; their final result is the last one."""
    out = []
    for curve in curves:
        history = [{"step": step, "eval_loss": loss, "mqar_accuracy": bench} for step, (loss, bench) in sorted(curve.items())]
        out.append({"eval_loss": history[-1]["eval_loss"], "mqar_accuracy": history[-1]["mqar_accuracy"], "history": history})
    return out


def test_a_stopped_design_is_scored_against_the_anchor_at_the_same_step():
    from asiarch.campaign.fitness import noise_aware_fitness

    anchor_runs = curve_runs([{24: (5.0, 0.1), 48: (4.0, 0.2)}, {24: (5.2, 0.1), 48: (4.2, 0.3)},
                              {24: (5.4, 0.1), 48: (4.1, 0.25)}])
    anchor = scoring.anchor_of("deltanet", scoring.stage_metrics(anchor_runs, "mqar_accuracy"))
    then = scoring.at_step(anchor, 24)
    assert then["eval_loss"] == pytest.approx(5.2) and then["eval_loss_std"] == pytest.approx(0.2)
    assert then["benchmark_std"] == 0.0 and then["step"] == 24
    assert scoring.at_step(anchor, 36) is None  # no anchor evaluation there

    # stopped at step 24 with loss 5.1: a little ahead of the anchor then, far behind its final 4.1
    stopped = scoring.stage_metrics(curve_runs([{24: (5.1, 0.1)}]), "mqar_accuracy")
    fair = scoring.score(noise_aware_fitness, "x", stopped, anchor, None, "explore", stopped_at=24)
    unfair = scoring.score(noise_aware_fitness, "x", stopped, anchor, None, "explore")
    assert fair.parts["compared_at_step"] == 24 and fair.parts["anchor"]["eval_loss"] == pytest.approx(5.2)
    assert fair.parts["terms"]["loss"] > 0.5 > unfair.parts["terms"]["loss"]
    assert fair.parts["noise_sd"]["loss"] == pytest.approx(0.2)
    assert "benchmark" in fair.parts["missing"]  # the anchor's runs did not spread on it at step 24: no noise to read
    assert "compared_at_step" not in unfair.parts

    lost = scoring.score(noise_aware_fitness, "x", stopped, anchor, None, "explore", stopped_at=36)
    assert "compared_at_step" not in lost.parts and "step 36" in lost.parts["equal_progress"]
    assert lost.value == pytest.approx(unfair.value)  # compared with the final result, and saying so


def test_an_asha_stop_says_how_far_behind_the_cutoff_it_was_in_anchor_noise():
    rung = {"metric": "eval_loss", "mode": "min", "value": 4.30, "cutoff": 4.20, "designs": 5, "step": 96}
    sure = scoring.rung_confidence(rung, noise_sd=0.02, noise_runs=10)
    assert sure["behind"] == pytest.approx(0.10) and sure["behind_sd"] == pytest.approx(5.0)
    assert sure["p"] < 0.005  # 5 sd behind, the sd from 10 runs: the cut was sure
    # the same gap against an sd read from 3 runs (2 degrees of freedom) is far less sure
    assert 0.01 < scoring.rung_confidence(rung, 0.02, 3)["p"] == pytest.approx(stats.t.sf(5 / math.sqrt(2), 2))
    coin = scoring.rung_confidence({**rung, "value": 4.205}, noise_sd=0.02, noise_runs=3)
    assert 0.4 < coin["p"] < 0.5 and coin["behind_sd"] == pytest.approx(0.25)  # within noise: nearly a coin flip
    assert "anchor sd behind" in scoring.rung_text(coin) and "5 design(s)" in scoring.rung_text(coin)
    assert "the sd over 3 anchor runs" in scoring.rung_text(coin)
    unknown = scoring.rung_confidence(rung, noise_sd=None, noise_runs=0)
    assert unknown["p"] is None and unknown["behind_sd"] is None and "no spread" in scoring.rung_text(unknown)
    assert scoring.rung_confidence(rung, 0.02, 1)["p"] is None  # one run has no spread to read
    higher_is_better = scoring.rung_confidence({**rung, "mode": "max", "value": 0.10, "cutoff": 0.30}, 0.1, 3)
    assert higher_is_better["behind"] == pytest.approx(0.20) and higher_is_better["p"] < 0.5


def test_an_asha_stop_stands_only_beyond_the_anchors_noise():
    rung = {"metric": "eval_loss", "mode": "min", "value": 4.30, "cutoff": 4.20, "designs": 5, "step": 96}
    sure, coin = scoring.rung_confidence(rung, 0.02, 3), scoring.rung_confidence({**rung, "value": 4.205}, 0.02, 3)
    assert scoring.rung_stands(sure, 0.05) and not scoring.rung_stands(coin, 0.05)
    assert scoring.rung_stands(coin, None)  # no rule: ASHA's stop as Tune made it
    assert scoring.rung_stands(scoring.rung_confidence(rung, None, 0), 0.05)  # no noise to read it against: it stands
    # 3.5 anchor sd behind: a normal would call it sure (p 0.0067); with the sd from 3 runs it is not (p 0.066)
    near = scoring.rung_confidence({**rung, "value": 4.27}, 0.02, 3)
    assert near["p"] > 0.05 and not scoring.rung_stands(near, 0.05)
    assert scoring.rung_stands(scoring.rung_confidence({**rung, "value": 4.27}, 0.02, 30), 0.05)
    assert not scoring.rung_stands(sure, sure["p"])  # "below" the level, not at it
    unchecked = {**sure, "decided_without_noise": True}
    assert "stood unchecked" in scoring.rung_text(unchecked) and "stood unchecked" not in scoring.rung_text(sure)


def test_the_referee_reads_a_stop_against_the_anchor_at_the_rungs_step():
    anchor_runs = curve_runs([{24: (5.0, 0.1), 48: (4.0, 0.2)}, {24: (5.2, 0.1), 48: (4.2, 0.3)},
                              {24: (5.4, 0.1), 48: (4.1, 0.25)}])
    anchor = scoring.anchor_of("deltanet", scoring.stage_metrics(anchor_runs, "mqar_accuracy"))  # sd 0.2 at step 24
    rung = {"metric": "eval_loss", "mode": "min", "value": 5.05, "cutoff": 5.0, "designs": 3, "step": 24}
    coin = scoring.rule_on_rung(rung, anchor, 0.05)
    assert coin["noise_sd"] == pytest.approx(0.2) and coin["noise_runs"] == 3 and coin["p"] > 0.05 and not coin["stood"]
    assert not coin["decided_without_noise"] and coin["significance"] == 0.05
    far = scoring.rule_on_rung({**rung, "value": 6.0}, anchor, 0.05)
    assert far["behind_sd"] == pytest.approx(5.0) and far["p"] < 0.05 and far["stood"]
    assert far["p"] == pytest.approx(stats.t.sf(5.0 / math.sqrt(2), 2))  # Student's t: the sd is from 3 runs
    assert scoring.rule_on_rung(rung, anchor, None)["stood"]  # the rule off: ASHA's stop
    early = scoring.rule_on_rung(rung, None, 0.05)  # the anchor still training
    assert early["stood"] and early["decided_without_noise"] and early["p"] is None
    unevaluated = scoring.rule_on_rung({**rung, "step": 36}, anchor, 0.05)  # no anchor evaluation at that step
    assert unevaluated["stood"] and unevaluated["p"] is None and not unevaluated["decided_without_noise"]


def test_the_promotion_cut_is_judged_against_the_anchors_noise():
    """p: the chance that two equal designs, one explore run each, show the gap at the cut."""
    equal = scoring.promotion_cut(("a", 4.0), ("b", 4.0), 0.025, 3)
    assert equal["p"] == pytest.approx(0.5) and equal["loss_gap"] == 0.0
    clear = scoring.promotion_cut(("a", 3.85), ("b", 4.00), 0.025, 3)  # 0.15 apart: 4.2 sd of a two-run gap
    assert clear["p"] == pytest.approx(stats.t.sf(0.15 / (0.025 * math.sqrt(2)), 2))  # t, 2 df: about 0.026
    close = scoring.promotion_cut(("a", 3.90), ("b", 4.00), 0.025, 3)  # 0.1 apart: 2.8 sd, p 0.053 with 2 df
    assert close["p"] > 0.05 > stats.norm.sf(0.1 / (0.025 * math.sqrt(2)))  # where a normal would claim 0.0023
    line = scoring.describe_cut(clear, 0.05)
    assert "separated them" in line and "over 3 anchor runs" in line
    assert "within the anchor's run-to-run noise" in scoring.describe_cut(clear, 0.01)
    reversed_ = scoring.promotion_cut(("a", 4.02), ("b", 4.00), 0.025, 3)  # promoted on fitness with a higher loss
    assert reversed_["p"] > 0.5 and "within the anchor's run-to-run noise" in scoring.describe_cut(reversed_, 0.05)
    unknown = scoring.promotion_cut(("a", 3.9), ("b", 4.0), None, 0)
    assert unknown["p"] is None and "not judged" in scoring.describe_cut(unknown, 0.05)
    assert scoring.promotion_cut(("a", 3.9), ("b", 4.0), 0.02, 1)["p"] is None  # one anchor run: no spread
    assert scoring.promotion_cut(("a", None), ("b", 4.0), 0.02, 3)["why"] == "an explore loss is missing"


def test_a_single_run_against_a_seeds_mean_is_read_against_the_seeds_spread_at_that_evaluation():
    # three seed runs: 4.00, 4.02, 4.04 at the second evaluation (mean 4.02, sd 0.02)
    seed = {"loss_curve": [5.0, 4.02], "run_curves": [[[24, 5.0, 0.1], [48, 4.00 + d, 0.1]] for d in (0.0, 0.02, 0.04)]}
    better, tie, worse = (scoring.judged_gap(loss, seed, 2, 0.05) for loss in (3.90, 4.01, 4.20))
    assert (better["verdict"], tie["verdict"], worse["verdict"]) == ("better beyond noise", "within noise",
                                                                      "worse beyond noise")
    assert better["their_loss"] == pytest.approx(4.02) and better["noise_sd"] == pytest.approx(0.02)
    # the gap of one run against a mean of three has sd 0.02 x sqrt(1 + 1/3), the sd read from those three
    # runs: Student's t with 2 degrees of freedom (a prediction interval), not a normal
    assert better["p_better"] == pytest.approx(stats.t.sf(0.12 / (0.02 * math.sqrt(4 / 3)), 2))
    assert scoring.single_run_gap_p(0.12, 0.02, 3) == pytest.approx(stats.t.sf(0.12 / (0.02 * math.sqrt(2)), 2))
    assert scoring.single_run_gap_p(0.12, 0.02, 10**6) == pytest.approx(stats.norm.sf(0.12 / (0.02 * math.sqrt(2))),
                                                                       rel=1e-3)  # many runs: the sd is known
    with pytest.raises(ValueError, match="at least two runs"):
        scoring.single_run_gap_p(0.12, 0.02, 1)
    single = scoring.judged_gap(3.9, {"loss_curve": [5.0, 4.02], "run_curves": seed["run_curves"][:1]}, 2, 0.05)
    assert single["verdict"] == "noise not measured" and single["their_loss"] == pytest.approx(4.0)
    unrecorded = scoring.judged_gap(3.9, {"loss_curve": [5.0, 4.02]}, 2, 0.05)  # no runs kept: the mean curve
    assert unrecorded["their_loss"] == 4.02 and unrecorded["p_better"] is None


def test_the_results_table_gives_the_anchors_explore_spread_and_marks_recall_at_chance(tmp_path):
    import numpy as np

    from asiarch.campaign.summary import campaign_table, results_rows
    from asiarch.memory import Candidate, FunctionEmbedder, Kind, Memory, StageMetrics

    memory = Memory(tmp_path / "mem", embedder=FunctionEmbedder(lambda texts: np.ones((len(texts), 8)), 8))
    runs = [{"eval_loss": loss, "mqar_accuracy": 0.08} for loss in (4.10, 4.13, 4.15)]
    memory.upsert_candidates([
        Candidate(id="seed", campaign="x", name="deltanet", code="x", kind=Kind.SEED.value, status="finished",
                  explore=StageMetrics(eval_loss=4.1267, mqar_accuracy=0.08, benchmarks={"runs": runs})),
        Candidate(id="guess", campaign="x", name="guessing", code="y", status="finished",
                  explore=StageMetrics(eval_loss=4.0, mqar_accuracy=0.13, fitness=0.7,
                                       benchmarks={"runs": [{"eval_loss": 4.0, "mqar_accuracy": 0.13}]})),
        Candidate(id="recall", campaign="x", name="recalling", code="z", status="finished",
                  explore=StageMetrics(eval_loss=4.2, mqar_accuracy=0.4, fitness=0.6,
                                       benchmarks={"runs": [{"eval_loss": 4.2, "mqar_accuracy": 0.4}]})),
    ])
    chance = scoring.Chance(level=0.125, trials=2048)
    rows = {r["name"]: r for r in results_rows(memory, "x", recall_chance=chance)}
    assert rows["deltanet"]["explore_loss_text"] == f"4.127 ± {stats.tstd([4.10, 4.13, 4.15]):.3f}"
    assert rows["guessing"]["explore_loss_text"] == "4.000"  # one run: its noise is the anchor's, said in the caption
    assert rows["guessing"]["explore_mqar_text"] == "0.130 (chance)" and rows["recalling"]["explore_mqar_text"] == "0.400"
    assert rows["deltanet"]["explore_mqar_text"] == "0.080 ± 0.000 (chance)"
    assert "mean ± sd over its runs for the anchor seed" in str(campaign_table(list(rows.values()), "t").caption)


def test_a_stage_result_from_runs_cut_short_says_so():
    full = {"step": 768, "total_steps": 768, "stop_reason": "completed", "eval_loss": 3.4}
    assert scoring.short_runs([full, full]) is None
    cut = {"step": 288, "total_steps": 768, "stop_reason": "wall_time", "eval_loss": 3.7}
    note = scoring.short_runs([full, cut, {"eval_loss": 3.5}])  # a run without step counts is not judged
    assert note == "1 of 3 run(s) stopped before the budget, at step 288/768 (wall_time): compared as they stood"


def test_a_trials_result_lands_at_its_own_evaluation_of_the_curve():
    """Curves are compared evaluation by evaluation. A trial stopped at an unverified evaluation (training QA) ends
    with the parent's score of it, a float-noise apart from its progress report there: it replaces that point
    instead of adding one that would shift every later comparison."""
    reported = [5.0, 4.6, 4.4]  # progress reports at steps 24, 48, 72
    assert scoring.curve_ending_at(reported, 4.4000003, 72, 24) == [5.0, 4.6, 4.4000003]
    assert scoring.curve_ending_at(reported, 4.35, 80, 24) == [5.0, 4.6, 4.4, 4.35]  # stopped between evaluations
    assert scoring.curve_ending_at(reported[:2], 4.4, 72, 24) == [5.0, 4.6, 4.4]  # its last report not landed yet
    assert scoring.curve_ending_at(reported, 4.4, 0, 24) == reported  # no step: appended unless already last
    assert scoring.curve_ending_at(reported, 4.3, 0, 24) == [*reported, 4.3]
