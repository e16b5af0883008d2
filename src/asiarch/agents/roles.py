"""Researcher, Engineer, Judge and Analyst: what each role reads, asks and writes."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from asiarch.arch.identity import normalised_code, seed_twin
from asiarch.checks import check_candidate, growth_beyond_linear
from asiarch.llm.protocol import LLMBackend, Usage
from asiarch.llm.schemas import ROLE_SCHEMAS, with_context
from asiarch.llm.templates import render
from asiarch.memory.lifecycle import Status
from asiarch.memory.schema import Candidate, Insight, code_hash
from asiarch.proposer.render import seed_of_genome


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class AgentsConfig:
    """Mirrors the ``agents`` section of ``conf/config.yaml``."""

    sampling: str = "asi_arch"  # or "weighted"
    novelty_threshold: float = 0.9  # cosine similarity above which the LLM judges duplication
    max_replans: int = 3
    max_repairs: int = 3
    tried_shown: int = 8  # designs of the campaign the Researcher sees by name and one line (nearest, then latest)
    # ASI-Arch's weights (performance 0.3, innovation 0.25, complexity 0.45)
    judge_weights: dict[str, float] = field(default_factory=lambda: {"performance": 0.3, "innovation": 0.25, "complexity": 0.45})
    # the one-sided level a measured difference must pass before the Judge scores it (a loss gap, growth above
    # linear, recall above chance) or the Analyst draws an insight from it (a loss gap to a relative)
    significance: float = 0.05


class MemoryAccess:
    """Where a role reads and writes the memory: the campaign's single writer for both.

    ``writer`` is a ``MemoryActor`` handle (the agents of a campaign: they read through it, so
    their processes never import LanceDB or load the embedding model, and they see their own
    writes at once) or a writable ``Memory`` (one process, tests). Without one, a ``Memory``
    is opened at ``uri``. The same calls work on all three.
    """

    def __init__(self, uri: str, writer: Any = None, embedder: Any = None):
        import ray

        if isinstance(writer, ray.actor.ActorHandle):
            if embedder is not None:
                raise ValueError("an agent that reads through the campaign's MemoryActor embeds with the writer's "
                                 "model: give the embedder to the MemoryActor, not to the agent")
            self.reader = _ActorCalls(writer)
        elif writer is not None:
            self.reader = writer
        else:
            from asiarch.memory.store import Memory

            self.reader = Memory(uri, embedder=embedder)

    def write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.reader, method)(*args, **kwargs)


class _ActorCalls:
    """A ``MemoryActor`` handle called like a ``Memory``: ``calls.get_candidate(cid)`` waits for the actor's answer."""

    def __init__(self, actor: Any):
        self.actor = actor

    def __getattr__(self, method: str) -> Any:
        import ray

        remote = getattr(self.actor, method)  # AttributeError for a method the actor does not have
        return lambda *args, **kwargs: ray.get(remote.remote(*args, **kwargs))


def _summary(c: Candidate | None) -> dict[str, Any] | None:
    """What a role needs to know about a candidate (no vectors)."""
    if c is None:
        return None
    summary = {"id": c.id, "name": c.name, "code": c.code, "motivation": c.motivation, "fitness": c.fitness,
               "eval_loss": c.explore.eval_loss, "mqar_accuracy": c.explore.mqar_accuracy, "analysis": c.analysis,
               "status": str(c.status), "loss_curve": _rounded(c.explore.loss_curve)}
    if c.verify.eval_loss is not None:  # verified: the larger-scale result, against every seed
        summary["verify"] = {"eval_loss": c.verify.eval_loss, "benchmark": c.verify.benchmark,
                             "fitness": c.verify.fitness, "beats": c.verify.fitness_parts.get("beats"),
                             "breakthrough": c.breakthrough}
    return summary


def _rounded(curve: list[float] | None) -> list[float]:
    return [round(float(x), 4) for x in curve or []]


def at_equal_progress(curve: list[float], other: list[float]) -> dict[str, Any] | None:
    """Two explore curves compared at the last evaluation both reached (curves share the stage's
    evaluation steps), so a finished design is never compared with one ASHA stopped early."""
    n = min(len(curve), len(other))
    if n == 0:
        return None
    return {"evaluation": n, "loss": round(curve[n - 1], 4), "their_loss": round(other[n - 1], 4),
            "delta": round(curve[n - 1] - other[n - 1], 4)}


