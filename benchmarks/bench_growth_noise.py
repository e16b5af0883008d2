"""How much of a measured growth exponent is noise, and what the Judge's complexity score makes of it.

The complexity check fits CPU time against sequence length (T..8T) and reports the exponent
with the standard error of that fit over every timed run. This benchmark runs the check
``--runs`` times on each seed (in the sandbox, as a campaign does), with ``--load`` busy
processes beside it (a campaign's trials share the cores: ``--load-kind spin`` loops in Python,
``torch`` multiplies matrices and streams a 256 MB tensor as a training trial does, which
competes for the caches and memory bandwidth that the longest lengths need), and prints per design: the
exponent's mean and spread between runs, the mean standard error a single check reports,
how often a check's 95 % interval held the design's mean over runs (the error's
calibration), and the offline Judge's complexity score from each measurement, read two ways:
any excess over linear (before: ``10 * max(0, exponent - 1)`` points off) and the excess only
where the exponent is above 1 beyond the check's noise (``checks.growth_beyond_linear``, now).
A score that moves between runs of one design, or orders linear designs, moves with noise.

    .venv/bin/python benchmarks/bench_growth_noise.py [--runs 5] [--load 1] [--load-kind spin|torch]
        [--designs deltanet,mamba2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from rich.table import Table

from asiarch.arch import seed_source
from asiarch.checks import check_candidate, growth_beyond_linear
from asiarch.console import output_console
from asiarch.llm.schemas import ROLE_SCHEMAS, with_context
from asiarch.proposer import OfflineBackend

DESIGNS = ["deltanet", "gated_deltanet", "mamba2", "kda", "rwkv7", "attention"]
BURNERS = {  # what a busy process beside the checks runs
    "spin": "while True: pass",
    "torch": ("import torch\ntorch.set_num_threads(1)\na, b = torch.randn(2048, 2048), torch.randn(64, 1024, 1024)\n"
              "while True:\n    a @ a\n    b.mul_(1.0001).add_(0.1)"),
}


def judged_complexity(candidate: dict) -> float:
    """The offline Judge's complexity score for a candidate view (the formula lives in the backend)."""
    messages = [{"role": "user", "content": with_context("Act as the judge.", {"seeds": [], "candidate": candidate})}]
    return OfflineBackend().complete("judge", "", messages, ROLE_SCHEMAS["judge"]).data["complexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="complexity checks per design")
    parser.add_argument("--load", type=int, default=1, help="busy-loop processes beside the checks (0: idle)")
    parser.add_argument("--load-kind", choices=sorted(BURNERS), default="spin", help="what each busy process runs")
    parser.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated seeds to check")
    parser.add_argument("--significance", type=float, default=0.05, help="agents.significance")
    parser.add_argument("--out", type=Path, default=None, help="write every measurement as JSON")
    args = parser.parse_args()

    designs = [d for d in args.designs.split(",") if d]
    unknown = sorted(set(designs) - set(DESIGNS))
    if unknown:
        parser.error(f"--designs: unknown {unknown}; choose from {DESIGNS}")
    burners = [subprocess.Popen([sys.executable, "-c", BURNERS[args.load_kind]]) for _ in range(args.load)]
    rows: dict[str, list[dict]] = {}
    try:
        for name in designs:
            for run in range(args.runs):
                report = check_candidate(seed_source(name), "cpu_tiny", checks=["complexity"],
                                         allow_quadratic=name == "attention")
                m = report.measurements["complexity"]
                growth = growth_beyond_linear(m, args.significance)
                before = judged_complexity({"growth_exponent": m["time_exponent"]})  # the whole excess counts
                now = judged_complexity({"growth_exponent": growth["exponent"], "growth_beyond_linear": growth["beyond_linear"],
                                         "growth": growth["verdict"]})
                rows.setdefault(name, []).append({"exponent": m["time_exponent"], "se": m["time_exponent_se"],
                                                  "sweeps": m["sweeps"], "beyond_linear": growth["beyond_linear"],
                                                  "score_before": before, "score_now": now})
                print(f"{name} run {run + 1}/{args.runs}: {growth['verdict']}", file=sys.stderr, flush=True)
    finally:
        for burner in burners:
            burner.kill()

    table = Table(title=f"growth exponent noise and the Judge's complexity score ({args.runs} checks a design, "
                        f"{args.load} busy process(es) beside them: {args.load_kind})")
    for header in ("design", "exponent mean", "sd between runs", "mean se of a check", "95% interval held the mean",
                   "sweeps (max)", "counted beyond linear", "score before (min-max)", "score now (min-max)"):
        table.add_column(header, justify="left" if header == "design" else "right")
    for name, runs in rows.items():
        exps = [r["exponent"] for r in runs]
        mean = statistics.mean(exps)
        held = sum(abs(r["exponent"] - mean) <= 1.96 * r["se"] for r in runs)
        before, now = [r["score_before"] for r in runs], [r["score_now"] for r in runs]
        table.add_row(name, f"{mean:.3f}", f"{statistics.stdev(exps):.3f}", f"{statistics.mean(r['se'] for r in runs):.3f}",
                      f"{held}/{len(runs)}", str(max(r["sweeps"] for r in runs)),
                      f"{sum(r['beyond_linear'] > 0 for r in runs)}/{len(runs)}", f"{min(before):.2f}-{max(before):.2f}", f"{min(now):.2f}-{max(now):.2f}")
    console = output_console()
    console.print(table)
    linear = [n for n in rows if n != "attention"]
    spread = lambda key: max(r[key] for n in linear for r in rows[n]) - min(r[key] for n in linear for r in rows[n])  # noqa: E731
    console.print(f"complexity score range over every check of the linear seeds: before {spread('score_before'):.2f} "
                  f"points, now {spread('score_now'):.2f} (of 10; the Judge's overall weighs complexity 0.45)",
                  highlight=False)
    if args.out:
        args.out.write_text(json.dumps({"runs": args.runs, "load": args.load, "load_kind": args.load_kind, "significance": args.significance,
                                        "designs": rows}, indent=2))


if __name__ == "__main__":
    main()
