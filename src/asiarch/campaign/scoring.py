"""The one scoring path: a stage's metrics and fitness, for seeds and candidates, explore and verify.

Trials report summaries (one per training seed); ``stage_metrics`` averages them into the
stage's ``StageMetrics`` the same way for every design. ``score`` turns a design's
metrics and the anchor seed's into the stage fitness with the campaign's fitness
function, naming any term it could not compute. ``compare_with_seeds`` tests, over the
training runs, whether a verified design beats each seed on loss and on benchmark
(one-sided Welch t-tests, with effect sizes and confidence intervals); a breakthrough
beats every seed on both. Runs that share weights (PBT cloned one member into another:
the same ``weights_of``) are one sample, their mean: the tests, the means and the spreads
count independent runs only (``independent_values``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from asiarch.campaign.fitness import Fitness, FitnessFn, coerce_fitness, is_finite
from asiarch.config import ScaleConfig
from asiarch.memory import StageMetrics

# kept per run in the stage's benchmarks
RUN_KEYS = ("eval_loss", "mqar_accuracy", "mqar_binding", "mqar_binding_se", "downstream_mean", "lr", "benchmark",
            "wall_tokens_per_second", "cpu_tokens_per_second", "weights_of", "clones")


def benchmark_key(scale: ScaleConfig) -> str:
    """The trial-summary key of the fitness's benchmark term at this scale."""
    return "mqar_accuracy" if scale.stages.benchmark == "mqar" else "downstream_mean"


def scores_downstream(scale: ScaleConfig, stage: str, also_at_verify: bool = False) -> bool:
    """Whether a run of ``stage`` at ``scale`` scores the multiple-choice sets: always where the
    fitness's benchmark is their mean (anchor and candidates alike, or the term would be
    missing), and at verify also when ``run.downstream`` asks for them as extra results."""
    if stage not in ("explore", "verify"):
        raise ValueError(f"stage must be 'explore' or 'verify', got {stage!r}")
    return scale.stages.benchmark == "downstream" or (stage == "verify" and also_at_verify)


def finite_values(values: Iterable[Any]) -> list[float]:
    """The measurements among ``values`` (``is_finite``), as floats."""
    return [float(v) for v in values if is_finite(v)]


def mean(values: Sequence[Any]) -> float | None:
    finite = finite_values(values)
    return sum(finite) / len(finite) if finite else None


def std(values: Sequence[Any]) -> float | None:
    """Sample standard deviation over training seeds (None below two finite values)."""
    finite = finite_values(values)
    if len(finite) < 2:
        return None
    return statistics.stdev(finite)  # exact arithmetic: equal runs give 0.0, not a rounding residue


