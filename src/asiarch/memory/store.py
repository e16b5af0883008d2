"""The memory: one LanceDB database for candidates, lineage, results and insights.

``Memory(uri)`` opens (or creates) the database at a directory or an object-store URI.
Writes are validated in full before anything is written, so bad input loses nothing.
LanceDB lets two processes that upsert the same new key create duplicate rows, so a
campaign sends all writes through one ``MemoryActor`` (``asiarch.memory.actor``); readers
may open ``Memory(uri, read_only=True)`` directly.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import lancedb
from lancedb.index import FTS, BTree, HnswSq
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asiarch.memory import lifecycle
if TYPE_CHECKING:
    from asiarch.storage import ObjectPath
from asiarch.memory.embed import Embedder, MiniLMEmbedder
from asiarch.memory.lifecycle import FACT_COLUMNS, STAGES, STATUSES, CampaignCounts, Status
from asiarch.memory.redact import Redactor
from asiarch.memory.schema import (
    DEFAULT_EMBEDDING_DIM,
    META_SCHEMA,
    SCHEMA_VERSION,
    Candidate,
    StageMetrics,
    Insight,
    MemoryInputError,
    candidate_from_row,
    candidate_to_row,
    candidates_schema,
    insight_from_row,
    insight_to_row,
    insights_schema,
    utcnow,
    validate_candidate,
    validate_insight,
)

CANDIDATES, INSIGHTS, META = "candidates", "insights", "meta"
REMOTE_SCHEMES = ("s3://", "gs://", "az://", "memory://", "db://")


def _migrate_v1_to_v2(db) -> None:
    """v1 kept seed-ness, breakthroughs and the verify fitness as keys of ``fitness_parts`` JSON.

    v2 gives them typed columns (``kind``, ``breakthrough``, ``reached_training``) and
    every stage its own fitness. The table is rewritten in one commit; a rerun after an
    interruption finds the new columns and does nothing.
    """
    table = db.open_table(CANDIDATES)
    if "kind" in table.schema.names:
        return
    dim = table.schema.field("motivation_embedding").type.list_size
    rows = []
    for row in table.to_arrow().to_pylist():
        parts = json.loads(row.pop("fitness_parts_json") or "{}")
        verify = parts.pop("verify", None) or {}
        seed = parts.pop("baseline", None) is True
        breakthrough = parts.pop("breakthrough", None) is True
        repaired_after_training = any(f.get("check") == "training" for r in json.loads(row.get("repairs_json") or "[]")
                                      for f in r.get("failures", []))
        row.update(
            kind="seed" if seed else "candidate", breakthrough=breakthrough,
            reached_training=not seed and (row["status"] in ("training", "stopped", "finished", "failed", "promoted")
                                           or row["stage"] == "verify" or repaired_after_training),
            explore_fitness=row.pop("fitness"), explore_fitness_parts_json=json.dumps(parts) if parts else "",
            verify_fitness=verify.pop("fitness", None), verify_fitness_parts_json=json.dumps(verify) if verify else "")
        rows.append(row)
    data = pa.Table.from_pylist(rows, schema=candidates_schema(dim))
    migrated = db.create_table(CANDIDATES, data=data, schema=candidates_schema(dim), mode="overwrite")
    migrated.create_index("id", config=BTree(), replace=True)
    migrated.create_index("campaign", config=BTree(), replace=True)


# version -> function(db) upgrading a database of that version to version + 1
MIGRATIONS: dict[int, Any] = {1: _migrate_v1_to_v2}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in_list(ids: Iterable[str]) -> str:
    return "(" + ", ".join(_quote(i) for i in ids) + ")"


def _where(**filters: str | None) -> str | None:
    """SQL filter from column=value pairs, skipping ``None``."""
    clauses = [f"{column} = {_quote(value)}" for column, value in filters.items() if value is not None]
    return " AND ".join(clauses) or None


class Memory:
    """Candidates, insights and their vectors in one LanceDB database."""

    def __init__(
        self,
        uri: str | Path | ObjectPath,
        embedder: Embedder | None = None,
        *,
        read_only: bool = False,
        create: bool = True,
        embedding_dim: int | None = None,
        optimize_every: int = 200,
        keep_versions_for: dt.timedelta = dt.timedelta(minutes=10),
        ann_min_rows: int = 20_000,
        ann_nprobes: int = 32,
        ann_refine_factor: int = 10,
        redactor: Redactor | None = None,
    ):
        """``redactor``: what scrubs text a candidate can influence before it is stored
        (default: this process's secret environment values and key-shaped strings)."""
        from asiarch.storage import ObjectPath

        self.uri = str(uri)
        # an s3:// location brings its endpoint; credentials come from this process's environment
        storage_options = uri.lance_options() if isinstance(uri, ObjectPath) else None
        self.redactor = redactor or Redactor.from_environment()
        self.read_only = read_only
        self.optimize_every = optimize_every
        self.keep_versions_for = keep_versions_for  # readers holding an older version keep working this long
        self.ann_min_rows, self.ann_nprobes, self.ann_refine_factor = ann_min_rows, ann_nprobes, ann_refine_factor
        self._ranking: tuple[int, pa.Table] | None = None  # (table version, scored rows best first)
        self._children: tuple[int, str | None, dict[str, int]] | None = None  # (version, campaign, children per parent)
        self._ann_seen: tuple[int, bool] | None = None  # (table version, has a vector index)
        self._writes_since_optimize = 0
        self._fts_stale = True
        self._embedder = embedder
        self._check_location(create and not read_only)
        # readers see the writer's commits at once; the single writer needs no re-check
        self.db = lancedb.connect(self.uri, read_consistency_interval=dt.timedelta(0) if read_only else None,
                                  storage_options=storage_options)
        tables = set(self._table_names())
        if META not in tables:
            if tables:
                raise MemoryInputError(
                    f"{self.uri} holds LanceDB tables {sorted(tables)} but no '{META}' table: it is not an asiarch "
                    "memory (or was written by an unknown version); refusing to open it"
                )
            if read_only or not create:
                raise MemoryInputError(f"{self.uri} is not an asiarch memory (no tables); nothing to open")
            self._create(embedding_dim or (embedder.dim if embedder else DEFAULT_EMBEDDING_DIM))
        self.meta = self._read_meta()
        self.dim = int(self.meta["embedding_dim"])
        self._check_version()
        if embedder is not None and embedder.dim != self.dim:
            raise MemoryInputError(f"embedder produces {embedder.dim}-d vectors but {self.uri} stores {self.dim}-d embeddings")
        if embedding_dim is not None and embedding_dim != self.dim:
            raise MemoryInputError(f"embedding_dim={embedding_dim} requested but {self.uri} stores {self.dim}-d embeddings")
        self.candidates = self.db.open_table(CANDIDATES)
        self.insights = self.db.open_table(INSIGHTS)

    # ------------------------------------------------------------------ opening

    def _check_location(self, may_create: bool) -> None:
        if self.uri.startswith(REMOTE_SCHEMES):
            return
        path = Path(self.uri)
        if path.exists() and not path.is_dir():
            raise MemoryInputError(f"memory path {path} is a file, not a database directory")
        if path.is_dir():
            entries = [p.name for p in path.iterdir()]
            if entries and not any(name.endswith(".lance") for name in entries):
                raise MemoryInputError(
                    f"memory path {path} is a non-empty directory without LanceDB tables ({sorted(entries)[:5]}...): "
                    "not an asiarch memory; choose an empty or new directory"
                )
        elif not may_create:
            raise MemoryInputError(f"memory path {path} does not exist")

    def _table_names(self) -> list[str]:
        listed = self.db.list_tables()
        return list(getattr(listed, "tables", listed))

    def _create(self, dim: int) -> None:
        for name, schema in ((CANDIDATES, candidates_schema(dim)), (INSIGHTS, insights_schema(dim))):
            table = self.db.create_table(name, schema=schema)
            table.create_index("id", config=BTree())  # point lookups by id stay ~ms at 100k rows
        self.db.open_table(CANDIDATES).create_index("campaign", config=BTree())  # campaign filters
        meta = {"schema_version": str(SCHEMA_VERSION), "embedding_dim": str(dim), "created_at": utcnow().isoformat()}
        # meta last: a database interrupted while being created has no meta and is refused, not misread
        self.db.create_table(META, data=pa.Table.from_pylist([{"key": k, "value": v} for k, v in meta.items()], schema=META_SCHEMA))

    def _read_meta(self) -> dict[str, str]:
        rows = self.db.open_table(META).to_arrow().to_pylist()
        meta = {row["key"]: row["value"] for row in rows}
        for key in ("schema_version", "embedding_dim"):
            if key not in meta:
                raise MemoryInputError(f"{self.uri}: the '{META}' table lacks '{key}'; the database is damaged or foreign")
        return meta

    def _check_version(self) -> None:
        try:
            version = int(self.meta["schema_version"])
        except ValueError as err:
            raise MemoryInputError(f"{self.uri}: unknown schema version {self.meta['schema_version']!r}") from err
        if version > SCHEMA_VERSION:
            raise MemoryInputError(
                f"{self.uri} was written with memory schema v{version}; this asiarch reads v{SCHEMA_VERSION}. "
                "Upgrade asiarch to open it."
            )
        while version < SCHEMA_VERSION:
            migrate = MIGRATIONS.get(version)
            if migrate is None or self.read_only:
                raise MemoryInputError(
                    f"{self.uri} uses memory schema v{version}, older than v{SCHEMA_VERSION}, and "
                    + ("it cannot be migrated read-only" if migrate else "no migration exists; export it with the old version")
                )
            migrate(self.db)
            version += 1
            self._set_meta("schema_version", str(version))
        self.meta["schema_version"] = str(version)

    def _set_meta(self, key: str, value: str) -> None:
        table = self.db.open_table(META)
        row = pa.Table.from_pylist([{"key": key, "value": value}], schema=META_SCHEMA)
        table.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(row)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            if self.dim != MiniLMEmbedder.dim:
                raise MemoryInputError(f"{self.uri} stores {self.dim}-d embeddings: pass the embedder that made them")
            self._embedder = MiniLMEmbedder()
        return self._embedder

    # ------------------------------------------------------------------ writes

    def _writable(self) -> None:
        if self.read_only:
            raise MemoryInputError(f"this Memory({self.uri}) is read-only; send writes through the MemoryActor")

    def _after_write(self) -> None:
        self._writes_since_optimize += 1
        if self.optimize_every and self._writes_since_optimize >= self.optimize_every:
            self.optimize()

    def upsert_candidates(self, candidates: Candidate | Sequence[Candidate]) -> list[str]:
        """Insert or replace candidates by id, atomically (all or none). Returns their ids.

        A row that exists already may only move as ``asiarch.memory.lifecycle`` allows;
        the first move into training sets ``reached_training`` for good.
        """
        return self._upsert_candidates(candidates, enforce_lifecycle=True)

    def _upsert_candidates(self, candidates: Candidate | Sequence[Candidate], enforce_lifecycle: bool) -> list[str]:
        batch = self._batch(candidates, Candidate)
        for c in batch:
            validate_candidate(c, self.dim)
            # text a candidate's code or its failures can reach: no secrets, bounded length
            c.status_reason, c.analysis, c.judge_rationale, c.motivation = (
                self.redactor.text(t) for t in (c.status_reason, c.analysis, c.judge_rationale, c.motivation))
            c.check_report, c.repairs, c.judge = (self.redactor.value(v) for v in (c.check_report, c.repairs, c.judge))
        # one read of what is stored: the lifecycle checks below and _merge's creation times
        stored = self._stored(self.candidates, [c.id for c in batch],
                              ["created_at", "kind", "status", "stage", "reached_training"])
        for c in batch:
            before = stored.get(c.id)
            if before is not None and enforce_lifecycle:
                lifecycle.check_move(c.id, before["status"], c.status, before["stage"], c.stage, before["kind"], c.kind)
            c.reached_training = bool(c.reached_training or c.status == Status.TRAINING.value
                                      or (before is not None and before["reached_training"]))
        missing = [c for c in batch if c.motivation_embedding is None and c.motivation.strip()]
        if missing:
            for c, vector in zip(missing, self.embedder.embed([c.motivation for c in missing])):
                c.motivation_embedding = vector.tolist()
        now = utcnow()
        for c in batch:
            c.updated_at = now
        return self._merge(self.candidates, batch, candidate_to_row, now, stored)

    def _batch(self, records, kind: type) -> list:
        """The records as a list with unique ids, after checking this memory may be written."""
        self._writable()
        batch = [records] if isinstance(records, kind) else list(records)
        ids = [r.id for r in batch]
        if len(set(ids)) != len(ids):
            raise MemoryInputError(f"duplicate ids in one upsert: {sorted({i for i in ids if ids.count(i) > 1})}")
        return batch

    def _merge(self, table, batch: list, to_row, now, stored: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """One atomic merge of validated records on ``id``, keeping each row's first creation time
        (from ``stored`` rows already read, else read here)."""
        if not batch:
            return []
        ids = [r.id for r in batch]
        if stored is None:
            stored = self._stored(table, ids, ["created_at"])
        for record in batch:
            record.created_at = (stored.get(record.id) or {}).get("created_at") or record.created_at or now
        data = pa.Table.from_pylist([to_row(r) for r in batch], schema=table.schema)
        # vectors were checked by the validators; on_bad_vectors="null" only lets rows without one through
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data, on_bad_vectors="null")
        self._after_write()
        return ids

    def insert_unique(self, candidate: Candidate) -> Candidate:
        """Insert a new candidate, suffixing its name (-2, -3, ...) if the campaign already uses it.

        Done by the single writer, so two agents proposing the same name at once both get in.
        """
        taken = set(self._scan(f"campaign = {_quote(candidate.campaign)}", ["name"])["name"].to_pylist())
        base, n = candidate.name, 2
        while candidate.name in taken:
            candidate.name, n = f"{base}-{n}", n + 1
        if self.get_candidate(candidate.id) is not None:
            raise MemoryInputError(f"candidate id {candidate.id!r} already exists; insert_unique only adds new ones")
        self.upsert_candidates(candidate)
        return candidate

    def update_candidate(self, candidate_id: str, **changes: Any) -> Candidate:
        """Read, change the named fields, write back. Serialise through the actor when concurrent.

        A stage's fields are changed one by one with ``set_stage``; ``reached_training``
        is the memory's own to set.
        """
        current = self.get_candidate(candidate_id)
        if current is None:
            raise MemoryInputError(f"no candidate with id {candidate_id!r}")
        for key, value in changes.items():
            if key in ("fitness", "fitness_parts"):
                raise MemoryInputError(f"{key!r} belongs to a stage: use set_stage(id, 'explore'|'verify', {key}=...)")
            if key == "reached_training":
                raise MemoryInputError("'reached_training' is set by the memory when a candidate enters training")
            if not hasattr(current, key):
                raise MemoryInputError(f"candidate has no field {key!r}")
            setattr(current, key, value)
        self.upsert_candidates(current)
        return current

    def set_stage(self, candidate_id: str, stage: str, /, **fields_and_changes: Any) -> Candidate:
        """Change named fields of one stage's metrics (e.g. ``fitness``, ``eval_loss``) and, with
        them, top-level fields (``status``, ``status_reason``, ...) in one write."""
        if stage not in STAGES:
            raise MemoryInputError(f"unknown stage {stage!r}; use one of {STAGES}")
        current = self.get_candidate(candidate_id)
        if current is None:
            raise MemoryInputError(f"no candidate with id {candidate_id!r}")
        metric_names = {f for f in StageMetrics.__dataclass_fields__}
        metrics = getattr(current, stage)
        top = {}
        for key, value in fields_and_changes.items():
            if key in metric_names:
                setattr(metrics, key, value)
            else:
                top[key] = value
        for key, value in top.items():
            if key == "reached_training" or not hasattr(current, key):
                raise MemoryInputError(f"set_stage: {key!r} is neither a field of {stage} metrics nor a candidate field")
            setattr(current, key, value)
        self.upsert_candidates(current)
        return current

    def add_usage(self, candidate_id: str, **amounts: float) -> Candidate:
        """Add compute and LLM costs (device_seconds, tokens_trained, llm_* fields) to a candidate."""
        allowed = ("device_seconds", "tokens_trained", "llm_input_tokens", "llm_output_tokens", "llm_usd")
        unknown = sorted(set(amounts) - set(allowed))
        if unknown:
            raise MemoryInputError(f"add_usage: unknown field(s) {unknown}; use {allowed}")
        current = self.get_candidate(candidate_id)
        if current is None:
            raise MemoryInputError(f"no candidate with id {candidate_id!r}")
        for key, amount in amounts.items():
            if not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
                raise MemoryInputError(f"add_usage: field '{key}' must be a finite non-negative number, got {amount!r}")
            setattr(current, key, getattr(current, key) + amount)
        self.upsert_candidates(current)
        return current

    def upsert_insights(self, insights: Insight | Sequence[Insight]) -> list[str]:
        """Insert or replace insights by id, atomically; embeds the trigger patterns of new ones."""
        batch = self._batch(insights, Insight)
        for insight in batch:
            validate_insight(insight, self.dim)
        missing = [i for i in batch if i.embedding is None]
        if missing:
            for insight, vector in zip(missing, self.embedder.embed([i.embedding_text for i in missing])):
                insight.embedding = vector.tolist()
        ids = self._merge(self.insights, batch, insight_to_row, utcnow())
        self._fts_stale = self._fts_stale or bool(ids)
        return ids

    def load_cognition_base(self, path: str | Path | None = None) -> int:
        """Add the shipped cognition base (or your own JSONL of paper entries); returns how many."""
        from asiarch.memory.cognition import load_cognition_base

        entries = load_cognition_base(path)
        insights = [
            Insight(id=e.id, kind="paper", source=e.arxiv_id or e.source, design_insight=e.design_insight,
                    trigger_patterns=list(e.trigger_patterns), title=e.title, authors=list(e.authors), year=e.year,
                    arxiv_id=e.arxiv_id, background=e.background, algorithmic_innovation=e.algorithmic_innovation,
                    implementation_guidance=e.implementation_guidance, motifs=list(e.motifs))
            for e in entries
        ]
        self.upsert_insights(insights)
        return len(insights)

    def optimize(self) -> None:
        """Compact small fragments, drop old versions and refresh indices (many small writes slow reads)."""
        self._writable()
        for table in (self.candidates, self.insights):
            table.optimize(cleanup_older_than=self.keep_versions_for)  # also folds new rows into existing indices
        self._writes_since_optimize = 0
        if self.ann_min_rows and not self.has_ann_index():
            if self.candidates.count_rows("motivation_embedding IS NOT NULL") >= self.ann_min_rows:
                self.build_ann_index()

    def has_ann_index(self) -> bool:
        """Whether the motivation embeddings are indexed (looked up once per table version)."""
        version = self.candidates.version
        if self._ann_seen is None or self._ann_seen[0] != version:
            indexed = any("motivation_embedding" in index.columns for index in self.candidates.list_indices())
            self._ann_seen = (version, indexed)
        return self._ann_seen[1]

    def build_ann_index(self, num_partitions: int | None = None) -> None:
        """An IVF-HNSW-SQ index on the motivation embeddings (built by ``optimize`` past ``ann_min_rows``).

        Without it a neighbour query reads every vector from disk (~80 ms at 100k rows);
        with it a query probes ``ann_nprobes`` partitions and re-ranks ``ann_refine_factor``
        times ``k`` candidates exactly.
        """
        self._writable()
        rows = self.candidates.count_rows("motivation_embedding IS NOT NULL")
        if rows < 256:
            raise MemoryInputError(f"an ANN index needs at least 256 embedded candidates, the memory has {rows}")
        partitions = num_partitions or max(1, int(math.sqrt(rows) / 4))
        self.candidates.create_index("motivation_embedding", config=HnswSq(distance_type="cosine", num_partitions=partitions),
                                     replace=True)

    # ------------------------------------------------------------------ reads

    def _stored(self, table, ids: Sequence[str], columns: list[str]) -> dict[str, dict[str, Any]]:
        """``columns`` of the rows of ``table`` that exist among ``ids``, by id."""
        if not ids:
            return {}
        rows = table.search().where(f"id IN {_in_list(ids)}").select(["id", *columns]).limit(len(ids)).to_list()
        return {row["id"]: row for row in rows}

    def scan_candidates(self, campaign: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """Every candidate row of ``campaign`` (or all) as an Arrow table, optionally only some columns.

        For readers that summarise many rows (the dashboard): no code or vectors unless asked.
        """
        return self._scan(_where(campaign=campaign), columns)

    def campaign_counts(self, campaign: str | None = None) -> CampaignCounts:
        """Counts per status, budget used, verified and breakthroughs, by the lifecycle's rules."""
        return lifecycle.count(self._scan(_where(campaign=campaign), FACT_COLUMNS).to_pylist())

    def _scan(self, where: str | None, columns: list[str] | None = None) -> pa.Table:
        """Every candidate row matching ``where`` (a plain query stops at 10 rows), optionally a few columns."""
        query = self.candidates.search()
        if where:
            query = query.where(where)
        if columns:
            query = query.select(columns)
        return query.limit(max(1, self.candidates.count_rows(where))).to_arrow()

    def _candidate_rows(self, where: str | None, limit: int | None = None) -> list[dict[str, Any]]:
        if limit is None:
            return self._scan(where).to_pylist()
        query = self.candidates.search()
        if where:
            query = query.where(where)
        return query.limit(limit).to_list()

    def get_candidate(self, candidate_id: str) -> Candidate | None:
        rows = self._candidate_rows(f"id = {_quote(candidate_id)}", limit=2)
        if len(rows) > 1:
            raise MemoryInputError(f"{len(rows)} rows share id {candidate_id!r}: the memory was written without the actor")
        return candidate_from_row(rows[0]) if rows else None

    def get_candidates(self, ids: Sequence[str]) -> list[Candidate]:
        """The candidates with these ids that exist, in the order asked."""
        if not ids:
            return []
        found = {row["id"]: candidate_from_row(row) for row in self._candidate_rows(f"id IN {_in_list(ids)}", len(ids))}
        return [found[i] for i in ids if i in found]

    def list_candidates(self, campaign: str | None = None, stage: str | None = None, status: str | None = None,
                        where: str | None = None, kind: str | None = None) -> list[Candidate]:
        clauses = [c for c in (_where(campaign=campaign, stage=stage, status=status, kind=kind), where) if c]
        return [candidate_from_row(r) for r in self._candidate_rows(" AND ".join(clauses) or None)]

    def count_candidates(self, campaign: str | None = None) -> int:
        return self.candidates.count_rows(_where(campaign=campaign))

    def counts_by_status(self, campaign: str | None = None) -> dict[str, int]:
        statuses = self._scan(_where(campaign=campaign), ["status"])["status"]
        counts = {status: 0 for status in STATUSES}
        for value in pc.value_counts(statuses).to_pylist():
            counts[value["values"]] = value["counts"]
        return counts

    def _scored(self) -> pa.Table:
        """(id, fitness, campaign, stage, status, kind) of every scored row (explore fitness), best first.

        Cached per table version: a top-k or parent draw is then a filter over a small
        in-memory table, not a scan of the candidates on disk.
        """
        version = self.candidates.version
        if self._ranking is None or self._ranking[0] != version:
            table = self._scan("explore_fitness IS NOT NULL", ["id", "explore_fitness", "campaign", "stage", "status", "kind"])
            table = table.rename_columns(["fitness" if n == "explore_fitness" else n for n in table.column_names])
            self._ranking = (version, table.sort_by([("fitness", "descending"), ("id", "ascending")]))
        return self._ranking[1]

    def _ranked(self, campaign: str | None, stage: str | None, status: str | Sequence[str] | None,
                kind: str | None = None) -> pa.Table:
        """(id, fitness) of candidates with a fitness matching the filters, best first."""
        table = self._scored()
        mask = None
        for column, wanted in (("campaign", campaign), ("stage", stage), ("status", status), ("kind", kind)):
            if wanted is None:
                continue
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            condition = pc.is_in(table[column], value_set=pa.array(values, pa.string()))
            mask = condition if mask is None else pc.and_(mask, condition)
        if mask is not None:
            table = table.filter(mask)
        return table.select(["id", "fitness"])

    def top_k(self, k: int, campaign: str | None = None, stage: str | None = None,
              status: str | Sequence[str] | None = None, kind: str | None = None) -> list[Candidate]:
        """The ``k`` fittest candidates by explore fitness (ties broken by id), optionally filtered."""
        ids = self._ranked(campaign, stage, status, kind)["id"].to_pylist()[:k]
        return self.get_candidates(ids)

    def sample_parents(
        self,
        campaign: str | None = None,
        rule: str = "asi_arch",
        rng: random.Random | None = None,
        num_references: int = 4,
        stage: str | None = None,
    ) -> tuple[Candidate, list[Candidate]]:
        """A parent and reference designs for the next proposal.

        ``asi_arch``: the original rule: of the top-50 pool by fitness, the parent uniformly
        from ranks 1-10 and the references from ranks 11-50 (while the pool is small, from
        whatever else it holds). ``weighted``: every scored candidate weighted by
        ``sigmoid(z-scored fitness) / (1 + number of children)``, favouring fit designs that
        have not been explored yet; references drawn the same way without replacement.
        """
        rng = rng or random.Random()
        ranked = self._ranked(campaign, stage, None)
        ids = ranked["id"].to_pylist()
        if not ids:
            raise MemoryInputError(f"no scored candidates to sample parents from (campaign={campaign!r})")
        if rule == "asi_arch":
            pool = ids[:50]
            parent = rng.choice(pool[:10])
            others = [i for i in (pool[10:] if len(pool) > 10 else pool) if i != parent]
            references = rng.sample(others, min(num_references, len(others)))
        elif rule == "weighted":
            fitness = np.asarray(ranked["fitness"].to_pylist(), dtype=np.float64)
            z = (fitness - fitness.mean()) / (fitness.std() or 1.0)
            children = self._child_counts(campaign)
            weights = (1 / (1 + np.exp(-z))) / (1 + np.array([children.get(i, 0) for i in ids]))
            order = self._weighted_order(ids, weights, rng, 1 + num_references)
            parent, references = order[0], order[1:]
        else:
            raise MemoryInputError(f"unknown parent-sampling rule {rule!r}; use 'asi_arch' or 'weighted'")
        chosen = self.get_candidates([parent, *references])
        return chosen[0], chosen[1:]

    @staticmethod
    def _weighted_order(ids: list[str], weights: np.ndarray, rng: random.Random, n: int) -> list[str]:
        """Up to ``n`` ids drawn without replacement with probability proportional to weight."""
        keys = [rng.random() ** (1.0 / w) if w > 0 else 0.0 for w in weights]  # Efraimidis-Spirakis
        return [ids[i] for i in sorted(range(len(ids)), key=lambda i: -keys[i])[:n]]

    def _child_counts(self, campaign: str | None) -> dict[str, int]:
        """Children per parent id in ``campaign``; cached per table version, like ``_scored``."""
        version = self.candidates.version
        if self._children is None or self._children[:2] != (version, campaign):
            parents = self._scan(_where(campaign=campaign), ["parent_ids"])["parent_ids"]
            counts: dict[str, int] = {}
            for parent in pc.list_flatten(parents).to_pylist():
                counts[parent] = counts.get(parent, 0) + 1
            self._children = (version, campaign, counts)
        return self._children[2]

    def neighbours(
        self,
        text: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 5,
        campaign: str | None = None,
        exclude_id: str | None = None,
    ) -> list[tuple[Candidate, float]]:
        """Nearest candidates by motivation embedding, with cosine similarity (novelty checks)."""
        if (text is None) == (vector is None):
            raise MemoryInputError("neighbours needs exactly one of text= or vector=")
        if text is not None:
            vector = self.embedder.embed([text])[0]
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise MemoryInputError(f"query vector has shape {vector.shape}, the memory's embeddings are {self.dim}-d")
        # No "embedding IS NOT NULL" filter: as a prefilter it scans the table (~100 ms at 100k);
        # rows without a vector come back without a distance and are dropped below.
        search = self.candidates.search(vector, vector_column_name="motivation_embedding").distance_type("cosine")
        if campaign is not None:
            search = search.where(f"campaign = {_quote(campaign)}", prefilter=True)
        if self.has_ann_index():
            search = search.nprobes(self.ann_nprobes).refine_factor(self.ann_refine_factor)
        rows = search.limit(k + (exclude_id is not None)).to_list()
        rows = [row for row in rows if row["_distance"] is not None and row["id"] != exclude_id][:k]
        return [(candidate_from_row(row), 1.0 - float(row["_distance"])) for row in rows]

    def candidates_version(self) -> int:
        """The candidates table's version: it changes on every write, so readers may cache per version."""
        return self.candidates.version

    # ------------------------------------------------------------------ lineage

    def ancestors(self, candidate_id: str) -> list[Candidate]:
        """Every ancestor, nearest first (breadth-first over parent ids)."""
        start = self.get_candidate(candidate_id)
        if start is None:
            raise MemoryInputError(f"no candidate with id {candidate_id!r}")
        seen, order, frontier = {candidate_id}, [], list(start.parent_ids)
        while frontier:
            frontier = [i for i in dict.fromkeys(frontier) if i not in seen]
            seen.update(frontier)
            found = self.get_candidates(frontier)
            order.extend(found)
            frontier = [p for c in found for p in c.parent_ids]
        return order

    def children(self, candidate_id: str) -> list[Candidate]:
        return [candidate_from_row(r) for r in self._candidate_rows(f"array_has(parent_ids, {_quote(candidate_id)})")]

    def descendants(self, candidate_id: str) -> list[Candidate]:
        """Every descendant, nearest first."""
        seen, order, frontier = {candidate_id}, [], deque([candidate_id])
        while frontier:
            for child in self.children(frontier.popleft()):
                if child.id not in seen:
                    seen.add(child.id)
                    order.append(child)
                    frontier.append(child.id)
        return order

    def siblings(self, candidate_id: str) -> list[Candidate]:
        """Candidates sharing at least one parent, best fitness first."""
        me = self.get_candidate(candidate_id)
        if me is None:
            raise MemoryInputError(f"no candidate with id {candidate_id!r}")
        found: dict[str, Candidate] = {}
        for parent in me.parent_ids:
            for child in self.children(parent):
                if child.id != candidate_id:
                    found[child.id] = child
        return sorted(found.values(), key=lambda c: (-(c.fitness if c.fitness is not None else -math.inf), c.id))

    # ------------------------------------------------------------------ insights

    def count_insights(self, kind: str | None = None) -> int:
        return self.insights.count_rows(_where(kind=kind))

    def list_insights(self, kind: str | None = None, columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Every insight (of ``kind``) as plain rows, optionally only some columns (no vectors unless asked)."""
        query = self.insights.search()
        where = _where(kind=kind)
        if where:
            query = query.where(where)
        if columns:
            query = query.select(columns)
        return query.limit(max(1, self.count_insights(kind))).to_list()

    def search_insights(self, query: str, k: int = 5, mode: str = "hybrid", kind: str | None = None) -> list[tuple[Insight, float]]:
        """Insights for ``query`` by ``vector`` (embedded trigger patterns), ``fts`` (BM25) or ``hybrid`` (both, RRF)."""
        if mode not in ("vector", "fts", "hybrid"):
            raise MemoryInputError(f"unknown insight search mode {mode!r}; use 'vector', 'fts' or 'hybrid'")
        where = _where(kind=kind)
        if mode in ("fts", "hybrid"):
            self._ensure_fts()
        if mode == "vector":
            search = self.insights.search(self.embedder.embed([query])[0], vector_column_name="embedding").distance_type("cosine")
            score = lambda row: 1.0 - float(row["_distance"])  # noqa: E731
        elif mode == "fts":
            search = self.insights.search(query, query_type="fts", fts_columns="search_text")
            score = lambda row: float(row["_score"])  # noqa: E731
        else:
            search = (self.insights.search(query_type="hybrid", vector_column_name="embedding", fts_columns="search_text")
                      .vector(self.embedder.embed([query])[0]).text(query))
            score = lambda row: float(row["_relevance_score"])  # noqa: E731
        if where:
            search = search.where(where, prefilter=True)
        return [(insight_from_row(row), score(row)) for row in search.limit(k).to_list()]

    def _ensure_fts(self) -> None:
        if not self._fts_stale:
            return
        if self.count_insights() and not self.read_only:
            self.insights.create_index("search_text", config=FTS(), replace=True)
        self._fts_stale = False

    # ------------------------------------------------------------------ export / import

    def export(self, path: str | Path, table: str = CANDIDATES) -> int:
        """Write a table to ``.parquet`` or ``.jsonl``; returns the row count."""
        path = Path(path)
        source = {CANDIDATES: self.candidates, INSIGHTS: self.insights}.get(table)
        if source is None:
            raise MemoryInputError(f"unknown table {table!r}; export '{CANDIDATES}' or '{INSIGHTS}'")
        data = source.to_arrow()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            pq.write_table(data, path)
        elif path.suffix == ".jsonl":
            with path.open("w") as out:
                for row in data.to_pylist():
                    out.write(json.dumps(row, default=_json_default) + "\n")
        else:
            raise MemoryInputError(f"export path {path} must end in .parquet or .jsonl")
        return data.num_rows

    def import_(self, path: str | Path, table: str = CANDIDATES) -> int:
        """Read a ``.parquet``/``.jsonl`` export and upsert it; every row is checked before any is written."""
        path = Path(path)
        if not path.is_file():
            raise MemoryInputError(f"import path {path} does not exist")
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
        elif path.suffix == ".jsonl":
            rows = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise MemoryInputError(f"{path}:{number}: not valid JSON ({err.msg}); nothing was imported") from err
        else:
            raise MemoryInputError(f"import path {path} must end in .parquet or .jsonl")
        convert = {CANDIDATES: candidate_from_row, INSIGHTS: insight_from_row}.get(table)
        if convert is None:
            raise MemoryInputError(f"unknown table {table!r}; import '{CANDIDATES}' or '{INSIGHTS}'")
        records = []
        for number, row in enumerate(rows, 1):
            try:
                for key in ("created_at", "updated_at"):
                    if isinstance(row.get(key), str):
                        row[key] = dt.datetime.fromisoformat(row[key])
                records.append(convert(row))
            except (KeyError, TypeError, ValueError) as err:
                raise MemoryInputError(f"{path}: row {number} is corrupt or partial ({type(err).__name__}: {err}); nothing was imported") from err
        for number, record in enumerate(records, 1):
            try:
                (validate_candidate if table == CANDIDATES else validate_insight)(record, self.dim)
            except MemoryInputError as err:
                raise MemoryInputError(f"{path}: row {number}: {err}; nothing was imported") from err
        if table == CANDIDATES:  # an import restores rows as they were: no lifecycle moves to check
            self._upsert_candidates(records, enforce_lifecycle=False)
        else:
            self.upsert_insights(records)
        return len(records)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
