"""The fitness of a trained candidate, anchored on the campaign's own seed at the same scale.

``fitness = mean(sigma(d_loss), sigma(d_benchmark), judge)``, two ways to read a delta:

- ``noise_aware_fitness`` (the default): ``sigma(d) = sigmoid(slope * clip(d / (k * sd), -1, 1))``
  with ``sd`` the anchor's run-to-run standard deviation measured over training seeds: a
  difference inside the noise scores near 0.5.
- ``asi_arch_fitness``: ASI-Arch's Eq. 2 exactly, ``sigma(d) = sigmoid(slope * clip(d / (0.1 *
  baseline), -1, 1))``: a fixed 10 % scale, whatever the noise (``fitness=eq2`` in conf).

A term that cannot be computed is left out *and named* in ``parts["missing"]`` with its
reason, never filled with a default. Any callable with the same signature can replace them.
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


def clipped_sigmoid(ratio: float, slope: float = 6.0) -> float:
    """``sigmoid(slope * clip(ratio, -1, 1))``: the shape of every delta term; 0.5 means no difference."""
    return 1.0 / (1.0 + math.exp(-slope * max(-1.0, min(1.0, ratio))))


def relative_sigmoid(delta: float, baseline: float, slope: float = 6.0, relative_scale: float = 0.1) -> float:
    """``sigmoid(slope * clip(delta / (relative_scale * |baseline|), -1, 1))``: 0.5 means equal to the baseline."""
    return clipped_sigmoid(delta / (relative_scale * abs(baseline)), slope)


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a measurement: a finite number (a missing or diverged one is None, NaN or inf)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


DELTA_TERMS = (("loss", "eval_loss", -1.0), ("benchmark", "benchmark", 1.0))  # (term, key, sign: higher is better)


def _measured(key: str, candidate: Mapping[str, Any], baseline: Mapping[str, Any]) -> str | None:
    """Why a delta term cannot be computed (None when both sides measured it)."""
    mine, theirs = candidate.get(key), baseline.get(key)
    if not is_finite(mine):
        return f"the candidate has no finite {key} ({mine!r})"
    if not is_finite(theirs):
        return f"the seed baseline has no finite {key} ({theirs!r})"
    return None


def _with_judge(terms: dict[str, float], missing: dict[str, str], judge: float | None, parts: dict[str, Any],
                baseline: Mapping[str, Any]) -> Fitness:
    """Add the judge term (or name it missing) and average what was computed."""
    if judge is None or not is_finite(judge):
        missing["judge"] = "no judge score (the Judge failed or was not asked)"
    else:
        terms["judge"] = float(min(1.0, max(0.0, judge)))
    value = sum(terms.values()) / len(terms) if terms else None
    return Fitness(value, {"terms": terms, "missing": missing, **parts,
                           "anchor": {k: baseline.get(k) for k in ("name", "eval_loss", "benchmark")}})


def asi_arch_fitness(candidate: Mapping[str, Any], baseline: Mapping[str, Any], judge: float | None,
                     slope: float = 6.0, relative_scale: float = 0.1) -> Fitness:
    """Eq. 2 of ASI-Arch. ``candidate`` and ``baseline`` hold ``eval_loss`` and ``benchmark``.

    Lower loss and higher benchmark are better, so the loss delta is ``baseline - candidate``.
    """
    terms: dict[str, float] = {}
    missing: dict[str, str] = {}
    for term, key, sign in DELTA_TERMS:
        why = _measured(key, candidate, baseline)
        if why is None and baseline[key] == 0:
            why = f"the seed baseline's {key} is 0, so a relative change is undefined"
        if why is not None:
            missing[term] = why
        else:
            terms[term] = relative_sigmoid(sign * (candidate[key] - baseline[key]), baseline[key], slope, relative_scale)
    return _with_judge(terms, missing, judge, {"formula": "asi_arch_eq2", "slope": slope,
                                               "relative_scale": relative_scale}, baseline)


def noise_aware_fitness(candidate: Mapping[str, Any], baseline: Mapping[str, Any], judge: float | None,
                        slope: float = 6.0, noise_multiple: float = 12.0) -> Fitness:
    """Eq. 2's shape, with each delta read against the anchor seed's measured run-to-run noise.

    ``sigma(d) = sigmoid(slope * clip(d / (noise_multiple * sd), -1, 1))`` where ``sd`` is the
    anchor's standard deviation of that measurement over training seeds at this scale
    (``eval_loss_std`` / ``benchmark_std`` in ``baseline``). A difference inside the noise
    stays near 0.5 instead of being stretched to 0 or 1 by Eq. 2's fixed 10 % scale; one of
    ``noise_multiple`` standard deviations saturates. A term whose noise is unknown (an
    anchor trained on one seed) is named missing, never scaled by a guess.
    """
    terms: dict[str, float] = {}
    missing: dict[str, str] = {}
    noise: dict[str, float] = {}
    for term, key, sign in DELTA_TERMS:
        why, sd = _measured(key, candidate, baseline), baseline.get(f"{key}_std")
        if why is None and (not is_finite(sd) or sd <= 0):
            why = (f"the anchor's run-to-run spread of {key} is unknown ({sd!r}): train it on two or more "
                   "seeds (explore.anchor_seeds) or use asi_arch_fitness")
        if why is not None:
            missing[term] = why
        else:
            terms[term] = clipped_sigmoid(sign * (candidate[key] - baseline[key]) / (noise_multiple * sd), slope)
            noise[term] = float(sd)
    return _with_judge(terms, missing, judge, {"formula": "noise_aware", "slope": slope,
                                               "noise_multiple": noise_multiple, "noise_sd": noise}, baseline)


def coerce_fitness(result: Any) -> Fitness:
    """Accept a ``Fitness``, a ``(value, parts)`` pair or a bare number from a user's function."""
    if isinstance(result, Fitness):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        return Fitness(None if result[0] is None else float(result[0]), dict(result[1]))
    if result is None or is_finite(result):
        return Fitness(None if result is None else float(result), {"formula": "custom"})
    raise TypeError(f"a fitness function must return Fitness, (value, parts) or a number; got {type(result).__name__}")
