"""The one scoring path: a stage's metrics and fitness, for seeds and candidates, explore and verify.

Trials report summaries (one per training seed); ``stage_metrics`` averages them into the
stage's ``StageMetrics`` the same way for every design. ``score`` turns a design's
metrics and the anchor seed's into the stage fitness with the campaign's fitness
function, naming any term it could not compute. ``beats`` and ``is_breakthrough`` say
which seeds a verified design beats on both loss and benchmark.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from asiarch.campaign.fitness import Fitness, FitnessFn, coerce_fitness
from asiarch.config import ScaleConfig
from asiarch.memory import StageMetrics

RUN_KEYS = ("eval_loss", "mqar_accuracy", "downstream_mean", "lr")  # kept per training run in the stage's benchmarks


def benchmark_key(scale: ScaleConfig) -> str:
    """The trial-summary key of the fitness's benchmark term at this scale."""
    return "mqar_accuracy" if scale.stages.benchmark == "mqar" else "downstream_mean"


def mean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def std(values: Sequence[Any]) -> float | None:
    """Sample standard deviation over training seeds (None below two finite values)."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(finite) < 2:
        return None
    m = sum(finite) / len(finite)
    return (sum((v - m) ** 2 for v in finite) / (len(finite) - 1)) ** 0.5


def stage_metrics(summaries: Sequence[Mapping[str, Any]], bench_key: str,
                  loss_curve: Sequence[float] | None = None) -> StageMetrics:
    """One design's stage result: means over its training runs, each run kept in ``benchmarks``."""
    curve = list(loss_curve) if loss_curve is not None else [
        h["eval_loss"] for h in (summaries[0].get("history") or []) if h.get("eval_loss") is not None] if summaries else []
    return StageMetrics(
        loss_curve=[float(x) for x in curve], eval_loss=mean([s.get("eval_loss") for s in summaries]),
        mqar_accuracy=mean([s.get("mqar_accuracy") for s in summaries]),
        benchmark=mean([s.get(bench_key) for s in summaries]),
        benchmarks={"runs": [{k: s.get(k) for k in RUN_KEYS if s.get(k) is not None} for s in summaries],
                    "eval_loss_std": std([s.get("eval_loss") for s in summaries])})


def anchor_of(name: str, metrics: StageMetrics) -> dict[str, Any]:
    """What a fitness function reads of a design: its name, loss and benchmark."""
    return {"name": name, "eval_loss": metrics.eval_loss, "benchmark": metrics.benchmark,
            "mqar_accuracy": metrics.mqar_accuracy}


def score(fitness_fn: FitnessFn, name: str, metrics: StageMetrics, anchor: Mapping[str, Any] | None,
          judge: float | None, stage: str, **notes: Any) -> Fitness:
    """The stage fitness of ``metrics`` against the anchor seed's; a missing anchor is named, not guessed."""
    if anchor is None:
        return Fitness(None, {"missing": {"baseline": f"the anchor seed has no {stage} result"}, "stage": stage, **notes})
    fitness = coerce_fitness(fitness_fn(anchor_of(name, metrics), anchor, judge))
    return Fitness(fitness.value, {**fitness.parts, "stage": stage, **notes})


def beats(mine: StageMetrics, seeds: Mapping[str, StageMetrics]) -> dict[str, bool]:
    """Per seed: lower loss AND higher benchmark than that seed (False when either is unmeasured)."""
    out = {}
    for seed, theirs in seeds.items():
        known = None not in (mine.eval_loss, mine.benchmark, theirs.eval_loss, theirs.benchmark)
        out[seed] = bool(known and mine.eval_loss < theirs.eval_loss and mine.benchmark > theirs.benchmark)
    return out


def is_breakthrough(beaten: Mapping[str, bool], all_seeds: Sequence[str]) -> bool:
    """Beats every seed of the campaign, each of which has a result."""
    return bool(all_seeds) and set(beaten) == set(all_seeds) and all(beaten.values())