def independent_samples(runs: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """``key`` of each independent training run among ``runs``: runs whose weights descend from the same
    training seed's (``weights_of``, kept by the trainable when PBT clones a member) give one sample, their
    mean; a run without a lineage (a seed cached before lineages were kept) counts alone. Finite values only."""
    groups: dict[Any, list[float]] = {}
    for i, run in enumerate(runs):
        value = run.get(key)
        if is_finite(value):
            lineage = run.get("weights_of")
            groups.setdefault(("weights_of", lineage) if lineage is not None else ("run", i), []).append(float(value))
    return [sum(vs) / len(vs) for vs in groups.values()]


def run_curve(summary: Mapping[str, Any], bench_key: str) -> list[list[float | None]]:
    """A run's evaluations as ``[step, eval_loss, benchmark]`` rows: what equal-progress scoring reads."""
    return [[int(h["step"]), h.get("eval_loss"), h.get(bench_key)] for h in summary.get("history") or []
            if isinstance(h.get("step"), (int, float)) and h.get("eval_loss") is not None]


def _run_record(summary: Mapping[str, Any], bench_key: str) -> dict[str, Any]:
    record = {k: v for k, v in {**summary, "benchmark": summary.get(bench_key)}.items() if k in RUN_KEYS and v is not None}
    curve = run_curve(summary, bench_key)
    return {**record, "curve": curve} if curve else record


def stage_metrics(summaries: Sequence[Mapping[str, Any]], bench_key: str,
                  loss_curve: Sequence[float] | None = None) -> StageMetrics:
    """One design's stage result: means over its training runs, each run (with its evaluations) kept in ``benchmarks``."""
    curve = list(loss_curve) if loss_curve is not None else [
        h["eval_loss"] for h in (summaries[0].get("history") or []) if h.get("eval_loss") is not None] if summaries else []
    losses = independent_samples(summaries, "eval_loss")
    return StageMetrics(
        loss_curve=[float(x) for x in curve], eval_loss=mean(losses),
        mqar_accuracy=mean(independent_samples(summaries, "mqar_accuracy")),
        benchmark=mean(independent_samples(summaries, bench_key)),
        benchmarks={"runs": [_run_record(s, bench_key) for s in summaries], "eval_loss_std": std(losses),
                    "independent_runs": len(losses)})


@dataclass(frozen=True)
class Chance:
    """A benchmark's chance level and how many independent trials one measurement is over."""

    level: float
    trials: int

    def p_above(self, accuracy: float) -> float:
        """One-sided binomial p-value that ``accuracy`` over ``trials`` beats guessing."""
        from scipy import stats

        hits = round(accuracy * self.trials)
        return float(stats.binom.sf(hits - 1, self.trials, self.level))

    def beats(self, accuracy: float, alpha: float) -> bool:
        """Whether ``accuracy`` beats guessing at one-sided level ``alpha``."""
        return self.p_above(accuracy) < alpha

    def none_beats(self, named: Mapping[str, float], alpha: float) -> str | None:
        """Why these measurements (by whose they are) cannot be told from guessing, or None when any beats it:
        the rule that leaves a benchmark term out of the fitness and recall out of the Judge's score."""
        ps = {who: self.p_above(value) for who, value in named.items()}
        if any(p < alpha for p in ps.values()):
            return None
        listed = ", ".join(f"{who} ({named[who]:.4f}, p={p:.2f})" for who, p in ps.items())
        return f"at chance for {listed}: chance {self.level:.4f} over {self.trials} questions"


def benchmark_chance(scale: ScaleConfig) -> Chance | None:
    """The fitness benchmark's chance level at ``scale``, and over how many trials it is measured.

    MQAR: guessing among the V/2 value tokens scores 2/V; but a design that only knows WHICH
    values appear in the context (a bag of tokens: a running mean does that) picks one of the
    K values and scores 1/K, far above 2/V (measured: a causal mean reaches 0.12 at
    ``cpu_tiny``, K=4). Recall means binding, so the level is the larger of the two.

    Downstream: the mean over the scored sets of 1/choices (``data.downstream.chance_level``),
    over every scored document. None when no set is scored.
    """
    if scale.stages.benchmark == "downstream":
        if not scale.downstream.tasks:
            return None
        from asiarch.data.downstream import chance_level

        level, documents = chance_level(scale.downstream.tasks, scale.downstream.limit)
        return Chance(level=level, trials=documents)
    return mqar_chance(scale)


def anchor_of(name: str, metrics: StageMetrics) -> dict[str, Any]:
    """What a fitness function, the Judge and training QA read of a design: its name, loss and benchmark
    with their spread over training runs, its loss curve and its pace (median over runs, wall clock and CPU)."""

    def median_pace(key: str) -> float | None:
        paces = sorted(run_values(metrics, key))
        return paces[len(paces) // 2] if paces else None

    losses = independent_values(metrics, "eval_loss")
    return {"name": name, "eval_loss": metrics.eval_loss, "benchmark": metrics.benchmark,
            "mqar_accuracy": metrics.mqar_accuracy, "eval_loss_std": std(losses), "eval_loss_runs": len(losses),
            "benchmark_std": std(independent_values(metrics, "benchmark")), "loss_curve": list(metrics.loss_curve),
            "wall_tokens_per_second": median_pace("wall_tokens_per_second"),
            "cpu_tokens_per_second": median_pace("cpu_tokens_per_second"),
            "run_curves": [r.get("curve") or [] for r in metrics.benchmarks.get("runs", [])]}


def at_step(anchor: Mapping[str, Any], step: int) -> dict[str, Any] | None:
    """The anchor as it stood at training step ``step``: mean and spread over its runs' evaluations there.

    An ASHA-stopped candidate has trained ``step`` of the steps; comparing its loss with the
    anchor's final loss would score the compute it was denied, not its design. None when
    fewer than two anchor runs evaluated at that step (no spread to read a delta against).
    """
    rows = [row for curve in anchor.get("run_curves") or [] for row in curve if int(row[0]) == int(step)]
    if len(rows) < 2:
        return None
    losses, benches = [r[1] for r in rows], [r[2] for r in rows]
    return {**anchor, "eval_loss": mean(losses), "eval_loss_std": std(losses),
            "eval_loss_runs": len(finite_values(losses)), "benchmark": mean(benches), "benchmark_std": std(benches),
            "step": int(step)}


def single_run_gap_p(gap: float, noise_sd: float, noise_runs: int, other_runs: int = 1) -> float:
    """The chance that two equal designs, one measured by a single training run and the other by the mean of
    ``other_runs`` runs, show a gap of at least ``gap`` in the single run's favour, when the run-to-run sd is
    ``noise_sd`` as estimated from ``noise_runs`` runs (the anchor's).

    The gap's sd is noise_sd x sqrt(1 + 1 / other_runs) (sqrt(2) between two single runs), and since
    ``noise_sd`` is itself an estimate, gap / that follows Student's t with ``noise_runs`` - 1 degrees of
    freedom, not a normal: from 3 anchor runs (2 df) a gap between two single runs of 3.5 noise sd
    reads p 0.066 where a normal would say 0.0067, and a stop at 0.05 needs 4.1 sd, not 2.3. The rule
    behind ASHA's stops (``rung_confidence``), verify's promotion cut (``promotion_cut``) and the
    agents' reading of a loss against a seed's (``judged_gap``, ``gap_verdict``).
    """
    from scipy import stats

    if noise_runs < 2:
        raise ValueError(f"a run-to-run sd needs at least two runs, got {noise_runs}")
    return float(stats.t.sf(gap / (math.sqrt(1.0 + 1.0 / other_runs) * noise_sd), noise_runs - 1))


def curve_ending_at(curve: Sequence[float], loss: float, step: int, report_every: int) -> list[float]:
    """An explore loss curve ending with a trial's result at ``step``, where the result belongs: its n-th
    evaluation, n = ceil(step / report_every) (one every ``report_every`` steps, and one where a run stopped
    between them). The result replaces the progress report's own number there (the same evaluation, audited
    for causality when the trial stopped there), or is appended when that report has not landed; curves
    are compared evaluation by evaluation (``runs_at_evaluation``, ``at_equal_progress``), so an extra point
    would shift every later comparison. Without a step (0), the result is appended unless it is already last."""
    curve = [float(x) for x in curve]
    n = -(-int(step) // report_every) if step > 0 else 0
    if n and len(curve) >= n - 1:
        return curve[: n - 1] + [float(loss)]
    return curve if curve and curve[-1] == loss else curve + [float(loss)]


def runs_at_evaluation(seed: Mapping[str, Any], evaluation: int) -> list[float]:
    """The eval loss of each of a seed's training runs at its ``evaluation``-th evaluation (``anchor_of``'s
    ``run_curves``; finite values only): what its run-to-run spread there is read from."""
    rows = [curve[evaluation - 1] for curve in seed.get("run_curves") or [] if len(curve) >= evaluation]
    return finite_values(r[1] for r in rows)


def gap_verdict(gap: float, noise_sd: float | None, noise_runs: int, other_runs: int,
                significance: float) -> tuple[float | None, str]:
    """How a loss gap in one run's favour (``gap`` = other's loss - its loss) reads against run-to-run noise
    ``noise_sd`` (estimated from ``noise_runs`` runs): the chance that an equal design shows it
    (``single_run_gap_p``) and "better beyond noise", "worse beyond noise" (one-sided at ``significance``),
    "within noise", or "noise not measured"."""
    if not noise_sd or noise_runs < 2:
        return None, "noise not measured"
    p_better = single_run_gap_p(gap, noise_sd, noise_runs, other_runs)
    if p_better < significance:
        return p_better, "better beyond noise"
    if single_run_gap_p(-gap, noise_sd, noise_runs, other_runs) < significance:
        return p_better, "worse beyond noise"
    return p_better, "within noise"


def judged_gap(loss: float, seed: Mapping[str, Any], evaluation: int, significance: float) -> dict[str, Any]:
    """A design's eval loss (one run) at its ``evaluation``-th evaluation against a seed's mean there, read against
    the seed's run-to-run spread at that evaluation (``gap_verdict``; "noise not measured" when fewer than two seed
    runs reached it, and then a seed stored without per-run curves is read from its mean curve)."""
    runs = runs_at_evaluation(seed, evaluation)
    their, sd = mean(runs), std(runs)
    if their is None:
        curve = seed.get("loss_curve") or []
        their = curve[evaluation - 1] if len(curve) >= evaluation else None
    out = {"evaluation": evaluation, "loss": loss, "their_loss": their, "noise_sd": sd, "runs": len(runs),
           "p_better": None, "verdict": "noise not measured"}
    if their is not None:
        out["p_better"], out["verdict"] = gap_verdict(their - loss, sd, len(runs), len(runs), significance)
    return out


def mqar_chance(scale: ScaleConfig) -> Chance:
    """MQAR's chance level at ``scale`` and the queries one measurement is over (``benchmark_chance`` says why
    the level is the larger of 2/V and 1/K)."""
    m = scale.mqar
    examples = min(scale.train.eval_mqar_examples, m.num_test)
    return Chance(level=max(1.0 / (m.vocab_size - m.vocab_size // 2), 1.0 / m.num_kv_pairs),
                  trials=examples * m.num_kv_pairs)


def rung_confidence(rung: Mapping[str, Any], noise_sd: float | None, noise_runs: int) -> dict[str, Any]:
    """How sure an ASHA stop was: the design's gap behind the rung's cutoff, against run-to-run noise.

    ``rung`` is what ``ExploreASHA`` noted (the design's metric, the cutoff it missed, the
    designs that set it); ``noise_sd`` the anchor's spread over its ``noise_runs`` training
    seeds at that step. ``behind_sd`` is the gap in those sd; ``p`` the one-sided chance that
    a design measured this far behind is as good as the cutoff when both are single runs with
    that noise (``single_run_gap_p``: Student's t, the sd being an estimate). Small p: the cut
    was sure; p near 0.5: it was a coin.
    """
    sign = 1.0 if rung.get("mode", "min") == "min" else -1.0
    behind = sign * (float(rung["value"]) - float(rung["cutoff"]))
    out = {**rung, "behind": behind, "noise_sd": noise_sd, "noise_runs": noise_runs, "behind_sd": None, "p": None}
    if noise_sd is None or not noise_sd > 0 or noise_runs < 2:
        return {**out, "why": "no spread of the anchor at that step"}
    return {**out, "behind_sd": behind / noise_sd, "p": single_run_gap_p(behind, noise_sd, noise_runs)}


def rung_stands(judged: Mapping[str, Any], significance: float | None) -> bool:
    """Whether ASHA's stop of a design stands: only when it is sure at ``significance``.

    ``judged`` is ``rung_confidence``'s record. With ``significance`` None, or without a
    noise estimate (no ``p``), every stop stands as Tune's ASHA made it; otherwise a design
    whose gap to the cutoff is within the anchor's noise (``p >= significance``) trains on.
    """
    return significance is None or judged.get("p") is None or judged["p"] < significance


def rung_noise(rung: Mapping[str, Any], anchor: Mapping[str, Any] | None) -> tuple[float | None, int]:
    """The anchor's run-to-run spread of the rung's metric at the rung's step (eval loss only; None: unknown) and
    how many runs it is read from."""
    if anchor is None or rung.get("metric") != "eval_loss":
        return None, 0
    then = at_step(anchor, rung.get("step") or 0)
    return (then["eval_loss_std"], then["eval_loss_runs"]) if then else (None, 0)


def rule_on_rung(rung: Mapping[str, Any], anchor: Mapping[str, Any] | None,
                 significance: float | None) -> dict[str, Any]:
    """The referee's ruling on an ASHA stop: ``rung_confidence`` against ``anchor``'s spread at the
    rung's step, and whether the stop stands there (``stood``, ``rung_stands``).

    Without an anchor yet (it trains alongside the first trials unless the baseline cache
    has it) there is no noise to read: the stop stands, marked ``decided_without_noise``.
    """
    judged = rung_confidence(rung, *rung_noise(rung, anchor))
    return {**judged, "decided_without_noise": anchor is None, "significance": significance,
            "stood": rung_stands(judged, significance)}


def rung_text(rung: Mapping[str, Any]) -> str:
    """One line for a stopped design's status: its gap to the rung's cutoff and how sure that is."""
    head = (f"{rung['metric']} {rung['value']:.4f} against the cutoff {rung['cutoff']:.4f} set by the "
            f"{rung['designs']} design(s) that reached that rung before it")
    if rung.get("p") is None:
        return f"{head} ({rung.get('why', 'no noise estimate')})"
    runs = f", the sd over {rung['noise_runs']} anchor runs" if rung.get("noise_runs") else ""
    sure = f"{head}: {rung['behind_sd']:+.1f} anchor sd behind (p = {rung['p']:.2g} that it was as good{runs})"
    if rung.get("decided_without_noise"):
        return f"{sure}; the stop stood unchecked, the anchor's noise was not measured yet"
    return sure


def score(fitness_fn: FitnessFn, name: str, metrics: StageMetrics, anchor: Mapping[str, Any] | None,
          judge: float | None, stage: str, chance: Chance | None = None, alpha: float = 0.05,
          stopped_at: int | None = None, **notes: Any) -> Fitness:
    """The stage fitness of ``metrics`` against the anchor seed's; a missing anchor is named, not guessed.

    With ``chance``, the benchmark term is left out (and named missing) when neither the
    design nor the anchor is above the benchmark's chance level (binomial p >= ``alpha``):
    a comparison of two guesses would only add noise to the fitness.

    ``stopped_at``: the design trained only this many steps (ASHA stopped it). It is then
    compared with the anchor at the same step (``at_step``), its fitness an estimate of
    where it stood, not a penalty for the steps it did not get; ``parts["compared_at_step"]``
    says so. Without anchor evaluations at that step it falls back to the anchor's final
    result, and ``parts["equal_progress"]`` says why.
    """
    if anchor is None:
        return Fitness(None, {"missing": {"baseline": f"the anchor seed has no {stage} result"}, "stage": stage, **notes})
    mine, theirs = anchor_of(name, metrics), dict(anchor)
    if stopped_at is not None:
        then = at_step(anchor, stopped_at)
        if then is not None:
            theirs, notes = then, {**notes, "compared_at_step": int(stopped_at)}
        else:
            notes = {**notes, "equal_progress": f"the anchor has fewer than two runs evaluated at step {stopped_at}: "
                                                "compared with its final result"}
    at_chance = None
    if chance is not None and None not in (mine["benchmark"], theirs.get("benchmark")):
        why = chance.none_beats({"the design": mine["benchmark"], "the anchor": theirs["benchmark"]}, alpha)
        if why:
            at_chance = f"the benchmark is {why}"
            mine["benchmark"], theirs["benchmark"] = None, None
    fitness = coerce_fitness(fitness_fn(mine, theirs, judge))
    parts = {**fitness.parts, "stage": stage, **notes}
    if at_chance:
        parts["missing"] = {**(parts.get("missing") or {}), "benchmark": at_chance}
    return Fitness(fitness.value, parts)


def promotion_cut(last: tuple[str, float | None], first_left: tuple[str, float | None],
                  noise_sd: float | None, noise_runs: int) -> dict[str, Any]:
    """How sure verify's promotion cut was: the explore-loss gap between the last design promoted and the best one
    left out, against the anchor's run-to-run noise at explore (``noise_sd`` over its ``noise_runs`` runs).

    Each design's explore loss is one training run, so the gap between two equal designs has sd
    sqrt(2) x ``noise_sd``. ``p`` is the chance of a gap this large in the promoted design's favour
    between two equal designs (``single_run_gap_p``): small, the cut separated them; near 0.5 or
    above, it was a coin (the promotion follows explore fitness, which can rank a slightly higher
    loss first).
    """
    (name, loss), (other, other_loss) = last, first_left
    out: dict[str, Any] = {"promoted": name, "left_out": other, "loss_gap": None, "noise_sd": noise_sd,
                           "noise_runs": noise_runs, "p": None}
    if loss is None or other_loss is None:
        out["why"] = "an explore loss is missing"
        return out
    out["loss_gap"] = other_loss - loss
    if not noise_sd or noise_runs < 2:
        out["why"] = "the anchor's explore noise was not measured (fewer than two anchor runs)"
        return out
    out["p"] = single_run_gap_p(out["loss_gap"], noise_sd, noise_runs)
    return out


def describe_cut(cut: Mapping[str, Any], alpha: float) -> str:
    """One line for the campaign's log: the promotion cut and how sure it was."""
    head = f"the cut between {cut['promoted']} (promoted) and {cut['left_out']} (left out)"
    if cut.get("p") is None:
        return f"{head}: not judged ({cut.get('why', 'no noise estimate')})"
    verdict = "separated them" if cut["p"] < alpha else "is within the anchor's run-to-run noise"
    return (f"{head}: explore loss gap {cut['loss_gap']:+.4f} against a noise sd of {cut['noise_sd']:.4f} "
            f"over {cut['noise_runs']} anchor runs (p {cut['p']:.2g}): the cut {verdict}")


def run_values(metrics: StageMetrics, key: str) -> list[float]:
    """One measurement of every training run behind ``metrics`` (finite values only)."""
    values = [r.get(key) for r in metrics.benchmarks.get("runs", [])]
    return finite_values(values)


def independent_values(metrics: StageMetrics, key: str) -> list[float]:
    """One measurement of every independent training run behind ``metrics`` (``independent_samples``)."""
    return independent_samples(metrics.benchmarks.get("runs", []), key)


def one_sided_test(mine: Sequence[float], theirs: Sequence[float], higher_is_better: bool,
                   confidence: float = 0.95) -> dict[str, Any]:
    """Welch's t-test that ``mine`` is better than ``theirs`` (one-sided), with the effect and its interval.

    ``diff`` is mean(mine) - mean(theirs); ``ci`` its two-sided ``confidence`` interval
    (Welch-Satterthwaite degrees of freedom); ``effect_size`` is Cohen's d (pooled sd).
    Fewer than two runs on either side, or no spread at all, give ``p = None``: no test.
    """
    from scipy import stats

    out: dict[str, Any] = {"n": [len(mine), len(theirs)], "p": None, "ci": None, "effect_size": None,
                           "diff": (mean(mine) - mean(theirs)) if mine and theirs else None}
    if len(mine) < 2 or len(theirs) < 2:
        out["why_no_test"] = "fewer than two independent training runs on a side"
        return out
    var_a, var_b = std(mine) ** 2, std(theirs) ** 2
    se = math.sqrt(var_a / len(mine) + var_b / len(theirs))
    if se == 0:
        out["why_no_test"] = "no spread between training runs"
        return out
    df = se ** 4 / ((var_a / len(mine)) ** 2 / (len(mine) - 1) + (var_b / len(theirs)) ** 2 / (len(theirs) - 1))
    t = out["diff"] / se
    out["p"] = float(stats.t.sf(t, df) if higher_is_better else stats.t.cdf(t, df))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    out["ci"] = [out["diff"] - half, out["diff"] + half]
    pooled = math.sqrt(((len(mine) - 1) * var_a + (len(theirs) - 1) * var_b) / (len(mine) + len(theirs) - 2))
    out["effect_size"] = out["diff"] / pooled if pooled else None
    out["df"] = df
    return out


def short_runs(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """Which of a design's runs stopped before their budget (its wall-time budget ran out, say), or None: their
    numbers are the design as it stood then, so a stage result built from them must say so."""
    short = [r for r in runs if isinstance(r.get("step"), (int, float)) and isinstance(r.get("total_steps"), (int, float))
             and r["step"] < r["total_steps"]]
    if not short:
        return None
    where = ", ".join(f"{int(r['step'])}/{int(r['total_steps'])} ({r.get('stop_reason') or 'stopped'})" for r in short)
    return f"{len(short)} of {len(runs)} run(s) stopped before the budget, at step {where}: compared as they stood"


def compare_with_seeds(mine: StageMetrics, seeds: Mapping[str, StageMetrics], alpha: float) -> dict[str, dict[str, Any]]:
    """Per seed: one-sided tests on loss (lower is better) and benchmark (higher), and whether both pass at ``alpha``.

    Each test is over independent runs (``independent_values``); ``runs`` says how many runs stood behind them."""
    out = {}
    for seed, theirs in seeds.items():
        tests = []
        for key, higher in (("eval_loss", False), ("benchmark", True)):
            test = one_sided_test(independent_values(mine, key), independent_values(theirs, key), higher_is_better=higher)
            tests.append({**test, "runs": [len(run_values(mine, key)), len(run_values(theirs, key))]})
        loss, bench = tests
        significant = all(t["p"] is not None and t["p"] < alpha for t in (loss, bench))
        out[seed] = {"loss": loss, "benchmark": bench, "beats": significant}
    return out


def beats(comparisons: Mapping[str, Mapping[str, Any]]) -> dict[str, bool]:
    """Per seed: beaten significantly on both loss and benchmark."""
    return {seed: bool(c["beats"]) for seed, c in comparisons.items()}


def is_breakthrough(beaten: Mapping[str, bool], all_seeds: Sequence[str]) -> bool:
    """Beats every seed of the campaign, each of which has a result."""
    return bool(all_seeds) and set(beaten) == set(all_seeds) and all(beaten.values())
