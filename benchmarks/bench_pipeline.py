"""Pipelining: trial-slot busy fraction and candidates per hour of a campaign against a sequential loop.

Both arms do the same work: ``--candidates`` candidates that reach training, at the same
scale, with the same agent classes (``asiarch.agents``), the same checks, the same
training function (``train_mixer``) and the same LLM: the local Messages-API server of the
tests (``tests/messages_server.py``) driven through the real anthropic client, answering
every role with the offline backend's structured output after sleeping the simulated
latency (5 s and 30 s by default).

- **pipelined**: ``Campaign(overrides, llm=...)``: Researcher and Engineer actors work ahead
  of the Tune trial slots (``campaign.researchers`` and ``campaign.lookahead`` sized so
  that they keep up at 30 s), ASHA explore, Judge and Analyst after each trial.
- **sequential**: the original ASI-Arch loop, one candidate at a time: propose -> check
  (and repair) -> train (the same ``train_mixer`` in a Ray worker, full explore budget,
  one trial slot) -> judge -> analyse.

Busy fraction = sum of trial durations / (trial slots x window). A pipelined trial lasts
from Tune's RUNNING (its actor started) to its last result, read from the explore
experiment's state (``tune.ExperimentAnalysis``); a sequential one is the driver's wall
time around the training task. Two windows: from the first LLM request (the agents start
work; includes filling the pipeline) and from the first trial start (steady state); both
end at the last trial's end. Candidates per hour = trained candidates / the first window.

    .venv/bin/python benchmarks/bench_pipeline.py [--latencies 5 30] [--candidates 6] [--explore-steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from messages_server import MessagesServer, Step  # noqa: E402

from asiarch.console import output_console  # noqa: E402
from asiarch.llm import AnthropicBackend, AnthropicConfig  # noqa: E402
from asiarch.proposer import OfflineBackend  # noqa: E402

SMALL = [  # a cpu_tiny model with a small corpus and MQAR set: trials of ~15-30 s on one core
    "scale=cpu_tiny", "scale.train.eval_batches=1", "scale.corpus.max_documents=80",
    "scale.corpus.tokenizer_vocab_size=512", "scale.mqar.num_train=500", "scale.mqar.num_test=100",
    "scale.train.eval_mqar_examples=64", "seeds=[deltanet]", "checks.complexity_repeats=2",
]
# verify is not measured here: keep it to one promoted candidate and the seed, one short run each
TINY_VERIFY = ["scale.stages.verify_steps=8", "verify.top_fraction=0", "verify.min_promoted=1", "verify.training_seeds=[0]"]


# -- the simulated LLM ----------------------------------------------------------------------------------

class OfflineReplies:
    """The server's script: every request is answered by the offline backend for its role, after the latency.

    ``MessagesServer`` appends the request body and pops the next step under one lock, so the
    last recorded request is the one being answered. The handler thread then sleeps ``hang_s``
    (concurrent requests sleep concurrently) and sends a ``tool_use`` reply.
    """

    def __init__(self, server: MessagesServer, latency: float, seed: int = 0):
        self.server, self.latency, self.offline = server, latency, OfflineBackend(seed=seed)
        self.log: list[tuple[float, str]] = []  # (arrival time, role)

    def __bool__(self) -> bool:
        return True

    def pop(self, index: int = 0) -> Step:
        body = self.server.requests[-1]
        tool = body["tools"][0]
        role = tool["name"].removeprefix("submit_")
        self.log.append((time.time(), role))
        data = self.offline.complete(role, "", body["messages"], tool["input_schema"]).data
        return Step(tool_input=data, hang_s=self.latency, input_tokens=6000, output_tokens=1500, cache_read_tokens=1500)


class SimulatedClaude:
    """An ``AnthropicBackend`` built in whichever process uses it.

    ``Campaign`` deep-copies its backend and Ray pickles it into every agent actor, but an
    ``AnthropicBackend`` holds an httpx client and locks, which can be neither copied nor
    pickled. This wrapper travels as its config and builds the client where it is used.
    """

    name = "anthropic"

    def __init__(self, config: AnthropicConfig):
        self.config = config
        self.__setstate__({"config": config})

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config, self._backend, self._lock = state["config"], None, threading.Lock()

    def complete(self, role, system, messages, schema):
        with self._lock:
            if self._backend is None:
                self._backend = AnthropicBackend(self.config)
        return self._backend.complete(role, system, messages, schema)


def claude_config(url: str) -> AnthropicConfig:
    return AnthropicConfig(base_url=url, api_key="test", timeout_s=600, backoff_base_s=0.05, max_concurrency=16,
                           budget_usd=None)


def peak_in_flight(log: list[tuple[float, str]], latency: float) -> int:
    events = sorted([(t, 1) for t, _ in log] + [(t + latency, -1) for t, _ in log])
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


# -- the pipelined campaign --------------------------------------------------------------------------------

def explore_trials(path: Path) -> list[dict[str, Any]]:
    """Per explore trial: design, start (Tune's RUNNING), end (last result), training time and tokens."""
    from ray.tune import ExperimentAnalysis

    trials = []
    for trial in ExperimentAnalysis(str(path)).trials:
        meta, last = trial.run_metadata, trial.run_metadata.last_result or {}
        start, end = meta.start_time, meta.last_result_time
        if start is None or end is None or end == float("-inf"):  # fall back on result.json (1 s resolution)
            rows = [json.loads(line) for line in (Path(trial.local_path) / "result.json").read_text().splitlines() if line]
            if not rows:
                continue
            start, end = rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]
        trials.append({"design": (trial.config or {}).get("design"), "start": start, "end": end,
                       "time_total_s": float(last.get("time_total_s") or 0.0), "tokens": int(last.get("tokens_seen") or 0),
                       "step": last.get("step"), "total_steps": last.get("total_steps")})
    return trials


