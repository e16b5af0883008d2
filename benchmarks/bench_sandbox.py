"""What the training sandbox costs per trial: the same candidate trained in process and sandboxed.

The baseline is measured in the same run: ``train_mixer`` on the candidate's class in this
process (what trials did before the sandbox). The sandboxed run is ``train_in_sandbox``:
worker start-up (interpreter, torch, the trial's inputs), lock-down, training (the worker
evaluates nothing), a checkpoint per report through the scratch directory, each evaluated
here from a fresh sandbox (beside the training, which goes on), and the final evaluation's
causality audit in another. Runs alternate, and the table shows the median over ``--repeats``.

    .venv/bin/python benchmarks/bench_sandbox.py [--seed deltanet] [--steps 192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from asiarch.arch import load_mixer_class, seed_source
from asiarch.config import load_scale, stage_scale
from asiarch.train.protocol import prepare_data, train_mixer
from asiarch.train.sandboxed import train_in_sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", default="deltanet", help="the seed whose source plays the candidate")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the scale's explore steps)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scale = load_scale("cpu_tiny")
    scale = stage_scale(scale, args.steps or scale.stages.explore_steps)
    data = prepare_data(scale)
    source = seed_source(args.seed)
    console = Console(width=120)
    rows: dict[str, list[float]] = {"in process": [], "sandboxed": [], "first report": [], "last report": []}
    losses: dict[str, float] = {}
    for repeat in range(args.repeats):
        start = time.perf_counter()
        summary = train_mixer(load_mixer_class(source), scale, data, downstream=False)
        rows["in process"].append(time.perf_counter() - start)
        losses["in process"] = summary["eval_loss"]
        marks: list[float] = []
        start = time.perf_counter()
        outcome = train_in_sandbox(source, "bench", scale, data,
                                   on_report=lambda metrics, path: marks.append(time.perf_counter()))
        end = time.perf_counter()
        if "code_error" in outcome:
            raise SystemExit(f"the sandboxed run failed: {outcome['code_error']}")
        rows["sandboxed"].append(end - start)
        rows["first report"].append(marks[0] - start)
        rows["last report"].append(end - marks[-1])  # the final evaluation's audit, and the summary
        losses["sandboxed"] = outcome["final"]["eval_loss"]
        console.print(f"repeat {repeat + 1}/{args.repeats}: in process {rows['in process'][-1]:.1f}s, "
                      f"sandboxed {rows['sandboxed'][-1]:.1f}s")
    base = statistics.median(rows["in process"])
    table = Table(title=f"{args.seed} as a candidate, {scale.train.steps} steps at {scale.name} "
                        f"(median of {args.repeats})", width=110)
    for header in ("run", "seconds", "x in process", "eval loss"):
        table.add_column(header, justify="left" if header == "run" else "right")
    for name in ("in process", "sandboxed"):
        value = statistics.median(rows[name])
        table.add_row(name, f"{value:.1f}", f"{value / base:.2f}", f"{losses[name]:.4f}")
    table.add_row("  of which: start to first report", f"{statistics.median(rows['first report']):.1f}", "", "")
    table.add_row("  of which: last report to result", f"{statistics.median(rows['last report']):.1f}", "", "")
    table.add_row("  evaluations, each in a fresh sandbox", f"{len(marks)}", "", "")
    table.add_row("overhead per trial", f"{statistics.median(rows['sandboxed']) - base:+.1f}", "", "")
    console.print(table)


if __name__ == "__main__":
    main()
