"""One memory for a campaign: candidates, lineage, results and paper insights in LanceDB."""

from asiarch.memory.actor import MemoryActor
from asiarch.memory.embed import Embedder, FunctionEmbedder, MiniLMEmbedder, WriterEmbedder
from asiarch.memory.lifecycle import (
    KINDS,
    STAGES,
    STATUSES,
    CampaignCounts,
    IllegalTransition,
    Kind,
    Status,
    counts_toward_budget,
    is_breakthrough,
    is_seed,
    is_verified,
    seed_row_id,
)
from asiarch.memory.schema import (
    SCHEMA_VERSION,
    Candidate,
    Insight,
    MemoryInputError,
    StageMetrics,
    code_hash,
)
from asiarch.memory.store import Memory

__all__ = [
    "KINDS",
    "CampaignCounts",
    "IllegalTransition",
    "Kind",
    "Status",
    "counts_toward_budget",
    "is_breakthrough",
    "is_seed",
    "is_verified",
    "seed_row_id",
    "SCHEMA_VERSION",
    "STAGES",
    "STATUSES",
    "Candidate",
    "Embedder",
    "FunctionEmbedder",
    "WriterEmbedder",
    "Insight",
    "Memory",
    "MemoryActor",
    "MemoryInputError",
    "MiniLMEmbedder",
    "StageMetrics",
    "code_hash",
]
