"""Table schemas of the memory, declared once with pyarrow, and the records they hold.

Two tables carry everything the original system spread over four services: ``candidates``
(every architecture ever proposed, with its code, lineage, checks, metrics, fitness, judge
scores, analysis and costs) and ``insights`` (the cognition base plus insights distilled
from experiments). A third, ``meta``, stores the schema version and the embedding size so
that a database written by another version is refused or migrated, never misread.

Nested data with no fixed shape (check reports, judge scores, repair attempts, per-task
benchmark scores) is stored as JSON text; everything that is filtered or sorted on is a
typed column.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

from asiarch.memory.lifecycle import KINDS, STAGES, STATUSES, Kind, Status

SCHEMA_VERSION = 2  # v2: kind, reached_training and breakthrough columns; fitness per stage
DEFAULT_EMBEDDING_DIM = 384

INSIGHT_KINDS = ("paper", "experiment")


class MemoryInputError(ValueError):
    """Bad input to the memory: the message names the field, the value or the path."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def code_hash(code: str) -> str:
    """Identity of a program's text, ignoring trailing whitespace on lines and at the end."""
    normalised = "\n".join(line.rstrip() for line in code.strip().splitlines())
    return hashlib.sha256(normalised.encode()).hexdigest()[:16]


def _stage_fields(stage: str) -> list[pa.Field]:
    return [
        pa.field(f"{stage}_loss_curve", pa.list_(pa.float64())),
        pa.field(f"{stage}_eval_loss", pa.float64()),
        pa.field(f"{stage}_mqar_accuracy", pa.float64()),
        pa.field(f"{stage}_benchmark", pa.float64()),
        pa.field(f"{stage}_benchmarks_json", pa.string()),
        pa.field(f"{stage}_fitness", pa.float64()),
        pa.field(f"{stage}_fitness_parts_json", pa.string()),
    ]


def candidates_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("campaign", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("parent_ids", pa.list_(pa.string())),
            pa.field("generation", pa.int32()),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("status_reason", pa.string()),
            pa.field("motivation", pa.string()),
            pa.field("code", pa.string()),
            pa.field("code_hash", pa.string()),
            pa.field("motivation_embedding", pa.list_(pa.float32(), dim)),
            *_stage_fields("explore"),
            *_stage_fields("verify"),
            pa.field("reached_training", pa.bool_()),
            pa.field("breakthrough", pa.bool_()),
            pa.field("judge_json", pa.string()),
            pa.field("judge_rationale", pa.string()),
            pa.field("analysis", pa.string()),
            pa.field("check_report_json", pa.string()),
            pa.field("repair_attempts", pa.int32()),
            pa.field("repairs_json", pa.string()),
            pa.field("device_seconds", pa.float64()),
            pa.field("tokens_trained", pa.int64()),
            pa.field("llm_input_tokens", pa.int64()),
            pa.field("llm_output_tokens", pa.int64()),
            pa.field("llm_usd", pa.float64()),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
            pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata={"asiarch_schema_version": str(SCHEMA_VERSION)},
    )


def insights_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),  # paper | experiment
            pa.field("source", pa.string(), nullable=False),  # arXiv id or candidate id
            pa.field("campaign", pa.string()),
            pa.field("title", pa.string()),
            pa.field("authors", pa.list_(pa.string())),
            pa.field("year", pa.int32()),
            pa.field("arxiv_id", pa.string()),
            pa.field("design_insight", pa.string(), nullable=False),
            pa.field("trigger_patterns", pa.list_(pa.string())),
            pa.field("background", pa.string()),
            pa.field("algorithmic_innovation", pa.string()),
            pa.field("implementation_guidance", pa.string()),
            pa.field("motifs", pa.list_(pa.string())),
            pa.field("search_text", pa.string()),  # what full-text search indexes
            pa.field("embedding", pa.list_(pa.float32(), dim)),  # of the trigger patterns
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata={"asiarch_schema_version": str(SCHEMA_VERSION)},
    )


