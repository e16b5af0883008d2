"""The Memory actor: the single writer of a campaign's memory.

LanceDB lets two processes that upsert the same new key create duplicate rows silently,
and read-modify-write updates (status changes, repair logs, cost accounting) race
between processes. A Ray actor runs its methods one at a time, so routing every write
through one ``MemoryActor`` serialises them. Readers that only query may open
``Memory(uri, read_only=True)`` themselves and skip the round trip.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray

from asiarch.memory.embed import Embedder
from asiarch.memory.schema import Candidate, Insight
from asiarch.memory.store import Memory


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class MemoryActor:
    """Owns the writable ``Memory``; its methods mirror the ones of ``Memory`` it exposes."""

    def __init__(self, uri: str, embedder: Embedder | None = None, optimize_every: int = 200):
        self.memory = Memory(uri, embedder=embedder, optimize_every=optimize_every)

    def uri(self) -> str:
        return self.memory.uri

    # the campaign's one embedding model, for readers in other processes (``WriterEmbedder``)
    def embedding_dim(self) -> int:
        return self.memory.dim

    def embed(self, texts: Sequence[str]):
        return self.memory.embedder.embed(texts)

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

    # reads that agents want next to their writes
    def get_candidate(self, candidate_id: str) -> Candidate | None:
        return self.memory.get_candidate(candidate_id)

    def top_k(self, k: int, **filters: Any) -> list[Candidate]:
        return self.memory.top_k(k, **filters)

    def count_candidates(self, campaign: str | None = None) -> int:
        return self.memory.count_candidates(campaign)

    def counts_by_status(self, campaign: str | None = None) -> dict[str, int]:
        return self.memory.counts_by_status(campaign)

    def campaign_counts(self, campaign: str | None = None):
        return self.memory.campaign_counts(campaign)
