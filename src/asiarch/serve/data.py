"""A read-only view of one campaign directory, shared by the dashboard and the offline report.

A campaign lives in ``runs/<name>/`` (``asiarch.campaign.state.CampaignPaths``): ``memory/``
(the LanceDB memory), ``campaign.json`` (phase, budgets, baselines, the discovery curve)
and ``tune/``. ``CampaignData`` reads both while the campaign may still be writing them:
the memory is opened read-only with strongly consistent reads, and the small
per-candidate summary that the table, the plots and the lineage need is read once per
table version (a few columns, not the code) and kept until the next write, so paging
through 10k candidates never rescans the disk.

What counts as a seed, toward the budget, as verified or as a breakthrough is never
decided here: every flag and count comes from ``asiarch.memory.lifecycle``, the rules the
campaign and ``asiarch status`` use.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from asiarch.campaign.state import CampaignPaths, resolve_campaign
from asiarch.memory import STAGES, STATUSES, Memory, MemoryInputError, lifecycle
from asiarch.memory.embed import Embedder
from asiarch.memory.lifecycle import CampaignCounts
from asiarch.memory.schema import candidate_as_dict

# Columns of the per-candidate summary: everything but code, motivation, curves and vectors,
# and every column the lifecycle's predicates read.
SUMMARY_COLUMNS = list(dict.fromkeys([
    "id", "name", "kind", "status", "stage", "generation", "parent_ids", "reached_training", "breakthrough",
    "explore_fitness", "verify_fitness", "explore_eval_loss", "explore_benchmark", "explore_mqar_accuracy",
    "verify_eval_loss", "verify_benchmark", "judge_json", "device_seconds", "llm_usd", "repair_attempts",
    "created_at", "updated_at", *lifecycle.FACT_COLUMNS,
]))
# What the candidate table may be sorted by (summary keys); "fitness" is the explore fitness.
SORT_KEYS = (
    "fitness", "verify_fitness", "name", "status", "stage", "generation", "explore_eval_loss", "explore_benchmark",
    "explore_mqar_accuracy", "verify_eval_loss", "verify_benchmark", "judge", "device_seconds", "created_at",
    "updated_at", "id",
)
_INSIGHT_COLUMNS = ["id", "kind", "source", "campaign", "title", "year", "arxiv_id", "design_insight",
                    "trigger_patterns", "motifs", "created_at"]
# LanceDB keeps each table in "<name>.lance"; the memory writes its "meta" table last when it creates a database.
_META_TABLE_DIR = "meta.lance"


class NotFound(LookupError):
    """A candidate (or campaign) that does not exist; the message says which."""


class BadRequest(ValueError):
    """A query the view cannot answer as asked; the message says what to change."""


def resolve_campaign_dir(path: str | Path) -> Path:
    """``path`` itself if it is a campaign directory, or the latest campaign of a runs folder.

    Lets ``asiarch serve runs`` and ``asiarch serve runs/campaign-x`` both work; a campaign
    that has only just started (memory not written yet) is accepted too.
    """
    return _paths(path).root


def _paths(path: str | Path) -> CampaignPaths:
    try:
        return resolve_campaign(path)
    except FileNotFoundError as err:
        raise NotFound(str(err)) from None


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class _Index:
    """The per-candidate summary rows of one table version, and what is derived from them."""

    version: int
    rows: list[dict[str, Any]]
    by_id: dict[str, dict[str, Any]]
    children: dict[str, list[str]]
    counts: CampaignCounts = field(default_factory=CampaignCounts)
    sorted_cache: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


class CampaignData:
    """Everything the dashboard and the report show about one campaign, read-only.

    ``embedder`` is only needed for insight search by meaning in a memory whose
    embeddings are not MiniLM's (tests); full-text search works without one.
    """

    def __init__(self, campaign_dir: str | Path, embedder: Embedder | None = None):
        self.paths = _paths(campaign_dir)
        self.embedder = embedder
        self._memory: Memory | None = None
        self._index: _Index | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ sources

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def state_path(self) -> Path:
        return self.paths.state

    def state(self) -> dict[str, Any]:
        """``campaign.json`` as written last ({} before the campaign writes it)."""
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            return {}  # written atomically by the campaign; a hand-edited broken file reads as absent
        return state if isinstance(state, dict) else {}

    @property
    def name(self) -> str:
        return str(self.state().get("name") or self.paths.name)

    def memory(self) -> Memory | None:
        """The campaign's memory, opened read-only once it exists (None before the first write).

        A memory that is complete but cannot be read (an older schema that needs a
        writable open to migrate, a newer one) raises its ``MemoryInputError``, so the
        reader says why instead of showing an empty campaign.
        """
        if self._memory is None:
            path = self.paths.memory
            if not path.is_dir():
                return None
            try:
                self._memory = Memory(path, embedder=self.embedder, read_only=True)
            except MemoryInputError:
                if (path / _META_TABLE_DIR).is_dir():
                    raise
                return None  # still being created by the campaign's writer
        return self._memory

    def _summary_index(self) -> _Index:
        """Summary rows of this campaign's candidates at the current table version (cached per version)."""
        memory = self.memory()
        if memory is None:
            return _Index(-1, [], {}, {})
        version = memory.candidates_version()
        index = self._index
        if index is not None and index.version == version:
            return index
        with self._lock:
            if self._index is not None and self._index.version == version:
                return self._index
            scanned = memory.scan_candidates(self.name, SUMMARY_COLUMNS).to_pylist()
            rows = [self._summary_row(raw) for raw in scanned]
            rows.sort(key=lambda r: (r["created_at"] or "", r["id"]))
            for number, row in enumerate(r for r in rows if not r["baseline"]):
                row["number"] = number + 1  # proposal order: the x axis of "fitness over time"
            by_id = {r["id"]: r for r in rows}
            children: dict[str, list[str]] = defaultdict(list)
            for r in rows:
                for parent in r["parent_ids"]:
                    children[parent].append(r["id"])
            self._index = _Index(version, rows, by_id, dict(children), lifecycle.count(scanned))
            return self._index

    @staticmethod
    def _summary_row(raw: dict[str, Any]) -> dict[str, Any]:
        """One table row; the seed/verified/breakthrough flags are the lifecycle's verdicts on it."""
        facts = lifecycle.facts(raw)
        judge = _loads(raw.get("judge_json"))
        overall = judge.get("overall")
        return {
            "id": raw["id"], "name": raw["name"], "kind": facts.kind, "status": raw["status"], "stage": raw["stage"],
            "generation": int(raw.get("generation") or 0), "parent_ids": list(raw.get("parent_ids") or []),
            "fitness": _finite(raw.get("explore_fitness")), "verify_fitness": _finite(raw.get("verify_fitness")),
            **{key: _finite(raw.get(key)) for key in ("explore_eval_loss", "explore_benchmark", "explore_mqar_accuracy",
                                                      "verify_eval_loss", "verify_benchmark")},
            "judge": _finite(overall) if isinstance(overall, (int, float)) else None,
            "device_seconds": facts.device_seconds, "llm_usd": facts.llm_usd,
            "repair_attempts": int(raw.get("repair_attempts") or 0),
            "created_at": _iso(raw.get("created_at")), "updated_at": _iso(raw.get("updated_at")),
            "baseline": facts.is_seed, "trained": facts.counts_toward_budget, "verified": facts.is_verified,
            "breakthrough": facts.is_breakthrough, "number": None,
        }

    def rows(self) -> list[dict[str, Any]]:
        """Summary rows of every candidate (seed baselines included, flagged), in creation order."""
        return self._summary_index().rows

    def version(self) -> int:
        """The memory's candidates-table version (-1 before the memory exists): changes on every write."""
        return self._summary_index().version

    def counts(self) -> CampaignCounts:
        """The campaign's counts by the lifecycle's rules, as ``Memory.campaign_counts`` gives them."""
        return self._summary_index().counts

    # ------------------------------------------------------------------ overview

    def summary(self) -> dict[str, Any]:
        """Campaign record plus live counts per status, budget used and the best candidate."""
        state = self.state()
        index = self._summary_index()
        counts = index.counts
        scored = [r for r in index.rows if not r["baseline"] and r["fitness"] is not None]
        best = max(scored, key=lambda r: (r["fitness"], r["id"]), default=None)
        used = dict(state.get("used") or {})
        used.update({"candidates": counts.trained, "device_hours": counts.device_hours,
                     "device_seconds": counts.device_seconds, "usd": counts.usd})
        memory = self.memory()
        return {
            "name": self.name,
            "dir": str(self.root),
            "status": state.get("status"),
            "phase": state.get("phase"),
            "scale": state.get("scale"),
            "verify_scale": state.get("verify_scale"),
            "started_at": state.get("started_at"),
            "updated_at": state.get("updated_at"),
            "counts": dict(counts.by_status),
            "total": counts.proposals,
            "trained": counts.trained,
            "seeds": counts.seeds,
            "baselines": [{"id": r["id"], "name": r["name"], "fitness": r["fitness"]} for r in index.rows if r["baseline"]],
            "best": None if best is None else {"id": best["id"], "name": best["name"], "fitness": best["fitness"]},
            "best_fitness": counts.best_fitness,
            "breakthroughs": counts.breakthroughs,
            "verified": counts.verified,
            "budget": dict(state.get("budget") or {}),
            "used": used,
            "insights": memory.count_insights() if memory is not None else 0,
            "version": index.version,
            "state_found": bool(state),
        }

    # ------------------------------------------------------------------ the table

    def candidates_page(self, status: str | None = None, stage: str | None = None, q: str | None = None,
                        sort: str = "fitness", order: str = "desc", offset: int = 0, limit: int = 50,
                        baselines: bool = True) -> dict[str, Any]:
        """One page of summary rows, filtered and sorted; raises ``BadRequest`` for unknown values."""
        statuses = _split(status)
        for s in statuses:
            if s not in STATUSES:
                raise BadRequest(f"unknown status {s!r}; use one of {', '.join(STATUSES)} (comma-separated for several)")
        stages = _split(stage)
        for s in stages:
            if s not in STAGES:
                raise BadRequest(f"unknown stage {s!r}; use one of {', '.join(STAGES)}")
        if sort not in SORT_KEYS:
            raise BadRequest(f"unknown sort column {sort!r}; sort by one of {', '.join(SORT_KEYS)}")
        if order not in ("asc", "desc"):
            raise BadRequest(f"order must be 'asc' or 'desc', got {order!r}")
        if offset < 0:
            raise BadRequest(f"offset must be >= 0, got {offset}")
        if not 1 <= limit <= 1000:
            raise BadRequest(f"limit must be between 1 and 1000, got {limit}")
        index = self._summary_index()
        rows = self._sorted(index, sort, order)
        needle = (q or "").strip().lower()
        if statuses or stages or needle or not baselines:
            rows = [r for r in rows
                    if (not statuses or r["status"] in statuses) and (not stages or r["stage"] in stages)
                    and (baselines or not r["baseline"])
                    and (not needle or needle in r["name"].lower() or needle in r["id"].lower())]
        return {"total": len(rows), "offset": offset, "limit": limit, "sort": sort, "order": order,
                "version": index.version, "items": [dict(r) for r in rows[offset:offset + limit]]}

    def _sorted(self, index: _Index, key: str, order: str) -> list[dict[str, Any]]:
        """Rows sorted by ``key`` (missing values last either way, ties by id), cached per version."""
        cached = index.sorted_cache.get((key, order))
        if cached is None:
            present = sorted((r for r in index.rows if r.get(key) is not None), key=lambda r: r["id"])
            present.sort(key=lambda r: r[key], reverse=order == "desc")  # stable: ties stay in id order
            missing = sorted((r for r in index.rows if r.get(key) is None), key=lambda r: r["id"])
            cached = index.sorted_cache[(key, order)] = present + missing
        return cached

    # ------------------------------------------------------------------ one candidate

    def candidate(self, candidate_id: str) -> dict[str, Any]:
        """Every field of one candidate, its parents (with the first one's code), a diff and its relatives."""
        memory = self.memory()
        found = memory.get_candidate(candidate_id) if memory is not None else None
        if found is None or found.campaign != self.name:
            raise NotFound(f"no candidate with id {candidate_id!r} in campaign {self.name!r}")
        out = candidate_as_dict(found)
        out.pop("motivation_embedding", None)
        index = self._summary_index()
        parents = memory.get_candidates(found.parent_ids)
        first = parents[0] if parents else None
        out["parents"] = [_brief(p.id, p.name, p.status, p.fitness) for p in parents]
        out["parent"] = None if first is None else {**_brief(first.id, first.name, first.status, first.fitness),
                                                     "code": first.code}
        out["diff"] = None if first is None else unified_diff(first.code, found.code, first.name, found.name)
        out["children"] = [_brief(r["id"], r["name"], r["status"], r["fitness"])
                           for r in (index.by_id.get(c) for c in index.children.get(found.id, [])) if r]
        facts = lifecycle.facts(found)
        out["fitness_parts"] = found.explore.fitness_parts  # beside "fitness": both are the explore stage's
        out["baseline"] = facts.is_seed
        out["verified"] = facts.is_verified
        out["breakthrough"] = facts.is_breakthrough
        seeds = memory.get_candidates([r["id"] for r in index.rows if r["baseline"] and r["id"] != found.id])
        out["baseline_curves"] = [
            {"id": s.id, "name": s.name, "explore_loss_curve": s.explore.loss_curve,
             "verify_loss_curve": s.verify.loss_curve, "explore_eval_loss": s.explore.eval_loss,
             "verify_eval_loss": s.verify.eval_loss, "explore_benchmark": s.explore.benchmark,
             "verify_benchmark": s.verify.benchmark}
            for s in seeds
        ]
        out["number"] = (index.by_id.get(found.id) or {}).get("number")
        return out

    # ------------------------------------------------------------------ lineage

    def lineage(self, candidate_id: str | None = None, top: int = 0, max_descendants: int = 300) -> dict[str, Any]:
        """The family tree as nodes (with layout positions) and parent -> child edges.

        With ``candidate_id``: its ancestors and its nearest ``max_descendants`` descendants
        (a seed may have thousands). Otherwise the whole campaign, or with ``top > 0`` only
        the ``top`` fittest candidates, the seeds and their ancestors.
        """
        index = self._summary_index()
        if top < 0 or max_descendants < 0:
            raise BadRequest(f"top and max_descendants must be >= 0, got {top} and {max_descendants}")
        truncated = False

        def parents_of(cid: str) -> list[str]:
            return index.by_id[cid]["parent_ids"] if cid in index.by_id else []

        if candidate_id is not None:
            if candidate_id not in index.by_id:
                raise NotFound(f"no candidate with id {candidate_id!r} in campaign {self.name!r}")
            keep = {candidate_id} | set(_closure([candidate_id], parents_of))
            below = _closure([candidate_id], lambda i: index.children.get(i, []), limit=max_descendants + 1)
            truncated = len(below) > max_descendants
            keep |= set(list(below)[:max_descendants])
        elif top:
            ranked = [r for r in self._sorted(index, "fitness", "desc") if not r["baseline"] and r["fitness"] is not None]
            chosen = [r["id"] for r in ranked[:top]] + [r["id"] for r in index.rows if r["baseline"]]
            keep = set(chosen) | set(_closure(chosen, parents_of))
        else:
            keep = set(index.by_id)
        keep &= set(index.by_id)
        nodes = [index.by_id[r["id"]] for r in index.rows if r["id"] in keep]
        edges = [{"source": p, "target": r["id"]} for r in nodes for p in r["parent_ids"] if p in keep]
        positions = layered_layout([r["id"] for r in nodes], [(e["source"], e["target"]) for e in edges],
                                   {r["id"]: r["fitness"] for r in nodes})
        out_nodes = []
        for r in nodes:
            x, y = positions[r["id"]]
            out_nodes.append({"id": r["id"], "name": r["name"], "status": r["status"], "stage": r["stage"],
                              "fitness": r["fitness"], "generation": r["generation"], "baseline": r["baseline"],
                              "breakthrough": r["breakthrough"], "depth": x, "row": y})
        shown = sum(1 for r in nodes if not r["baseline"])
        return {"root": candidate_id, "nodes": out_nodes, "edges": edges, "truncated": truncated,
                "total": index.counts.proposals, "shown_candidates": shown, "shown_seeds": len(nodes) - shown}

    # ------------------------------------------------------------------ curves

    def fitness_over_time(self) -> dict[str, Any]:
        """Fitness of every scored candidate in proposal order, the best so far, and the seeds' fitness."""
        index = self._summary_index()
        points, best = [], None
        for r in index.rows:
            if r["baseline"]:
                continue
            if r["fitness"] is not None:
                best = r["fitness"] if best is None else max(best, r["fitness"])
                points.append({"number": r["number"], "t": r["created_at"], "id": r["id"], "name": r["name"],
                               "fitness": r["fitness"], "best": best, "stage": r["stage"], "status": r["status"],
                               "verified": r["verified"], "breakthrough": r["breakthrough"]})
        baselines = [{"id": r["id"], "name": r["name"], "fitness": r["fitness"]}
                     for r in index.rows if r["baseline"] and r["fitness"] is not None]
        return {"points": points, "baselines": baselines, "proposals": index.counts.proposals}

    def discovery(self) -> dict[str, Any]:
        """Cumulative breakthroughs against device-hours spent (the paper's discovery curve).

        The campaign records the curve in ``campaign.json``; before it does (or for an old
        campaign) it is rebuilt from the memory: rows in update order, compute summed.
        Also gives the best explore fitness against compute, which moves before any
        breakthrough: each at the device-hours its fitness was scored at (``lifecycle.SCORED_AT``);
        for a campaign that did not record them, in update order (``best_fitness_order`` says which).
        """
        rows = sorted(self.rows(), key=lambda r: (r["updated_at"] or "", r["created_at"] or "", r["id"]))
        hours, derived, by_update, count = 0.0, [], [], 0
        for r in rows:
            hours += r["device_seconds"] / 3600
            if r["baseline"]:
                continue
            if r["breakthrough"]:
                count += 1
                derived.append({"device_hours": hours, "breakthroughs": count, "candidate_id": r["id"],
                                "at": r["updated_at"]})
            if r["fitness"] is not None:
                by_update.append((hours, r))
        stamps = self._explore_scored_at() if by_update else {}
        scored = [(stamps.get(r["id"]), r) for _, r in by_update]
        order = "scored" if all(at is not None for at, _ in scored) else "last update"
        best, fitness_curve = None, []
        for at, r in sorted(scored, key=lambda p: (p[0], p[1]["id"])) if order == "scored" else by_update:
            if best is None or r["fitness"] > best:
                best = r["fitness"]
                fitness_curve.append({"device_hours": at, "best_fitness": best, "candidate_id": r["id"]})
        recorded = self.state().get("discovery")
        source = "campaign.json" if isinstance(recorded, list) and recorded else "memory"
        points = [dict(p) for p in recorded if isinstance(p, dict)] if source == "campaign.json" else derived
        for p in points:
            p["device_hours"] = _finite(p.get("device_hours")) or 0.0
            p["breakthroughs"] = int(p.get("breakthroughs") or 0)
        names = {r["id"]: r["name"] for r in rows}
        for p in points:
            p["name"] = names.get(p.get("candidate_id"))
        return {"source": source, "points": points, "best_fitness": fitness_curve, "best_fitness_order": order,
                "device_hours": hours,
                "breakthroughs": points[-1]["breakthroughs"] if points else 0}

    def _explore_scored_at(self) -> dict[str, float | None]:
        """Each candidate's ``lifecycle.SCORED_AT`` stamp: read here, for the curve only, not with every summary row
        (the fitness parts are the widest column the summary would otherwise carry)."""
        memory = self.memory()
        if memory is None:
            return {}
        stamps: dict[str, float | None] = {}
        for raw in memory.scan_candidates(self.name, ["id", "explore_fitness_parts_json"]).to_pylist():
            at = _loads(raw.get("explore_fitness_parts_json")).get(lifecycle.SCORED_AT)
            stamps[raw["id"]] = _finite(at) if isinstance(at, (int, float)) else None
        return stamps

    # ------------------------------------------------------------------ insights

    def insights(self, q: str = "", k: int = 10, mode: str = "hybrid", kind: str | None = None) -> dict[str, Any]:
        """Insights matching ``q`` (hybrid, vector or full-text search), or the newest ``k`` without a query.

        Falls back to full-text and then to plain substring search when the memory's
        embedder is unavailable, and says which mode answered.
        """
        if mode not in ("hybrid", "vector", "fts"):
            raise BadRequest(f"unknown search mode {mode!r}; use 'hybrid', 'vector' or 'fts'")
        if kind not in (None, "", "paper", "experiment"):
            raise BadRequest(f"unknown insight kind {kind!r}; use 'paper' or 'experiment'")
        if not 1 <= k <= 100:
            raise BadRequest(f"k must be between 1 and 100, got {k}")
        memory = self.memory()
        if memory is None:
            return {"query": q, "mode": None, "items": []}
        kind = kind or None
        if not q.strip():
            rows = memory.list_insights(kind, _INSIGHT_COLUMNS)
            rows.sort(key=lambda r: (r["kind"] != "experiment",  # the campaign's own insights first, newest first
                                     -(r["created_at"].timestamp() if r["created_at"] else 0), r["id"]))
            return {"query": q, "mode": "latest", "items": [_insight_row(r, None) for r in rows[:k]]}
        for attempt in dict.fromkeys((mode, "fts")):
            try:
                found = memory.search_insights(q, k=k, mode=attempt, kind=kind)
            except Exception:  # noqa: BLE001 - no embedder for this memory, or no index yet: try the next mode
                continue
            return {"query": q, "mode": attempt, "items": [
                _insight_row({c: getattr(i, c) for c in _INSIGHT_COLUMNS}, score) for i, score in found]}
        needle = q.lower()
        rows = [r for r in memory.list_insights(kind, _INSIGHT_COLUMNS + ["search_text"])
                if needle in (r["search_text"] or "").lower()][:k]
        return {"query": q, "mode": "substring", "items": [_insight_row(r, None) for r in rows]}


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _brief(cid: str, name: str, status: str, fitness: float | None) -> dict[str, Any]:
    return {"id": cid, "name": name, "status": status, "fitness": fitness}


