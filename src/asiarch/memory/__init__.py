"""One memory for a campaign: candidates, lineage, results and paper insights in LanceDB.

The names below load on first use: a process that only needs the records (``Candidate``,
``Status``) or the redactor, such as an agent or a trial, never imports LanceDB (~2 s of CPU).
"""

from __future__ import annotations

from asiarch.lazy import lazy_exports

# public name -> the submodule that defines it (the one place this package's exports are listed)
_EXPORTS = {
    **dict.fromkeys(("MemoryActor",), "actor"),
    **dict.fromkeys(("Embedder", "FunctionEmbedder", "MiniLMEmbedder"), "embed"),
    **dict.fromkeys(("KINDS", "STAGES", "STATUSES", "CampaignCounts", "IllegalTransition", "Kind", "Status",
                     "counts_toward_budget", "is_breakthrough", "is_seed", "is_verified", "seed_row_id"), "lifecycle"),
    **dict.fromkeys(("SCHEMA_VERSION", "Candidate", "Insight", "MemoryInputError", "StageMetrics", "code_hash"),
                    "schema"),
    **dict.fromkeys(("Memory",), "store"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