META_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])


@dataclass
class StageMetrics:
    """What one stage (explore or verify) measured for a candidate, and the fitness scored from it."""

    loss_curve: list[float] = field(default_factory=list)
    eval_loss: float | None = None
    mqar_accuracy: float | None = None
    benchmark: float | None = None  # the benchmark term of the fitness (MQAR at cpu_tiny, downstream mean on GPUs)
    benchmarks: dict[str, Any] = field(default_factory=dict)  # per task
    fitness: float | None = None
    fitness_parts: dict[str, Any] = field(default_factory=dict)  # terms, missing terms and why, anchor, tests


@dataclass
class Candidate:
    """One architecture: its code and everything learnt about it. ``id`` is the key.

    ``status``, ``stage``, ``kind`` and ``reached_training`` follow the rules of
    ``asiarch.memory.lifecycle``; each stage keeps its own metrics and fitness.
    """

    id: str
    campaign: str
    name: str
    code: str = ""
    motivation: str = ""
    parent_ids: list[str] = field(default_factory=list)
    generation: int = 0
    kind: str = Kind.CANDIDATE.value
    stage: str = "explore"
    status: str = Status.PROPOSED.value
    status_reason: str = ""
    motivation_embedding: list[float] | None = None
    explore: StageMetrics = field(default_factory=StageMetrics)
    verify: StageMetrics = field(default_factory=StageMetrics)
    reached_training: bool = False  # set by the memory when it first enters training; never unset
    breakthrough: bool = False  # set by verify scoring: beat every seed
    judge: dict[str, Any] = field(default_factory=dict)
    judge_rationale: str = ""
    analysis: str = ""
    check_report: dict[str, Any] = field(default_factory=dict)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    device_seconds: float = 0.0
    tokens_trained: int = 0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    llm_usd: float = 0.0
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def code_hash(self) -> str:
        return code_hash(self.code)

    @property
    def fitness(self) -> float | None:
        """The explore fitness: what candidates are ranked and parents drawn by."""
        return self.explore.fitness

    @property
    def fitness_parts(self) -> dict[str, Any]:
        return self.explore.fitness_parts

    @property
    def repair_attempts(self) -> int:
        return len(self.repairs)


@dataclass
class Insight:
    """A design insight: from a paper (the cognition base) or distilled from an experiment."""

    id: str
    kind: str
    source: str
    design_insight: str
    trigger_patterns: list[str] = field(default_factory=list)
    title: str = ""
    authors: list[str] = field(default_factory=list)
    year: int | None = None
    arxiv_id: str = ""
    campaign: str = ""
    background: str = ""
    algorithmic_innovation: str = ""
    implementation_guidance: str = ""
    motifs: list[str] = field(default_factory=list)
    embedding: list[float] | None = None
    created_at: dt.datetime | None = None

    @property
    def search_text(self) -> str:
        parts = [self.title, self.design_insight, " ".join(self.trigger_patterns), self.background,
                 self.algorithmic_innovation, self.implementation_guidance, " ".join(self.motifs)]
        return "\n".join(p for p in parts if p)

    @property
    def embedding_text(self) -> str:
        """Retrieval embeds the trigger patterns (as the original system did), else the insight."""
        return "; ".join(self.trigger_patterns) or self.design_insight


# ----------------------------------------------------------------------------- validation


