"""Train the seed architectures at one scale, in parallel on Ray, and tabulate them.

Today this is what ``asiarch run`` does; the campaign reuses it to anchor fitness on the
seeds measured in the same run (never on hard-coded numbers).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.live import Live

from asiarch.arch import SEEDS
from asiarch.config import ScaleConfig
from asiarch.train.tables import progress_table, results_table, write_results
from asiarch.train.protocol import TrialData, prepare_data, train_mixer


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


def run_seed_baselines(cfg: DictConfig, console: Console | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Train ``cfg.seeds`` at ``cfg.scale``; write results under ``cfg.run.output_dir``; return them."""
    console = console or Console()
    unknown = [name for name in cfg.seeds if name not in SEEDS]
    if unknown:
        raise ValueError(f"unknown seed(s) {unknown}; known seeds: {sorted(SEEDS)}")
    scale = ScaleConfig.from_dict(cfg.scale)
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
            train_seed.options(**options, name=f"train:{name}").remote(name, scale, data_ref, board, cfg.run.downstream): name
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
    write_results(out_dir, ordered, title=f"Seed baselines at {scale.name}")
    console.print(results_table(ordered, title=f"Seed baselines at {scale.name}"))
    console.print(f"results: {out_dir}")
    return ordered, out_dir
