"""The Memory actor: the single writer of a campaign's memory.

LanceDB lets two processes that upsert the same new key create duplicate rows silently,
and read-modify-write updates (status changes, repair logs, cost accounting) race
between processes. A Ray actor runs its methods one at a time, so routing every write
through one ``MemoryActor`` serialises them. The agents read through it too: their processes then never import
LanceDB or load the embedding model (their queries are embedded by the writer's), and they
read their own writes at once. Other readers (the pipeline, trials, the dashboard) open
``Memory(uri, read_only=True)`` themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import ray

if TYPE_CHECKING:  # a process that holds a handle loads this class: the agents, which must not import LanceDB
    from asiarch.memory.embed import Embedder
    from asiarch.memory.schema import Candidate, Insight


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class MemoryActor:
    """Owns the writable ``Memory``; its methods mirror the ones of ``Memory`` it exposes."""

    def __init__(self, uri: str, embedder: Embedder | None = None, optimize_every: int = 200):
        from asiarch.memory.store import Memory

        self.memory = Memory(uri, embedder=embedder, optimize_every=optimize_every)

    def uri(self) -> str:
        return self.memory.uri

    # writes
    def upsert_candidates(self, candidates: Candidate | Sequence[Candidate]) -> list[str]:
        return self.memory.upsert_candidates(candidates)

    def insert_unique(self, candidate: Candidate) -> Candidate:
        return self.memory.insert_unique(candidate)

    def update_candidate(self, candidate_id: str, **changes: Any) -> Candidate:
        return self.memory.update_candidate(candidate_id, **changes)

    def set_stage(self, candidate_id: str, stage: str, /, **changes: Any) -> Candidate:
        return self.memory.set_stage(candidate_id, stage, **changes)

    def add_usage(self, candidate_id: str, **amounts: float) -> Candidate:
        return self.memory.add_usage(candidate_id, **amounts)

    def upsert_insights(self, insights: Insight | Sequence[Insight]) -> list[str]:
        return self.memory.upsert_insights(insights)

    def load_cognition_base(self, path: str | None = None) -> int:
        return self.memory.load_cognition_base(path)

    def optimize(self) -> None:
        self.memory.optimize()

    def import_(self, path: str, table: str = "candidates") -> int:
        return self.memory.import_(path, table)

    # the reads agents make (``asiarch.agents.roles.MemoryAccess``), in the writer's one thread: after its writes
    def get_candidate(self, candidate_id: str) -> Candidate | None:
        return self.memory.get_candidate(candidate_id)

    def list_candidates(self, campaign: str | None = None, stage: str | None = None, status: str | None = None,
                        where: str | None = None, kind: str | None = None) -> list[Candidate]:
        return self.memory.list_candidates(campaign, stage=stage, status=status, where=where, kind=kind)

    def sample_parents(self, campaign: str | None = None, **options: Any) -> tuple[Candidate, list[Candidate]]:
        return self.memory.sample_parents(campaign, **options)

    def neighbours(self, **query: Any) -> list[tuple[Candidate, float]]:
        return self.memory.neighbours(**query)

    def ancestors(self, candidate_id: str) -> list[Candidate]:
        return self.memory.ancestors(candidate_id)

    def siblings(self, candidate_id: str) -> list[Candidate]:
        return self.memory.siblings(candidate_id)

    def count_insights(self, kind: str | None = None) -> int:
        return self.memory.count_insights(kind)

    def list_insights(self, kind: str | None = None, columns: list[str] | None = None) -> list[dict[str, Any]]:
        return self.memory.list_insights(kind, columns)

    def search_insights(self, query: str, k: int = 5, mode: str = "hybrid", kind: str | None = None
                        ) -> list[tuple[Insight, float]]:
        return self.memory.search_insights(query, k=k, mode=mode, kind=kind)

    def top_k(self, k: int, **filters: Any) -> list[Candidate]:
        return self.memory.top_k(k, **filters)

    def count_candidates(self, campaign: str | None = None) -> int:
        return self.memory.count_candidates(campaign)

    def counts_by_status(self, campaign: str | None = None) -> dict[str, int]:
        return self.memory.counts_by_status(campaign)

    def campaign_counts(self, campaign: str | None = None):
        return self.memory.campaign_counts(campaign)
