"""The rules of a candidate's life, in one place.

A candidate moves through statuses (``Status``) by the moves in ``TRANSITIONS``; the
memory's update path refuses any other move with an error naming it. Its ``kind`` says
whether the row is one of the campaign's seeds (trained as a baseline) or a candidate.
Every stage (explore, verify) holds its own metrics and fitness. The budget, "verified"
and "breakthrough" are derived here from what the memory stores, so the CLI, the
report, the dashboard and the running campaign count the same things the same way.

    proposed ──▶ validated ──▶ training ──▶ finished ──▶ promoted ──▶ finished (stage verify)
        │            │            │  │  └─▶ stopped (ASHA)     └──▶ failed (no verify run)
        └─▶ rejected ◀┘           │  └─▶ failed ──▶ validated (repaired) / rejected
                                  └─▶ validated (the trial crashed: train it again)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping


class Status(str, enum.Enum):
    """Where a candidate is in its life. Stored as its value (a plain string)."""

    PROPOSED = "proposed"  # written by a Researcher, not yet checked
    VALIDATED = "validated"  # passed the checks; waiting for a trial slot
    REJECTED = "rejected"  # a duplicate, or the checks failed after every repair
    TRAINING = "training"  # in an explore trial
    STOPPED = "stopped"  # ASHA stopped it at a rung
    FINISHED = "finished"  # trained to the end of its stage
    FAILED = "failed"  # its training failed (a code error, or crashes on every retry)
    PROMOTED = "promoted"  # chosen for verify; trained there next

    def __str__(self) -> str:
        return self.value


class Kind(str, enum.Enum):
    """A seed design trained as a baseline, or a candidate the agents proposed."""

    SEED = "seed"
    CANDIDATE = "candidate"

    def __str__(self) -> str:
        return self.value


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
KINDS: tuple[str, ...] = tuple(k.value for k in Kind)
STAGES: tuple[str, ...] = ("explore", "verify")

# The legal moves. Staying in a status is always allowed (a write that changes other fields).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PROPOSED: frozenset({Status.VALIDATED, Status.REJECTED}),
    Status.VALIDATED: frozenset({Status.TRAINING, Status.REJECTED}),
    Status.TRAINING: frozenset({Status.STOPPED, Status.FINISHED, Status.FAILED, Status.VALIDATED}),
    Status.FAILED: frozenset({Status.VALIDATED, Status.REJECTED}),
    Status.FINISHED: frozenset({Status.PROMOTED}),
    Status.PROMOTED: frozenset({Status.FINISHED, Status.FAILED}),
    Status.STOPPED: frozenset(),
    Status.REJECTED: frozenset(),
}


class IllegalTransition(ValueError):
    """A write that would move a candidate by a move the lifecycle does not allow."""


def check_move(candidate_id: str, old_status: str, new_status: str, old_stage: str, new_stage: str,
               old_kind: str, new_kind: str) -> None:
    """Raise ``IllegalTransition`` naming the move when a write would break the lifecycle."""
    if old_kind != new_kind:
        raise IllegalTransition(f"candidate {candidate_id!r}: its kind cannot change ({old_kind} -> {new_kind})")
    if STAGES.index(new_stage) < STAGES.index(old_stage):
        raise IllegalTransition(f"candidate {candidate_id!r}: illegal stage move {old_stage} -> {new_stage} "
                                "(a candidate only moves forward through the funnel)")
    old, new = Status(old_status), Status(new_status)
    if new != old and new not in TRANSITIONS[old]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[old])) or "none: it is final"
        raise IllegalTransition(f"candidate {candidate_id!r}: illegal status move {old.value} -> {new.value} "
                                f"(from {old.value} the allowed moves are: {allowed})")


# The key of a stage's fitness parts that says when it was scored: the campaign's device-hours then (seeds
# included). The discovery curve plots each explore fitness there, not at the candidate's last update.
SCORED_AT = "scored_at_device_hours"


def seed_row_id(campaign: str, seed: str) -> str:
    """The memory id of a campaign's seed baseline."""
    return f"{campaign}-seed-{seed}"


