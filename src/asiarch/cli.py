"""The ``asiarch`` command line.

``asiarch run [key=value ...]`` starts (or continues) a campaign with Hydra overrides of
the embedded ``conf/`` tree; ``status``, ``top``, ``export``, ``insights add``, ``serve``
and ``report`` find the latest campaign under ``./runs`` with no arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from rich.table import Table

from asiarch.console import output_console
from asiarch.memory.lifecycle import is_breakthrough


def _load(args):
    from asiarch.campaign import Campaign

    return Campaign.load(args.name, args.dir)


def _run(args) -> int:
    from asiarch.campaign import Campaign

    summary = Campaign(overrides=args.overrides).run()
    return 0 if summary.get("status") == "finished" else 1


def _resume(args) -> int:
    summary = _load(args).resume()
    return 0 if summary.get("status") == "finished" else 1


def _status(args) -> int:
    campaign = _load(args)
    status = campaign.status()
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        output_console().print(campaign.progress_line(), highlight=False, markup=False, soft_wrap=True)
    return 0


def _top(args) -> int:
    campaign = _load(args)
    table = Table(title=f"Top {args.k} of {campaign.name} (explore fitness)")
    for header in ("id", "name", "status", "fitness", "explore loss", "explore MQAR", "verify loss", "breakthrough"):
        table.add_column(header, justify="left" if header in ("id", "name", "status") else "right")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for c in campaign.top(args.k):
        table.add_row(c.id, c.name, c.status, fmt(c.fitness), fmt(c.explore.eval_loss), fmt(c.explore.mqar_accuracy),
                      fmt(c.verify.eval_loss), "yes" if is_breakthrough(c) else "-")
    output_console().print(table)
    return 0


def _export(args) -> int:
    from dataclasses import asdict

    from asiarch.campaign.export import export_candidate

    campaign = _load(args)
    candidate = campaign.memory().get_candidate(args.id)
    if candidate is None:
        raise ValueError(f"no candidate with id {args.id!r} in campaign {campaign.name} (see `asiarch top`)")
    config = {"model": asdict(campaign.scale.model), "scale": campaign.scale.name}
    source = export_candidate(candidate, config)
    out = Path(args.out or f"{candidate.name.replace('-', '_')}.py")
    out.write_text(source)
    print(f"wrote {out} ({candidate.name}, fitness {candidate.fitness})")
    return 0


def _insights_add(args) -> int:
    from asiarch.memory import Memory

    if args.memory:
        uri = args.memory
    else:
        uri = _load(args).memory_uri
    added = Memory(uri).load_cognition_base(args.file)
    print(f"added {added} insight(s) from {args.file} to {uri}")
    return 0


def _show_config(args) -> int:
    from omegaconf import OmegaConf

    from asiarch.campaign import Campaign
    from asiarch.config import compose

    config = compose(args.overrides)
    print(OmegaConf.to_yaml(config))
    Campaign(config)  # the checks `asiarch run` makes: a value of the wrong type is named here, not in a trial
    return 0


def _baselines(args) -> int:
    from asiarch.baselines import run_seed_baselines
    from asiarch.config import compose
    from asiarch.train.trainer import MEASURED_STOPS

    rows, _ = run_seed_baselines(compose(args.overrides), output_console(), stage=args.stage)
    failed = [row["seed"] for row in rows if row.get("stop_reason") not in MEASURED_STOPS]
    if failed:
        print(f"asiarch baselines: these seeds did not finish training: {failed}", file=sys.stderr)
        return 1
    return 0


def _serve(args) -> int:
    from asiarch.campaign.state import find_campaign
    from asiarch.serve.app import ServeStart, ServeStartError, serve_campaign

    try:
        serve_campaign(find_campaign(args.dir, args.name), host=args.host, port=args.port, token=args.token or None,
                       start=ServeStart(**{k: v for k, v in (("ready_timeout_s", args.ready_timeout),
                                                              ("attempts", args.attempts)) if v is not None}))
    except ServeStartError as err:
        print(f"asiarch serve: {err}", file=sys.stderr)
        return 1
    return 0


def _report(args) -> int:
    from asiarch.campaign.state import find_campaign
    from asiarch.report import write_report

    root = find_campaign(args.dir, args.name)
    out = write_report(root, args.out or root / "report")
    print(f"report: {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asiarch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def campaign_args(p):
        p.add_argument("--dir", default="runs", help="where campaigns live: a directory or s3://bucket/prefix "
                       "(endpoint from $AWS_ENDPOINT_URL; default: ./runs)")
        p.add_argument("--name", default=None, help="campaign name (default: the latest)")

    p = sub.add_parser("run", help="start a campaign, or continue the latest unfinished one of the same configuration")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. scale=cpu_tiny llm=offline campaign.max_candidates=20")
    p.set_defaults(fn=_run)
    p = sub.add_parser("resume", help="continue a campaign where it stopped")
    campaign_args(p)
    p.set_defaults(fn=_resume)
    p = sub.add_parser("status", help="counts per status, budget used, best fitness")
    campaign_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_status)
    p = sub.add_parser("top", help="the fittest candidates")
    campaign_args(p)
    p.add_argument("-k", type=int, default=10)
    p.set_defaults(fn=_top)
    p = sub.add_parser("export", help="write a discovered mixer as a standalone Python module")
    p.add_argument("id")
    p.add_argument("--out", default=None, help="output file (default: <name>.py)")
    campaign_args(p)
    p.set_defaults(fn=_export)
    p = sub.add_parser("insights", help="manage the cognition base")
    isub = p.add_subparsers(dest="action", required=True)
    p = isub.add_parser("add", help="add your own paper entries (JSONL, the cognition base's format)")
    p.add_argument("file")
    p.add_argument("--memory", default=None, help="memory URI (default: the campaign's)")
    campaign_args(p)
    p.set_defaults(fn=_insights_add)
    p = sub.add_parser("serve", help="the dashboard (Ray Serve) over a campaign's memory")
    campaign_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("ASIARCH_TOKEN"), help="bearer token (default: $ASIARCH_TOKEN)")
    p.add_argument("--ready-timeout", type=float, default=None,
                   help="seconds Serve waits for its proxy to be ready (default: asiarch.serve.app.ServeStart's; "
                        "Serve's own 5 s is too short on a machine busy training)")
    p.add_argument("--attempts", type=int, default=None,
                   help="starts of Serve before giving up (default: asiarch.serve.app.ServeStart's)")
    p.set_defaults(fn=_serve)
    p = sub.add_parser("report", help="PNG figures and a Markdown summary of a campaign")
    campaign_args(p)
    p.add_argument("--out", default=None, help="output folder or s3:// prefix (default: <campaign>/report)")
    p.set_defaults(fn=_report)
    p = sub.add_parser("baselines", help="train the seed architectures at a scale, print and cache their results")
    p.add_argument("--stage", choices=("scale", "explore"), default="scale",
                   help="explore: the runs of a campaign's explore anchor (campaign.seed on each of explore.anchor_seeds, "
                        "at the explore steps), filling the cache")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=_baselines)
    p = sub.add_parser("config", help="print the composed configuration")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=_show_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    args = _parser().parse_args(argv)
    from hydra.errors import HydraException

    from asiarch.storage import StorageError

    try:
        return args.fn(args)
    except StorageError as err:  # no credentials, no endpoint, a local directory on a cluster: what to set
        print(f"asiarch {args.command}: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError, HydraException) as err:
        print(f"asiarch {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside Tune's own handling (which stops trials and returns)
        hint = " Run the same command again (or `asiarch resume`) to continue." if args.command in ("run", "resume") else ""
        print(f"asiarch {args.command}: interrupted; what was trained and scored is kept.{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