def _seed_view(seed: dict[str, Any], curve: list[float], significance: float | None = None) -> dict[str, Any]:
    """A seed's measured numbers as agents read them, with the candidate compared at equal progress; with
    ``significance``, that comparison is read against the seed's run-to-run spread there (``scoring.judged_gap``)."""
    view = {k: seed.get(k) for k in ("name", "eval_loss", "eval_loss_std", "mqar_accuracy", "benchmark")}
    view["loss_curve"] = _rounded(seed.get("loss_curve"))
    equal = at_equal_progress(curve, seed.get("loss_curve") or [])
    if equal is not None and significance is not None:
        from asiarch.campaign.scoring import judged_gap  # the campaign's noise rules (imported late: no cycle)

        gap = judged_gap(curve[equal["evaluation"] - 1], seed, equal["evaluation"], significance)
        if gap["their_loss"] is not None:
            equal.update(their_loss=round(gap["their_loss"], 4), delta=round(equal["loss"] - gap["their_loss"], 4))
        equal.update(noise_sd=None if gap["noise_sd"] is None else round(gap["noise_sd"], 4), seed_runs=gap["runs"],
                     verdict=gap["verdict"])
    view["candidate_vs_seed_at_equal_progress"] = equal
    return view


def _recall_at_chance(mine: float | None, seeds: list[dict[str, Any]], chance: Any, significance: float) -> str | None:
    """Why recall cannot tell the candidate from the seeds, or None: when neither the candidate's MQAR nor any
    seed's is above MQAR's chance level (binomial, one-sided at ``significance``), its differences are guesses."""
    if chance is None or mine is None:
        return None
    named = {"the candidate": mine, **{f"seed {s.get('name', i)}": s["mqar_accuracy"]
                                       for i, s in enumerate(seeds) if s.get("mqar_accuracy") is not None}}
    why = chance.none_beats(named, significance)
    return f"recall is {why}; its differences are guesses" if why else None


def system_prompt() -> str:
    """The stable prefix of every agent request: the system prompt, the candidate contract, the DeltaNet
    seed's code and the motif vocabulary. Byte-identical across requests and roles and longer than the
    model's minimum cacheable prompt (about 1,024 tokens), so the backend's cache breakpoint after it hits."""
    from asiarch.arch import contract, seed_source
    from asiarch.memory.cognition.motifs import MOTIF_DESCRIPTIONS

    motifs = "\n".join(f"- `{name}`: {text}" for name, text in MOTIF_DESCRIPTIONS.items())
    return (f"{render('system')}\n\n## The candidate contract\n\n{contract.__doc__.strip()}\n\n"
            f"## A reference design: the DeltaNet seed\n\n```python\n{seed_source('deltanet').strip()}\n```\n\n"
            f"## Design motifs (the tags of the cognition base's insights)\n\n{motifs}\n")


def _one_line(text: str, limit: int = 160) -> str:
    first = " ".join((text or "").split())
    first = first.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _tried(existing: list[Candidate], nearest: list[tuple[Candidate, float]], shown: int) -> dict[str, Any]:
    """What the campaign already tried, in a size that does not grow with it: counts by status, and
    the ``shown`` designs nearest the parent (then the latest) by name, one line and explore loss."""
    picked: dict[str, Candidate] = {c.id: c for c, _ in nearest[:shown]}
    for c in sorted(existing, key=lambda c: c.created_at or _EPOCH, reverse=True):
        if len(picked) >= shown:
            break
        picked.setdefault(c.id, c)
    return {"count": len(existing), "by_status": dict(Counter(str(c.status) for c in existing)),
            "designs": [{"name": c.name[:60], "motivation": _one_line(c.motivation), "status": str(c.status),
                         "explore_loss": None if c.explore.eval_loss is None else round(c.explore.eval_loss, 3)}
                        for c in picked.values()]}


def _usage_fields(usage: Usage) -> dict[str, Any]:
    return {"llm_input_tokens": usage.input_tokens, "llm_output_tokens": usage.output_tokens, "llm_usd": usage.usd}