def _require_text(value: Any, name: str, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise MemoryInputError(f"{where}: field '{name}' must be a non-empty string, got {value!r}")


def _check_vector(vector: Any, dim: int, name: str, where: str) -> list[float] | None:
    if vector is None:
        return None
    try:
        values = [float(x) for x in vector]
    except (TypeError, ValueError) as err:
        raise MemoryInputError(f"{where}: field '{name}' must be a sequence of numbers") from err
    if len(values) != dim:
        raise MemoryInputError(f"{where}: field '{name}' has length {len(values)}, the memory's embeddings have {dim}")
    if not all(math.isfinite(x) for x in values):
        raise MemoryInputError(f"{where}: field '{name}' contains NaN or inf")
    return values


def _finite_or_none(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise MemoryInputError(f"{where}: field '{name}' must be a number, got {value!r}") from err
    if math.isnan(number):
        return None  # NaN means "not measured"; store it as missing, not as a number
    return number


def validate_candidate(c: Candidate, dim: int) -> None:
    where = f"candidate {c.id!r}"
    for name in ("id", "campaign", "name"):
        _require_text(getattr(c, name), name, where)
    if isinstance(c.status, Status):
        c.status = c.status.value
    if isinstance(c.kind, Kind):
        c.kind = c.kind.value
    if c.kind not in KINDS:
        raise MemoryInputError(f"{where}: field 'kind' must be one of {KINDS}, got {c.kind!r}")
    if c.stage not in STAGES:
        raise MemoryInputError(f"{where}: field 'stage' must be one of {STAGES}, got {c.stage!r}")
    if c.status not in STATUSES:
        raise MemoryInputError(f"{where}: field 'status' must be one of {STATUSES}, got {c.status!r}")
    if not isinstance(c.parent_ids, (list, tuple)) or not all(isinstance(p, str) and p for p in c.parent_ids):
        raise MemoryInputError(f"{where}: field 'parent_ids' must be a list of candidate ids, got {c.parent_ids!r}")
    if c.id in c.parent_ids:
        raise MemoryInputError(f"{where}: field 'parent_ids' names the candidate itself")
    if not isinstance(c.generation, int) or c.generation < 0:
        raise MemoryInputError(f"{where}: field 'generation' must be a non-negative int, got {c.generation!r}")
    c.motivation_embedding = _check_vector(c.motivation_embedding, dim, "motivation_embedding", where)
    for stage in STAGES:
        metrics = getattr(c, stage)
        if isinstance(metrics, dict):
            metrics = StageMetrics(**metrics)
            setattr(c, stage, metrics)
        if not isinstance(metrics.fitness_parts, dict):
            raise MemoryInputError(f"{where}: field '{stage}.fitness_parts' must be a dict, got {metrics.fitness_parts!r}")
        for name in ("eval_loss", "mqar_accuracy", "benchmark", "fitness"):
            setattr(metrics, name, _finite_or_none(getattr(metrics, name), f"{stage}.{name}", where))


def validate_insight(i: Insight, dim: int) -> None:
    where = f"insight {i.id!r}"
    for name in ("id", "source", "design_insight"):
        _require_text(getattr(i, name), name, where)
    if i.kind not in INSIGHT_KINDS:
        raise MemoryInputError(f"{where}: field 'kind' must be one of {INSIGHT_KINDS}, got {i.kind!r}")
    i.embedding = _check_vector(i.embedding, dim, "embedding", where)


# ----------------------------------------------------------------------------- rows <-> records


def _json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False) if value else ""


def _unjson(text: str | None, empty: Any) -> Any:
    return json.loads(text) if text else empty


def candidate_to_row(c: Candidate) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": c.id, "campaign": c.campaign, "name": c.name, "parent_ids": list(c.parent_ids),
        "generation": c.generation, "kind": c.kind, "stage": c.stage, "status": c.status,
        "status_reason": c.status_reason,
        "motivation": c.motivation, "code": c.code, "code_hash": c.code_hash,
        "motivation_embedding": c.motivation_embedding,
        "reached_training": bool(c.reached_training), "breakthrough": bool(c.breakthrough), "judge_json": _json(c.judge),
        "judge_rationale": c.judge_rationale, "analysis": c.analysis, "check_report_json": _json(c.check_report),
        "repair_attempts": c.repair_attempts, "repairs_json": _json(c.repairs),
        "device_seconds": float(c.device_seconds), "tokens_trained": int(c.tokens_trained),
        "llm_input_tokens": int(c.llm_input_tokens), "llm_output_tokens": int(c.llm_output_tokens),
        "llm_usd": float(c.llm_usd), "created_at": c.created_at, "updated_at": c.updated_at,
    }
    for stage in STAGES:
        m: StageMetrics = getattr(c, stage)
        row.update({
            f"{stage}_loss_curve": [float(x) for x in m.loss_curve], f"{stage}_eval_loss": m.eval_loss,
            f"{stage}_mqar_accuracy": m.mqar_accuracy, f"{stage}_benchmark": m.benchmark,
            f"{stage}_benchmarks_json": _json(m.benchmarks), f"{stage}_fitness": m.fitness,
            f"{stage}_fitness_parts_json": _json(m.fitness_parts),
        })
    return row


