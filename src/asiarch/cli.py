"""The ``asiarch`` command line.

``asiarch run [key=value ...]`` takes Hydra overrides of the embedded ``conf/`` tree. For
now it trains the seed architectures and prints their results table; the campaign
replaces it in a later release.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from rich.console import Console


def _run(overrides: Sequence[str]) -> int:
    from asiarch.baselines import run_seed_baselines
    from asiarch.config import compose

    cfg = compose(overrides)
    rows, _ = run_seed_baselines(cfg, Console())
    failed = [row["seed"] for row in rows if row.get("stop_reason") not in ("completed", "wall_time")]
    if failed:
        print(f"asiarch run: these seeds did not finish training: {failed}", file=sys.stderr)
        return 1
    return 0


def _show_config(overrides: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from asiarch.config import compose

    print(OmegaConf.to_yaml(compose(overrides)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    parser = argparse.ArgumentParser(prog="asiarch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the seed architectures at a scale and print the results table")
    run.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. scale=cpu_tiny scale.train.steps=100")
    show = sub.add_parser("config", help="print the composed configuration")
    show.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException

    try:
        if args.command == "run":
            return _run(args.overrides)
        return _show_config(args.overrides)
    except (ValueError, FileNotFoundError, HydraException) as err:
        print(f"asiarch {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