@dataclass(frozen=True)
class Facts:
    """What the shared predicates read of one memory row (a ``Candidate`` or a scanned row)."""

    kind: str
    status: str
    stage: str
    reached_training: bool
    breakthrough: bool
    verify_eval_loss: float | None
    explore_fitness: float | None
    device_seconds: float
    llm_usd: float

    @property
    def is_seed(self) -> bool:
        return self.kind == Kind.SEED.value

    @property
    def counts_toward_budget(self) -> bool:
        """A candidate that reached training counts, whatever happened next (repairs included)."""
        return not self.is_seed and self.reached_training

    @property
    def is_verified(self) -> bool:
        """A candidate trained to the end of verify, with a result."""
        return (not self.is_seed and self.stage == "verify" and self.status == Status.FINISHED.value
                and self.verify_eval_loss is not None)

    @property
    def is_breakthrough(self) -> bool:
        return self.is_verified and self.breakthrough


# The memory columns ``Facts`` is read from (the dashboard and the summary scan only these).
FACT_COLUMNS = ["kind", "status", "stage", "reached_training", "breakthrough", "verify_eval_loss", "explore_fitness",
                "device_seconds", "llm_usd"]


def facts(row: Any) -> Facts:
    """``Facts`` of a ``Candidate`` or of a row mapping with ``FACT_COLUMNS``."""
    if isinstance(row, Mapping):
        get = row.get
        return Facts(kind=get("kind") or Kind.CANDIDATE.value, status=get("status"), stage=get("stage"),
                     reached_training=bool(get("reached_training")), breakthrough=bool(get("breakthrough")),
                     verify_eval_loss=get("verify_eval_loss"), explore_fitness=get("explore_fitness"),
                     device_seconds=float(get("device_seconds") or 0.0), llm_usd=float(get("llm_usd") or 0.0))
    return Facts(kind=row.kind, status=row.status, stage=row.stage, reached_training=row.reached_training,
                 breakthrough=row.breakthrough, verify_eval_loss=row.verify.eval_loss,
                 explore_fitness=row.explore.fitness, device_seconds=row.device_seconds, llm_usd=row.llm_usd)


def is_seed(row: Any) -> bool:
    return facts(row).is_seed


def counts_toward_budget(row: Any) -> bool:
    return facts(row).counts_toward_budget


def is_verified(row: Any) -> bool:
    return facts(row).is_verified


def is_breakthrough(row: Any) -> bool:
    return facts(row).is_breakthrough


@dataclass
class CampaignCounts:
    """One campaign's counts, as every reader shows them (seeds are counted apart)."""

    by_status: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    proposals: int = 0  # candidate rows, whatever their status
    trained: int = 0  # candidates that count toward the budget
    verified: int = 0
    breakthroughs: int = 0
    seeds: int = 0
    best_fitness: float | None = None  # best explore fitness of a candidate
    device_seconds: float = 0.0  # seeds included: they ran on the campaign's devices
    usd: float = 0.0

    @property
    def device_hours(self) -> float:
        return self.device_seconds / 3600

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.by_status), "total": self.proposals, "trained": self.trained,
                "verified": self.verified, "breakthroughs": self.breakthroughs, "seeds": self.seeds,
                "best_fitness": self.best_fitness, "device_hours": self.device_hours, "usd": self.usd}


def count(rows: Iterable[Any]) -> CampaignCounts:
    """Counts of ``Candidate`` objects or scanned rows (see ``facts``)."""
    out = CampaignCounts()
    for row in rows:
        f = facts(row)
        out.device_seconds += f.device_seconds
        out.usd += f.llm_usd
        if f.is_seed:
            out.seeds += 1
            continue
        out.proposals += 1
        out.by_status[f.status] = out.by_status.get(f.status, 0) + 1
        out.trained += f.counts_toward_budget
        out.verified += f.is_verified
        out.breakthroughs += f.is_breakthrough
        if f.explore_fitness is not None and (out.best_fitness is None or f.explore_fitness > out.best_fitness):
            out.best_fitness = f.explore_fitness
    return out
