"""A finished campaign's candidates judged and analysed again by the offline agents that read noise.

The campaign's memory is copied to a temporary directory (the campaign itself is never
written); each scored candidate is judged again against the campaign's explore anchor with
MQAR's chance level at the campaign's explore scale, then scored with the campaign's own
fitness (its ``config.yaml``). Printed per candidate: its explore loss and recall (with the
binomial p of beating chance), the Judge's performance and complexity scores and overall
score as stored and now, the fitness as stored and now, and its rank both ways, so the
table shows whether reading noise changed what the campaign would have acted on. The
offline Analyst runs again too: the experiment insights it drew before (stored) and now
(only from a loss gap to the parent beyond the anchor's run-to-run noise), the insights the
Researcher is given next.

    .venv/bin/python benchmarks/bench_judge_noise.py runs/campaign-YYYYmmdd-HHMMSS [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf
from rich.table import Table

from asiarch.agents import AgentsConfig, Analyst, Judge
from asiarch.campaign import scoring
from asiarch.config import ScaleConfig, explore_scale
from asiarch.console import output_console
from asiarch.memory import Memory, is_seed
from asiarch.proposer import OfflineBackend


class CountingMemory(Memory):
    """The copy's memory, noting which candidates the Analyst draws insights from."""

    drawn: list[str] = []

    def upsert_insights(self, insights):
        self.drawn.extend(i.source for i in (insights if isinstance(insights, list) else [insights]))
        return super().upsert_insights(insights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("campaign", type=Path, help="a campaign's directory (with config.yaml and memory/)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()

    cfg = OmegaConf.load(args.campaign / "config.yaml")
    base = ScaleConfig.from_dict(OmegaConf.to_container(cfg.scale, resolve=True))
    chance = scoring.mqar_chance(explore_scale(base))
    fitness_fn = instantiate(cfg.fitness)
    agents = AgentsConfig(**OmegaConf.to_container(cfg.agents, resolve=True))
    work = Path(tempfile.mkdtemp(prefix="asiarch-judge-noise-"))
    shutil.copytree(args.campaign / "memory", work / "memory")
    memory = CountingMemory(str(work / "memory"))
    before = [row["source"] for row in memory.list_insights(kind="experiment")]
    rows = memory.list_candidates()
    (seed_row,) = [c for c in rows if is_seed(c) and c.name == cfg.campaign.seed]
    anchor = scoring.anchor_of(seed_row.name, seed_row.explore)
    judge = Judge(OfflineBackend(), str(work / "memory"), memory, seed_row.campaign, config=agents)
    analyst = Analyst(OfflineBackend(), str(work / "memory"), memory, seed_row.campaign, config=agents)

    out = []
    for c in rows:
        if is_seed(c) or c.fitness is None or not c.judge:
            continue
        now = judge.score(c.id, [anchor], chance)
        analysed = analyst.analyse(c.id, [anchor])
        parts = c.fitness_parts
        stopped = parts.get("reached_step") if parts.get("early_stopped") else None

        def fitness(overall: float) -> float:
            return scoring.score(fitness_fn, c.name, c.explore, anchor, overall, "explore", chance=chance,
                                 stopped_at=stopped).value

        out.append({"name": c.name, "loss": c.explore.eval_loss, "mqar": c.explore.mqar_accuracy,
                    "p_recall": chance.p_above(c.explore.mqar_accuracy), "judge_before": c.judge, "judge_now": now.judge,
                    "fitness_before": fitness(c.judge["overall"]), "fitness_now": fitness(now.judge["overall"]),
                    "rationale_now": now.judge_rationale, "analysis_now": analysed.analysis,
                    "insights_before": before.count(c.id), "insights_now": memory.drawn.count(c.id)})
    rank_now = {r["name"]: i for i, r in enumerate(sorted(out, key=lambda r: -r["fitness_now"]), 1)}
    table = Table(title=f"{args.campaign.name}: the offline Judge as stored and reading noise now (anchor "
                        f"{anchor['name']}: explore loss {anchor['eval_loss']:.4f} ± {anchor['eval_loss_std'] or 0:.4f}, "
                        f"MQAR {anchor['mqar_accuracy']:.4f}; MQAR chance {chance.level:.3f} over {chance.trials})")
    for header in ("candidate", "explore loss", "MQAR (p vs chance)", "performance", "complexity", "judge",
                   "fitness", "rank", "insights"):
        table.add_column(header, justify="left" if header == "candidate" else "right")
    for i, r in enumerate(sorted(out, key=lambda r: -r["fitness_before"]), 1):
        b, n = r["judge_before"], r["judge_now"]
        table.add_row(r["name"], f"{r['loss']:.4f}", f"{r['mqar']:.4f} ({r['p_recall']:.2g})",
                      f"{b['performance']:.2f} -> {n['performance']:.2f}", f"{b['complexity']:.2f} -> {n['complexity']:.2f}",
                      f"{b['overall']:.3f} -> {n['overall']:.3f}", f"{r['fitness_before']:.3f} -> {r['fitness_now']:.3f}",
                      f"{i} -> {rank_now[r['name']]}", f"{r['insights_before']} -> {r['insights_now']}")
    console = output_console()
    console.print(table)
    console.print(f"experiment insights the Analyst drew: {len(before)} stored, {len(memory.drawn)} now", highlight=False)
    for r in out:
        console.print(f"{r['name']}: judge: {r['rationale_now']}; analyst: {r['analysis_now']}", highlight=False)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