def _insight_row(row: dict[str, Any], score: float | None) -> dict[str, Any]:
    out = {c: row.get(c) for c in _INSIGHT_COLUMNS}
    out["created_at"] = _iso(out["created_at"])
    out["trigger_patterns"] = list(out["trigger_patterns"] or [])
    out["motifs"] = list(out["motifs"] or [])
    out["score"] = score
    return out


def _closure(start: Iterable[str], step, limit: int | None = None) -> dict[str, None]:
    """Ids reachable from ``start`` by ``step`` (parents or children), nearest first, ``start`` excluded.

    Stops once ``limit`` ids are found (breadth-first, so the nearest ones are kept).
    """
    start = list(start)
    seen: dict[str, None] = dict.fromkeys(start)
    found: dict[str, None] = {}
    frontier = deque(start)
    while frontier and (limit is None or len(found) < limit):
        for nxt in step(frontier.popleft()):
            if nxt not in seen:
                seen[nxt] = found[nxt] = None
                frontier.append(nxt)
                if limit is not None and len(found) >= limit:
                    break
    return found


def unified_diff(before: str, after: str, before_name: str = "parent", after_name: str = "candidate",
                 context: int = 3) -> str:
    """A unified diff of two programs (empty when they are the same)."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), fromfile=before_name, tofile=after_name,
                                 n=context, lineterm="")
    return "\n".join(lines)


def layered_layout(ids: list[str], edges: list[tuple[str, str]],
                   fitness: dict[str, float | None] | None = None) -> dict[str, tuple[int, float]]:
    """(column, row) per node: column = longest path from a root, rows ordered near the parents.

    Rows are centred: a column of ``n`` nodes spans the middle ``n`` rows of the tallest column.

    A small Sugiyama-style layering so that a family tree reads left (seeds) to right
    (descendants) with few crossings; the dashboard and the report draw the same layout.
    """
    fitness = fitness or {}
    order = {node: i for i, node in enumerate(ids)}
    parents: dict[str, list[str]] = defaultdict(list)
    children: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        if source in order and target in order:
            parents[target].append(source)
            children[source].append(target)
    waiting = {node: len(parents[node]) for node in ids}
    ready = deque(node for node in ids if waiting[node] == 0)
    depth: dict[str, int] = {}

    def place(node: str) -> None:
        depth[node] = 1 + max((depth[p] for p in parents[node] if p in depth), default=-1)

    while ready:  # Kahn's order: a node is placed once all its parents are
        node = ready.popleft()
        place(node)
        for child in children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    for node in ids:  # nodes on a cycle (damaged data) go after whatever parents were placed
        if node not in depth:
            place(node)
    layers: dict[int, list[str]] = defaultdict(list)
    for node in ids:
        layers[depth[node]].append(node)
    tallest = max((len(members) for members in layers.values()), default=0)
    row: dict[str, float] = {}
    for level in sorted(layers):
        members = layers[level]
        shift = (tallest - len(members)) / 2  # centre each column on the tallest one

        def key(node: str) -> tuple[float, float, int]:
            ps = [row[p] for p in parents.get(node, []) if p in row]
            barycentre = sum(ps) / len(ps) if ps else -1.0
            value = fitness.get(node)
            return (barycentre, -(value if value is not None else -math.inf), order[node])

        for position, node in enumerate(sorted(members, key=key)):
            row[node] = position + shift
    return {node: (depth[node], row[node]) for node in ids}