def candidate_from_row(row: dict[str, Any]) -> Candidate:
    stages = {
        stage: StageMetrics(
            loss_curve=list(row.get(f"{stage}_loss_curve") or []), eval_loss=row.get(f"{stage}_eval_loss"),
            mqar_accuracy=row.get(f"{stage}_mqar_accuracy"), benchmark=row.get(f"{stage}_benchmark"),
            benchmarks=_unjson(row.get(f"{stage}_benchmarks_json"), {}), fitness=row.get(f"{stage}_fitness"),
            fitness_parts=_unjson(row.get(f"{stage}_fitness_parts_json"), {}),
        )
        for stage in STAGES
    }
    embedding = row.get("motivation_embedding")
    return Candidate(
        id=row["id"], campaign=row["campaign"], name=row["name"], code=row.get("code") or "",
        motivation=row.get("motivation") or "", parent_ids=list(row.get("parent_ids") or []),
        generation=int(row.get("generation") or 0), kind=row.get("kind") or Kind.CANDIDATE.value,
        stage=row["stage"], status=row["status"], reached_training=bool(row.get("reached_training")),
        breakthrough=bool(row.get("breakthrough")),
        status_reason=row.get("status_reason") or "",
        motivation_embedding=None if embedding is None else [float(x) for x in embedding],
        judge=_unjson(row.get("judge_json"), {}), judge_rationale=row.get("judge_rationale") or "",
        analysis=row.get("analysis") or "", check_report=_unjson(row.get("check_report_json"), {}),
        repairs=_unjson(row.get("repairs_json"), []), device_seconds=row.get("device_seconds") or 0.0,
        tokens_trained=row.get("tokens_trained") or 0, llm_input_tokens=row.get("llm_input_tokens") or 0,
        llm_output_tokens=row.get("llm_output_tokens") or 0, llm_usd=row.get("llm_usd") or 0.0,
        created_at=row.get("created_at"), updated_at=row.get("updated_at"), **stages,
    )


def insight_to_row(i: Insight) -> dict[str, Any]:
    row = {f.name: getattr(i, f.name) for f in fields(i)}
    row["search_text"] = i.search_text
    row["authors"], row["trigger_patterns"], row["motifs"] = list(i.authors), list(i.trigger_patterns), list(i.motifs)
    return row


def insight_from_row(row: dict[str, Any]) -> Insight:
    values = {f.name: row.get(f.name) for f in fields(Insight)}
    for name in ("authors", "trigger_patterns", "motifs"):
        values[name] = list(values[name] or [])
    for name in ("title", "arxiv_id", "campaign", "background", "algorithmic_innovation", "implementation_guidance"):
        values[name] = values[name] or ""
    if values["embedding"] is not None:
        values["embedding"] = [float(x) for x in values["embedding"]]
    return Insight(**values)


def candidate_as_dict(c: Candidate) -> dict[str, Any]:
    """JSON-ready form (export, API)."""
    out = asdict(c)
    out["fitness"] = c.fitness  # the explore fitness, the ranking readers expect at the top
    for key in ("created_at", "updated_at"):
        out[key] = out[key].isoformat() if out[key] else None
    return out
