"""Train the seed architectures at one scale, in parallel on Ray, tabulate them, and cache them.

``asiarch baselines`` runs this; every run lands in the ``BaselineCache`` of the output
directory, where campaigns at the same scale find their anchor seed instead of training
it again (never a hard-coded number: a measurement of the same code at the same scale).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.live import Live

from asiarch.arch import SEEDS
from asiarch.config import ScaleConfig, stage_scale
from asiarch.train.tables import progress_table, results_table, write_results
from asiarch.train.protocol import TrialData, prepare_data, train_mixer


class BaselineCache:
    """Seed runs kept once per measurement, for every campaign under one output directory.

    A seed trained at a scale is the same measurement in every campaign that uses that
    scale: the key is the scale's fingerprint (model, trainer with its steps and training
    seed, data; not its name), the seed's code and whether downstream sets were scored.
    Entries are JSON files written atomically under ``<output_dir>/baselines/``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(seed: str, scale: ScaleConfig, downstream: bool) -> str:
        from asiarch.arch import seed_source
        from asiarch.memory import code_hash

        measured = dataclasses.asdict(scale)
        measured.pop("name", None)
        measured.pop("stages", None)  # how a campaign uses the scale, not what a run measures
        text = json.dumps({"scale": measured, "code": code_hash(seed_source(seed)), "downstream": downstream},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def path(self, seed: str, scale: ScaleConfig, downstream: bool) -> Path:
        return self.root / f"{seed}-s{scale.train.seed}-{scale.train.steps}steps-{self.key(seed, scale, downstream)}.json"

    def get(self, seed: str, scale: ScaleConfig, downstream: bool) -> dict[str, Any] | None:
        path = self.path(seed, scale, downstream)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a damaged entry is trained again and rewritten

    def put(self, seed: str, scale: ScaleConfig, downstream: bool, summary: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(seed, scale, downstream)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, default=str))
        os.replace(tmp, path)
        return path


@ray.remote
class ProgressBoard:
    """Latest metrics per trial, so the driver can draw live progress while trials run."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def update(self, name: str, metrics: dict[str, Any]) -> None:
        self.latest[name] = metrics

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self.latest)


@ray.remote
def train_seed(name: str, scale: ScaleConfig, data: TrialData, board, downstream: bool) -> dict[str, Any]:
    total_steps = scale.train.steps

    def report(metrics: dict[str, float]) -> None:
        board.update.remote(name, {**metrics, "total_steps": total_steps, "state": "training"})

    board.update.remote(name, {"step": 0, "total_steps": total_steps, "state": "starting"})
    summary = train_mixer(SEEDS[name], scale, data, report=report, downstream=downstream)
    last = summary["history"][-1] if summary["history"] else {}
    board.update.remote(name, {**last, "total_steps": total_steps, "state": summary["stop_reason"]})
    return {"seed": name, **summary}


def _print_new_reports(console: Console, latest: dict[str, dict[str, Any]], printed: dict[str, tuple]) -> None:
    for name, m in latest.items():
        key = (m.get("state"), m.get("step"))
        if printed.get(name) == key:
            continue
        printed[name] = key
        parts = [f"{name}: {m.get('state')}", f"step {m.get('step', 0)}/{m.get('total_steps', '?')}"]
        for label, field, fmt in (("eval loss", "eval_loss", "{:.3f}"), ("MQAR", "mqar_accuracy", "{:.3f}"),
                                  ("tok/s", "tokens_per_second", "{:,.0f}")):
            if field in m:
                parts.append(f"{label} {fmt.format(m[field])}")
        console.print("  ".join(parts), highlight=False)


def run_seed_baselines(cfg: DictConfig, console: Console | None = None,
                       stage: str = "scale") -> tuple[list[dict[str, Any]], Path]:
    """Train ``cfg.seeds`` at ``cfg.scale``; write results under ``cfg.run.output_dir``; return them.

    ``stage="explore"`` trains them as a campaign's explore anchor is trained (the scale's
    explore steps, no downstream evaluation), so campaigns at this scale find them cached.
    """
    console = console or Console()
    unknown = [name for name in cfg.seeds if name not in SEEDS]
    if unknown:
        raise ValueError(f"unknown seed(s) {unknown}; known seeds: {sorted(SEEDS)}")
    if stage not in ("scale", "explore"):
        raise ValueError(f"stage must be 'scale' or 'explore', got {stage!r}")
    scale = ScaleConfig.from_dict(cfg.scale)
    downstream = bool(cfg.run.downstream) and stage == "scale"
    if stage == "explore":
        scale = stage_scale(scale, scale.stages.explore_steps)
    out_dir = Path(cfg.run.output_dir) / f"seeds-{scale.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))

    with console.status("preparing data: tokenizer, token cache, MQAR"):
        data = prepare_data(scale)
    console.print(
        f"data: {data.corpus.num_tokens('train'):,} train / {data.corpus.num_tokens('val'):,} val tokens, "
        f"vocab {data.corpus.vocab_size}; MQAR {scale.mqar.num_kv_pairs} pairs in {scale.mqar.seq_len} tokens"
    )
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        board = ProgressBoard.remote()
        data_ref = ray.put(data)
        options = {"num_cpus": cfg.run.cpus_per_trial, "num_gpus": cfg.run.gpus_per_trial}
        pending = {
            train_seed.options(**options, name=f"train:{name}").remote(name, scale, data_ref, board, downstream): name
            for name in cfg.seeds
        }
        summaries: dict[str, dict[str, Any]] = {}
        printed: dict[str, tuple] = {}
        with Live(progress_table({}, list(cfg.seeds)), console=console, refresh_per_second=2) as live:
            while pending:
                done, _ = ray.wait(list(pending), timeout=1.0)
                for ref in done:
                    name = pending.pop(ref)
                    try:
                        summaries[name] = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        summaries[name] = {"seed": name, "stop_reason": "error", "stop_message": str(err.cause)}
                latest = ray.get(board.snapshot.remote())
                live.update(progress_table(latest, list(cfg.seeds)))
                if not console.is_terminal:  # logs and `ray job logs`: one line per new report
                    _print_new_reports(console, latest, printed)
    finally:
        if started_ray:
            ray.shutdown()
    ordered = [summaries[name] for name in cfg.seeds]
    cache = BaselineCache(Path(cfg.run.output_dir) / "baselines")
    for summary in ordered:
        if summary.get("stop_reason") not in ("error", None):
            cache.put(summary["seed"], scale, downstream, summary)
    write_results(out_dir, ordered, title=f"Seed baselines at {scale.name}")
    console.print(results_table(ordered, title=f"Seed baselines at {scale.name}"))
    console.print(f"results: {out_dir}")
    return ordered, out_dir
