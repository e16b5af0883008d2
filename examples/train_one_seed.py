"""Train one seed mixer at cpu_tiny and print what was measured.

    .venv/bin/python examples/train_one_seed.py [seed-name] [hydra overrides ...]
    .venv/bin/python examples/train_one_seed.py mamba2 scale.train.steps=100
"""

from __future__ import annotations

import sys

from asiarch.arch import SEEDS
from asiarch.config import load_scale
from asiarch.train.protocol import prepare_data, train_mixer


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "deltanet"
    if name not in SEEDS:
        raise SystemExit(f"unknown seed {name!r}; choose one of {sorted(SEEDS)}")
    scale = load_scale(["scale=cpu_tiny", *sys.argv[2:]])
    data = prepare_data(scale)

    def report(metrics: dict[str, float]) -> None:
        print(f"step {metrics['step']:>5}  train {metrics['train_loss']:.3f}  eval {metrics['eval_loss']:.3f}  "
              f"MQAR {metrics['mqar_accuracy']:.3f}  {metrics['tokens_per_second']:,.0f} tok/s")

    summary = train_mixer(SEEDS[name], scale, data, report=report, downstream=False)
    print(f"{name}: {summary['parameters']:,} parameters, {summary['stop_reason']} "
          f"({summary['stop_message']}), eval loss {summary['eval_loss']:.3f}")


if __name__ == "__main__":
    main()
