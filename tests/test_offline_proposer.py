"""The offline (symbolic) proposer: genome space, renderer and variation operators."""

from __future__ import annotations

import random
from dataclasses import fields

import pytest

from asiarch.proposer import (
    FIELD_CHOICES, Genome, crossover, estimate_parameters, mutate, name_for, render, seed_genome,
)
from asiarch.memory.cognition.motifs import MOTIFS
from asiarch.proposer.genome import SEED_GENOMES
from asiarch.proposer.render import seed_of_genome

SEEDS = ("deltanet", "gated_deltanet", "mamba2")
ALL_SEEDS = tuple(SEED_GENOMES)  # with the frontier: kda, gdn2, rwkv7, gated_deltaproduct
# Genomes that combine the frontier motifs with each other and with the older ones.
FRONTIER_MIXES = [
    Genome(operator="ssd", decay="channel_data", beta="none"),  # GLA
    Genome(operator="delta", beta="channel"),
    Genome(operator="gated_delta", decay="fixed_multiscale", beta="channel", token_shift=True, window=16),
    Genome(operator="delta", householder=2, beta="const", d_skip=True, window=16),
    Genome(operator="gated_delta", decay="fixed_multiscale", householder=2, beta="sigmoid2"),
    Genome(operator="dplr", decay="channel_data", feature_map="elu1", window=32, d_skip=True, head_mult=2),
]


def _chain(n: int, seed: int = 0, start: str = "deltanet") -> list[Genome]:
    rng, g, out = random.Random(seed), seed_genome(start), []
    for _ in range(n):
        g = mutate(g, rng)
        out.append(g)
    return out


@pytest.mark.parametrize("seed", ALL_SEEDS)
def test_seed_genomes_are_valid_and_deterministic(seed):
    g = seed_genome(seed)
    assert g.is_valid()
    assert render(g) == render(g) == render(Genome(**g.to_dict()))
    assert render(g, "MyMixer").count("class MyMixer(nn.Module)") == 1
    assert g.motifs() <= MOTIFS


def test_seed_genomes_resemble_the_seeds():
    assert {"delta_rule", "short_conv", "qk_norm"} <= seed_genome("deltanet").motifs()
    assert {"delta_rule", "data_dependent_decay", "output_gate"} <= seed_genome("gated_deltanet").motifs()
    mamba = seed_genome("mamba2")
    assert "delta_rule" not in mamba.motifs() and {"scalar_decay", "residual_skip"} <= mamba.motifs()
    assert {"vector_decay", "data_dependent_decay", "delta_rule"} <= seed_genome("kda").motifs()
    assert seed_genome("gdn2").beta == "channel" and "vector_decay" in seed_genome("gdn2").motifs()
    assert seed_genome("rwkv7").operator == "dplr" and "token_shift" in seed_genome("rwkv7").motifs()
    assert "householder_products" in seed_genome("gated_deltaproduct").motifs()
    with pytest.raises(ValueError):
        seed_genome("transformer")


def test_frontier_seed_genomes_are_recognised_as_seeds():
    for name in ALL_SEEDS:
        assert seed_of_genome(render(seed_genome(name))) == name
    assert seed_of_genome(render(FRONTIER_MIXES[0])) is None


def test_mutation_from_deltanet_reaches_the_frontier_motifs():
    """Offline campaigns can reach what the frontier seeds bring, and combine it with the rest."""
    reached = {m for seed in range(3) for g in _chain(150, seed=seed) for m in g.motifs()}
    operators = {g.operator for seed in range(3) for g in _chain(150, seed=seed)}
    assert {"vector_decay", "householder_products", "token_shift"} <= reached
    assert "dplr" in operators


def test_normalisation_repairs_invalid_combinations():
    g = Genome(operator="delta", qk_norm="none", beta="none", decay="scalar_data").normalised()
    assert (g.operator, g.qk_norm, g.beta) == ("gated_delta", "l2", "sigmoid")
    lin = Genome(operator="linear", beta="sigmoid2", output_norm="none").normalised()
    assert (lin.operator, lin.beta, lin.output_norm) == ("linear", "none", "rms")
    assert Genome(operator="ssd", decay="none").normalised().operator == "linear"
    big = Genome(value_expand=2, output_gate="silu").normalised()
    assert big.value_expand == 1  # over the parameter budget otherwise
    with pytest.raises(ValueError):
        Genome(window=7)


