"""Training QA's pace on a busy machine: wall-clock against CPU-time tokens per second.

QA stops a candidate more than ``qa_slow_factor`` (3x) slower than its seed. The seed's pace is
measured once (cached or while the campaign starts); the candidate's in the sandbox, while
agents, checks and other trials share the cores. This trains one seed's source as a
candidate in the sandbox twice in the same run — alone, then beside ``--hogs`` busy
processes — and reads each evaluation window's pace both ways from the parent, as
``QAMonitor`` does. The baseline is the same seed trained in process, alone, in this run
(what the campaign caches as the anchor's pace). A ratio near 1 means the measure sees the
design, not the machine.

    .venv/bin/python benchmarks/bench_qa_pace.py [--seed deltanet] [--steps 96] [--hogs 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from asiarch.arch import load_mixer_class, seed_source
from asiarch.campaign.stage import tokens_per_step
from asiarch.config import load_scale, stage_scale
from asiarch.train.protocol import prepare_data, train_mixer
from asiarch.train.qa import QAMonitor, TrainingQA
from asiarch.train.sandboxed import train_in_sandbox


class PaceRecorder(QAMonitor):
    """Records every window's (wall seconds, CPU seconds) as the parent sees them; stops nothing."""

    def __init__(self, tokens_per_report: int):
        super().__init__(TrainingQA(slow_factor=None, leak_fraction=None), lambda: None, tokens_per_report)
        self.marks: list[tuple[float, float | None]] = []

    def too_slow(self, cpu_clock=None) -> str | None:
        self.marks.append((self.clock(), cpu_clock() if cpu_clock is not None else None))
        return None

    def paces(self) -> tuple[float, float]:
        """Median tokens per wall second and per CPU second over the windows between reports."""
        pairs = list(zip(self.marks, self.marks[1:]))
        wall = [self.tokens_per_report / (b[0] - a[0]) for a, b in pairs]
        cpu = [self.tokens_per_report / (b[1] - a[1]) for a, b in pairs if a[1] is not None and b[1] is not None]
        return statistics.median(wall), statistics.median(cpu) if cpu else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", default="deltanet", help="the seed whose source plays the candidate")
    parser.add_argument("--steps", type=int, default=96, help="training steps per run")
    parser.add_argument("--hogs", type=int, default=2 * (os.cpu_count() or 1), help="busy processes beside the loaded run")
    args = parser.parse_args()
    scale = load_scale("cpu_tiny")
    scale = stage_scale(scale, args.steps)
    data = prepare_data(scale)
    source = seed_source(args.seed)
    console = Console(width=120)
    per_report = scale.train.report_every * tokens_per_step(scale)

    console.print(f"[1/3] {args.seed} in process, alone (the anchor's pace as the campaign caches it)")
    summary = train_mixer(load_mixer_class(source), scale, data, downstream=False)
    rows = [("seed in process, alone", summary["wall_tokens_per_second"], summary["cpu_tokens_per_second"])]

    def sandboxed(label: str) -> None:
        recorder = PaceRecorder(per_report)
        outcome = train_in_sandbox(source, "bench", scale, data, on_report=lambda metrics, path: None, qa=recorder)
        if "code_error" in outcome:
            raise SystemExit(f"the sandboxed run failed: {outcome['code_error']}")
        rows.append((label, *recorder.paces()))

    console.print("[2/3] the same source as a sandboxed candidate, alone")
    sandboxed("sandboxed candidate, alone")
    console.print(f"[3/3] the same, beside {args.hogs} busy processes on {os.cpu_count()} cores")
    # each in its own session, as sandboxed checks and trials are (the scheduler shares CPU between sessions)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(args.hogs)]
    try:
        time.sleep(1.0)
        sandboxed(f"sandboxed candidate, {args.hogs} busy processes")
    finally:
        for hog in hogs:
            hog.kill()

    base_wall, base_cpu = rows[0][1], rows[0][2]
    table = Table(title=f"{args.seed}, {scale.train.steps} steps at {scale.name}, {scale.torch_threads} torch thread(s); "
                        "median pace over evaluation windows", width=120)
    for header in ("run", "tok / wall s", "seed / this (wall)", "tok / CPU s", "seed / this (CPU)"):
        table.add_column(header, justify="left" if header == "run" else "right")
    for label, wall, cpu in rows:
        table.add_row(label, f"{wall:,.0f}", f"{base_wall / wall:.2f}x", f"{cpu:,.0f}", f"{base_cpu / cpu:.2f}x")
    console.print(table)
    console.print("QA stops a trial past 3x on the measure it uses (tokens per CPU second at CPU scales).")


if __name__ == "__main__":
    main()