def run_pipelined(latency: float, args, work: Path, console: Console) -> dict[str, Any]:
    from asiarch.campaign import Campaign

    name = f"pipelined-{latency:g}s"
    overrides = [*SMALL, *TINY_VERIFY, f"scale.stages.explore_steps={args.explore_steps}",
                 f"run.max_parallel_trials={args.slots}", f"campaign.max_candidates={args.candidates}",
                 f"campaign.researchers={args.researchers or args.candidates}",
                 f"campaign.lookahead={args.lookahead or args.candidates}", f"campaign.engineers={args.engineers}",
                 f"campaign.name={name}", "campaign.resume=never", f"run.output_dir={work / 'runs'}"]
    with MessagesServer() as server:
        replies = server.steps = OfflineReplies(server, latency)
        campaign = Campaign(overrides=overrides, llm=SimulatedClaude(claude_config(server.url)), console=console)
        campaign.run()
        log = list(replies.log)
    trials = explore_trials(campaign.paths.tune / "explore")
    status = campaign.status()
    first_request = min(t for t, _ in log)
    end = max(t["end"] for t in trials)
    return {"arm": "pipelined", "latency": latency, "slots": args.slots, "trained": status["trained"],
            "calls": len(log), "peak": peak_in_flight(log, latency), "first_request": first_request,
            "first_start": min(t["start"] for t in trials), "end": end,
            "busy_seconds": sum(t["end"] - t["start"] for t in trials), "trials": len(trials),
            "stopped": status["counts"].get("stopped", 0), "roles": _roles(log),
            "timeline": {"requests": [(round(t - first_request, 2), role) for t, role in log],
                         "trials": [{**t, "start": round(t["start"] - first_request, 2),
                                     "end": round(t["end"] - first_request, 2)} for t in trials]}}


# -- the sequential loop (ASI-Arch's shape) -------------------------------------------------------------------

