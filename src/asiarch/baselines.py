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
import secrets
import time
from pathlib import Path
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.live import Live

from asiarch.arch import SEEDS
from asiarch.config import ScaleConfig, explore_scale, seeded_scale
from asiarch.storage import Location, StorageSettings, check_access, location, write_text_atomic
from asiarch.train.tables import progress_table, results_table, write_results
from asiarch.train.protocol import TrialData, prepare_data, train_mixer
from asiarch.train.trainer import MEASURED_STOPS


MQAR_SECRET_FILE = "mqar-test-secret"


class BaselineCache:
    """Seed runs kept once per measurement, for every campaign under one output directory.

    A seed trained at a scale is the same measurement in every campaign that uses that
    scale: the key is the scale's fingerprint (model, trainer with its steps and training
    seed, data; not its name), the seed's code, whether downstream sets were scored, and the
    secret MQAR's test set is drawn with (``mqar_secret``: every campaign and ``asiarch baselines``
    run under this directory measures recall on the same test set, which a candidate's training
    sandbox cannot read). Entries are JSON files written atomically under
    ``<output_dir>/baselines/`` (local or s3://).
    """

    def __init__(self, root: "str | Path | Location"):
        self.root = location(root)
        self._secret: int | None = None

    def mqar_secret(self) -> int:
        """The secret MQAR's test set is drawn with here: read from ``mqar-test-secret``, or drawn and
        written (owner-only where the directory is local) by the first run under this directory."""
        if self._secret is None:
            path = self.root / MQAR_SECRET_FILE
            self.root.mkdir(parents=True, exist_ok=True)
            if isinstance(path, Path):
                try:  # exclusive: two campaigns starting at once agree on the first one's
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as out:
                        out.write(str(secrets.randbits(63)))
                except FileExistsError:
                    pass
            elif not path.exists():
                write_text_atomic(path, str(secrets.randbits(63)))
            text = path.read_text().strip()
            if not text.isdigit():
                raise ValueError(f"{path} does not hold MQAR's test secret (a number): remove it to draw a new one; "
                                 "the seed runs cached here were measured on the old one and will train again")
            self._secret = int(text)
        return self._secret

    def prepare_data(self, scale: ScaleConfig) -> TrialData:
        """``scale``'s data with MQAR's test set drawn with this directory's secret, whose folder the sandboxes of
        the candidates trained on it hide (``secret_dirs``)."""
        return prepare_data(scale, mqar_secret=self.mqar_secret(), secret_dirs=self.secret_dirs())

    def secret_dirs(self) -> list[str]:
        """The folder the secret is kept in, where it is local (on S3 it is out of a sandbox's network's reach)."""
        return [str(self.root.resolve())] if isinstance(self.root, Path) else []

    def key(self, seed: str, scale: ScaleConfig, downstream: bool, protocol: dict[str, Any] | None = None) -> str:
        """``protocol``: how a stage ran the seed beyond the scale (verify: its training seeds and
        learning-rate search); its runs then set their own training seeds, so the scale's is left out."""
        from asiarch.arch import seed_source
        from asiarch.memory import code_hash

        measured = dataclasses.asdict(scale)
        measured.pop("name", None)
        measured.pop("stages", None)  # how a campaign uses the scale, not what a run measures
        if protocol is not None:
            measured["train"].pop("seed", None)
        mqar_test = hashlib.sha256(str(self.mqar_secret()).encode()).hexdigest()[:16]
        text = json.dumps({"scale": measured, "code": code_hash(seed_source(seed)), "downstream": downstream,
                           "mqar_test": mqar_test, **({"protocol": protocol} if protocol is not None else {})},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def path(self, seed: str, scale: ScaleConfig, downstream: bool, protocol: dict[str, Any] | None = None) -> "Location":
        run = f"s{scale.train.seed}" if protocol is None else "verify"
        return self.root / f"{seed}-{run}-{scale.train.steps}steps-{self.key(seed, scale, downstream, protocol)}.json"

    def get(self, seed: str, scale: ScaleConfig, downstream: bool, protocol: dict[str, Any] | None = None) -> Any:
        """The cached summary (a list of runs where ``protocol`` is given), or None."""
        path = self.path(seed, scale, downstream, protocol)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a damaged entry is trained again and rewritten

    def put(self, seed: str, scale: ScaleConfig, downstream: bool, summary: Any,
            protocol: dict[str, Any] | None = None) -> "Location":
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(seed, scale, downstream, protocol)
        write_text_atomic(path, json.dumps(summary, default=str))
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
def train_seed(name: str, scale: ScaleConfig, data: TrialData, board, downstream: bool,
               label: str | None = None) -> dict[str, Any]:
    total_steps, label = scale.train.steps, label or name

    def report(metrics: dict[str, float]) -> None:
        board.update.remote(label, {**metrics, "total_steps": total_steps, "state": "training"})

    board.update.remote(label, {"step": 0, "total_steps": total_steps, "state": "starting"})
    summary = train_mixer(SEEDS[name], scale, data, report=report, downstream=downstream)
    last = summary["history"][-1] if summary["history"] else {}
    board.update.remote(label, {**last, "total_steps": total_steps, "state": summary["stop_reason"]})
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
                       stage: str = "scale") -> tuple[list[dict[str, Any]], "Location"]:
    """Train seeds at ``cfg.scale``; write results under ``cfg.run.output_dir``; return them.

    ``stage="scale"`` trains every seed of ``cfg.seeds`` once, at the scale's full steps.
    ``stage="explore"`` trains what a campaign's explore anchor trains: ``campaign.seed`` at
    the scale's explore steps on each of ``explore.anchor_seeds``, measuring what explore
    trials measure, so campaigns at this scale find every anchor run cached.
    """
    from asiarch.campaign.scoring import scores_downstream

    console = console or Console()
    unknown = [name for name in cfg.seeds if name not in SEEDS]
    if unknown:
        raise ValueError(f"unknown seed(s) {unknown}; known seeds: {sorted(SEEDS)}")
    if stage not in ("scale", "explore"):
        raise ValueError(f"stage must be 'scale' or 'explore', got {stage!r}")
    base = ScaleConfig.from_dict(cfg.scale)
    if stage == "explore":
        base = explore_scale(base)
        downstream = scores_downstream(base, "explore")
        jobs = [(str(cfg.campaign.seed), int(s)) for s in cfg.explore.anchor_seeds]
    else:
        downstream = scores_downstream(base, "verify", bool(cfg.run.downstream))
        jobs = [(str(name), base.train.seed) for name in cfg.seeds]
    if stage == "explore" and jobs[0][0] not in SEEDS:
        raise ValueError(f"campaign.seed {jobs[0][0]!r} is not a seed; known seeds: {sorted(SEEDS)}")
    scales = {t: seeded_scale(base, t) for _, t in jobs}
    labels = [name if stage == "scale" else f"{name}:s{t}" for name, t in jobs]
    from asiarch.campaign.settings import RunSettings, section

    run = section(cfg, "run", RunSettings)
    output_dir = location(run.output_dir, section(cfg, "storage", StorageSettings))
    check_access(output_dir)
    out_dir = output_dir / f"seeds-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))

    cache = BaselineCache(output_dir / "baselines")
    with console.status("preparing data: tokenizer, token cache, MQAR"):
        data = cache.prepare_data(base)
    console.print(
        f"data: {data.corpus.num_tokens('train'):,} train / {data.corpus.num_tokens('val'):,} val tokens, "
        f"vocab {data.corpus.vocab_size}; MQAR {base.mqar.num_kv_pairs} pairs in {base.mqar.seq_len} tokens"
    )
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        board = ProgressBoard.remote()
        data_ref = ray.put(data)
        options = run.task_options()
        pending = {
            train_seed.options(**options, name=f"train:{label}").remote(name, scales[t], data_ref, board, downstream,
                                                                       label=label): label
            for (name, t), label in zip(jobs, labels)
        }
        summaries: dict[str, dict[str, Any]] = {}
        printed: dict[str, tuple] = {}
        with Live(progress_table({}, labels), console=console, refresh_per_second=2) as live:
            while pending:
                done, _ = ray.wait(list(pending), timeout=1.0)
                for ref in done:
                    label = pending.pop(ref)
                    try:
                        summaries[label] = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        summaries[label] = {"seed": label.split(":")[0], "stop_reason": "error",
                                            "stop_message": str(err.cause)}
                latest = ray.get(board.snapshot.remote())
                live.update(progress_table(latest, labels))
                if not console.is_terminal:  # logs and `ray job logs`: one line per new report
                    _print_new_reports(console, latest, printed)
    finally:
        if started_ray:
            ray.shutdown()
    ordered = [summaries[label] for label in labels]
    for (name, t), summary in zip(jobs, ordered):
        if summary.get("stop_reason") in MEASURED_STOPS:
            cache.put(name, scales[t], downstream, summary)
    title = f"Seed baselines at {base.name}" + (" (explore anchor)" if stage == "explore" else "")
    rows = [{**summary, "seed": label} for label, summary in zip(labels, ordered)]
    write_results(out_dir, rows, title=title)
    console.print(results_table(rows, title=title))
    console.print(f"results: {out_dir}")
    return ordered, out_dir
