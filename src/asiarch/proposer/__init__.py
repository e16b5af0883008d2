"""The offline proposer's design space, renderer and variation operators.

This is a *symbolic* proposer, not a language model: a candidate is a :class:`Genome`
(a handful of discrete architectural choices for a linear-attention token mixer),
:func:`render` turns it into contract-conforming PyTorch source, and :func:`mutate` /
:func:`crossover` move through the space, optionally biased by motif weights taken from
retrieved cognition-base entries (:meth:`Genome.motifs` says which motifs a genome realises).
Everything is deterministic given a ``random.Random``.
"""

from asiarch.proposer.genome import (
    FIELD_CHOICES, REFERENCE_PARAMETERS, Genome, estimate_parameters, name_for, seed_genome,
)
from asiarch.proposer.backend import OfflineBackend
from asiarch.proposer.render import class_name_for, genome_from_source, render
from asiarch.proposer.search import crossover, mutate, single_moves

__all__ = [
    "FIELD_CHOICES", "Genome", "OfflineBackend", "REFERENCE_PARAMETERS", "class_name_for", "crossover",
    "estimate_parameters", "genome_from_source",
    "mutate", "name_for", "render", "seed_genome", "single_moves",
]