class _Role:
    role = ""

    def __init__(self, backend: LLMBackend, uri: str, writer: Any = None, campaign: str = "default",
                 embedder: Any = None, config: AgentsConfig | None = None):
        self.backend, self.campaign, self.config = backend, campaign, config or AgentsConfig()
        self.memory = MemoryAccess(uri, writer, embedder)
        self.system = system_prompt()

    def ask(self, role: str, text: str, context: dict[str, Any]):
        messages = [{"role": "user", "content": with_context(text, context)}]
        return self.backend.complete(role, self.system, messages, ROLE_SCHEMAS[role])


class Researcher(_Role):
    """Samples parents, retrieves insights, proposes a design, checks novelty, names it uniquely."""

    def propose(self, seed: str = "deltanet", max_replans: int | None = None,
                novelty_threshold: float | None = None) -> Candidate:
        from asiarch.arch import seed_source

        max_replans = self.config.max_replans if max_replans is None else max_replans
        novelty_threshold = self.config.novelty_threshold if novelty_threshold is None else novelty_threshold
        reader = self.memory.reader
        try:
            parent, references = reader.sample_parents(self.campaign, rule=self.config.sampling)
            parent_info, generation, parent_ids = _summary(parent), parent.generation + 1, [parent.id]
        except ValueError:  # nothing scored yet: start from the seed
            parent_info, references, generation, parent_ids = {"name": seed, "code": seed_source(seed)}, [], 1, []
        query = (parent_info.get("analysis") or "") or "improve associative recall and language-model loss"
        insights = [{"title": i.title, "design_insight": i.design_insight, "motifs": i.motifs}
                    for i, _ in reader.search_insights(query, k=5, mode="hybrid")] if reader.count_insights() else []
        existing = reader.list_candidates(campaign=self.campaign)  # read once: the checks below reuse it
        by_hash = {c.code_hash: c for c in existing}
        by_form = {form: c for c in existing if (form := normalised_code(c.code)) is not None}  # same code up to names
        tried = _tried(existing, reader.neighbours(text=parent_info.get("motivation") or query, k=self.config.tried_shown,
                                                  campaign=self.campaign) if existing else [], self.config.tried_shown)
        avoid: list[str] = []  # only what this call re-planned away from: the prompt stays bounded
        usage, notes, duplicate_of = Usage(), [], None
        for attempt in range(max_replans + 1):
            context = {"seed": seed, "parent": parent_info, "references": [_summary(r) for r in references],
                       "insights": insights, "tried": tried, "avoid_codes": avoid,
                       "duplicates_so_far": list(notes)}  # what earlier attempts of this request duplicated
            result = self.ask("researcher", render("researcher", parent=parent_info["name"]), context)
            usage += result.usage
            proposal = result.data
            twin = seed_twin(proposal["code"]) or seed_of_genome(proposal["code"])
            same = by_hash.get(code_hash(proposal["code"])) or by_form.get(normalised_code(proposal["code"]) or "")
            if twin is not None or same is not None:  # the same code is never a new design: re-plan, no LLM needed
                duplicate_of = (f"it is the seed {twin} (same code up to names and comments, or the same genome)"
                                if twin is not None else f"it has the code of {same.name} (up to names, comments "
                                                         f"and layout), already in the campaign")
                notes.append(f"attempt {attempt + 1} was the seed {twin}; re-planned" if twin is not None else
                             f"attempt {attempt + 1} was a copy of {same.name} (up to names, comments and layout); re-planned")
                avoid.append(proposal["code"])
                continue
            # ASI-Arch's five nearest (seeds included), judged on their motivations and code, not names alone
            close = [(c, s) for c, s in reader.neighbours(text=proposal["motivation"], k=5, campaign=self.campaign)
                     if s >= novelty_threshold] if existing else []
            duplicate_of = None
            if close:
                verdict = self.ask("novelty", render("novelty"), {
                    "proposal": {"name": proposal["name"], "motivation": proposal["motivation"], "code": proposal["code"]},
                    "code_hash": code_hash(proposal["code"]),
                    "neighbours": [{"name": c.name, "kind": str(c.kind), "motivation": c.motivation, "code": c.code,
                                    "code_hash": c.code_hash, "similarity": s} for c, s in close]})
                usage += verdict.usage
                if verdict.data["duplicate"]:
                    duplicate_of = verdict.data["reason"]
            if duplicate_of is None:
                break
            notes.append(f"attempt {attempt + 1} was a duplicate ({duplicate_of}); re-planned")
            avoid.append(proposal["code"])
        status = Status.REJECTED if duplicate_of else Status.PROPOSED
        reason = f"still a duplicate after {max_replans} re-plans: {duplicate_of}" if duplicate_of else "; ".join(notes)
        candidate = Candidate(
            id=uuid.uuid4().hex[:12], campaign=self.campaign, name=proposal["name"],
            code=proposal["code"], motivation=proposal["motivation"], parent_ids=parent_ids, generation=generation,
            status=status, status_reason=reason, **_usage_fields(usage),
        )
        return self.memory.write("insert_unique", candidate)  # the writer suffixes a name already in use


