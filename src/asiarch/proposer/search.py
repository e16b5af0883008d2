"""Variation operators on genomes: :func:`mutate` and :func:`crossover`.

Both are deterministic functions of their inputs and the ``random.Random`` they are given,
and both return normalised (valid) genomes. ``motif_weights`` - e.g. aggregated from the
cognition-base entries retrieved for the current parent - bias mutation toward moves that
realise favoured motifs and away from moves that drop them.
"""

from __future__ import annotations

import random
from dataclasses import fields, replace
from typing import Mapping

from asiarch.proposer.genome import DECAYED_OPS, DELTA_OPS, FIELD_CHOICES, Genome

__all__ = ["crossover", "mutate", "single_moves"]

SECOND_MOVE_PROBABILITY = 0.35


def _apply(genome: Genome, name: str, value) -> Genome:
    """Set one field, fixing up the fields it is coupled to, then normalise."""
    g = replace(genome, **{name: value})
    if name == "operator":
        if value in DECAYED_OPS and g.decay == "none":
            g = replace(g, decay="scalar_data")
        elif value not in DECAYED_OPS:
            g = replace(g, decay="none")
        if value in DELTA_OPS and g.beta == "none":
            g = replace(g, beta="sigmoid")
    elif name == "decay" and value != "none":
        pass  # normalisation turns delta into gated_delta and linear into ssd
    elif name == "value_expand" and value == 2 and g.output_gate != "none":
        g = replace(g, output_gate="none")  # the budget has no room for both; trade the gate
    elif name == "output_gate" and value != "none":
        g = replace(g, value_expand=1)
    return g.normalised()


def single_moves(genome: Genome) -> list[tuple[str, object, Genome]]:
    """Every one-field change of ``genome`` that yields a different valid genome, in a fixed order."""
    base = genome.normalised()
    moves, seen = [], {base}
    for f in fields(Genome):
        for value in FIELD_CHOICES[f.name]:
            if value == getattr(base, f.name):
                continue
            child = _apply(base, f.name, value)
            if child not in seen:
                seen.add(child)
                moves.append((f.name, value, child))
    return moves


def _move_weight(parent: Genome, child: Genome, motif_weights: Mapping[str, float] | None) -> float:
    if not motif_weights:
        return 1.0
    before, after = parent.motifs(), child.motifs()
    gained = sum(max(0.0, float(motif_weights.get(m, 0.0))) for m in after - before)
    lost = sum(max(0.0, float(motif_weights.get(m, 0.0))) for m in before - after)
    return (1.0 + gained) / (1.0 + lost)


def _one_move(genome: Genome, rng: random.Random, motif_weights) -> Genome:
    moves = single_moves(genome)
    if not moves:
        return genome
    weights = [_move_weight(genome, child, motif_weights) for _, _, child in moves]
    return rng.choices(moves, weights=weights, k=1)[0][2]


def mutate(genome: Genome, rng: random.Random, motif_weights: Mapping[str, float] | None = None) -> Genome:
    """Change one field (sometimes two) of ``genome``; the result differs from the input.

    ``motif_weights`` maps motif tags to non-negative weights: a move's probability is
    proportional to ``(1 + weight of motifs it adds) / (1 + weight of motifs it removes)``.
    """
    parent = genome.normalised()
    child = _one_move(parent, rng, motif_weights)
    if rng.random() < SECOND_MOVE_PROBABILITY:
        second = _one_move(child, rng, motif_weights)
        if second != parent:
            child = second
    return child


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Field-wise uniform crossover of two genomes, normalised.

    The operator and the decay are inherited together from one parent, since together
    they decide the recurrence.
    """
    a, b = a.normalised(), b.normalised()
    values = {}
    for f in fields(Genome):
        if f.name == "decay":
            continue
        source = a if rng.random() < 0.5 else b
        values[f.name] = getattr(source, f.name)
        if f.name == "operator":
            values["decay"] = source.decay
    return Genome(**values).normalised()