def run_sequential(latency: float, args, work: Path, console: Console) -> dict[str, Any]:
    import ray
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from asiarch.agents import AgentsConfig, Analyst, Engineer, Judge, Researcher
    from asiarch.testing.training import explore_metrics, train_candidate
    from asiarch.arch import SEEDS, seed_source
    from asiarch.campaign.fitness import coerce_fitness
    from asiarch.campaign.settings import section
    from asiarch.config import ScaleConfig, compose, explore_scale
    from asiarch.memory import Candidate, Memory, StageMetrics
    from asiarch.train.protocol import prepare_data, train_mixer

    name = f"sequential-{latency:g}s"
    cfg = compose([*SMALL, f"scale.stages.explore_steps={args.explore_steps}"])
    base = ScaleConfig.from_dict(cfg.scale)
    scale = explore_scale(base)
    seed = str(cfg.campaign.seed)
    checks = dict(OmegaConf.to_container(cfg.checks, resolve=True))
    agents = section(cfg, "agents", AgentsConfig)
    fitness_fn = instantiate(cfg.fitness)
    data = prepare_data(scale)
    uri = str(work / "runs" / name / "memory")
    memory = Memory(uri)
    memory.load_cognition_base()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        data_ref = ray.put(data)
        # the seed baseline the Judge and the fitness compare against, trained before the clock starts
        summary = ray.get(ray.remote(num_cpus=1)(train_mixer).remote(SEEDS[seed], scale, data_ref, downstream=False))
        anchor = {"name": seed, "eval_loss": summary["eval_loss"], "benchmark": summary["mqar_accuracy"],
                  "mqar_accuracy": summary["mqar_accuracy"]}
        own = coerce_fitness(fitness_fn(anchor, anchor, None))
        memory.upsert_candidates(Candidate(
            id=f"{name}-seed-{seed}", campaign=name, name=seed, code=seed_source(seed), status="finished",
            kind="seed", motivation=f"seed architecture {seed} (baseline)",
            explore=StageMetrics(eval_loss=anchor["eval_loss"], mqar_accuracy=anchor["mqar_accuracy"],
                                 benchmark=anchor["benchmark"], fitness=own.value,
                                 fitness_parts={**own.parts, "stage": "explore"})))
        with MessagesServer() as server:
            replies = server.steps = OfflineReplies(server, latency)
            llm = AnthropicBackend(claude_config(server.url))
            researcher, engineer, judge, analyst = (kind(llm, uri, memory, name, config=agents)
                                                    for kind in (Researcher, Engineer, Judge, Analyst))
            spans, proposals, split = [], 0, {"propose": 0.0, "check": 0.0, "train": 0.0, "judge+analyse": 0.0}
            while len(spans) < args.candidates and proposals < 5 * args.candidates:
                proposals += 1
                t = time.time()
                c = researcher.propose(seed)
                split["propose"] += time.time() - t
                if c.status != "proposed":
                    continue
                t = time.time()
                c = engineer.validate(c.id, scale, **checks)
                split["check"] += time.time() - t
                if c.status != "validated":
                    continue
                memory.update_candidate(c.id, status="training", status_reason="sequential loop")
                t = time.time()
                try:
                    summary = ray.get(train_candidate.remote(c.code, scale, data_ref))
                    changes = explore_metrics(summary)
                except Exception as err:  # noqa: BLE001 - a crashed candidate still used its slot
                    summary, changes = None, {"status": "failed", "status_reason": f"training failed: {err}"[:2000]}
                spans.append((t, time.time()))
                split["train"] += time.time() - t
                memory.update_candidate(c.id, **changes)
                if summary is None:
                    continue
                t = time.time()
                judged = judge.score(c.id, [anchor])
                mine = {"name": c.name, "eval_loss": summary.get("eval_loss"), "benchmark": summary.get("mqar_accuracy")}
                fitness = coerce_fitness(fitness_fn(mine, anchor, judged.judge.get("overall")))
                memory.set_stage(c.id, "explore", fitness=fitness.value, fitness_parts={**fitness.parts, "stage": "explore"})
                analyst.analyse(c.id)
                split["judge+analyse"] += time.time() - t
                console.print(f"sequential {latency:g}s: {len(spans)}/{args.candidates} trained", highlight=False)
            log = list(replies.log)
    finally:
        ray.shutdown()
    return {"arm": "sequential", "latency": latency, "slots": 1, "trained": len(spans), "calls": len(log),
            "peak": peak_in_flight(log, latency), "first_request": min(t for t, _ in log),
            "first_start": spans[0][0], "end": spans[-1][1], "busy_seconds": sum(b - a for a, b in spans),
            "trials": len(spans), "stopped": 0, "roles": _roles(log), "split": split,
            "timeline": {"requests": [(round(t - log[0][0], 2), role) for t, role in log],
                         "trials": [(round(a - log[0][0], 2), round(b - log[0][0], 2)) for a, b in spans]}}


