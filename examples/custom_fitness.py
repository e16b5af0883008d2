"""Plug in your own fitness: here, loss and recall only (no LLM judge), recall weighted double.

    .venv/bin/python examples/custom_fitness.py [hydra overrides ...]

A fitness is any callable ``(candidate, baseline, judge) -> Fitness`` (or a number, or a
``(value, parts)`` pair). ``candidate`` and ``baseline`` hold ``eval_loss`` and ``benchmark``;
``baseline`` is the anchor seed measured at the same scale (its mean over ``explore.anchor_seeds``;
``eval_loss_std`` and ``benchmark_std`` give its run-to-run spread). A benchmark at chance on
both sides arrives as None. The same function can be named in conf instead:
``fitness._target_=my_module.recall_first``.
"""

from __future__ import annotations

import sys

from asiarch import Campaign
from asiarch.campaign import Fitness, relative_sigmoid


def recall_first(candidate: dict, baseline: dict, judge: float | None) -> Fitness:
    """Mean of sigma(loss delta) and twice sigma(benchmark delta), over 3; missing terms are named."""
    terms, missing = {}, {}
    if candidate.get("eval_loss") is not None and baseline.get("eval_loss"):
        terms["loss"] = relative_sigmoid(baseline["eval_loss"] - candidate["eval_loss"], baseline["eval_loss"])
    else:
        missing["loss"] = "no eval loss"
    if candidate.get("benchmark") is not None and baseline.get("benchmark"):
        terms["benchmark"] = relative_sigmoid(candidate["benchmark"] - baseline["benchmark"], baseline["benchmark"])
    else:
        missing["benchmark"] = "no benchmark, or a zero baseline"
    weights = {"loss": 1.0, "benchmark": 2.0}
    total = sum(weights[k] for k in terms)
    value = sum(weights[k] * v for k, v in terms.items()) / total if terms else None
    return Fitness(value, {"terms": terms, "missing": missing, "formula": "recall_first"})


def main() -> None:
    campaign = Campaign(overrides=["llm=offline", *sys.argv[1:]], fitness=recall_first)
    campaign.run()
    for c in campaign.top(3):
        print(f"{c.name}: fitness {c.fitness:.3f} ({c.fitness_parts['formula']}, terms {c.fitness_parts['terms']})")


if __name__ == "__main__":
    main()