def test_rendered_modules_build_and_match_the_parameter_estimate():
    torch = pytest.importorskip("torch")
    for g in [seed_genome(s) for s in ALL_SEEDS] + FRONTIER_MIXES + _chain(12, seed=3):
        source = render(g, "Candidate")
        namespace: dict = {}
        exec(compile(source, "<candidate>", "exec"), namespace)
        module = namespace["Candidate"](128, 4)
        assert sum(p.numel() for p in module.parameters()) == estimate_parameters(g)
        x = torch.randn(2, 11, 128, requires_grad=True)
        out = module(x)
        assert out.shape == x.shape
        out.square().mean().backward()
        assert torch.isfinite(x.grad).all(), name_for(g)


def test_mutation_and_crossover_are_deterministic_and_valid():
    a, b = _chain(30, seed=7), _chain(30, seed=7)
    assert a == b
    assert all(g.is_valid() for g in a)
    assert all(child != parent for parent, child in zip([seed_genome("deltanet")] + a, a))
    rng1, rng2 = random.Random(5), random.Random(5)
    parents = [seed_genome(s) for s in SEEDS] + a[:5]
    kids1 = [crossover(x, y, rng1) for x in parents for y in parents]
    kids2 = [crossover(x, y, rng2) for x in parents for y in parents]
    assert kids1 == kids2
    for (x, y), kid in zip([(x, y) for x in parents for y in parents], kids1):
        assert kid.is_valid()
        for f in fields(Genome):
            if f.name not in ("operator", "decay", "beta", "qk_norm", "output_norm", "value_expand"):
                assert getattr(kid, f.name) in (getattr(x, f.name), getattr(y, f.name))


def test_mutation_reaches_many_distinct_genomes_quickly():
    genomes = _chain(200, seed=0)
    sources = {render(g) for g in genomes}
    names = {name_for(g) for g in genomes}
    assert len(sources) >= 50
    assert len(names) == len(set(genomes))  # the slug is injective on valid genomes
    seen_values = {(f, getattr(g, f)) for g in genomes for f in FIELD_CHOICES}
    assert len(seen_values) >= 30  # the chain explores most of the space


def test_motifs_come_from_the_vocabulary():
    for g in _chain(150, seed=11):
        assert g.motifs() <= MOTIFS
        assert "chunkwise_parallel" in g.motifs()


def test_motif_weights_bias_mutation():
    def gate_fraction(weights):
        rng, base = random.Random(0), seed_genome("deltanet")
        return sum(mutate(base, rng, weights).output_gate != "none" for _ in range(200)) / 200

    plain, favoured = gate_fraction(None), gate_fraction({"output_gate": 10.0})
    assert favoured > 3 * plain and favoured > 0.3
    # and a favoured motif is rarely dropped once present
    rng, g, kept = random.Random(0), seed_genome("gated_deltanet"), 0
    for _ in range(100):
        g = mutate(g, rng, {"output_gate": 10.0})
        kept += g.output_gate != "none"
    assert kept > 80


def test_diverse_renders_pass_the_checks():
    """A seed's genome and some far from it pass every check, two at a time. The training smoke check (9-15 s of
    each design's 10-20 s) runs for the first far design only: every offline campaign of the suite runs it on
    DeltaNet's genome and its mutations."""
    from concurrent.futures import ThreadPoolExecutor

    from asiarch.checks import CHECK_ORDER, check_candidate

    genomes = [seed_genome("rwkv7")] + [  # chunk_ssd: the linear design below
        Genome(operator="linear", feature_map="elu1", qk_norm="none", short_conv=0, output_gate="sigmoid",
               head_mult=2, window=32),
        FRONTIER_MIXES[2],  # channel gates, token shift and a window
        Genome(operator="gated_delta", decay="scalar_data", householder=2, d_skip=True),  # gated_deltanet + products
    ]
    with ThreadPoolExecutor(2) as pool:
        # the complexity sweep from T=256 with 2 repeats, as the campaigns in tests run it (the seeds pass it at the
        # defaults in test_checks.py)
        without_smoke = [c for c in CHECK_ORDER if c != "training_smoke"]
        reports = list(pool.map(lambda i: check_candidate(render(genomes[i]), complexity_base_length=256, complexity_repeats=2,
                                                          checks=None if i == 1 else without_smoke), range(len(genomes))))
    for g, report in zip(genomes, reports):
        assert report.passed, (name_for(g), report.summary())
    assert [r.check for r in reports[1].results][-1] == "training_smoke"


def test_a_frontier_seed_parent_is_mutated_from_its_own_genome():
    """A seed parent arrives as its hand-written layer code; the offline researcher starts from that seed."""
    from asiarch.arch import seed_source
    from asiarch.proposer.backend import OfflineBackend

    for name in ("kda", "gdn2", "rwkv7", "gated_deltaproduct"):
        assert OfflineBackend._genome(seed_source(name)) == seed_genome(name)
    assert OfflineBackend._genome(seed_source("attention")) == seed_genome("deltanet")  # no genome: the fallback