def _roles(log: list[tuple[float, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, role in log:
        counts[role] = counts.get(role, 0) + 1
    return counts


# -- the table ----------------------------------------------------------------------------------------

def summarise(r: dict[str, Any]) -> dict[str, Any]:
    window = r["end"] - r["first_request"]
    steady = r["end"] - r["first_start"]
    return {**r, "window": window, "busy": r["busy_seconds"] / (r["slots"] * window),
            "busy_steady": r["busy_seconds"] / (r["slots"] * steady), "per_hour": r["trained"] / window * 3600,
            "mean_trial": r["busy_seconds"] / max(1, r["trials"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latencies", type=float, nargs="+", default=[5.0, 30.0], help="simulated LLM seconds per request")
    parser.add_argument("--candidates", type=int, default=6, help="candidates that reach training, in each arm")
    parser.add_argument("--explore-steps", type=int, default=40, help="scale.stages.explore_steps (train steps of a trial)")
    parser.add_argument("--slots", type=int, default=2, help="run.max_parallel_trials of the pipelined campaign")
    parser.add_argument("--researchers", type=int, default=None, help="campaign.researchers (default: --candidates)")
    parser.add_argument("--lookahead", type=int, default=None, help="campaign.lookahead (default: --candidates)")
    parser.add_argument("--engineers", type=int, default=3, help="campaign.engineers")
    parser.add_argument("--work", type=Path, default=None, help="where runs/ goes (default: a new temporary directory)")
    args = parser.parse_args()
    console = output_console()  # a log file gets the whole table
    log = Console(stderr=True, width=160)
    work = (args.work or Path(tempfile.mkdtemp(prefix="asiarch-bench-pipeline-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log.print(f"runs under {work}")
    started = time.monotonic()
    results = []
    for latency in args.latencies:
        for arm in (run_pipelined, run_sequential):
            t = time.monotonic()
            results.append(summarise(arm(latency, args, work, log)))
            log.print(f"{arm.__name__} at {latency:g}s: {time.monotonic() - t:.0f}s")
            (work / "bench_pipeline.json").write_text(json.dumps(results, indent=2, default=str))

    table = Table(title=f"pipelining: {args.candidates} trained candidates per arm, {args.explore_steps}-step explore "
                        f"trials, simulated LLM latency per request")
    for header in ("arm", "LLM latency", "slots", "trained", "LLM calls (peak)", "explore wall s", "mean trial s",
                   "busy (from 1st LLM call)", "busy (from 1st trial)", "candidates / h", "vs sequential"):
        table.add_column(header, justify="left" if header == "arm" else "right")
    for latency in args.latencies:
        pair = {r["arm"]: r for r in results if r["latency"] == latency}
        for arm in ("pipelined", "sequential"):
            r = pair[arm]
            table.add_row(arm, f"{latency:g} s", str(r["slots"]), str(r["trained"]) + (f" ({r['stopped']} by ASHA)" if
                          r["stopped"] else ""), f"{r['calls']} ({r['peak']})", f"{r['window']:.0f}",
                          f"{r['mean_trial']:.1f}", f"{r['busy']:.2f}", f"{r['busy_steady']:.2f}", f"{r['per_hour']:.0f}",
                          f"{r['per_hour'] / pair['sequential']['per_hour']:.2f}x")
    console.print(table)
    for r in results:
        if r["arm"] == "sequential":
            split = ", ".join(f"{k} {v:.0f}s" for k, v in r["split"].items())
            console.print(f"sequential {r['latency']:g} s: time went to {split}", highlight=False)
    for r in results:
        console.print(f"{r['arm']} {r['latency']:g} s: LLM calls by role {r['roles']}", highlight=False)
    console.print(f"goal at 30 s: busy >= 0.95 and >= 3x the sequential loop's candidates per hour; "
                  f"benchmark wall time {time.monotonic() - started:.0f} s; runs under {work}", highlight=False)


if __name__ == "__main__":
    main()
