"""The offline backend: every agent role answered by transparent rules, no network, no LLM.

It speaks the same protocol as the Claude backend, reading the facts from the message's
``<context>`` JSON. Researcher: mutate (or cross) the parent's genome, biased by the motifs
of the retrieved insights. Engineer: undo the genome choices that a failing check points
at. Judge: scores from measured numbers against the seeds. Analyst: compares a candidate
with its relatives and distils what the changed choices did. Novelty: same code or a
near-identical motivation is a duplicate. Deterministic under its seed.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

from asiarch.arch.identity import seed_twin
from asiarch.proposer.genome import SEED_GENOMES, Genome, name_for, seed_genome
from asiarch.proposer.render import genome_from_source, render, seed_of_genome
from asiarch.proposer.search import crossover, mutate
from asiarch.llm.protocol import LLMError, LLMResult, Usage, schema_errors
from asiarch.llm.schemas import context_of

# Which genome choices to fall back to when a check fails (repair rules).
REPAIRS: dict[str, dict[str, Any]] = {
    "complexity": {"window": 0},
    "param_budget": {"value_expand": 1, "head_mult": 1, "window": 0, "householder": 1},
    "finite_gradients": {"qk_norm": "l2", "beta": "sigmoid", "feature_map": "silu"},
    "training_smoke": {"qk_norm": "l2", "beta": "sigmoid", "output_norm": "rms"},
    # a trial that diverged or crashed: the stabilisers, and without the extra sliding-window branch
    "training": {"qk_norm": "l2", "beta": "sigmoid", "output_norm": "rms", "window": 0},
}


def _beyond_noise(comparison: dict[str, Any]) -> bool:
    """Whether a loss comparison is evidence: beyond run-to-run noise where the context says how it reads
    (``verdict``), else (no noise measured) a gap above 0.02."""
    verdict = comparison.get("verdict")
    if verdict in (None, "noise not measured"):
        return abs(comparison["delta"]) > 0.02
    return verdict.endswith("beyond noise")


def _noise_note(comparison: dict[str, Any]) -> str:
    return f" ({comparison['verdict']})" if comparison.get("verdict") else ""


class OfflineBackend:
    name = "offline"

    def __init__(self, seed: int = 0, crossover_rate: float = 0.3):
        self.rng = random.Random(seed)
        self.crossover_rate = crossover_rate

    def complete(self, role: str, system: str, messages: list[dict[str, Any]], schema: dict[str, Any]) -> LLMResult:
        handler = getattr(self, f"_{role}", None)
        if handler is None:
            raise LLMError(f"the offline backend has no rule for the role {role!r}")
        data = handler(context_of(messages))
        errors = schema_errors(data, schema)
        if errors:  # a bug in these rules, never the caller's fault: say so loudly
            raise LLMError(f"offline {role} produced an answer that breaks its schema: {errors}")
        return LLMResult(data=data, usage=Usage(calls=1), model="offline-symbolic")

    # ------------------------------------------------------------------ roles

    @staticmethod
    def _genome(code: str | None, fallback: str = "deltanet") -> Genome:
        """The genome a source was rendered from; for a seed's own layer code, that seed's genome."""
        genome = genome_from_source(code) if code else None
        if genome is None and code:
            twin = seed_twin(code)
            genome = seed_genome(twin) if twin in SEED_GENOMES else None
        return genome or seed_genome(fallback if fallback in SEED_GENOMES else "deltanet")

    def _researcher(self, ctx: dict[str, Any]) -> dict[str, Any]:
        parent_info = ctx.get("parent") or {}
        parent = self._genome(parent_info.get("code"), ctx.get("seed", "deltanet"))
        weights = Counter(m for insight in ctx.get("insights", []) for m in insight.get("motifs", []))
        references = [self._genome(r.get("code")) for r in ctx.get("references", []) if r.get("code")]
        avoid = set(ctx.get("avoid_codes", []))
        how = "mutated"
        for _ in range(50):  # a few tries to avoid designs already in the memory
            child = parent
            if references and self.rng.random() < self.crossover_rate:
                child, how = crossover(parent, self.rng.choice(references), self.rng), "crossed with a reference, then mutated"
            child = mutate(child, self.rng, dict(weights) or None)
            if render(child) not in avoid:
                break
        changed = [f"{k}: {getattr(parent, k)!r} -> {v!r}" for k, v in child.to_dict().items() if getattr(parent, k) != v]
        favoured = [m for m, _ in weights.most_common(3)]
        motivation = (
            f"From parent {parent_info.get('name', name_for(parent))} ({how}): {'; '.join(changed) or 'recombined'}. "
            f"New motifs: {', '.join(sorted(child.motifs() - parent.motifs())) or 'none'}."
            + (f" Retrieved insights favour {', '.join(favoured)}." if favoured else "")
        )
        return {"name": name_for(child), "motivation": motivation, "code": render(child)}

    def _engineer(self, ctx: dict[str, Any]) -> dict[str, Any]:
        genome = genome_from_source(ctx.get("code", ""))
        failures = ctx.get("failures", [])
        if genome is None:
            return {"code": ctx.get("code") or "# nothing to repair", "explanation":
                    "the offline engineer can only repair designs it rendered itself; returned unchanged"}
        fixes: dict[str, Any] = {}
        for failure in failures:
            fixes.update(REPAIRS.get(failure.get("check", ""), {}))
        repaired = replace(genome, **fixes).normalised() if fixes else genome
        checks = ", ".join(sorted({f.get("check", "?") for f in failures})) or "none"
        if repaired == genome:  # nothing specific to undo; a seed under this design's name would be no repair
            return {"code": ctx.get("code", ""), "explanation":
                    f"the offline engineer has no repair for {checks} in this design; returned unchanged"}
        return {"code": render(repaired), "explanation": f"failed {checks}; set {fixes}"}

    def _drift(self, ctx: dict[str, Any]) -> dict[str, Any]:
        before, after = genome_from_source(ctx.get("original_code", "")), genome_from_source(ctx.get("repaired_code", ""))
        if before is None or after is None:
            return {"drifted": False, "reason": "not a design the offline rules rendered: judged by its checks only"}
        seed = seed_of_genome(ctx.get("repaired_code", ""))
        if seed is not None:
            return {"drifted": True, "reason": f"the repair turned it into the seed {seed}"}
        motivation = ctx.get("motivation", "")
        lost = sorted(m for m in before.motifs() - after.motifs() if m in motivation)
        if lost:
            return {"drifted": True, "reason": f"the repair removed {', '.join(lost)}, which the motivation names"}
        return {"drifted": False, "reason": "every motif the motivation names is still in the repaired design"}

    def _novelty(self, ctx: dict[str, Any]) -> dict[str, Any]:
        mine = ctx.get("code_hash")
        for neighbour in ctx.get("neighbours", []):
            if mine and neighbour.get("code_hash") == mine:
                return {"duplicate": True, "reason": f"same code as {neighbour.get('name', '?')}"}
            if neighbour.get("similarity", 0.0) >= 0.97:
                return {"duplicate": True, "reason": f"motivation near-identical to {neighbour.get('name', '?')} "
                                                     f"(cosine {neighbour['similarity']:.3f})"}
        return {"duplicate": False, "reason": "no neighbour with the same code or a near-identical motivation"}

    def _judge(self, ctx: dict[str, Any]) -> dict[str, Any]:
        me, seeds = ctx.get("candidate", {}), ctx.get("seeds", [])
        # each seed's loss at the candidate's progress when the curves say it (an early stop is not a finish)
        losses = []  # (seed's loss, the candidate's, where, how the gap reads against the seed's noise)
        for s in seeds:
            equal = s.get("candidate_vs_seed_at_equal_progress")
            if equal and me.get("loss_curve"):
                losses.append((equal["their_loss"], equal["loss"], f" at evaluation {equal['evaluation']}",
                               equal.get("verdict")))
            elif s.get("eval_loss") is not None and me.get("eval_loss") is not None:
                losses.append((s["eval_loss"], me["eval_loss"], "", None))
        best_recall = max((s["mqar_accuracy"] for s in seeds if s.get("mqar_accuracy") is not None), default=None)
        parts = []
        performance = 5.0
        if losses:
            best_loss, mine, where, verdict = min(losses, key=lambda row: row[0])
            if verdict == "within noise":  # a gap the seed's own runs show: a tie, worth no points either way
                parts.append(f"eval loss {mine:.3f} vs best seed {best_loss:.3f}{where}, within the seed's noise")
            else:
                performance += max(-4.0, min(4.0, 20 * (best_loss - mine) / best_loss))
                parts.append(f"eval loss {mine:.3f} vs best seed {best_loss:.3f}{where}")
        if me.get("recall_at_chance"):
            parts.append("recall at chance, not scored")
        elif best_recall is not None and me.get("mqar_accuracy") is not None:
            performance += max(-1.0, min(1.0, 2 * (me["mqar_accuracy"] - best_recall)))
            parts.append(f"MQAR {me['mqar_accuracy']:.3f} vs best seed {best_recall:.3f}")
        genome = genome_from_source(me.get("code", ""))
        new_motifs = len(genome.motifs() - seed_genome("deltanet").motifs()) if genome else 0
        innovation = min(10.0, 3.0 + 1.5 * new_motifs)
        ratio = me.get("parameter_ratio", 1.0)
        # growth counts only where it is beyond its measurement's noise (the Judge's context); a bare exponent counts whole
        exponent = me.get("growth_exponent") or 1.0
        excess = me.get("growth_beyond_linear", max(0.0, exponent - 1.0))
        complexity = max(0.0, min(10.0, 10 - 4 * abs(ratio - 1.0) - 10 * excess))
        parts.append(f"{new_motifs} motifs beyond DeltaNet; {ratio:.2f}x parameters; "
                     f"time {me.get('growth') or f'~T^{exponent:.2f}'}")
        return {"performance": round(max(0.0, min(10.0, performance)), 2), "innovation": innovation,
                "complexity": round(complexity, 2), "rationale": "; ".join(parts)}

    def _analyst(self, ctx: dict[str, Any]) -> dict[str, Any]:
        me, parent = ctx.get("candidate", {}), ctx.get("parent") or {}
        lines, insights = [], []
        equal = parent.get("candidate_vs_this_at_equal_progress")
        if equal is not None:
            delta = equal["delta"]
            lines.append(f"eval loss {equal['loss']:.3f} vs parent {equal['their_loss']:.3f} ({delta:+.3f}) at "
                         f"evaluation {equal['evaluation']}{_noise_note(equal)}")
            mine, theirs = genome_from_source(me.get("code", "")), genome_from_source(parent.get("code", ""))
            if mine and theirs and _beyond_noise(equal):
                moved = [k for k in mine.to_dict() if getattr(mine, k) != getattr(theirs, k)]
                gained = sorted(mine.motifs() - theirs.motifs()) or sorted(mine.motifs())[:2]
                verdict = "lowered" if delta < 0 else "raised"
                insights.append({
                    "design_insight": f"changing {', '.join(moved) or 'the design'} {verdict} eval loss by {abs(delta):.3f}",
                    "trigger_patterns": [f"eval loss {'stalls' if delta < 0 else 'improves'} for designs without "
                                         f"{', '.join(gained)}"],
                    "motifs": gained[:4],
                })
        for relative in ("grandparent", *(f"sibling {i + 1}" for i in range(2))):
            other = ctx.get(relative.replace(" ", "_")) or {}
            same = other.get("candidate_vs_this_at_equal_progress")
            if same is not None:
                lines.append(f"vs {relative} {other.get('name', '?')}: {same['delta']:+.3f} eval loss at evaluation "
                             f"{same['evaluation']}{_noise_note(same)}")
        for seed in ctx.get("seeds", []):
            same = seed.get("candidate_vs_seed_at_equal_progress")
            if same is not None:
                lines.append(f"vs seed {seed.get('name', '?')}: {same['delta']:+.3f} eval loss at evaluation "
                             f"{same['evaluation']}{_noise_note(same)}")
        return {"analysis": "; ".join(lines) or "no comparable relatives with results yet", "insights": insights}
