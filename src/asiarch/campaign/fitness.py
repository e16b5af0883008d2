"""The fitness of a trained candidate: ASI-Arch's Eq. 2, anchored on the campaign's own seed.

``fitness = mean(sigma(d_loss), sigma(d_benchmark), judge)`` with
``sigma(d) = sigmoid(slope * clip(d / (relative_scale * baseline), -1, 1))``. The baseline
is the seed trained in the same campaign at the same scale; a term that cannot be
computed is left out *and named* in ``parts["missing"]`` with its reason, never filled
with a default. Any callable with the signature of ``asi_arch_fitness`` can replace it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass
class Fitness:
    """A fitness value (None when no term could be computed) and how it was made."""

    value: float | None
    parts: dict[str, Any] = field(default_factory=dict)


FitnessFn = Callable[[Mapping[str, Any], Mapping[str, Any], "float | None"], Fitness]


def relative_sigmoid(delta: float, baseline: float, slope: float = 6.0, relative_scale: float = 0.1) -> float:
    """``sigmoid(slope * clip(delta / (relative_scale * |baseline|), -1, 1))``: 0.5 means equal to the baseline."""
    ratio = max(-1.0, min(1.0, delta / (relative_scale * abs(baseline))))
    return 1.0 / (1.0 + math.exp(-slope * ratio))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def asi_arch_fitness(candidate: Mapping[str, Any], baseline: Mapping[str, Any], judge: float | None,
                     slope: float = 6.0, relative_scale: float = 0.1) -> Fitness:
    """Eq. 2 of ASI-Arch. ``candidate`` and ``baseline`` hold ``eval_loss`` and ``benchmark``.

    Lower loss and higher benchmark are better, so the loss delta is ``baseline - candidate``.
    """
    terms: dict[str, float] = {}
    missing: dict[str, str] = {}
    for term, key, sign in (("loss", "eval_loss", -1.0), ("benchmark", "benchmark", 1.0)):
        mine, theirs = candidate.get(key), baseline.get(key)
        if not _finite(mine):
            missing[term] = f"the candidate has no finite {key} ({mine!r})"
        elif not _finite(theirs):
            missing[term] = f"the seed baseline has no finite {key} ({theirs!r})"
        elif theirs == 0:
            missing[term] = f"the seed baseline's {key} is 0, so a relative change is undefined"
        else:
            terms[term] = relative_sigmoid(sign * (mine - theirs), theirs, slope, relative_scale)
    if judge is None or not _finite(judge):
        missing["judge"] = "no judge score (the Judge failed or was not asked)"
    else:
        terms["judge"] = float(min(1.0, max(0.0, judge)))
    value = sum(terms.values()) / len(terms) if terms else None
    parts = {"terms": terms, "missing": missing, "formula": "asi_arch_eq2", "slope": slope,
             "relative_scale": relative_scale,
             "anchor": {k: baseline.get(k) for k in ("name", "eval_loss", "benchmark")}}
    return Fitness(value, parts)


def coerce_fitness(result: Any) -> Fitness:
    """Accept a ``Fitness``, a ``(value, parts)`` pair or a bare number from a user's function."""
    if isinstance(result, Fitness):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        return Fitness(None if result[0] is None else float(result[0]), dict(result[1]))
    if result is None or _finite(result):
        return Fitness(None if result is None else float(result), {"formula": "custom"})
    raise TypeError(f"a fitness function must return Fitness, (value, parts) or a number; got {type(result).__name__}")
