"""Wall time of the whole check suite per seed at cpu_tiny, against one explore trial's training time.

The baseline is measured in the same run: the cpu_tiny trainer's seconds per step for the
same seed (a few steps, timed) times the scale's step count. Goal: the checks take <= 20 s
and <= 10 % of a trial.

    .venv/bin/python benchmarks/bench_checks.py [--trial-steps 20]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from rich.table import Table

from asiarch.console import output_console  # noqa: E402
from asiarch.arch import SEEDS, seed_source
from asiarch.checks import check_candidate
from asiarch.config import load_scale
from asiarch.train.trainer import Trainer
from asiarch.train.protocol import build_model, prepare_data


def trial_seconds(name: str, scale, data, steps: int) -> float:
    """Seconds a full explore trial of ``name`` takes, extrapolated from ``steps`` timed steps."""
    torch.set_num_threads(scale.torch_threads)
    short = replace(scale.train, steps=steps, report_every=steps, eval_batches=1)
    trainer = Trainer(build_model(scale, SEEDS[name], data), short, data.corpus, data.mqar)
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / steps * scale.train.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trial-steps", type=int, default=20)
    args = parser.parse_args()
    scale = load_scale("cpu_tiny")
    data = prepare_data(scale)
    table = Table(title=f"check suite vs one explore trial at {scale.name} ({scale.train.steps} steps)")
    for header in ("seed", "checks (s)", "passed", "slowest check", "trial (s)", "checks / trial"):
        table.add_column(header, justify="left" if header in ("seed", "slowest check") else "right")
    for name in SEEDS:
        start = time.perf_counter()
        report = check_candidate(seed_source(name), scale, allow_quadratic=(name == "attention"))
        checks = time.perf_counter() - start
        slowest = max(report.results, key=lambda r: r.seconds)
        trial = trial_seconds(name, scale, data, args.trial_steps)
        table.add_row(name, f"{checks:.1f}", "yes" if report.passed else report.summary(),
                      f"{slowest.check} {slowest.seconds:.1f}s", f"{trial:.0f}", f"{100 * checks / trial:.1f} %")
    output_console().print(table)


if __name__ == "__main__":
    main()
