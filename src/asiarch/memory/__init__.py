"""One memory for a campaign: candidates, lineage, results and paper insights in LanceDB."""

from asiarch.memory.actor import MemoryActor
from asiarch.memory.embed import Embedder, FunctionEmbedder, MiniLMEmbedder
from asiarch.memory.schema import (
    SCHEMA_VERSION,
    STAGES,
    STATUSES,
    Candidate,
    Insight,
    MemoryInputError,
    StageMetrics,
    code_hash,
)
from asiarch.memory.store import Memory

__all__ = [
    "SCHEMA_VERSION",
    "STAGES",
    "STATUSES",
    "Candidate",
    "Embedder",
    "FunctionEmbedder",
    "Insight",
    "Memory",
    "MemoryActor",
    "MemoryInputError",
    "MiniLMEmbedder",
    "StageMetrics",
    "code_hash",
]