class Engineer(_Role):
    """Runs the checks; on failure asks for a fix, up to ``max_repairs`` times; records every attempt. A
    repaired design that passes is checked for drift from its motivation (ASI-Arch's implementation drift):
    one that no longer does what it claims is rejected, never trained under its old motivation."""

    def validate(self, candidate_id: str, scale: Any = "cpu_tiny", max_repairs: int | None = None,
                 **check_options: Any) -> Candidate:
        """Check the candidate's code; repair and re-check until it passes or the attempts run out."""
        return self._repair_loop(candidate_id, None, scale, max_repairs, check_options)

    def repair_training_failure(self, candidate_id: str, error: str, scale: Any = "cpu_tiny",
                                max_repairs: int | None = None, **check_options: Any) -> Candidate:
        """The same repair path for a trial that crashed, diverged (NaN) or ran out of memory."""
        return self._repair_loop(candidate_id, [{"check": "training", "reason": error}], scale, max_repairs, check_options)

    def _repair_loop(self, candidate_id: str, failures: list[dict[str, str]] | None, scale: Any,
                     max_repairs: int | None, check_options: dict[str, Any]) -> Candidate:
        max_repairs = self.config.max_repairs if max_repairs is None else max_repairs
        candidate = self.memory.reader.get_candidate(candidate_id)
        if candidate is None:
            raise ValueError(f"no candidate with id {candidate_id!r}")
        code, repairs, usage, report = candidate.code, list(candidate.repairs), Usage(), None
        if failures is None:
            report = check_candidate(code, scale, **check_options)
            failures = [{"check": f.check, "reason": f.reason} for f in report.failures]
        attempts = 0
        while failures and attempts < max_repairs:
            attempts += 1
            result = self.ask("engineer", render("engineer"), {"code": code, "failures": failures,
                                                               "motivation": candidate.motivation})
            usage += result.usage
            if code_hash(result.data["code"]) == code_hash(code):  # no change is no repair: the design is rejected
                repairs.append({"attempt": len(repairs) + 1, "failures": failures, "passed": False,
                                "explanation": f"{result.data['explanation']} (the code came back unchanged)"})
                failures = [*failures, {"check": "repair", "reason": "the Engineer returned the code unchanged"}]
                break
            code = result.data["code"]
            report = check_candidate(code, scale, **check_options)
            repairs.append({"attempt": len(repairs) + 1, "failures": failures, "explanation": result.data["explanation"],
                            "passed": report.passed})
            failures = [{"check": f.check, "reason": f.reason} for f in report.failures]
        passed = report is not None and report.passed and not failures
        if passed and attempts:  # repaired: does the code still do what its motivation says?
            verdict = self.ask("drift", render("drift"), {"motivation": candidate.motivation,
                                                          "original_code": candidate.code, "repaired_code": code,
                                                          "repairs": [r.get("explanation") for r in repairs[-attempts:]]})
            usage += verdict.usage
            repairs[-1] = {**repairs[-1], "drift": verdict.data}
            if verdict.data["drifted"]:
                passed, failures = False, [{"check": "drift", "reason": "the repaired code no longer implements its "
                                                                        f"motivation: {verdict.data['reason']}"}]
        return self.memory.write(
            "update_candidate", candidate_id, code=code, repairs=repairs,
            check_report=report.to_dict() if report is not None else candidate.check_report,
            status=Status.VALIDATED if passed else Status.REJECTED,
            status_reason="all checks passed" if passed else "; ".join(f"{f['check']}: {f['reason']}" for f in failures),
            llm_input_tokens=candidate.llm_input_tokens + usage.input_tokens,
            llm_output_tokens=candidate.llm_output_tokens + usage.output_tokens, llm_usd=candidate.llm_usd + usage.usd,
        )


