"""The end of a campaign in a form people read: a table of the best candidates against the seeds.

Verify numbers are means over the training runs with their standard deviation; ``worst p``
is the largest one-sided p-value of the candidate's tests against the seeds (loss and
benchmark, each seed): a breakthrough needs it below ``verify.significance``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from rich.table import Table

from asiarch.campaign import scoring
from asiarch.memory import Memory, is_breakthrough, is_seed, is_verified
from asiarch.train.tables import cell

COLUMNS = [
    # (header, key, format)
    ("explore fitness", "explore_fitness", "{:.3f}"),
    ("explore steps", "explore_steps", "{}"),
    ("explore loss", "explore_loss_text", "{}"),
    ("explore MQAR", "explore_mqar_text", "{}"),
    ("verify loss ± sd", "verify_loss_text", "{}"),
    ("verify MQAR ± sd", "verify_mqar_text", "{}"),
    ("runs", "verify_runs", "{}"),
    ("verify fitness", "verify_fitness", "{:.3f}"),
    ("worst p", "worst_p", "{:.3f}"),
    ("breakthrough", "breakthrough", "{}"),
    ("status", "status", "{}"),
]


def results_rows(memory: Memory, campaign: str, top: int = 10, recall_chance: scoring.Chance | None = None,
                 significance: float = 0.05) -> list[dict[str, Any]]:
    """Seeds first, then candidates: verified ones by verify fitness, then the rest by explore fitness.

    With ``recall_chance`` (MQAR's ``scoring.Chance`` at the campaign's scale), an explore MQAR not above it
    (binomial, one-sided p >= ``significance``) is marked "(chance)"."""
    rows, seeds = [], []
    for c in memory.list_candidates(campaign=campaign):
        row = {"id": c.id, "name": c.name, "kind": "seed" if is_seed(c) else "candidate", "status": c.status,
               "explore_fitness": None if is_seed(c) else c.fitness, "explore_steps": _explore_steps(c),
               "explore_loss": c.explore.eval_loss,
               "explore_mqar": c.explore.mqar_accuracy, "verify_loss": c.verify.eval_loss,
               "verify_mqar": c.verify.mqar_accuracy, "verify_fitness": c.verify.fitness,
               "breakthrough": "yes" if is_breakthrough(c) else ("no" if is_verified(c) else None),
               "parents": c.parent_ids, **_spread(c), **_explore_text(c, recall_chance, significance)}
        (seeds if is_seed(c) else rows).append(row)
    rows = [r for r in rows if r["explore_fitness"] is not None or r["verify_loss"] is not None]
    rows.sort(key=lambda r: (r["verify_fitness"] is None, -(r["verify_fitness"] or 0.0), -(r["explore_fitness"] or 0.0)))
    seeds.sort(key=lambda r: r["name"])
    return seeds + rows[:top]


def _explore_steps(c) -> str | None:
    """``96/192 p=0.04`` for a design ASHA stopped (its explore numbers are from step 96; p: how likely it
    was as good as the rung's cutoff, see ``scoring.rung_confidence``), ``192`` for a finished one,
    ``192 kept@96 p=0.3`` for one ASHA would have stopped at step 96 but whose gap was within noise."""
    parts = c.fitness_parts or {}
    reached, total = parts.get("reached_step"), parts.get("total_steps")
    if not reached:
        return None
    spared = "".join(f" kept@{r['step']} p={r['p']:.2g}" for r in parts.get("asha_spared") or [])
    if not (total and reached < total):
        return f"{reached}{spared}"
    p = (parts.get("asha_rung") or {}).get("p")
    return f"{reached}/{total}{spared}" + ("" if p is None else f" p={p:.2g}")


def _with_spread(value: float | None, runs: list[float]) -> str | None:
    """``value`` (the mean over ``runs`` when it is None) with the runs' sd when there are two or more."""
    value = scoring.mean(runs) if value is None else value
    if value is None:
        return None
    sd = scoring.std(runs)
    return f"{value:.3f}" + ("" if sd is None else f" ± {sd:.3f}")


def _explore_text(c, chance: scoring.Chance | None, significance: float) -> dict[str, str | None]:
    """Explore loss and MQAR as read: a mean ± sd where the design trained more than one run (the anchor seed),
    one run's value otherwise, and MQAR marked "(chance)" where it does not beat guessing."""
    mqar = _with_spread(c.explore.mqar_accuracy, scoring.run_values(c.explore, "mqar_accuracy"))
    if mqar is not None and chance is not None and not chance.beats(c.explore.mqar_accuracy, significance):
        mqar += " (chance)"
    return {"explore_loss_text": _with_spread(c.explore.eval_loss, scoring.run_values(c.explore, "eval_loss")),
            "explore_mqar_text": mqar}


def _spread(c) -> dict[str, Any]:
    """Verify means with their spread over independent training runs (runs PBT made share weights count as one),
    how many runs and how many of them independent, and the weakest of the tests against the seeds."""
    loss, mqar = scoring.independent_values(c.verify, "eval_loss"), scoring.independent_values(c.verify, "mqar_accuracy")
    runs = len(scoring.run_values(c.verify, "eval_loss"))
    ps = [t[k]["p"] for t in (c.verify.fitness_parts.get("tests") or {}).values() for k in ("loss", "benchmark")]
    return {"verify_loss_text": _with_spread(None, loss), "verify_mqar_text": _with_spread(None, mqar),
            "verify_runs": (str(runs) if len(loss) == runs else f"{runs} ({len(loss)} indep.)") if runs else None,
            "worst_p": None if not ps else (None if None in ps else max(ps))}


def campaign_table(rows: Sequence[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, caption="explore steps: a/b for a design ASHA stopped at step a (its explore fitness "
                  "compares it with the anchor at that step; p: the chance that a design this far behind the rung's "
                  "cutoff was as good, given the anchor's run-to-run noise there; kept@a p: a stop at step a overruled as within "
                  "that noise, explore.rung_significance); explore loss and MQAR: one training run for a candidate, "
                  "mean ± sd over its runs for the anchor seed (that sd is the noise every explore number carries); "
                  "(chance): an MQAR that does not beat guessing (binomial); verify: mean ± sd over independent training runs "
                  "(runs: n (k indep.) where PBT cloned weights between runs, which then count as one); "
                  "worst p: the largest one-sided p-value against any seed (loss or benchmark); '-': not measured or "
                  "not testable")
    table.add_column("design")
    table.add_column("kind")
    for header, _, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(row["name"], row["kind"], *(cell(row.get(key), fmt) for _, key, fmt in COLUMNS))
    return table


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["design", "kind"] + [h for h, _, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [row["name"], row["kind"]] + [cell(row.get(key), fmt) for _, key, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_campaign_results(out_dir: Path, rows: Sequence[dict[str, Any]], campaign: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(list(rows), indent=2, default=str))
    (out_dir / "results.md").write_text(f"# Campaign {campaign}\n\n{markdown_table(rows)}\n")
