"""A seed under another name is recognised, never proposed as a new design."""

from __future__ import annotations

import dataclasses

import ray

from asiarch.arch import seed_source
from asiarch.arch.identity import seed_twin
from asiarch.proposer import OfflineBackend, render, seed_genome
from asiarch.proposer.render import seed_of_genome


def test_a_renamed_recommented_seed_is_that_seed():
    code = seed_source("gated_deltanet").replace("class GatedDeltaNet(", "class BrandNewMixer(")
    code = "# a fresh idea\n" + code.replace('"""', '"""Totally new. ', 1)
    assert seed_twin(code) == "gated_deltanet"
    changed = code.replace("F.silu", "F.gelu", 1)
    assert changed != code and seed_twin(changed) is None  # one real change makes it another design
    assert seed_twin("def broken(:") is None


def test_a_rendered_seed_genome_is_that_seed_and_a_mutation_is_not():
    assert seed_of_genome(render(seed_genome("gated_deltanet"), class_name="Anything")) == "gated_deltanet"
    other = dataclasses.replace(seed_genome("deltanet"), short_conv=0)
    assert seed_of_genome(render(other)) is None
    assert seed_of_genome(seed_source("deltanet")) is None  # not rendered: no genome to compare


class SeedEchoBackend(OfflineBackend):
    """Proposes the Gated DeltaNet seed's genome first, as a mutation can re-derive it."""

    def __init__(self):
        super().__init__(seed=0)
        self.proposed = 0

    def _researcher(self, ctx):
        self.proposed += 1
        answer = super()._researcher(ctx)
        if self.proposed == 1:
            return {**answer, "name": "new-gated-idea", "code": render(seed_genome("gated_deltanet"), "NewGatedIdea")}
        return answer


def test_the_researcher_replans_a_seed_and_rejects_it_when_nothing_else_comes(tmp_path):
    from asiarch.agents import AgentsConfig, Researcher
    from asiarch.memory import Memory

    memory = Memory(tmp_path / "memory")
    researcher = Researcher(SeedEchoBackend(), str(tmp_path / "memory"), memory, campaign="c", config=AgentsConfig())
    first = researcher.propose("deltanet")
    assert first.status == "proposed" and seed_of_genome(first.code) is None
    assert "was the seed gated_deltanet; re-planned" in first.status_reason
    stubborn = SeedEchoBackend()
    stubborn._researcher = lambda ctx: {"name": "again", "motivation": "m",
                                        "code": render(seed_genome("mamba2"), "Again")}
    only_seed = Researcher(stubborn, str(tmp_path / "memory"), memory, campaign="c", config=AgentsConfig()).propose()
    assert only_seed.status == "rejected" and "it is the seed mamba2" in only_seed.status_reason
    assert not ray.is_initialized()