class Judge(_Role):
    """Scores a trained candidate (performance, innovation, complexity) against the seeds' results, each
    measurement with its noise: a loss gap against a seed's run-to-run spread, recall against its chance level,
    growth against the complexity check's error."""

    def score(self, candidate_id: str, seeds: list[dict[str, Any]], recall_chance: Any = None) -> Candidate:
        """``seeds``: the seeds' results as ``scoring.anchor_of`` gives them; ``recall_chance``: MQAR's
        ``scoring.Chance`` at the stage's scale (None: recall is read without a chance level)."""
        c = self.memory.reader.get_candidate(candidate_id)
        measured = {r["check"]: r.get("measurements", {}) for r in c.check_report.get("results") or []}
        alpha = self.config.significance
        growth = growth_beyond_linear(measured.get("complexity", {}), alpha)
        views = [_seed_view(s, c.explore.loss_curve, alpha) for s in seeds]
        context = {"seeds": views, "candidate": {
            **_summary(c), "parameter_ratio": measured.get("param_budget", {}).get("ratio", 1.0),
            "growth_exponent": growth["exponent"], "growth_exponent_se": growth["se"],
            "growth_beyond_linear": growth["beyond_linear"], "growth": growth["verdict"]}}
        at_chance = _recall_at_chance(c.explore.mqar_accuracy, seeds, recall_chance, alpha)
        if at_chance:
            context["candidate"]["recall_at_chance"] = at_chance
        result = self.ask("judge", render("judge"), context)
        weights = self.config.judge_weights
        overall = sum(weights[k] * result.data[k] for k in weights) / 10
        judge = {k: result.data[k] for k in ("performance", "innovation", "complexity")} | {"overall": overall}
        return self.memory.write("update_candidate", candidate_id, judge=judge, judge_rationale=result.data["rationale"])


class Analyst(_Role):
    """Compares a scored candidate with its parent, grandparent, two fittest siblings and the seeds, each at
    equal training progress and against run-to-run noise (the first seed's spread at that evaluation, the
    anchor's); distils insights."""

    def analyse(self, candidate_id: str, seeds: list[dict[str, Any]] | None = None) -> Candidate:
        from asiarch.campaign.scoring import gap_verdict, runs_at_evaluation, std  # imported late: no cycle

        reader = self.memory.reader
        c = reader.get_candidate(candidate_id)
        ancestors = reader.ancestors(candidate_id) if c.parent_ids else []
        parent = ancestors[0] if ancestors else None
        grandparent = next((a for a in ancestors[1:] if parent and a.id in parent.parent_ids), None)
        siblings = reader.siblings(candidate_id)[:2] if c.parent_ids else []
        anchor, alpha = (seeds or [None])[0], self.config.significance

        def relative(r: Candidate | None) -> dict[str, Any] | None:
            view = _summary(r)
            if view is not None:
                equal = at_equal_progress(c.explore.loss_curve, r.explore.loss_curve)
                if equal is not None and anchor is not None:  # two single runs, each with the anchor's spread
                    runs = runs_at_evaluation(anchor, equal["evaluation"])
                    sd = std(runs)
                    equal.update(noise_sd=None if sd is None else round(sd, 4), noise_runs=len(runs),
                                 verdict=gap_verdict(-equal["delta"], sd, len(runs), 1, alpha)[1])
                view["candidate_vs_this_at_equal_progress"] = equal
            return view

        context = {"candidate": _summary(c), "parent": relative(parent), "grandparent": relative(grandparent),
                   **{f"sibling_{i + 1}": relative(s) for i, s in enumerate(siblings)},
                   "seeds": [_seed_view(s, c.explore.loss_curve, alpha) for s in seeds or []]}
        result = self.ask("analyst", render("analyst"), context)
        insights = [
            Insight(id=f"{candidate_id}-insight-{i}", kind="experiment", source=candidate_id, campaign=self.campaign,
                    title=c.name, design_insight=item["design_insight"], trigger_patterns=item["trigger_patterns"],
                    motifs=item["motifs"])
            for i, item in enumerate(result.data["insights"])
        ]
        if insights:
            self.memory.write("upsert_insights", insights)
        return self.memory.write("update_candidate", candidate_id, analysis=result.data["analysis"])
