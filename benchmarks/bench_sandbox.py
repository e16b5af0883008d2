"""What the training sandbox costs per trial: the same candidate trained in process and sandboxed.

The baseline is measured in the same run: ``train_mixer`` on the candidate's class in this
process (what trials did before the sandbox). The sandboxed run is ``train_in_sandbox``:
worker start-up (interpreter, torch, the trial's inputs), lock-down, training (the worker
evaluates nothing), a checkpoint per report through the scratch directory, each evaluated
here from a fresh sandbox (beside the training, which goes on), and the final evaluation's
causality audit in another: every evaluation's by default; a third arm audits the final one and each other
with a chance of 1/4 (``sandbox.spot_audit_fraction=0.25``).
Runs alternate, and the table shows the median over ``--repeats`` of wall seconds and of CPU seconds
(this process and every sandbox: what a trial costs when every core is busy).

    .venv/bin/python benchmarks/bench_sandbox.py [--seed deltanet] [--steps 192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from rich.console import Console
from rich.table import Table

from asiarch.arch import load_mixer_class, seed_source
from asiarch.config import load_scale, stage_scale
from asiarch.sandbox import SandboxOptions
from asiarch.train.protocol import prepare_data, train_mixer
from asiarch.train.sandboxed import train_in_sandbox


def cpu_now() -> float:
    """CPU seconds of this process and every sandbox it started (the zygote's tree counts the workers it reaped):
    with every core busy, what a trial costs is its CPU time, not its wall time."""
    from asiarch import sandbox

    own = sum(os.times()[:4])
    zygote = sandbox.shared_zygote()._proc if sandbox.shared_zygote.cache_info().currsize else None
    return own + ((sandbox.cpu_seconds(zygote) or 0.0) if zygote is not None else 0.0)


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
    # the default audits every evaluation (sandbox.spot_audit_fraction=1); the third arm only those decisions read
    # (here: the final one) and each other one with a chance of 1/4, what the audits cost
    arms = {"sandboxed": SandboxOptions(), "sandboxed, spot audits at 1/4": SandboxOptions(spot_audit_fraction=0.25)}
    rows: dict[str, list[float]] = {name: [] for name in ("in process", *arms, "first report", "last report")}
    cpu: dict[str, list[float]] = {name: [] for name in ("in process", *arms)}
    losses: dict[str, float] = {}
    audited: dict[str, int] = {}
    for repeat in range(args.repeats):
        start, cpu_start = time.perf_counter(), cpu_now()
        summary = train_mixer(load_mixer_class(source), scale, data, downstream=False)
        rows["in process"].append(time.perf_counter() - start)
        cpu["in process"].append(cpu_now() - cpu_start)
        losses["in process"] = summary["eval_loss"]
        for name, options in arms.items():
            marks: list[float] = []
            reports: list[dict] = []
            start, cpu_start = time.perf_counter(), cpu_now()
            outcome = train_in_sandbox(source, "bench", scale, data, options=options,
                                       on_report=lambda metrics, path: (marks.append(time.perf_counter()),
                                                                        reports.append(metrics)))
            end = time.perf_counter()
            time.sleep(0.5)  # the last sandboxes reaped, so their CPU time is counted
            cpu[name].append(cpu_now() - cpu_start)
            if "code_error" in outcome:
                raise SystemExit(f"the sandboxed run failed: {outcome['code_error']}")
            rows[name].append(end - start)
            if name == "sandboxed":
                rows["first report"].append(marks[0] - start)
                rows["last report"].append(end - marks[-1])  # the final evaluation's audit, and the summary
            losses[name] = outcome["final"]["eval_loss"]
            audited[name] = sum(int(r.get("audited", 0)) for r in reports)
        console.print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{name} {rows[name][-1]:.1f}s ({cpu[name][-1]:.1f} CPU s)" for name in ("in process", *arms)))
    base, base_cpu = statistics.median(rows["in process"]), statistics.median(cpu["in process"])
    table = Table(title=f"{args.seed} as a candidate, {scale.train.steps} steps at {scale.name} "
                        f"(median of {args.repeats})", width=118)
    for header in ("run", "seconds", "x in process", "CPU seconds", "x in process (CPU)", "eval loss"):
        table.add_column(header, justify="left" if header == "run" else "right")
    for name in ("in process", *arms):
        value, used = statistics.median(rows[name]), statistics.median(cpu[name])
        table.add_row(name + (f" ({audited[name]} audited)" if name in audited else ""), f"{value:.1f}",
                      f"{value / base:.2f}", f"{used:.1f}", f"{used / base_cpu:.2f}", f"{losses[name]:.4f}")
    table.add_row("  of which: start to first report", f"{statistics.median(rows['first report']):.1f}", "", "", "", "")
    table.add_row("  of which: last report to result", f"{statistics.median(rows['last report']):.1f}", "", "", "", "")
    table.add_row("  evaluations, each in a fresh sandbox", f"{len(marks)}", "", "", "", "")
    table.add_row("overhead per trial (default)", f"{statistics.median(rows['sandboxed']) - base:+.1f}", "",
                  f"{statistics.median(cpu['sandboxed']) - base_cpu:+.1f}", "", "")
    console.print(table)


if __name__ == "__main__":
    main()
